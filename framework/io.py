"""Atomic writes: a crash leaves either the old file/folder or the new one, never half of either."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from refit.errors import VersionError

__all__ = ["NAME_RULE", "atomic_dir", "atomic_write_text", "write_json", "sha256_file", "check_name", "child_path"]

# One pattern for every version id and alias name, checked before a name ever touches a path.
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
NAME_RULE = ("letters, digits, '-', '_' and '.' only, 1 to 128 characters, not starting with '.' "
             "and without '..'")


def check_name(value: object, what: str = "version id", where: str | Path | None = None) -> str:
    """`value` if it is a safe id/alias name, else VersionError naming it and the rule.

    Why so strict: ids become folder names. `../../precious` once replaced a folder outside the registry,
    and an empty id replaced the whole versions/ folder.
    """
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        place = f" in {where}" if where else ""
        raise VersionError(f"Invalid {what} {value!r}{place}: use {NAME_RULE}.")
    return value


def child_path(parent: str | Path, name: str, what: str = "version id") -> Path:
    """parent/name for a validated `name`; refuses anything that would not land directly inside `parent`."""
    parent = Path(parent)
    path = parent / check_name(name, what)
    if path.parent != parent or path.name != name:
        raise VersionError(f"Invalid {what} {name!r}: it does not name a folder inside {parent}.")
    return path


@contextlib.contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `dest` by rename, on error it is removed."""
    dest = Path(dest)
    if dest.name in ("", ".", ".."):
        raise VersionError(f"Refusing to write a folder at {dest}: it has no name of its own.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if dest.exists():
        # A folder cannot be replaced in one rename: move the old one aside first, then drop it.
        old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: str | Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
