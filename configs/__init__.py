"""Shipped YAML configs, one folder per recipe (package data; `refit configs` lists them)."""
