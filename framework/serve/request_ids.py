"""Request ids that say whether a refit server issued them, so that feedback for made-up ids is refused.

Before: `POST /feedback` took any 32-hex id, because another worker or an earlier run may have served it,
and the maintenance cycle keeps feedback that matches no capture "for later cycles": a client posting
made-up ids (256 per call) grew the feedback files and the inbox index without limit, and every cycle
carried them on. A server cannot know every id another process served, but it can check a signature:
an id is 20 hex characters of randomness (80 bits: a repeat is unlikely before 10^12 requests) and 12 of
HMAC-SHA256 over them, keyed by a secret kept in the capture folder. Every worker and every later run that
writes to that folder reads the same key, so each accepts feedback for the others' requests, with no
lookup and no shared state; a made-up id passes with odds of 2^-48 per try.

Still 32 hex characters, so the capture and feedback schemas, and the cycle that joins them, are unchanged.

Ids served before the upgrade (plain random, unsigned) still get their late labels, which may come weeks
later: at start, a server reads the request ids of the capture files written before the folder's key (up
to an hour after it, for a rolling upgrade) and accepts those, and only those, unsigned ids
(`LEGACY_MAX_IDS` at most: ids beyond are refused and said). Only the request_id column is read; the
files are the server's own (owner-only), so an id found there was served.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

from refit.serve.capture import CAPTURE, file_kind

__all__ = ["KEY_FILE", "RequestIds"]

KEY_FILE = "request-ids.key"  # not a data file (.jsonl, .csv, .parquet): the cycle never reads it
LEGACY_MAX_IDS = 2_000_000  # unsigned ids of pre-upgrade captures kept in memory (about 100 B each)
LEGACY_GRACE_S = 3600.0  # capture files this long after the key was made may still be an old server's
_KEY_BYTES = 32
_NONCE_HEX, _TAG_HEX = 20, 12
log = logging.getLogger("refit.serve")


def _read_key(folder: Path) -> bytes | None:
    """The folder's key, created (0o600) if missing: written whole to a private temporary file, then linked
    into place, which fails if another starting worker linked its key first (that one wins). A key created
    empty and written after, as before, could be read half-made by a worker starting beside it, or left
    empty by a crash in between: every server then checked feedback against its own ids only.
    None when the folder cannot hold one (read-only, a link in its place, a key of another owner)."""
    path = folder / KEY_FILE
    flags = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    if not os.path.lexists(path):
        temp = folder / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(temp, flags | os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, secrets.token_bytes(_KEY_BYTES))
                os.fsync(fd)
            finally:
                os.close(fd)
            with contextlib.suppress(FileExistsError):  # another worker's key is in place: read it below
                os.link(temp, path, follow_symlinks=False)
        except OSError as e:
            log.warning(
                "refit serve: cannot create %s (%s): feedback is checked against this process's ids", path, e
            )
            return None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temp)
    try:
        fd = os.open(path, flags | os.O_RDONLY)
        try:
            st = os.fstat(fd)
            key = os.read(fd, _KEY_BYTES + 1)
        finally:
            os.close(fd)
    except OSError as e:
        log.warning(
            "refit serve: cannot read %s (%s): feedback is checked against this process's ids", path, e
        )
        return None
    if (
        not stat.S_ISREG(st.st_mode)
        or st.st_uid != os.geteuid()
        or st.st_mode & 0o077
        or len(key) != _KEY_BYTES
    ):
        log.warning(
            "refit serve: %s is not a private %d-byte file of this user (mode %04o, uid %d, %d bytes): "
            "feedback is checked against this process's ids. Remove it to let the server write a new one.",
            path,
            _KEY_BYTES,
            stat.S_IMODE(st.st_mode),
            st.st_uid,
            len(key),
        )
        return None
    return key


def _legacy_ids(folder: Path, tag) -> frozenset[str]:
    """The unsigned request ids of the capture files written before the folder's key (see the module's
    docstring): served before the upgrade, so their late labels are still taken."""
    import pyarrow.parquet as pq

    try:
        cutoff = (folder / KEY_FILE).stat().st_mtime + LEGACY_GRACE_S
        names = sorted(os.listdir(folder))
    except OSError:
        return frozenset()
    found: set[str] = set()
    for name in names:
        path = folder / name
        if file_kind(name) != CAPTURE:
            continue
        try:
            if not path.is_file() or path.is_symlink() or path.stat().st_mtime > cutoff:
                continue
            column = pq.read_table(path, columns=["request_id"]).column("request_id").to_pylist()
        except (OSError, ValueError, KeyError) as e:  # pyarrow's errors are ValueErrors or OSErrors
            log.warning(
                "refit serve: cannot read the request ids of %s (%s): not accepted as feedback", path, e
            )
            continue
        found.update(
            r for r in column if isinstance(r, str) and len(r) == _NONCE_HEX + _TAG_HEX and not tag(r)
        )
        if len(found) > LEGACY_MAX_IDS:
            log.warning(
                "refit serve: over %d unsigned request ids in capture files from before %s: feedback for "
                "the rest of them (from %s on) is refused",
                LEGACY_MAX_IDS,
                folder / KEY_FILE,
                path,
            )
            return frozenset(sorted(found)[:LEGACY_MAX_IDS])
    return frozenset(found)


class RequestIds:
    """Issues and checks the request ids of the servers that share one capture folder."""

    def __init__(self, folder: Path | None) -> None:
        """`folder`: the capture folder (created beforehand). None (capture off), or a folder that cannot
        hold the key: a key of this process alone, so its own ids still check and made-up ones do not."""
        key = _read_key(folder) if folder is not None else None
        self._key = key or secrets.token_bytes(_KEY_BYTES)
        self._legacy = _legacy_ids(folder, self._signed) if key is not None else frozenset()

    def _signed(self, request_id: str) -> bool:
        return hmac.compare_digest(request_id[_NONCE_HEX:], self._tag(request_id[:_NONCE_HEX]))

    def _tag(self, nonce: str) -> str:
        return hmac.new(self._key, nonce.encode(), hashlib.sha256).hexdigest()[:_TAG_HEX]

    def new(self) -> str:
        """A fresh request id: 20 random hex characters and their 12-character tag."""
        nonce = secrets.token_hex(_NONCE_HEX // 2)
        return nonce + self._tag(nonce)

    def issued(self, request_id: str) -> bool:
        """Whether a server sharing this capture folder made `request_id` (constant-time comparison), or
        served it before the upgrade (an unsigned id in a capture file from before the key)."""
        if len(request_id) != _NONCE_HEX + _TAG_HEX:
            return False
        return self._signed(request_id) or request_id in self._legacy
