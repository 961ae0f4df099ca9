"""Recipes: one end-to-end job per module (setup, run, report), each run by `refit <name>`."""

__all__: list[str] = []
