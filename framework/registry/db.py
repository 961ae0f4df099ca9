"""The registry's SQLite database: its schema, creating it, opening and checking it, one transaction.

SQLite (the standard library's) is the embedded default: one file, real transactions, safe against a
crash mid-write. Fail closed: a missing, zero-byte or corrupt database is an error, never silently rebuilt,
and a read-only connection cannot write or create anything. What the tables mean is the store's
(store.py) and the audit log's (audit.py); this module only keeps the file sound.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from refit.errors import RefitError

__all__ = [
    "RegistryError",
    "NoRegistry",
    "now",
    "create",
    "connect",
    "check",
    "transaction",
    "damaged",
    "edited",
    "parse_json",
]


class RegistryError(RefitError):
    """The registry folder or its database is missing, damaged or inconsistent."""


class NoRegistry(RegistryError):
    """No registry where one was to be opened read-only. The message names no flag: each command spells its
    own (`--root` for `refit registry`, `--registry.root` for maintain and serve) and adds it."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    id TEXT PRIMARY KEY, path TEXT NOT NULL, parent TEXT, recipe TEXT, created_at TEXT,
    registered_at TEXT NOT NULL, weights_sha256 TEXT NOT NULL, metrics TEXT NOT NULL, manifest_sha256 TEXT,
    exports_manifest_sha256 TEXT, withdrawn TEXT
);
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT PRIMARY KEY, version_id TEXT NOT NULL REFERENCES versions(id), updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, alias TEXT NOT NULL, from_version TEXT,
    to_version TEXT, actor TEXT NOT NULL, action TEXT NOT NULL, reason TEXT, metrics TEXT,
    prev_hash TEXT, hash TEXT
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, started_at TEXT NOT NULL, finished_at TEXT,
    status TEXT NOT NULL, details TEXT
);
CREATE TRIGGER IF NOT EXISTS audit_append_only_u BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_append_only_d BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""
# Columns added since the first schema: (table, column, type). Added in place to older databases.
_MIGRATIONS = (
    ("versions", "manifest_sha256", "TEXT"),
    ("versions", "exports_manifest_sha256", "TEXT"),  # '' = registered without exports; NULL = before this
    ("audit", "prev_hash", "TEXT"),
    ("audit", "hash", "TEXT"),
    ("versions", "withdrawn", "TEXT"),  # why no alias may be moved to it again (a forget); NULL = not
)
_TABLES = {"versions", "aliases", "audit", "runs"}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def create(db_path: Path) -> None:
    """Build the schema in a private temporary file, then link it into place: the database is never seen
    half-made (a zero-byte registry.db always means damage), and of two racing creators one wins."""
    tmp = db_path.parent / f".{db_path.name}.tmp-{uuid.uuid4().hex[:8]}"
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        os.chmod(tmp, 0o600)
        db = sqlite3.connect(tmp)
        try:
            db.executescript(_SCHEMA)
        finally:
            db.close()
        with contextlib.suppress(FileExistsError):  # another process created it first: use theirs
            os.link(tmp, db_path)
    finally:
        tmp.unlink(missing_ok=True)


def connect(db_path: Path, writable: bool, wait_s: float) -> sqlite3.Connection:
    if writable:
        return sqlite3.connect(db_path, timeout=wait_s, isolation_level=None)
    # Read-only: SQLite itself refuses to write or create anything.
    return sqlite3.connect(db_path.as_uri() + "?mode=ro", uri=True, timeout=wait_s, isolation_level=None)


def check(db_path: Path, writable: bool, wait_s: float, versions_dir: Path) -> None:
    """Check the database is a readable refit registry; add newer columns to an old one (writers only)."""
    if db_path.stat().st_size == 0:
        raise RegistryError(damaged(db_path, versions_dir, "is empty (zero bytes)"))
    try:
        db = connect(db_path, writable, wait_s)
        try:
            ok = db.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise RegistryError(damaged(db_path, versions_dir, f"failed SQLite's integrity check ({ok})"))
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables >= _TABLES:
                raise RegistryError(
                    damaged(db_path, versions_dir, f"lacks the tables {sorted(_TABLES - tables)}")
                )
            if writable:  # under a write lock, so two processes opening an old registry cannot race
                db.execute("BEGIN IMMEDIATE")
                for table, column, kind in _MIGRATIONS:
                    if column not in {r[1] for r in db.execute(f"PRAGMA table_info({table})")}:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                db.execute("COMMIT")
        finally:
            db.close()
    except sqlite3.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):  # another process holds it: busy, not damaged
            raise RegistryError(
                f"The registry database {db_path} is locked by another process (waited "
                f"{wait_s:g} s): {e}. Try again once that command has finished."
            ) from None
        raise RegistryError(
            damaged(db_path, versions_dir, f"is not a readable SQLite database ({e})")
        ) from None
    except sqlite3.DatabaseError as e:
        raise RegistryError(
            damaged(db_path, versions_dir, f"is not a readable SQLite database ({e})")
        ) from None


def damaged(db_path: Path, versions_dir: Path, what: str) -> str:
    return (
        f"The registry database {db_path} {what}. Refusing to use it or to rebuild it (the aliases and "
        "audit log would be lost). Restore it from a backup; the version folders in "
        f"{versions_dir} are untouched and can be re-registered into a new registry."
    )


@contextmanager
def transaction(db_path: Path, writable: bool, wait_s: float) -> Iterator[sqlite3.Connection]:
    """One transaction: committed on success, rolled back on any error (or a kill: SQLite's journal)."""
    if not db_path.is_file():
        raise RegistryError(f"The registry database {db_path} has disappeared.")
    db = connect(db_path, writable, wait_s)
    db.row_factory = sqlite3.Row
    try:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("BEGIN IMMEDIATE" if writable else "BEGIN")
        yield db
        db.execute("COMMIT")
    except BaseException as e:
        if db.in_transaction:
            db.execute("ROLLBACK")
        if type(e) is sqlite3.DatabaseError or (  # damage, a busy database or a read-only file: not a bug
            isinstance(e, sqlite3.OperationalError)
            and any(w in str(e) for w in ("locked", "readonly", "unable to open"))
        ):
            raise RegistryError(f"The registry database {db_path}: {e}.") from None
        raise
    finally:
        db.close()


def edited(db_path: Path, what: str) -> str:
    return (
        f"The registry database {db_path}: {what}; it was edited by hand or damaged. Refusing to "
        "use it. Restore it from a backup."
    )


def parse_json(db_path: Path, text: str | None, what: str):
    """A JSON column's value; a RegistryError naming the database and the row when it does not parse."""
    try:
        return json.loads(text) if text else None
    except (json.JSONDecodeError, TypeError) as e:
        raise RegistryError(edited(db_path, f"{what} are not valid JSON ({e})")) from None
