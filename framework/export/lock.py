"""One export of a version at a time: an OS lock on VERSION/exports/ for the whole of `refit export`.

Two exports of one version (two terminals, a retried CI job) each install their artefacts, then read,
merge and rewrite parity.json and re-seal exports/: interleaved, one's parity records are lost, or one
re-seals while the other's files are half installed, and both fail with the version's exports left
unsealed (no load verifies until a third export). The lock file is a hidden top-level entry of exports/,
which the exports manifest does not cover; the OS releases it when the process dies, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from refit.errors import ExportError

__all__ = ["EXPORT_LOCK", "export_lock"]

EXPORT_LOCK = ".export.lock"


@contextlib.contextmanager
def export_lock(version_dir: str | Path, wait_s: float = 0) -> Iterator[None]:
    """Hold VERSION/exports/ for one writer; ExportError if another process holds it for over `wait_s`
    seconds (0: refuse at once, as `refit export` does; `refit benchmark` waits to write its results)."""
    from filelock import FileLock, Timeout

    exports = Path(version_dir) / "exports"
    exports.mkdir(exist_ok=True)
    lock = FileLock(exports / EXPORT_LOCK, timeout=wait_s)
    try:
        lock.acquire()
    except Timeout:
        raise ExportError(
            f"Another refit export of {version_dir} is running (it holds {exports / EXPORT_LOCK}"
            + (f" and kept it over {wait_s:.0f} s" if wait_s else "")
            + "). Wait for it to end, then run this command again."
        ) from None
    try:
        yield
    finally:
        lock.release()
