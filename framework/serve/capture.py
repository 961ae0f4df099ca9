"""Capture and feedback files: rotating Parquet written by one background thread that never blocks a request.

The contract with the maintenance cycle (which reads these files), owned here (`file_kind`, `being_written`:
the inbox, `refit maintain forget` and the request-id check name files through them):
- complete files are `<prefix>-<UTC %Y%m%dT%H%M%SZ>-<6 hex>.parquet` in the capture folder, the prefix
  being CAPTURE or FEEDBACK;
- a file being written is the dot-file `.<prefix>-<stamp>-<hex>@<host>~<pid namespace>.<pid>.parquet.tmp`,
  renamed to its final name when it rotates (by rows or by seconds) and on shutdown, so a reader never sees
  half a file;
- capture rows: request_id, at, version_id, text (null when texts are not stored), text_sha256 (the text's
  sha256, null with the text: an unsalted hash of a short text is reversed by guessing, and its one reader,
  the inbox's edit check, needs the text beside it anyway), prediction (int64), label, probs
  (list<float32>); feedback rows: request_id, label, at (all strings; a feedback `at` to the microsecond,
  strictly increasing within a server process: FeedbackClock).

Files holding user text are created 0o600 through a descriptor of the capture folder opened without
following links, written through that descriptor, fsynced, renamed within the same folder, and the folder
is fsynced: a power cut leaves whole files or dot-files, and a capture folder swapped for a symbolic link
while serving (to send user text elsewhere) is refused, not followed. A link configured at startup is
resolved once, then held to.

Requests hand rows over with `put`, which never waits: when the bounded queue is full, or while the writer
cannot write (disk full, folder removed), rows are dropped and counted, and one log line says so. A
prediction must never fail because its record could not be kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import re
import secrets
import socket
import stat
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from refit.io import private_dir

__all__ = [
    "CAPTURE",
    "CAPTURE_SCHEMA",
    "FEEDBACK",
    "FEEDBACK_SCHEMA",
    "FeedbackClock",
    "SUFFIX",
    "RotatingParquetWriter",
    "being_written",
    "capture_row",
    "clean_abandoned",
    "feedback_row",
    "file_kind",
    "utc_now",
]

log = logging.getLogger("refit.serve")

CAPTURE_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("at", pa.string()),
        ("version_id", pa.string()),
        ("text", pa.string()),
        ("text_sha256", pa.string()),
        ("prediction", pa.int64()),
        ("label", pa.string()),
        ("probs", pa.list_(pa.float32())),
    ]
)
FEEDBACK_SCHEMA = pa.schema([("request_id", pa.string()), ("label", pa.string()), ("at", pa.string())])
CAPTURE, FEEDBACK = "capture", "feedback"  # the two kinds of file a server writes: the prefix of their names
SUFFIX = ".parquet"


def file_kind(name: str) -> str | None:
    """CAPTURE or FEEDBACK for the name of a complete file of that kind (`<kind>-....parquet`, the suffix in
    any case), None for any other name, a dot-file still being written included."""
    if name.lower().endswith(SUFFIX):
        for kind in (CAPTURE, FEEDBACK):
            if name.startswith(f"{kind}-"):
                return kind
    return None


def being_written(name: str, kind: str) -> bool:
    """Whether `name` is a dot-file of a `kind` file: a server is still writing it (or died writing it)."""
    return name.startswith(f".{kind}-")


_TEMP = re.compile(r"\.(?P<stem>[a-z]+-\d{8}T\d{6}Z-[0-9a-f]{6})@(?P<owner>.+)\.(?P<pid>\d+)\.parquet\.tmp")
_open_here: set[str] = set()  # dot-file names this process has open, so a second server in it spares them
_open_lock = threading.Lock()


def _owner() -> str:
    """This host and PID namespace, as written into a dot-file's name (a pid is only meaningful within both)."""
    host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:64] or "host"
    try:
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        ns = 0
    return f"{host}~{ns}"


def _gone(pid: int) -> bool:
    """True when no process `pid` exists (a zombie counts as gone: it writes nothing any more)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def clean_abandoned(folder: str | Path) -> list[tuple[str, int]]:
    """Delete the dot-files of dead writers of this host (see the module docstring); (name, bytes) of each."""
    folder = Path(folder).resolve()
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return []
    removed = []
    owner, me = _owner(), os.getpid()
    try:
        with _open_lock:
            for name in sorted(os.listdir(dir_fd)):
                m = _TEMP.fullmatch(name)
                if m is None or m["owner"] != owner or name in _open_here:
                    continue
                pid = int(m["pid"])
                if pid != me and not _gone(pid):
                    continue
                try:
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode):
                        os.unlink(name, dir_fd=dir_fd)
                        removed.append((name, st.st_size))
                except FileNotFoundError:  # another server cleaned it first
                    continue
            if removed:
                os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return removed


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class FeedbackClock:
    """The `at` of feedback rows: the UTC time to the microsecond (the precision the cycle compares them at,
    refit.maintain.known.utc_key), never repeating or going back within this process (a step of 1 us when
    the clock has not moved). The cycle takes a request's newest label, and drops the request when two
    labels tie at its latest time: two labels posted in one call, stamped to the millisecond, tied, so a
    correction was lost; with this the later post wins. Posts to two workers in the same microsecond can
    still tie (the cycle then drops the request and counts it)."""

    def __init__(self) -> None:
        self._last: datetime | None = None
        self._lock = threading.Lock()

    def __call__(self) -> str:
        now = datetime.now(timezone.utc)
        with self._lock:
            if self._last is not None and now <= self._last:
                now = self._last + timedelta(microseconds=1)
            self._last = now
        return now.isoformat(timespec="microseconds")


def capture_row(
    request_id: str,
    at: str,
    version_id: str,
    text: str,
    prediction: int,
    label: str,
    probs: Sequence[float],
    store_text: bool,
) -> dict:
    """One capture row. Without the text, no hash of it either: a plain sha256 of a short text can be
    reversed by guessing, and nothing needs it (drift reads texts; the loop joins labels by request id and
    keys its own hashes, refit.maintain.index)."""
    return {
        "request_id": request_id,
        "at": at,
        "version_id": version_id,
        "text": text if store_text else None,
        "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest() if store_text else None,
        "prediction": int(prediction),
        "label": label,
        "probs": [float(p) for p in probs],
    }


def feedback_row(request_id: str, label: str, at: str) -> dict:
    return {"request_id": request_id, "label": label, "at": at}


class RotatingParquetWriter:
    """A bounded queue drained by one thread into rotating Parquet files (see the module docstring).

    `put` accepts row *makers* (zero-argument callables returning a row dict) as well as dicts, so the
    per-row work (hashing, formatting) happens on the writer thread, not on the request's event loop.
    """

    def __init__(
        self,
        folder: str | Path,
        prefix: str,
        schema: pa.Schema,
        *,
        max_queue: int = 10000,
        rotate_rows: int = 10000,
        rotate_seconds: float = 300.0,
        flush_rows: int = 512,
        flush_seconds: float = 1.0,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
    ) -> None:
        self.folder = Path(folder).resolve()  # a link given at startup is the admin's choice: fixed here
        self.prefix = prefix
        self.schema = schema
        self.rotate_rows = rotate_rows
        self.rotate_seconds = rotate_seconds
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._on_written = on_written or (lambda n: None)
        self._on_dropped = on_dropped or (lambda n: None)
        self._dropped = 0
        self._written = 0
        self._warned = False  # one log line per episode of dropping, not one per row
        # Why the last write or finalise failed, until a file is finalised again: for /readyz, so that a
        # full disk is said where an operator looks (it was said once in the log and as a counter only).
        self._problem: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._writer: pq.ParquetWriter | None = None
        self._file = None  # the open dot-file (a Python file over our own descriptor)
        self._dir_fd: int | None = None  # the capture folder, opened without following links
        self._tmp: Path | None = None
        self._final: Path | None = None
        self._file_rows = 0
        self._opened_at = 0.0
        self.finished: list[Path] = []
        self._thread = threading.Thread(target=self._run, name=f"refit-{prefix}-writer", daemon=True)
        self._thread.start()

    # --- request side (never blocks) ---------------------------------------------------------------
    def put(self, rows: Sequence[dict | Callable[[], dict]]) -> int:
        """Queue rows; returns how many were accepted (the rest were dropped and counted)."""
        if self._stop.is_set():
            self._drop(len(rows), "the writer is closed")
            return 0
        for i, row in enumerate(rows):
            try:
                self._queue.put_nowait(row)
            except queue.Full:
                self._drop(len(rows) - i, f"its queue is full ({self._queue.maxsize} rows)")
                return i
        return len(rows)

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def written(self) -> int:
        """Rows in finalised files (visible to the maintenance cycle)."""
        return self._written

    @property
    def in_open_file(self) -> int:
        """Rows in the file being written (a dot-file until it is finalised)."""
        return self._file_rows

    @property
    def problem(self) -> str | None:
        """Why writing failed, from a failed write until the next file is finalised; None while it works.

        Cleared only by a finalised file, not by one good write: on a full disk the first small write to a
        fresh file succeeded and the next failed, so "working" flapped while no row reached a reader."""
        return self._problem

    def close(self, timeout: float = 30.0) -> bool:
        """Write everything queued, finalise the open file (rename it to its final name) and stop.

        Returns False when the writer had not finished within `timeout` (a hung disk): what it still held
        is lost with the process, and the caller must say so rather than report a clean shutdown."""
        self._stop.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- writer thread -----------------------------------------------------------------------------
    def _drop(self, n: int, why: str) -> None:
        if n <= 0:
            return
        with self._lock:
            self._dropped += n
            warn = not self._warned
            self._warned = True
        self._on_dropped(n)
        if warn:
            log.warning(
                "refit serve: %s rows are being dropped (%s); predictions are unaffected. "
                "The dropped count is in /metrics.",
                self.prefix,
                why,
            )

    def _run(self) -> None:
        buffer: list[dict] = []
        last_flush = time.monotonic()
        while True:
            stopping = self._stop.is_set()
            try:
                item = self._queue.get(timeout=0.1)
                buffer.append(item() if callable(item) else item)
                while len(buffer) < self.flush_rows:  # take what is already there without waiting
                    item = self._queue.get_nowait()
                    buffer.append(item() if callable(item) else item)
            except queue.Empty:
                pass
            except Exception as e:  # a row maker that failed: that row is lost, nothing else
                self._drop(1, f"a row could not be built: {e}")
            now = time.monotonic()
            if buffer and (
                len(buffer) >= self.flush_rows or now - last_flush >= self.flush_seconds or stopping
            ):
                while buffer:  # no file gets more than rotate_rows rows
                    room = self.rotate_rows - self._file_rows
                    self._write(buffer[:room])
                    buffer = buffer[room:]
                    if self._file_rows >= self.rotate_rows:
                        self._finish()
                last_flush = now
            if self._writer is not None and (
                self._file_rows >= self.rotate_rows or now - self._opened_at >= self.rotate_seconds
            ):
                self._finish()
            if stopping and self._queue.empty() and not buffer:
                self._finish()
                return

    def _open(self) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        stem = f"{self.prefix}-{stamp}-{secrets.token_hex(3)}"
        name = f"{stem}{SUFFIX}"
        if not self.folder.is_symlink():
            private_dir(self.folder)
        try:  # O_NOFOLLOW: a link swapped in between the check and here is refused too
            dir_fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            if not self.folder.is_symlink():
                raise
            raise OSError(
                f"the capture folder {self.folder} became a symbolic link (to {os.readlink(self.folder)}) "
                "after the server started; refusing to write user text through it"
            ) from None
        self._final = self.folder / name
        self._tmp = (
            self.folder / f".{stem}@{_owner()}.{os.getpid()}{SUFFIX}.tmp"
        )  # its owner: clean_abandoned
        # Captured inputs and labels are user data: owner-only (0o600) whatever the umask, created new
        # (O_EXCL: never an existing file or link) and written through this descriptor only.
        with _open_lock:  # registered before it exists: a cleaner in this process never sees it unowned
            _open_here.add(self._tmp.name)
        try:
            fd = os.open(
                self._tmp.name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd
            )
        except OSError:
            os.close(dir_fd)
            self._release(self._tmp.name)
            raise
        os.fchmod(fd, 0o600)  # os.open's mode is filtered by the umask; fchmod is not
        # Unbuffered: each written row group reaches the file at once, as with a path-opened sink.
        self._dir_fd, self._file = dir_fd, os.fdopen(fd, "wb", buffering=0)
        self._writer = pq.ParquetWriter(self._file, self.schema)
        self._file_rows = 0
        self._opened_at = time.monotonic()

    def _write(self, rows: list[dict]) -> None:
        try:
            if self._writer is None:
                self._open()
            self._writer.write_table(pa.Table.from_pylist(rows, schema=self.schema))
            self._file_rows += len(rows)  # counted as written once the file is finalised (see _finish)
            with self._lock:
                self._warned = False  # writing works again: the next failure gets its own log line
        except Exception as e:  # disk full, folder gone, permissions: degrade capture, never the server
            # The open file may be half-written: it is deleted, so its earlier rows are lost too.
            self._problem = f"writing {self._tmp or self.folder} failed: {e}"
            self._drop(len(rows) + self._file_rows, self._problem)
            self._abandon()

    def _finish(self) -> None:
        """Close the open file, fsync it, give it its final name and fsync the folder (rows in it become
        visible to readers, and survive a power cut once visible)."""
        if self._writer is None:
            return
        try:
            self._writer.close()  # writes the footer; the file object stays ours to close
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp.name, self._final.name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
            self._release(self._tmp.name)
            os.fsync(self._dir_fd)
            self.finished.append(self._final)
            # Only now are the rows written: counting them at write_table time counted rows that a
            # failure later threw away with their file, so written + dropped exceeded what was put.
            self._written += self._file_rows
            self._on_written(self._file_rows)
            self._problem = None
        except Exception as e:
            self._problem = f"finalising {self._tmp} failed: {e}"
            self._drop(self._file_rows, self._problem)
            self._abandon()
            return
        self._close_dir()
        self._writer = self._file = self._tmp = self._final = None
        self._file_rows = 0

    @staticmethod
    def _release(name: str) -> None:
        with _open_lock:
            _open_here.discard(name)

    def _close_dir(self) -> None:
        if self._dir_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._dir_fd)
            self._dir_fd = None

    def _abandon(self) -> None:
        """Forget a file that cannot be written; the next rows start a new one."""
        writer, file, tmp, dir_fd = self._writer, self._file, self._tmp, self._dir_fd
        self._writer = self._file = self._tmp = self._final = None
        self._file_rows = 0
        for closing in (writer, file):
            if closing is not None:
                with contextlib.suppress(Exception):
                    closing.close()
        if tmp is not None and dir_fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp.name, dir_fd=dir_fd)
        if tmp is not None:
            self._release(tmp.name)
        self._close_dir()
