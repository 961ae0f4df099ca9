"""Terminal tables for metrics (rich)."""

from __future__ import annotations

from refit.evaluate import METRIC_NAMES

__all__ = ["print_metrics"]

# Column headers short enough for an 80-column terminal.
_SHORT = {"f1_macro": "F1", "precision_macro": "prec.", "recall_macro": "recall"}


def print_metrics(metrics: dict[str, dict[str, float]], title: str) -> None:
    """One row per split, one column per metric."""
    from rich.console import Console
    from rich.table import Table

    seen = {k for values in metrics.values() for k in values}
    names = [n for n in METRIC_NAMES if n in seen] + sorted(seen - set(METRIC_NAMES))
    table = Table(title=title)
    table.add_column("split", no_wrap=True, min_width=10)
    for name in names:
        table.add_column(_SHORT.get(name, name), justify="right")
    for split, values in metrics.items():
        if values:
            table.add_row(split, *(f"{values[n]:.4f}" if n in values else "-" for n in names))
    Console().print(table)
