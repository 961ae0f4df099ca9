"""One writer of a version's exports/ at a time: an OS lock on the VERSION folder itself.

Two exports of one version (two terminals, a retried CI job) each install their artefacts, then read,
merge and rewrite parity.json and re-seal exports/: interleaved, one's parity records are lost, or one
re-seals while the other's files are half installed, and both fail with the version's exports left
unsealed (no load verifies until a third export). The lock is flock(2) on the version folder's own
descriptor: no lock file is left in a sealed version, and the OS releases it when the process dies, even by
SIGKILL. It is not on exports/, because adding exports swaps a new exports/ folder in by rename
(refit.models.adding_exports): a lock on the old folder would not stop a writer that opened the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from refit.errors import ExportError

__all__ = ["export_lock"]


@contextlib.contextmanager
def export_lock(version_dir: str | Path, wait_s: float = 0) -> Iterator[None]:
    """Hold VERSION's exports/ for one writer; ExportError if another process holds it for over `wait_s`
    seconds (0: refuse at once, as `refit export` does; `refit benchmark` waits to write its results)."""
    folder = Path(version_dir)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ExportError(
                        f"Another refit export of {version_dir} is running (it holds {folder}"
                        + (f" and kept it over {wait_s:.0f} s" if wait_s else "")
                        + "). Wait for it to end, then run this command again."
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
