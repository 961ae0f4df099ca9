"""One writer of a version's exports/ at a time, and readers that never see it half written.

Two exports of one version (two terminals, a retried CI job) each install their artefacts, then read,
merge and rewrite parity.json and re-seal exports/: interleaved, one's parity records are lost, or one
re-seals while the other's files are half installed. And `refit benchmark`, timing the files of exports/
while an export swapped a new exports/ in, failed on a missing file or timed half old, half new files.

So writers (`refit export`, the maintain cycle's deploy, `refit benchmark` writing its results, `refit drift
--refresh_reference` rewriting the whole version) take `export_lock`, exclusive; readers that must see one
whole, sealed exports/ for a while (`refit benchmark` while it loads and times, the registry while it copies
a version in) take `exports_read_lock`, shared: many readers at once, a writer waits or is refused, a
reader waits for a writer up to a deadline. Both are refit.io.folder_lock on the VERSION
folder's own descriptor: no lock file is left in a sealed version, and the OS releases it when the process
dies, even by SIGKILL. It is not on exports/, because adding exports swaps a new exports/ folder in by
rename (refit.models.adding_exports): a lock on the old folder would not stop a writer that opened the
new one. On NFS a folder's lock is local to one client machine (see folder_lock): run the exports of one
version from one machine.

Readers that do not take it, and why: `refit serve` loading a slot must never stall on an export
(minutes); it verifies inside a snapshot of file identities and refuses a version that changed meanwhile
(refit.serve.slot.load_slot), and what it serves from the registry is a private copy no export writes.
Nor do plain loads (refit.models.load_version: compress, drift, an export's own gate data): one that
overlaps an exports swap fails closed (VersionError, an altered or missing file) and is simply run again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from refit.errors import ExportError
from refit.io import folder_lock

__all__ = ["export_lock", "exports_read_lock"]


@contextlib.contextmanager
def export_lock(version_dir: str | Path, wait_s: float = 0) -> Iterator[None]:
    """Hold VERSION's exports/ for one writer; ExportError if another process writes or reads it for over
    `wait_s` seconds (0: refuse at once, as `refit export` does; `refit benchmark` waits to write results)."""
    folder = Path(version_dir)

    def busy() -> ExportError:
        return ExportError(
            f"Another refit export of {folder} is running, or another command is reading its exports/ "
            "(refit benchmark, registering it): it holds the lock on the folder"
            + (f" and kept it over {wait_s:g} s" if wait_s else "")
            + ". "
            "Wait for it to end, then run this command again."
        )

    with folder_lock(folder, busy, wait_s=wait_s):
        yield


@contextlib.contextmanager
def exports_read_lock(version_dir: str | Path, wait_s: float) -> Iterator[None]:
    """Read VERSION's exports/ as one whole, sealed folder: no writer changes it while this is held (other
    readers may hold it too); waits up to `wait_s` seconds for a writer, then ExportError."""
    folder = Path(version_dir)

    def busy() -> ExportError:
        return ExportError(
            f"A refit export of {folder} has held its exports/ for over {wait_s:g} s, so they cannot be "
            "read whole now. Wait for it to end, then run this command again (or raise --lock_wait_s)."
        )

    with folder_lock(folder, busy, shared=True, wait_s=wait_s):
        yield
