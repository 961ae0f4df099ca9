"""The inbox index: what finished maintenance cycles read, so a cycle reads only new files.

A SQLite file beside the registry's runs (`<registry>/maintain/inbox-index.db`), owned by this module.
Every row carries the id of the run that read it, and a row counts only once that run is done in the
registry (no_action, promoted, rejected):
- a cycle stages its rows right after its run row is opened; the run's details (written by the registry in
  the SAME transaction that marks it done, with the promotion's when it promotes) record how many rows of
  each table it staged and their sha256: the registry's record is the commit of the index;
- at the next cycle, rows of runs that are not done (killed, failed, interrupted, superseded) are deleted,
  so a cycle killed at any step marks nothing used, and its rerun reads the same files once;
- the index is checked against those records: every done run's rows (a row edited, deleted or added),
  unless the file still has the stamp (size, mtime, ctime, inode) the latest done run recorded right
  after it staged, i.e. nothing wrote it since (the usual case; see `open_index`). A mismatch, an
  unreadable file, or done runs from before the index (a registry of the previous format:
  `details["files"]` only) make the cycle rebuild the index from the files those runs read, with a note:
  it is never trusted silently. What such files held is lost if they left the inbox since.
Its growth: one row per file, per dropped row, per captured request and per labelled request, forever
(texts of captures included where the server stored them: deleting a capture file no longer removes its
text from the maintenance loop's memory), about 90 bytes a row with SQLite's indexes in
scripts/bench_inbox.py. What a cycle still pays per old file is a directory entry, a stat and an indexed
lookup; the full check (after a failed or killed cycle, or an edit) is one pass of SQLite and sha256
over the whole index: 1.2 s for 750,000 rows here, against 5-6 s to re-parse their files every cycle.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from refit.maintain.known import FileStamp, InboxEntries

__all__ = [
    "INDEX_FILE",
    "INDEX_KEY",
    "IndexDamaged",
    "InboxIndex",
    "file_stamp",
    "open_index",
    "rebuild_paths",
]

INDEX_FILE = "inbox-index.db"  # under <registry>/maintain/
INDEX_KEY = "inbox_index"  # the key of a run's details that records what it staged
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (seq INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, path TEXT NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, kind TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS files_path ON files (path, run_id);
CREATE INDEX IF NOT EXISTS files_sha ON files (sha256);
CREATE INDEX IF NOT EXISTS files_run ON files (run_id);
CREATE TABLE IF NOT EXISTS rows (seq INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, key TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS rows_key ON rows (key);
CREATE INDEX IF NOT EXISTS rows_run ON rows (run_id);
CREATE TABLE IF NOT EXISTS captures (seq INTEGER PRIMARY KEY, run_id INTEGER NOT NULL,
    request_id TEXT NOT NULL, text TEXT);
CREATE INDEX IF NOT EXISTS captures_rid ON captures (request_id);
CREATE INDEX IF NOT EXISTS captures_run ON captures (run_id);
CREATE TABLE IF NOT EXISTS feedback (seq INTEGER PRIMARY KEY, run_id INTEGER NOT NULL,
    request_id TEXT NOT NULL, at TEXT NOT NULL, label INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS feedback_rid ON feedback (request_id);
CREATE INDEX IF NOT EXISTS feedback_run ON feedback (run_id);
"""
# table -> the columns of a row (after seq and run_id)
_COLUMNS = {
    "files": ("path", "size", "mtime_ns", "sha256", "kind"),
    "rows": ("key",),
    "captures": ("request_id", "text"),
    "feedback": ("request_id", "at", "label"),
}
_CHUNK = 500  # keys per IN (...) lookup: under SQLite's bound-parameter limit


class IndexDamaged(Exception):
    """The index does not match the registry's record of what finished cycles staged (rebuilt, noted)."""


class InboxIndex:
    """The SQLite index of one registry; lookups see only the rows of the runs passed to `trust`."""

    def __init__(self, path: Path, *, check: bool = True) -> None:
        """Open (or create) the index; `check=False` skips SQLite's integrity scan (the file is as the last
        done run left it: see `open_index`)."""
        self.path = path
        self.set_aside: str | None = None  # said when an unreadable index file was moved aside
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._open(check)

    def _create(self) -> None:
        """An empty file, owner-only before anything is in it (it holds captured texts, like the inbox)."""
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))

    def _open(self, check: bool = True) -> sqlite3.Connection:
        self._create()
        try:
            db = sqlite3.connect(self.path, isolation_level=None)
            db.executescript(_SCHEMA)
            if check and db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
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
        """Keep only the rows of the done runs in `records` (run id -> its INDEX_KEY record) and check every
        one of them against its run's record. Raises IndexDamaged when any differs."""
        keep = sorted(records)
        with self._tx() as db:
            marks = ",".join("?" * len(keep))
            for table in _COLUMNS:
                db.execute(f"DELETE FROM {table} WHERE run_id NOT IN ({marks})", keep)
        found = self._digests()
        for run_id, record in records.items():
            want = {t: d for t, d in record.get("sha256", {}).items() if record.get("counts", {}).get(t)}
            if found.get(run_id, {}) != want:
                changed = sorted(
                    set(want) ^ set(found.get(run_id, {}))
                    | {t for t in want if found.get(run_id, {}).get(t) not in (None, want[t])}
                )
                raise IndexDamaged(
                    f"the {', '.join(changed)} rows of run {run_id} differ from what it staged"
                )

    def clear(self) -> None:
        with self._tx() as db:
            for table in _COLUMNS:
                db.execute(f"DELETE FROM {table}")

    def _digests(self, run_id: int | None = None) -> dict[int, dict[str, str]]:
        """run id -> table -> sha256 of its rows in staging order, in one pass of SQLite over each table
        (run only when the file may have changed since the last done run: see `open_index`)."""
        out: dict[int, dict[str, str]] = {}
        where = "" if run_id is None else f"WHERE run_id = {int(run_id)}"
        for table, cols in _COLUMNS.items():
            query = (
                f"SELECT run_id, group_concat(json_array({', '.join(cols)}), char(10)) FROM "
                f"(SELECT * FROM {table} {where} ORDER BY run_id, seq) GROUP BY run_id"
            )
            for rid, text in self._db.execute(query):
                out.setdefault(rid, {})[table] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return out

    # --- staging ----------------------------------------------------------------------------------------
    def stage(self, run_id: int, entries: InboxEntries) -> dict:
        """Write a run's rows (counted only once the run is done) and return the record its details keep:
        the row count and sha256 of each table's rows, and the index file's stamp once written."""
        tables = {
            "files": [(p, *stamp) for p, stamp in entries.files.items()],
            "rows": [(k,) for k in entries.rows],
            "captures": [(rid, t) for rid, texts in entries.captures.items() for t in texts],
            "feedback": [(rid, at, y) for rid, (at, labels) in entries.feedback.items() for y in labels],
        }
        if any(
            tables.values()
        ):  # nothing to stage writes nothing: the file stays as the last done run left it
            with self._tx() as db:
                for table, rows in tables.items():
                    cols = ", ".join(("run_id", *_COLUMNS[table]))
                    marks = ",".join("?" * (len(_COLUMNS[table]) + 1))
                    db.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
                    db.executemany(
                        f"INSERT INTO {table} ({cols}) VALUES ({marks})", [(run_id, *row) for row in rows]
                    )
        return {
            "counts": {t: len(r) for t, r in tables.items()},
            "sha256": self._digests(run_id).get(run_id, {}),
            "file": file_stamp(self.path),
        }

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

    def _lookup(self, table: str, column: str, keys: Iterable[str]) -> list[tuple]:
        keys, out = list(dict.fromkeys(keys)), []
        cols = ", ".join(_COLUMNS[table])
        for i in range(0, len(keys), _CHUNK):
            part = keys[i : i + _CHUNK]
            query = f"SELECT {cols} FROM {table} WHERE {column} IN ({','.join('?' * len(part))})"
            out += self._db.execute(query, part).fetchall()
        return out

    def rows(self, keys: Iterable[str]) -> set[str]:
        return {k for (k,) in self._lookup("rows", "key", keys)}

    def captures(self, rids: Iterable[str]) -> dict[str, set[str | None]]:
        out: dict[str, set[str | None]] = {}
        for rid, text in self._lookup("captures", "request_id", rids):
            out.setdefault(rid, set()).add(text)
        return out

    def feedback(self, rids: Iterable[str]) -> dict[str, tuple[str, frozenset[int]]]:
        merged = InboxEntries()
        for rid, at, label in self._lookup("feedback", "request_id", rids):
            merged.add_feedback(rid, at, (label,))
        return merged.feedback


def file_stamp(path: Path) -> list[int] | None:
    """(size, mtime_ns, ctime_ns, inode) of the index file: any write, copy or restore changes it (a ctime
    cannot be set back by a user), so a file with the stamp a done run recorded is as that run left it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def open_index(path: Path, done_runs: list[dict]) -> tuple[InboxIndex, set[str] | None, list[str]]:
    """The index trusted for this cycle's lookups, given the registry's done maintain runs; with the paths
    to read again to rebuild it (None when it is whole) and the notes that say why.

    A record with `base` was staged by a cycle that rebuilt the index: it covers every earlier done run.
    Done runs after the latest base without a record are from before the index (or a damaged record): the
    index is rebuilt from the files every done run read (their `details["files"]`). When the file still has
    the stamp the latest done run recorded, nothing wrote it since (the usual case: the last cycle
    finished) and it was whole then: the full check is skipped. Otherwise (a cycle failed or was killed
    since, or the file was edited, copied or restored) every row of every done run is checked."""
    records = {
        r["id"]: r["details"][INDEX_KEY] for r in done_runs if isinstance(r["details"].get(INDEX_KEY), dict)
    }
    start = max((i for i, rec in records.items() if rec.get("base")), default=None)
    legacy = [r["id"] for r in done_runs if r["id"] not in records and (start is None or r["id"] > start)]
    trusted = {i: rec for i, rec in records.items() if start is None or i >= start}
    last = max(trusted, default=None)
    unchanged = (
        not legacy
        and last is not None
        and last == max(r["id"] for r in done_runs)
        and trusted[last].get("file") is not None
        and trusted[last]["file"] == file_stamp(path)
    )
    index, notes = InboxIndex(path, check=not unchanged), []
    if index.set_aside:
        notes.append(f"the inbox index {index.set_aside}")
    try:
        if not unchanged:
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
