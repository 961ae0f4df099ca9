"""`refit registry gc`: what can go, and removing it. A plan first (the dry run), then the same plan applied.

Never removed: a version any alias points to (champion, challenger, your own), the last `keep` champions in
the audit log (what rollback steps back to), a version registered in the last 10 minutes (it may be about to
get an alias), and anything outside the registry's versions/ folder.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from refit.errors import VersionError
from refit.io import check_name
from refit.registry.audit import CHAMPION
from refit.registry.layout import STALE_AFTER_S, is_staging
from refit.registry.store import Registry

__all__ = ["GcPlan", "plan_gc", "apply_gc", "unreferenced"]


@dataclass
class GcPlan:
    staging: list[Path] = field(default_factory=list)  # stale staging of killed writes
    in_progress: list[Path] = field(default_factory=list)  # young staging: another process may be writing it
    orphans: list[Path] = field(default_factory=list)  # folders in versions/ with no registry row
    versions: list[str] = field(
        default_factory=list
    )  # registered, unreferenced, beyond the last `keep` champions
    recent: list[str] = field(default_factory=list)  # unreferenced but just registered: kept (see plan_gc)
    keep: int = 0

    @property
    def empty(self) -> bool:
        return not (self.staging or self.orphans or self.versions)


def plan_gc(registry: Registry, keep: int, stale_after_s: float = STALE_AFTER_S) -> GcPlan:
    """What gc would remove. A version registered less than `stale_after_s` ago is kept though no alias
    points at it yet: a maintenance cycle registers its challenger and only then points `challenger` at it,
    and a gc in between removed it (the cycle then failed)."""
    cutoff = time.time() - stale_after_s
    registered = {v.id: v.registered_at for v in registry.list_versions()}
    plan = GcPlan(keep=keep)
    for vid in unreferenced(registry, keep):
        (plan.recent if _after(registered.get(vid), cutoff) else plan.versions).append(vid)
    if not registry.versions_dir.is_dir():
        return plan
    known = set(registered)
    for path in sorted(registry.versions_dir.iterdir()):
        young = path.lstat().st_mtime >= cutoff
        if is_staging(path.name):
            (plan.in_progress if young else plan.staging).append(path)
        elif path.name not in known and path.is_dir() and not path.is_symlink() and not young:
            plan.orphans.append(path)
    return plan


def unreferenced(registry: Registry, keep: int) -> list[str]:
    """Versions no alias points to and not among the last `keep` champions in the audit log, oldest first."""
    registry.check_audit("choose what gc removes")
    protected = set(registry.aliases().values())
    champions: list[str] = []
    for move in reversed(registry.history(CHAMPION)):
        if move.to_version and move.to_version not in champions:
            champions.append(move.to_version)
    protected.update(champions[: max(keep, 0)])
    return [v.id for v in registry.list_versions() if v.id not in protected]


def _after(stamp: str | None, cutoff: float) -> bool:
    """Whether a registered_at time is after `cutoff`; an unreadable one counts as recent (kept)."""
    try:
        return datetime.fromisoformat(stamp).timestamp() >= cutoff
    except (TypeError, ValueError):
        return True


def apply_gc(registry: Registry, plan: GcPlan) -> list[str]:
    """Remove what the plan lists (re-checking each version is still unreferenced); returns what was removed."""
    removed: list[str] = []
    still = set(unreferenced(registry, plan.keep))  # an alias may have moved since the plan was made
    for version_id in plan.versions:
        if version_id in still:
            registry.remove_version(version_id)  # refuses, in its transaction, a version an alias points at
            removed.append(version_id)
    for path in plan.orphans:
        if path.parent == registry.versions_dir and _remove_orphan(registry, path):
            removed.append(path.name)
    for path in plan.staging:
        if path.parent == registry.versions_dir and not path.is_symlink():  # never anything outside versions/
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def _remove_orphan(registry: Registry, path: Path) -> bool:
    """An unregistered folder: removed under the write lock unless registered since the plan (see
    Registry.remove_unregistered); one whose name no version id can have is removed directly."""
    try:
        check_name(path.name, "folder name")
    except VersionError:
        if path.is_symlink():
            return False
        shutil.rmtree(path, ignore_errors=True)
        return True
    return registry.remove_unregistered(path.name)
