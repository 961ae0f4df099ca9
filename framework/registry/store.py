"""The model registry: version folders plus one SQLite database of versions, aliases and an audit log.

SQLite (the standard library's) is the embedded default: one file, real transactions, safe against a
crash mid-write. Every alias move is one transaction that also appends its audit row, so the log and
the aliases can never disagree. Rollback is itself an alias move, and is audited like any other.
"""

from __future__ import annotations

import getpass
import json
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from refit.errors import VersionError
from refit.io import atomic_dir, sha256_file
from refit.models.version import read_version, weights_file

__all__ = ["Registry", "RegisteredVersion", "AliasMove", "CHAMPION", "CHALLENGER"]

CHAMPION, CHALLENGER = "champion", "challenger"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    id TEXT PRIMARY KEY, path TEXT NOT NULL, parent TEXT, recipe TEXT, created_at TEXT,
    registered_at TEXT NOT NULL, weights_sha256 TEXT NOT NULL, metrics TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT PRIMARY KEY, version_id TEXT NOT NULL REFERENCES versions(id), updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, alias TEXT NOT NULL, from_version TEXT,
    to_version TEXT, actor TEXT NOT NULL, action TEXT NOT NULL, reason TEXT, metrics TEXT
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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RegisteredVersion:
    id: str
    path: Path
    parent: str | None
    recipe: str | None
    created_at: str | None
    registered_at: str
    weights_sha256: str
    metrics: dict


@dataclass(frozen=True)
class AliasMove:
    seq: int
    at: str
    alias: str
    from_version: str | None
    to_version: str | None
    actor: str
    action: str
    reason: str | None
    metrics: dict | None


class Registry:
    """A folder `root/` with `versions/<id>/` and `registry.db` (or a database path of your choosing)."""

    def __init__(self, root: str | Path, db_path: str | Path | None = None) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.db_path = Path(db_path) if db_path else self.root / "registry.db"
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.db_path, timeout=30)
        try:
            db.executescript(_SCHEMA)  # idempotent; executescript manages its own transaction
        except sqlite3.DatabaseError as e:
            raise VersionError(f"The registry database {self.db_path} is corrupt or not a SQLite file ({e}). "
                               "Restore it from a backup; refit will not overwrite it.") from None
        finally:
            db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction: committed on success, rolled back on any error (or a kill: SQLite's journal)."""
        db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    # --- versions ----------------------------------------------------------------------------------
    def register(self, version_dir: str | Path) -> RegisteredVersion:
        """Copy a finished version into the registry (atomically) and record it with its weights hash."""
        meta = read_version(version_dir)
        vid = meta["version_id"]
        recorded = meta.get("weights_sha256")
        actual = sha256_file(weights_file(version_dir))
        if recorded and recorded != actual:
            raise VersionError(f"{version_dir}: weights do not match refit.json's hash; not registering it.")
        dest = self.versions_dir / vid
        if self._row(vid) is not None:
            return self.get(vid)
        if Path(version_dir).resolve() != dest.resolve():
            with atomic_dir(dest) as tmp:
                shutil.copytree(version_dir, tmp, dirs_exist_ok=True)
        with self._tx() as db:
            db.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (vid, str(dest), meta.get("parent"), meta.get("recipe"), meta.get("created_at"), _now(),
                 actual, json.dumps(meta.get("metrics", {}))),
            )
        return self.get(vid)

    def _row(self, version_id: str) -> sqlite3.Row | None:
        with self._tx() as db:
            return db.execute("SELECT * FROM versions WHERE id = ?", (version_id,)).fetchone()

    def _to_version(self, row: sqlite3.Row) -> RegisteredVersion:
        return RegisteredVersion(row["id"], Path(row["path"]), row["parent"], row["recipe"], row["created_at"],
                                 row["registered_at"], row["weights_sha256"], json.loads(row["metrics"]))

    def resolve(self, ref: str) -> str:
        """A version id from an id or an alias."""
        with self._tx() as db:
            alias = db.execute("SELECT version_id FROM aliases WHERE name = ?", (ref,)).fetchone()
            if alias:
                return alias["version_id"]
            if db.execute("SELECT 1 FROM versions WHERE id = ?", (ref,)).fetchone():
                return ref
            names = [r["name"] for r in db.execute("SELECT name FROM aliases")]
        raise VersionError(
            f"No version or alias '{ref}' in the registry {self.root}"
            + (f" (aliases: {', '.join(sorted(names))})." if names else " (it has no aliases yet).")
        )

    def get(self, ref: str, verify: bool = True) -> RegisteredVersion:
        """The version behind an id or alias; with `verify`, refuses one whose weights changed on disk."""
        row = self._row(self.resolve(ref))
        version = self._to_version(row)
        if verify:
            path = weights_file(version.path)
            if not path.is_file() or sha256_file(path) != version.weights_sha256:
                raise VersionError(
                    f"Version {version.id} at {version.path} is corrupt or was altered (its weights do not match "
                    "the hash recorded at registration). Refusing to use it; the aliases are unchanged."
                )
        return version

    def list_versions(self) -> list[RegisteredVersion]:
        with self._tx() as db:
            rows = db.execute("SELECT * FROM versions ORDER BY registered_at, id").fetchall()
        return [self._to_version(r) for r in rows]

    # --- aliases -----------------------------------------------------------------------------------
    def aliases(self) -> dict[str, str]:
        with self._tx() as db:
            return {r["name"]: r["version_id"] for r in db.execute("SELECT name, version_id FROM aliases")}

    def set_alias(self, alias: str, ref: str, reason: str | None = None, metrics: dict | None = None,
                  action: str = "move", actor: str | None = None) -> AliasMove:
        """Point `alias` at a version: the move and its audit row are one transaction."""
        target = self.get(ref).id  # verifies the weights before anything points at them
        with self._tx() as db:
            row = db.execute("SELECT version_id FROM aliases WHERE name = ?", (alias,)).fetchone()
            previous = row["version_id"] if row else None
            db.execute("INSERT INTO aliases VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                       "version_id = excluded.version_id, updated_at = excluded.updated_at", (alias, target, _now()))
            cur = db.execute(
                "INSERT INTO audit (at, alias, from_version, to_version, actor, action, reason, metrics) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (_now(), alias, previous, target, actor or _actor(), action, reason,
                 json.dumps(metrics) if metrics is not None else None),
            )
            seq = cur.lastrowid
        return next(m for m in self.history(alias) if m.seq == seq)

    def promote(self, ref: str, reason: str, metrics: dict | None = None, actor: str | None = None) -> AliasMove:
        return self.set_alias(CHAMPION, ref, reason, metrics, action="promote", actor=actor)

    def rollback(self, reason: str = "manual rollback", actor: str | None = None, alias: str = CHAMPION) -> AliasMove:
        """Point the alias back at the version it held before its latest move."""
        moves = self.history(alias)
        if not moves:
            raise VersionError(f"'{alias}' has never been set: nothing to roll back.")
        current = self.aliases().get(alias)
        previous = _previous_holder(moves, current)
        if previous is None:
            raise VersionError(f"'{alias}' has no earlier version to roll back to (it is {current}).")
        return self.set_alias(alias, previous, reason, action="rollback", actor=actor)

    def history(self, alias: str | None = None) -> list[AliasMove]:
        query = "SELECT * FROM audit" + (" WHERE alias = ?" if alias else "") + " ORDER BY seq"
        with self._tx() as db:
            rows = db.execute(query, (alias,) if alias else ()).fetchall()
        return [AliasMove(r["seq"], r["at"], r["alias"], r["from_version"], r["to_version"], r["actor"],
                          r["action"], r["reason"], json.loads(r["metrics"]) if r["metrics"] else None)
                for r in rows]

    # --- runs (drift checks, maintenance cycles) ---------------------------------------------------
    def start_run(self, kind: str, details: dict | None = None) -> int:
        with self._tx() as db:
            cur = db.execute("INSERT INTO runs (kind, started_at, status, details) VALUES (?, ?, 'running', ?)",
                             (kind, _now(), json.dumps(details or {})))
            return int(cur.lastrowid)

    def finish_run(self, run_id: int, status: str, details: dict | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE runs SET finished_at = ?, status = ?, details = ? WHERE id = ?",
                       (_now(), status, json.dumps(details or {}, default=str), run_id))

    def runs(self, kind: str | None = None) -> list[dict]:
        query = "SELECT * FROM runs" + (" WHERE kind = ?" if kind else "") + " ORDER BY id"
        with self._tx() as db:
            rows = db.execute(query, (kind,) if kind else ()).fetchall()
        return [{**dict(r), "details": json.loads(r["details"] or "{}")} for r in rows]


def _previous_holder(moves: list[AliasMove], current: str | None) -> str | None:
    """Replay the alias's moves as a stack (a move pushes, a rollback pops): the holder below the top.

    So two rollbacks in a row step back two versions instead of undoing each other.
    """
    stack: list[str] = []
    for move in moves:
        if move.action == "rollback" and stack:
            stack.pop()
        if move.to_version and (not stack or stack[-1] != move.to_version):
            stack.append(move.to_version)
    return stack[-2] if len(stack) >= 2 and stack[-1] == current else None


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
