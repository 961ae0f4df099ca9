"""Atomic writes (a crash leaves either the old file/folder or the new one, never half of either), safe
names, and the OS lock that keeps one writer per folder (folder_lock)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from refit.errors import RefitError, VersionError

__all__ = [
    "NAME_RULE",
    "atomic_dir",
    "atomic_write_text",
    "write_json",
    "sha256_file",
    "sha256_file_cached",
    "check_name",
    "is_bare_name",
    "child_path",
    "private_dir",
    "make_private",
    "RUN_LOCK",
    "FolderBusy",
    "LockUnsupported",
    "folder_lock",
    "hold_folder",
]

# One pattern for every version id and alias name, checked before a name ever touches a path.
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
NAME_RULE = (
    "letters, digits, '-', '_' and '.' only, 1 to 128 characters, not starting with '.' and without '..'"
)


def check_name(value: object, what: str = "version id", where: str | Path | None = None) -> str:
    """`value` if it is a safe id/alias name, else VersionError naming it and the rule.

    Why so strict: ids become folder names. `../../precious` once replaced a folder outside the registry,
    and an empty id replaced the whole versions/ folder.
    """
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        place = f" in {where}" if where else ""
        raise VersionError(f"Invalid {what} {value!r}{place}: use {NAME_RULE}.")
    return value


def is_bare_name(ref: str) -> bool:
    """Whether a `--version` value is a bare id or alias (a safe name, no path separator, no such folder
    here) rather than a path: the one rule by which recipes look it up in a registry, and by which an error
    for a missing folder suggests the registry options."""
    if os.sep in ref or (os.altsep and os.altsep in ref) or Path(ref).expanduser().exists():
        return False
    return bool(_NAME.fullmatch(ref)) and ".." not in ref


def child_path(parent: str | Path, name: str, what: str = "version id") -> Path:
    """parent/name for a validated `name`; refuses anything that would not land directly inside `parent`."""
    parent = Path(parent)
    path = parent / check_name(name, what)
    if path.parent != parent or path.name != name:
        raise VersionError(f"Invalid {what} {name!r}: it does not name a folder inside {parent}.")
    return path


@contextlib.contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `dest` by rename, on error it is removed."""
    dest = Path(dest)
    if dest.name in ("", ".", ".."):
        raise VersionError(f"Refusing to write a folder at {dest}: it has no name of its own.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if dest.exists():
        # A folder cannot be replaced in one rename: move the old one aside first, then drop it.
        old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: str | Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_HASHES: dict[tuple, str] = {}


def sha256_file_cached(path: str | Path) -> str:
    """sha256 of a file, computed once per (file identity, size, mtime_ns, ctime_ns) in this process.

    Verifying a version on every load would otherwise re-hash hundreds of MB per recipe step; any write to
    the file changes its size or times (ctime cannot be set back by the writer), so a hit is still the truth.
    The identity is (device, inode) rather than the path, so a version renamed into place is not re-hashed.
    """
    st = Path(path).stat()
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    digest = _HASHES.get(key)
    if digest is None:
        digest = sha256_file(path)
        if len(_HASHES) > 65536:
            _HASHES.clear()
        _HASHES[key] = digest
    return digest


def private_dir(path: str | Path) -> Path:
    """mkdir -p with owner-only permissions (0o700) on every folder it creates, whatever the umask."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for p in missing:
        os.chmod(p, 0o700)
    return path


def make_private(root: str | Path) -> None:
    """Owner-only permissions on a tree: folders 0o700, files 0o600 (registry copies hold production data)."""
    root = Path(root)
    os.chmod(root, 0o700)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            if not os.path.islink(os.path.join(dirpath, d)):
                os.chmod(os.path.join(dirpath, d), 0o700)
        for f in filenames:
            if not os.path.islink(os.path.join(dirpath, f)):
                os.chmod(os.path.join(dirpath, f), 0o600)


RUN_LOCK = ".refit-run.lock"


class FolderBusy(RefitError):
    """Another process holds the output folder this command would write."""


class LockUnsupported(RefitError):
    """The file system of a folder refuses the OS lock that keeps its writers apart."""


def _locked_fd(target: Path, folder: Path, mode: int) -> int | None:
    """A descriptor of `target` holding `mode` (LOCK_EX / LOCK_SH), or None if another process holds it."""
    while True:
        if target == folder:
            fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
        else:  # opened for writing: NFS emulates flock with fcntl locks, and an exclusive one needs it
            fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as e:
            os.close(fd)
            raise LockUnsupported(
                f"Cannot take an OS lock (flock) on {target}: {e.strerror}. Put {folder} on a local file "
                "system, or one that supports file locks (for NFS: a lock daemon, or mount with local_lock=flock "
                "where every process runs on one machine)."
            ) from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(target))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        # locked an inode the path no longer names (a holder removed or replaced it): that lock keeps no one out
        os.close(fd)


@contextlib.contextmanager
def folder_lock(
    folder: str | Path,
    busy: Callable[[], Exception],
    *,
    shared: bool = False,
    wait_s: float = 0,
    lock_file: str | None = None,
) -> Iterator[Path]:
    """Hold FOLDER for this process: exclusive (one writer) or shared (many readers, no writer).

    The one owner of "one writer per folder" in refit: output folders (hold_folder), a version's exports/
    (refit.export.lock) and the registry's maintenance cycle (refit.maintain.cycle_lock) all take it. It is flock(2) on FOLDER's own descriptor, or on FOLDER/`lock_file`
    when given, so the OS releases it when the process dies, even by SIGKILL: a killed run never blocks its
    rerun. Another process holding it in a conflicting mode is waited for up to `wait_s` seconds (0: refuse
    at once); then `busy()` is raised, the caller's error naming the folder and what to do. Waiting polls,
    so a writer waiting behind readers that keep overlapping can reach its deadline.

    Locking the folder's own descriptor leaves no file in it (a sealed version may hold none) but binds
    the lock to the folder's inode: a folder replaced by rename is a new, unlocked folder. So a lock taken
    on an inode the path no longer names is dropped and taken again on the new one.

    File systems: local ones (ext4, xfs, btrfs, tmpfs, overlayfs) honour both forms. NFS (Linux >= 2.6.12)
    emulates flock with fcntl byte-range locks, seen by every client, but only on regular files: a folder's
    own descriptor gets a lock local to one client machine (the NFS client has no lock operation for
    folders), so two machines can both hold it. Use `lock_file` where writers may run on several machines.
    A file system that refuses flock (errors other than "held") raises LockUnsupported: never unlocked.
    """
    folder = Path(folder)
    target = folder / lock_file if lock_file else folder
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    deadline = time.monotonic() + wait_s
    while (fd := _locked_fd(target, folder, mode)) is None:
        if time.monotonic() >= deadline:
            raise busy()
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
    try:
        yield folder
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


@contextlib.contextmanager
def hold_folder(folder: str | Path, what: str = "refit run") -> Iterator[Path]:
    """Hold output FOLDER (created if missing) for this run: FolderBusy at once if another process holds it.

    Two runs writing one output folder (two terminals, a retried job) interleaved their checkpoints, logs and
    version. The lock (folder_lock) is on FOLDER/.refit-run.lock, a regular file, so that it holds across
    the machines of an NFS cluster too. Folders created only to hold the lock are removed when the run
    leaves nothing else (a run refused on bad input writes nothing).
    """
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    folder.mkdir(parents=True, exist_ok=True)

    def busy() -> FolderBusy:
        return FolderBusy(
            f"Another {what} is writing {folder} right now (it holds {folder / RUN_LOCK}). Wait for it to "
            "end, or give this one another --output_dir."
        )

    with contextlib.ExitStack() as stack:
        for attempt in range(3):
            try:
                stack.enter_context(folder_lock(folder, busy, lock_file=RUN_LOCK))
                break
            except FileNotFoundError:  # a run refused at this moment removed the folder it had made
                if attempt == 2:
                    raise
                folder.mkdir(parents=True, exist_ok=True)
        try:
            yield folder
        finally:
            # still under the lock: a run that finds the file gone locks a new one (folder_lock)
            if created and [p.name for p in folder.iterdir()] == [RUN_LOCK]:
                (folder / RUN_LOCK).unlink(missing_ok=True)
                for path in created:
                    try:
                        path.rmdir()
                    except OSError:
                        break
