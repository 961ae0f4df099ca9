"""The inbox index: what finished maintenance cycles read, so a cycle reads only new files.

A SQLite file beside the registry's runs (`<registry>/maintain/inbox-index.db`), owned by this module.
Every row carries the id of the run that read it, and a row counts only once that run is done in the
registry (no_action, promoted, rejected):
- a cycle stages its rows right after its run row is opened; the run's details (written by the registry in
  the SAME transaction that marks it done, with the promotion's when it promotes) record how many rows of
  each table it staged and the sha256 of its file rows: the registry's record is the commit of the index;
- at the next cycle, rows of runs that are not done (killed, failed, interrupted, superseded) are deleted,
  so a cycle killed at any step marks nothing used, and its rerun reads the same files once;
- the per-run counts (every cycle) and the file rows' digests are checked against the registry's record;
  the captures, feedback and row tables are digested per run whenever a lookup uses a row of that run. A
  mismatch, an unreadable file, or done runs from before the index (a registry of the previous format:
  `details["files"]` only) make the cycle rebuild the index once from the files those runs read, with a
  note; it is never trusted silently. What such files held is lost if they left the inbox since.
Its growth: one row per file, per dropped row, per captured request and per labelled request, forever
(texts of captures included where the server stored them: deleting a capture file no longer removes its
text from the maintenance loop's memory). That is a few hundred bytes a row: fine for years of serving.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from refit.maintain.known import FileStamp, InboxEntries

__all__ = ["INDEX_FILE", "INDEX_KEY", "IndexDamaged", "InboxIndex", "open_index", "rebuild_paths"]

INDEX_FILE = "inbox-index.db"  # under <registry>/maintain/
INDEX_KEY = "inbox_index"  # the key of a run's details that records what it staged
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (run_id INTEGER NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, kind TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS files_sha ON files (sha256);
CREATE TABLE IF NOT EXISTS rows (run_id INTEGER NOT NULL, key TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS rows_key ON rows (key);
CREATE TABLE IF NOT EXISTS captures (run_id INTEGER NOT NULL, request_id TEXT NOT NULL, text TEXT);
CREATE INDEX IF NOT EXISTS captures_rid ON captures (request_id);
CREATE TABLE IF NOT EXISTS feedback (run_id INTEGER NOT NULL, request_id TEXT NOT NULL, at TEXT NOT NULL,
    label INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS feedback_rid ON feedback (request_id);
"""
# table -> the columns of a row in its digest, in order
_COLUMNS = {
    "files": ("path", "size", "mtime_ns", "sha256", "kind"),
    "rows": ("key",),
    "captures": ("request_id", "text"),
    "feedback": ("request_id", "at", "label"),
}
_CHUNK = 500  # request ids per IN (...) lookup: under SQLite's bound-parameter limit


class IndexDamaged(Exception):
    """The index does not match the registry's record of what finished cycles staged (rebuilt, noted)."""


class InboxIndex:
    """The SQLite index of one registry, holding only rows of the runs in `trusted` for lookups."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[int, dict] = {}  # run id -> the registry's record of what it staged
        self._checked: set[int] = set()  # runs whose rows were digested this cycle
        self.set_aside: str | None = None  # said when an unreadable index file was moved aside
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None)
            db.executescript(_SCHEMA)
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("failed SQLite's integrity check")
            return db
        except (
            sqlite3.DatabaseError
        ) as e:  # not SQLite, or damaged: set aside (kept for a look), start afresh
            aside = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
            os.replace(self.path, aside)
            self.set_aside = f"{self.path} was unreadable ({e}); moved to {aside}"
            return self._open()

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    # --- trust ----------------------------------------------------------------------------------------
    def trust(self, records: dict[int, dict]) -> None:
        """Keep only the rows of the done runs in `records` (run id -> its INDEX_KEY record); check the
        per-run counts and file digests. Raises IndexDamaged when the rows differ from the records."""
        self.records, self._checked = dict(records), set()
        keep = sorted(records)
        with self._tx() as db:
            marks = ",".join("?" * len(keep))
            for table in _COLUMNS:
                db.execute(f"DELETE FROM {table} WHERE run_id NOT IN ({marks})", keep)
        counts: dict[int, dict[str, int]] = {r: {} for r in records}
        for table in _COLUMNS:
            for run_id, n in self._db.execute(f"SELECT run_id, count(*) FROM {table} GROUP BY run_id"):
                counts[run_id][table] = n
        for run_id, record in records.items():
            want = {t: n for t, n in record.get("counts", {}).items() if n}
            if counts[run_id] != want:
                raise IndexDamaged(
                    f"run {run_id} staged {want or 'nothing'} but the index holds {counts[run_id] or 'nothing'}"
                )
            if self._digest("files", run_id) != record.get("files_sha256"):
                raise IndexDamaged(f"the file rows of run {run_id} were changed since it finished")

    def clear(self) -> None:
        with self._tx() as db:
            for table in _COLUMNS:
                db.execute(f"DELETE FROM {table}")
        self.records = {}

    def _digest(self, table: str, run_id: int) -> str:
        cols = _COLUMNS[table]
        h = hashlib.sha256()
        query = f"SELECT {', '.join(cols)} FROM {table} WHERE run_id = ? ORDER BY {', '.join(cols)}"
        for row in self._db.execute(query, (run_id,)):
            h.update(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
        return h.hexdigest()

    def _check(self, run_ids: Iterable[int]) -> None:
        """Digest every row table of each run a lookup used (once a cycle) against the registry's record."""
        for run_id in set(run_ids) - self._checked:
            record = self.records.get(run_id, {})
            for table in ("rows", "captures", "feedback"):
                if self._digest(table, run_id) != record.get(f"{table}_sha256"):
                    raise IndexDamaged(f"the {table} rows of run {run_id} were changed since it finished")
            self._checked.add(run_id)

    # --- staging ----------------------------------------------------------------------------------------
    def stage(self, run_id: int, entries: InboxEntries) -> dict:
        """Write a run's rows (counted only once the run is done) and return the record its details keep."""
        with self._tx() as db:
            for table in _COLUMNS:
                db.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            db.executemany(
                "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?)",
                [(run_id, p, *stamp) for p, stamp in entries.files.items()],
            )
            db.executemany("INSERT INTO rows VALUES (?, ?)", [(run_id, k) for k in entries.rows])
            db.executemany(
                "INSERT INTO captures VALUES (?, ?, ?)",
                [(run_id, rid, t) for rid, texts in entries.captures.items() for t in texts],
            )
            db.executemany(
                "INSERT INTO feedback VALUES (?, ?, ?, ?)",
                [(run_id, rid, at, y) for rid, (at, labels) in entries.feedback.items() for y in labels],
            )
        record: dict = {"counts": {}}
        for table in _COLUMNS:
            record["counts"][table] = self._db.execute(
                f"SELECT count(*) FROM {table} WHERE run_id = ?", (run_id,)
            ).fetchone()[0]
            record[f"{table}_sha256"] = self._digest(table, run_id)
        return record

    # --- Known ------------------------------------------------------------------------------------------
    def file(self, path: str) -> FileStamp | None:
        row = self._db.execute(
            "SELECT size, mtime_ns, sha256, kind FROM files WHERE path = ? ORDER BY run_id DESC LIMIT 1",
            (path,),
        ).fetchone()
        return FileStamp(*row) if row else None

    def has_content(self, sha256: str) -> bool:
        return (
            self._db.execute("SELECT 1 FROM files WHERE sha256 = ? LIMIT 1", (sha256,)).fetchone() is not None
        )

    def _lookup(self, query: str, keys: Iterable[str]) -> list[tuple]:
        keys, out = list(dict.fromkeys(keys)), []
        for i in range(0, len(keys), _CHUNK):
            part = keys[i : i + _CHUNK]
            out += self._db.execute(query.format(",".join("?" * len(part))), part).fetchall()
        self._check(row[0] for row in out)
        return out

    def rows(self, keys: Iterable[str]) -> set[str]:
        return {k for _, k in self._lookup("SELECT run_id, key FROM rows WHERE key IN ({})", keys)}

    def captures(self, rids: Iterable[str]) -> dict[str, set[str | None]]:
        out: dict[str, set[str | None]] = {}
        for _, rid, text in self._lookup(
            "SELECT run_id, request_id, text FROM captures WHERE request_id IN ({})", rids
        ):
            out.setdefault(rid, set()).add(text)
        return out

    def feedback(self, rids: Iterable[str]) -> dict[str, tuple[str, frozenset[int]]]:
        merged = InboxEntries()
        for _, rid, at, label in self._lookup(
            "SELECT run_id, request_id, at, label FROM feedback WHERE request_id IN ({})", rids
        ):
            merged.add_feedback(rid, at, (label,))
        return merged.feedback


def open_index(path: Path, done_runs: list[dict]) -> tuple[InboxIndex, set[str] | None, list[str]]:
    """The index trusted for this cycle's lookups, given the registry's done maintain runs; with the paths
    to read again to rebuild it (None when it is whole) and the notes that say why.

    A record with `base` was staged by a cycle that rebuilt the index: it covers every earlier done run.
    Done runs after the latest base without a record are from before the index (or a damaged record): the
    index is rebuilt from the files every done run read (their `details["files"]`)."""
    index, notes = InboxIndex(path), []
    if index.set_aside:
        notes.append(f"the inbox index {index.set_aside}")
    records = {
        r["id"]: r["details"][INDEX_KEY] for r in done_runs if isinstance(r["details"].get(INDEX_KEY), dict)
    }
    start = max((i for i, rec in records.items() if rec.get("base")), default=None)
    legacy = [r["id"] for r in done_runs if r["id"] not in records and (start is None or r["id"] > start)]
    trusted = {i: rec for i, rec in records.items() if start is None or i >= start}
    try:
        index.trust({} if legacy else trusted)
    except IndexDamaged as e:
        notes.append(f"the inbox index does not match the registry ({e}): rebuilt from the inbox files")
        legacy = legacy or [-1]
    if legacy:
        if not notes:
            notes.append(
                f"{len(legacy)} finished cycle(s) predate the inbox index: built once from the files they read"
            )
        index.clear()
        return index, rebuild_paths(done_runs), notes
    return index, None, notes


def rebuild_paths(done_runs: list[dict]) -> set[str]:
    """Every file a done run read: what a rebuild of the index reads again."""
    return {f for r in done_runs for f in r["details"].get("files", [])}
