"""Reading one entry of a folder that others can write (the inbox): a regular file only, bounded in size.

The inbox and `refit maintain forget` both read files a server, an exporter or an attacker may have put
there, so both read them one way: opened once relative to the folder's descriptor, without following a
link (a link swapped in after the scan included) and without blocking (a FIFO), checked to be a regular
file through that same descriptor, and read whole only up to a limit. What is returned is what was read,
so a sha256 of it is the hash of what the caller parses even if the file changes meanwhile.
"""

from __future__ import annotations

import hashlib
import os
import stat

from refit.errors import DataError

__all__ = ["NotAFile", "TooBig", "read_entry"]


class NotAFile(Exception):
    """The entry is not a regular file (a link, a FIFO, a socket, ...): nothing to hash, so skipped."""


class TooBig(DataError):
    """A file over the caller's limit; `sha256` is the hash of its whole content, read without keeping it
    (so a caller can quarantine it under that hash and not open it again until it changes)."""

    def __init__(self, message: str, sha256: str) -> None:
        super().__init__(message)
        self.sha256 = sha256


def read_entry(dir_fd: int, name: str, limit: int) -> tuple[bytes, os.stat_result]:
    """The content of the entry `name` of the folder `dir_fd` and its stat when opened. NotAFile when it is
    not a regular file, TooBig when it holds (or grows while read to) more than `limit` bytes."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as e:  # ELOOP: a link (perhaps swapped in since the scan); ENXIO: a socket
        raise NotAFile(f"cannot be opened as a plain file ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotAFile("not a regular file")
        chunks, total = [], 0
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
            chunks.append(chunk)
            if total > limit:  # said so by its size, or grown while read
                h = hashlib.sha256(b"".join(chunks))
                while chunk := os.read(fd, 1 << 20):
                    h.update(chunk)
                raise TooBig(f"is over the inbox limit of {limit} bytes.", h.hexdigest())
        return b"".join(chunks), st
    finally:
        os.close(fd)
