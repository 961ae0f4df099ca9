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
What it keeps, and what it does not: no text. Per file: its path, size, mtime, sha256 and kind; per dropped
row: an HMAC of its (text, label); per captured request: its request id, an HMAC of its text (None when the
server did not store it), and where the text lives (its capture file's `files` row, whose sha256 a lookup
joins back, and the row's position; an index of format 2 held the sha256 in every capture row: converted
in place when opened); per labelled request: its latest feedback time and label(s). The HMAC key is 32 random bytes in `KEY_FILE`
(0600, beside the index, made on first use; each run's record names it by `key_id`, so a lost or replaced
key makes the next cycle rebuild the index under the new one). Without the key a hash cannot be tested
against guessed texts; what the index still reveals to a reader is request ids, file names, label counts,
and equality: which captures or dropped rows hold the same text. A captured text is read back from its
file only when a label arrives for it (refit.maintain.inbox), so deleting or rewriting a capture file
makes the loop forget its texts. An index of the first format (it kept captured texts) is emptied and
VACUUMed when it is opened, then rebuilt from the files still in the inbox, with a note.
Files set aside as `.damaged-*` (an index SQLite cannot read, a key file that is not a key) are kept
forever, for a look: they hold no text. A damaged index of format 2 or 3 holds what the index does (ids,
file names, keyed hashes); one whose raw header says it may be of the first format cannot be vacuumed, so
it is deleted instead, with a note (only a first-format file whose header itself is destroyed is still set
aside, texts and all: it no longer reads as SQLite). A key file refit wrote holds only the hex key; kept beside a
set-aside index hashed under it, the two let a reader test guessed texts, as the live pair does.
Its growth: one row per file, per dropped row, per captured request and per labelled request, forever,
measured with SQLite's indexes in scripts/bench_inbox.py (scripts/results/inbox.md; a capture row holds a
128-bit HMAC and an integer naming its file). What a cycle still pays per old file is a directory entry, a stat and an
indexed lookup, plus, per late label for an old capture, one read of its capture file (0.16 ms when the
file is read for that label alone); the full check (after a failed or killed cycle, or an edit) is one
pass of SQLite and sha256 over the whole index: 1.32 s for 750,000 rows here (67 MB).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from refit.maintain.known import CaptureRef, FileStamp, InboxEntries, keyed

__all__ = [
    "FORMAT",
    "INDEX_FILE",
    "INDEX_KEY",
    "KEY_FILE",
    "IndexDamaged",
    "InboxIndex",
    "file_stamp",
    "open_index",
    "rebuild_paths",
    "Digests",
    "request_digests",
]

INDEX_FILE = "inbox-index.db"  # under <registry>/maintain/
KEY_FILE = "inbox-index.key"  # beside it: the registry's HMAC key of every hash of a text in the index
INDEX_KEY = "inbox_index"  # the key of a run's details that records what it staged
FORMAT = 3  # 1 (no "format" in the record): captures kept their texts; 2: no text, only where it lives
# (each capture row held its file's sha256); 3: a capture row names its file by the `files` row (seq). A
# run's record hashes the same logical rows in 2 and 3 (the sha256 joined back in), so a record of either
# checks a format-3 index: a format-2 file is converted in place, nothing is rebuilt.
_SAME_ROWS = (2, FORMAT)
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
    request_id TEXT NOT NULL, digest TEXT, file_seq INTEGER, row INTEGER NOT NULL);
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
    "captures": ("request_id", "digest", "file_seq", "row"),
    "feedback": ("request_id", "at", "label"),
}
_CHUNK = 500  # keys per IN (...) lookup: under SQLite's bound-parameter limit


class IndexDamaged(Exception):
    """The index does not match the registry's record of what finished cycles staged (rebuilt, noted)."""


class InboxIndex:
    """The SQLite index of one registry; lookups see only the rows of the runs passed to `trust`. `key` is
    the registry's HMAC key (`load_key`): every hash of a text in the index is keyed with it."""

    def __init__(self, path: Path, key: bytes, *, check: bool = True) -> None:
        """Open (or create) the index; `check=False` skips SQLite's integrity scan (the file is as the last
        done run left it: see `open_index`). An index of the first format (captured texts in it) is emptied
        and vacuumed at once, so those texts are gone from the file (`migrated` says so)."""
        self.path, self.key = path, key
        self.set_aside: str | None = None  # said when an unreadable index file was moved aside
        self.migrated = False  # the file was of the first format: its tables were dropped and vacuumed
        self.converted = False  # the file was of format 2: its capture rows now name their file by seq
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._open(check)

    def _create(self) -> None:
        """An empty file, owner-only before anything is in it (request ids and hashes, like the inbox)."""
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))

    def _open(self, check: bool = True) -> sqlite3.Connection:
        self._create()
        try:
            db = sqlite3.connect(self.path, isolation_level=None)
            if check and db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("failed SQLite's integrity check")
            self._migrate(db)
            db.executescript(_SCHEMA)
            return db
        except (
            sqlite3.DatabaseError
        ) as e:  # not SQLite, or damaged: set aside (kept for a look), start afresh
            if _may_hold_texts(self.path):  # cannot be vacuumed, and a set-aside file is kept forever
                self.path.unlink()
                self.set_aside = (
                    f"{self.path} was unreadable ({e}) and may be of the first format (it kept captured texts): "
                    "deleted, not set aside"
                )
                return self._open()
            aside = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
            os.replace(self.path, aside)
            self.set_aside = f"{self.path} was unreadable ({e}); moved to {aside}"
            return self._open()

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Convert an index of format 2 in place (`_convert`); drop the tables of any other format (the first
        kept captured texts) and VACUUM, so nothing of them is left in the file's free pages; the caller then
        rebuilds from the files."""
        tables = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if tables and version == 2 and "captures" in tables:
            self._convert(db)
        elif tables and version != FORMAT:
            db.execute("PRAGMA secure_delete = ON")
            for name in tables:
                db.execute(f'DROP TABLE "{name}"')
            db.execute("VACUUM")
            self.migrated = True
        db.execute(f"PRAGMA user_version = {FORMAT}")

    def _convert(self, db: sqlite3.Connection) -> None:
        """Format 2 -> 3: each capture row's 64-hex file sha256 becomes the seq of its run's `files` row
        with that sha256 (NULL when none: the check against the run's record then fails, and the index is
        rebuilt), in one transaction; then VACUUM. The records' hashes still hold (`_digests` joins back)."""
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in (  # one by one: executescript would commit the transaction first
                "CREATE TABLE captures_3 (seq INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, "
                "request_id TEXT NOT NULL, digest TEXT, file_seq INTEGER, row INTEGER NOT NULL)",
                # one grouped map joined (a correlated lookup per row took 23 s at 500,000 captures)
                "INSERT INTO captures_3 (seq, run_id, request_id, digest, file_seq, row) SELECT c.seq, "
                "c.run_id, c.request_id, c.digest, m.seq, c.row FROM captures c LEFT JOIN (SELECT run_id, "
                "sha256, min(seq) AS seq FROM files GROUP BY run_id, sha256) m ON m.run_id = c.run_id "
                "AND m.sha256 = c.file",
                "DROP TABLE captures",
                "ALTER TABLE captures_3 RENAME TO captures",
            ):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {FORMAT}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("VACUUM")
        self.converted = True

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
        """Empty the index for a rebuild, and VACUUM: hashes of what left the inbox leave the file too."""
        with self._tx() as db:
            for table in _COLUMNS:
                db.execute(f"DELETE FROM {table}")
        self._db.execute("VACUUM")

    def _digests(self, run_id: int | None = None) -> dict[int, dict[str, str]]:
        """run id -> table -> sha256 of its rows in staging order, in one pass of SQLite over each table
        (run only when the file may have changed since the last done run: see `open_index`)."""
        out: dict[int, dict[str, str]] = {}
        where = "" if run_id is None else f"WHERE t.run_id = {int(run_id)}"
        for table, cols in _COLUMNS.items():
            # a capture row is hashed with its file's sha256 joined back (as format 2 stored it), so the
            # records of both formats check it, and a files row deleted or edited under it shows too
            source, values = f"{table} t", [f"t.{c}" for c in cols]
            if table == "captures":
                source += " LEFT JOIN files f ON f.seq = t.file_seq"
                values[cols.index("file_seq")] = "f.sha256"
            query = (
                f"SELECT run_id, group_concat(v, char(10)) FROM (SELECT t.run_id AS run_id, "
                f"json_array({', '.join(values)}) AS v FROM {source} {where} ORDER BY t.run_id, t.seq) "
                "GROUP BY run_id"
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
            "captures": [(rid, *ref) for rid, refs in entries.captures.items() for ref in refs],
            "feedback": [(rid, at, y) for rid, (at, labels) in entries.feedback.items() for y in labels],
        }
        if any(
            tables.values()
        ):  # nothing to stage writes nothing: the file stays as the last done run left it
            with self._tx() as db:
                for table, rows in tables.items():  # files first: captures name their file by its seq
                    cols = ", ".join(("run_id", *_COLUMNS[table]))
                    marks = ",".join("?" * (len(_COLUMNS[table]) + 1))
                    db.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
                    if table == "captures":
                        rows = self._file_seqs(db, run_id, rows)
                    db.executemany(
                        f"INSERT INTO {table} ({cols}) VALUES ({marks})", [(run_id, *row) for row in rows]
                    )
        return {
            "format": FORMAT,
            "key": key_id(self.key),
            "counts": {t: len(r) for t, r in tables.items()},
            "sha256": self._digests(run_id).get(run_id, {}),
            "file": file_stamp(self.path),
        }

    @staticmethod
    def _file_seqs(db: sqlite3.Connection, run_id: int, rows: list[tuple]) -> list[tuple]:
        """Capture rows (request_id, digest, file sha256, row) with the sha256 replaced by the seq of the
        run's `files` row of that content: a capture is staged by the run that read its file."""
        seqs = dict(
            db.execute("SELECT sha256, min(seq) FROM files WHERE run_id = ? GROUP BY sha256", (run_id,))
        )
        missing = {sha for _, _, sha, _ in rows if sha not in seqs}
        if missing:
            raise ValueError(f"captures staged without their capture file's row: {sorted(missing)[:3]}")
        return [(rid, digest, seqs[sha], row) for rid, digest, sha, row in rows]

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

    def paths(self, sha256s: Iterable[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for path, _, _, sha, _ in self._lookup("files", "sha256", sha256s):
            out.setdefault(sha, []).append(path)
        return {sha: list(dict.fromkeys(found)) for sha, found in out.items()}

    def rows(self, keys: Iterable[str]) -> set[str]:
        return {k for (k,) in self._lookup("rows", "key", keys)}

    def captures(self, rids: Iterable[str]) -> dict[str, set[CaptureRef]]:
        keys, out = list(dict.fromkeys(rids)), {}
        for i in range(0, len(keys), _CHUNK):
            part = keys[i : i + _CHUNK]
            query = (
                "SELECT c.request_id, c.digest, f.sha256, c.row FROM captures c JOIN files f ON "
                f"f.seq = c.file_seq WHERE c.request_id IN ({','.join('?' * len(part))})"
            )
            for rid, digest, file, row in self._db.execute(query, part):
                out.setdefault(rid, set()).add(CaptureRef(digest, file, row))
        return out

    def feedback(self, rids: Iterable[str]) -> dict[str, tuple[str, frozenset[int]]]:
        merged = InboxEntries()
        for rid, at, label in self._lookup("feedback", "request_id", rids):
            merged.add_feedback(rid, at, (label,))
        return merged.feedback


def _may_hold_texts(path: Path) -> bool:
    """Whether an unreadable index file is an SQLite file whose header (read raw: SQLite cannot open it) says
    it is not of format 2 or 3, i.e. possibly of the first format, which kept captured texts."""
    with open(path, "rb") as f:
        header = f.read(100)
    return header[:16] == b"SQLite format 3\x00" and int.from_bytes(header[60:64], "big") not in _SAME_ROWS


def file_stamp(path: Path) -> list[int] | None:
    """(size, mtime_ns, ctime_ns, inode) of the index file: any write, copy or restore changes it (a ctime
    cannot be set back by a user), so a file with the stamp a done run recorded is as that run left it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def load_key(path: Path) -> tuple[bytes, str | None]:
    """The registry's HMAC key (32 random bytes, hex, in a 0600 file), made on first use; with a note when
    it was missing after earlier cycles or unreadable (a new key: the index is rebuilt under it). Never
    overwrites a key another process made meanwhile."""
    try:
        text = path.read_text(encoding="ascii").strip()
        if re.fullmatch(r"[0-9a-f]{64}", text):
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)
            return bytes.fromhex(text), None
        note = f"the inbox index key {path} was not a key: set aside, a new one made"
        os.replace(path, path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"))
    except FileNotFoundError:
        note = None
    except (OSError, UnicodeDecodeError) as e:
        note = f"the inbox index key {path} was unreadable ({e}): a new one made"
        with contextlib.suppress(OSError):
            os.replace(path, path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"))
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(fd, (secrets.token_bytes(32).hex() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temp, path)  # fails if a key appeared meanwhile: that one is kept
    except FileExistsError:
        return load_key(path)
    finally:
        os.unlink(temp)
    return bytes.fromhex(path.read_text(encoding="ascii").strip()), note


def key_id(key: bytes) -> str:
    """What a run's record keeps to say which key its rows were hashed with (not the key)."""
    return keyed(key, "refit inbox index key id")[:16]


def open_index(path: Path, done_runs: list[dict]) -> tuple[InboxIndex, set[str] | None, list[str]]:
    """The index trusted for this cycle's lookups, given the registry's done maintain runs; with the paths
    to read again to rebuild it (None when it is whole) and the notes that say why.

    Only records of this FORMAT hashed under the registry's current key (`KEY_FILE`) are trusted. A record
    with `base` was staged by a cycle that rebuilt the index: it covers every earlier done run. Done runs
    after the latest base without such a record are from before the index, from an index of the first
    format (it kept captured texts), from before a key change, or have a damaged record: the index is
    rebuilt from the files every done run read (their `details["files"]`), so what left the inbox since is
    forgotten. When the file still has the stamp the latest done run recorded, nothing wrote it since (the
    usual case: the last cycle finished) and it was whole then: the full check is skipped. Otherwise (a
    cycle failed or was killed since, or the file was edited, copied or restored) every row of every done
    run is checked."""
    key, key_note = load_key(path.with_name(KEY_FILE))
    kid = key_id(key)
    found = {
        r["id"]: r["details"][INDEX_KEY] for r in done_runs if isinstance(r["details"].get(INDEX_KEY), dict)
    }
    records = {
        i: rec for i, rec in found.items() if rec.get("format") in _SAME_ROWS and rec.get("key") == kid
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
    index, notes = InboxIndex(path, key, check=not unchanged), [*([key_note] if key_note else [])]
    if index.set_aside:
        notes.append(f"the inbox index {index.set_aside}")
    if index.converted:
        unchanged = False  # converted in place: checked in full against the records below
        notes.append(
            "the inbox index was converted from format 2 to 3 (a capture row names its file's index row "
            "instead of holding its sha256) and checked against the registry's records"
        )
    try:
        if not unchanged:
            index.trust({} if legacy else trusted)
    except IndexDamaged as e:
        notes.append(f"the inbox index does not match the registry ({e}): rebuilt from the inbox files")
        legacy = legacy or [-1]
    if legacy:
        stale = [i for i in legacy if i in found]
        if index.migrated or any("format" not in found[i] for i in stale):
            notes.append(
                "the inbox index was of the previous format (it kept captured texts): emptied and vacuumed, "
                "rebuilt without texts from the files earlier cycles read that are still in the inbox"
            )
        elif stale and not key_note:
            notes.append(
                "the inbox index key changed: the index is rebuilt from the inbox files under the new key"
            )
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


class Digests(NamedTuple):
    """What `request_digests` found: the registry's key, per request id the keyed hashes of its texts, and
    `problem`: why the index could not be searched (a damaged key or database), None when it was, or when
    there is nothing to search (no cycle ever ran)."""

    key: bytes | None
    found: dict[str, set[str]]
    problem: str | None = None


def request_digests(folder: Path, rids: set[str]) -> Digests:
    """The registry's key and, per request id of `rids`, the keyed hashes of the texts the index holds for
    it, read without changing what is committed (`folder`: <registry>/maintain). A forget scrubs by them
    too, so a text whose capture file is already gone is still found in the run folders (and said per
    request). No key and no index: nothing to search, no problem. A key or index that exists but cannot be
    read is a `problem` the forget must say (it fails closed: texts whose capture file is gone could not be
    looked for); it used to be passed over in silence. Rows of runs that are not done are included: they
    can only make a forget remove more.

    Opened for writing (never created: mode=rw), not read-only: after a cycle killed inside a transaction
    the index has a hot rollback journal, which SQLite rolls back on the first read, and cannot on a
    read-only connection ("attempt to write a readonly database"): the forget then found no hash at all
    and the journal stayed. The caller holds the maintenance lock, so no cycle is writing meanwhile."""
    key_file, db_file = folder / KEY_FILE, folder / INDEX_FILE
    if not key_file.exists():
        problem = (
            f"the inbox index {db_file} exists but its key {key_file} is missing"
            if db_file.exists()
            else None
        )
        return Digests(None, {}, problem)
    try:
        text = key_file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as e:
        return Digests(None, {}, f"the inbox index's key {key_file} cannot be read ({type(e).__name__})")
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        return Digests(None, {}, f"the inbox index's key {key_file} is damaged (not 64 hex digits)")
    key, found = bytes.fromhex(text), {}
    if not db_file.is_file():
        return Digests(key, found)
    try:
        db = sqlite3.connect(f"{db_file.resolve().as_uri()}?mode=rw", uri=True)
        try:
            ids = sorted(rids)
            for i in range(0, len(ids), _CHUNK):
                part = ids[i : i + _CHUNK]
                query = f"SELECT request_id, digest FROM captures WHERE digest IS NOT NULL AND request_id IN ({','.join('?' * len(part))})"
                for rid, d in db.execute(query, part):
                    found.setdefault(rid, set()).add(d)
        finally:
            db.close()
    except sqlite3.DatabaseError as e:  # damaged or of another format: the capture rows' texts still match
        return Digests(key, {}, f"the inbox index {db_file} cannot be searched ({e})")
    return Digests(key, found)
