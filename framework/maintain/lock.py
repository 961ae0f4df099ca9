"""The start every maintenance command shares (a cycle, a forget): open the registry it maintains, which
must exist, and hold that registry's maintenance lock while it works, so no two such commands ever change
one registry's loop at once (a forget never rewrites a file a cycle is reading)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from refit.maintain.schedule import cycle_lock
from refit.registry import NoRegistry, Registry

__all__ = ["LOCK_FILE", "maintenance_lock", "open_registry"]

LOCK_FILE = "maintain.lock"  # in the registry's root folder


def open_registry(root: str | Path, db: str | Path | None) -> Registry:
    """The registry at `root` (database `db`), opened for writing; a missing one is refused (NoRegistry,
    naming the keys to check), never created empty at a misspelt path."""
    try:
        return Registry(root, db, must_exist=True)
    except NoRegistry as e:
        raise NoRegistry(f"{e} Check --registry.root (and --registry.db).") from None


def maintenance_lock(registry: Registry, busy: Callable[[Path], Exception], wait_s: float):
    """The registry's maintenance lock (`cycle_lock` on LOCK_FILE), as a context manager; `busy(lock file)`
    is raised when another command holds it for over `wait_s` seconds."""
    path = registry.root / LOCK_FILE
    return cycle_lock(path, lambda: busy(path), wait_s)
