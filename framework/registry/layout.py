"""The registry folder on disk: ROOT/versions/<id>/, the staging of writes in progress, and the marker.

ROOT/refit-registry.json names the database, written by every writer that opens the registry: it is what
makes ROOT/versions/ID recognisable as a registry's (pinned) version whatever --db is, and what makes an
open with another database refused (the store's `_refuse_other_database`): two databases must never both
believe they own ROOT/versions/. A database inside ROOT is also named relative to it, so a registry copied
or moved whole (a backup restored elsewhere) still names its own database.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

from refit.io import write_json
from refit.registry.db import RegistryError

__all__ = [
    "STALE_AFTER_S",
    "MARKER",
    "MARKER_FORMAT",
    "registry_holding",
    "marker_database",
    "is_staging",
    "write_marker",
    "stale_staging",
    "install",
]

# Staging folders (`.ID.tmp-*`, `.ID.old-*`) older than this are leftovers of a killed write; younger ones may
# belong to a registration in progress in another process, so they are left alone.
STALE_AFTER_S = 600.0
MARKER = "refit-registry.json"
MARKER_FORMAT = "refit-registry/1"


def registry_holding(version_dir: str | Path) -> Path | None:
    """The root of the registry that holds `version_dir` (ROOT/versions/ID), else None.

    Such a folder is pinned at registration (its manifests' hashes are in the database): a command that
    rewrote it in place (a drift refresh, a report written into it) made the registry refuse that version,
    the champion included, everywhere from then on. A registry is recognised by ROOT/registry.db or by its
    marker ROOT/refit-registry.json (written when a writer opens it), so one whose database is elsewhere
    (--db) is recognised too; an old one with its database elsewhere is once any writer has opened it."""
    path = Path(version_dir).expanduser().resolve()
    root = path.parent.parent
    if path.parent.name == "versions" and any((root / n).is_file() for n in ("registry.db", MARKER)):
        return root
    return None


def marker_database(root: Path) -> Path | None:
    """The database ROOT/refit-registry.json names (ROOT/<relative> when it names one inside the root), or
    None when there is no marker (an older registry).

    For advice (a command given the root but not --db found ROOT/registry.db missing and advised
    re-registering every version, while the marker said where the database was: found driving the loop,
    s9) and for refusing an open with another database. The path is never opened on the marker's word;
    the user gives it with --db. A marker that is there but cannot be read (a link, too big, not JSON, no
    database named) is refused, not taken for no marker: that would open the root with any database, the
    very thing the marker is there to stop."""
    marker = root / MARKER
    if not marker.exists() and not marker.is_symlink():
        return None
    try:
        if marker.is_symlink() or not marker.is_file():
            raise ValueError("a link or not a regular file")
        if marker.stat().st_size > 65536:
            raise ValueError("over 64 KiB")
        content = json.loads(marker.read_text(encoding="utf-8"))
        named, relative = content.get("database"), content.get("relative")
    except (OSError, ValueError, AttributeError) as e:
        raise _bad_marker(marker, str(e) if isinstance(e, ValueError) else type(e).__name__) from None
    if isinstance(relative, str) and relative and _inside(Path(relative)):
        return root / relative  # where the root is now, not where it was when the marker was written
    if isinstance(named, str) and named:
        return Path(named)
    raise _bad_marker(marker, "it names no database")


def _bad_marker(marker: Path, why: str) -> RegistryError:
    return RegistryError(
        f"The registry marker {marker} cannot be read ({why}). It names the database that owns this "
        "registry's version folders, so the registry is not opened without it. Restore it from a backup; "
        "or, if you know which database is this registry's, delete it and give that one with --db: the "
        "next command that writes names it again."
    )


def _inside(relative: Path) -> bool:
    """A path that stays under the root it is joined to (no absolute path, no `..`)."""
    return not relative.is_absolute() and ".." not in relative.parts


def is_staging(name: str) -> bool:
    """`.ID.tmp-xxxx` / `.ID.old-xxxx`: the temporary folders of `register` and refit.io.atomic_dir."""
    return name.startswith(".") and (".tmp-" in name or ".old-" in name)


def write_marker(root: Path, db_path: Path) -> None:
    """ROOT/refit-registry.json naming the database, unless there is one: so `registry_holding` knows
    ROOT/versions/ID is pinned even when the database is elsewhere (an old registry gets it at its first
    open by a writer). Written atomically, owner-only; an existing marker is left as it is."""
    marker = root / MARKER
    if marker.exists() or marker.is_symlink():
        return
    content = {"format": MARKER_FORMAT, "database": str(db_path)}
    if db_path.is_relative_to(root):  # the usual ROOT/registry.db: travels with the root
        content["relative"] = str(db_path.relative_to(root))
    write_json(marker, content)
    os.chmod(marker, 0o600)


def stale_staging(versions_dir: Path, older_than_s: float) -> list[Path]:
    """Leftover staging folders of killed writes in versions/ (only there: nothing outside is looked at)."""
    if not versions_dir.is_dir():
        return []
    cutoff = time.time() - older_than_s
    return sorted(
        p
        for p in versions_dir.iterdir()
        if is_staging(p.name) and not p.is_symlink() and p.lstat().st_mtime < cutoff
    )


def install(staged: Path, dest: Path) -> None:
    """Rename a staged copy to `dest`; an unregistered leftover folder there (a killed registration) is moved
    aside first and removed (a folder cannot be replaced in one rename)."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(dest, old)
    os.replace(staged, dest)
    if old is not None and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    elif old is not None:
        old.unlink()
