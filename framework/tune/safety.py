"""Whether a search folder is safe to hand to Ray's restore, which unpickles what it finds there.

`Tuner.restore` unpickles `tuner.pkl`, the trial states inside `experiment_state-*.json` (cloudpickle, hex
encoded), the searcher's `searcher-state-*.pkl` and each trial's `error.pkl`; Ray has no safe loader for
any of them, and unpickling runs code. So `refit tune --resume` first applies the rule ssh applies to
`~/.ssh`: every folder and file under the search folder must belong to the user resuming it (or root) and
must not be writable by group or others. A file another account could have planted or changed is
refused, named with its owner and mode and the command that fixes it; nothing is unpickled.

What this does not protect against: a search folder copied from someone else (it is yours once copied:
check where it came from), an attacker who can write as you or as root, and a swap between this check and
Ray's read by someone who can write the folder *above* the search folder (keep STORAGE_PATH your own).

`owner_only_writes` keeps the user's own searches resumable whatever their umask: with umask 002 (the
default of many distributions' per-user groups) Ray would write group-writable files that the rule above
then refuses.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
from collections.abc import Iterator
from pathlib import Path

from refit.errors import ConfigError

__all__ = ["check_resumable", "owner_only_writes"]

_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


def _owner(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:  # an account that no longer exists (a copied folder, a container's uid)
        return f"uid {uid}"


def _entries(folder: Path, skip: frozenset[str]) -> Iterator[Path]:
    """The folder, then everything under it; symbolic links are yielded, not followed into."""
    yield folder
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in sorted(dirs) + sorted(files):
            if Path(root) == folder and name in skip:
                continue
            yield Path(root) / name


def check_resumable(folder: Path, skip: frozenset[str] = frozenset()) -> None:
    """Refuse `folder` (a ConfigError, exit 2) unless it and every entry under it are owned by this user
    (or root) and not writable by group or others. A symbolic link is judged by what it points at (the
    link itself carries no permissions of its own); one that points nowhere is refused. `skip` names
    top-level entries Ray never reads (the folder's run lock)."""
    me = os.geteuid()
    for path in _entries(folder, skip):
        try:
            st = path.stat()  # follows a link: its target is what Ray would read
        except OSError as e:
            raise ConfigError(
                f"--resume: cannot check {path} ({e.strerror}); a search folder refit resumes holds no "
                f"broken links. Remove it, or start a new search with another --name."
            ) from None
        mode = stat.S_IMODE(st.st_mode)
        whole = f"`chmod -R go-w {folder}`"
        fix = f"{whole}" if path == folder else f"`chmod go-w {path}`, or {whole} for the whole search"
        if st.st_uid not in (me, 0):
            raise ConfigError(
                f"--resume: {path} belongs to {_owner(st.st_uid)}, not to you ({_owner(me)}); Ray would "
                "unpickle this search's state, which runs code, so refit resumes only a search folder "
                "you own throughout. If you trust it (your search, run under another account), check it, "
                f"copy it (`cp -r {folder} {folder}-mine`: the copy is yours) and resume the copy with "
                f"--name {folder.name}-mine; otherwise start a new search."
            )
        if mode & _OTHERS_WRITE:
            who = " and ".join(
                w for w, bit in (("group", stat.S_IWGRP), ("others", stat.S_IWOTH)) if mode & bit
            )
            raise ConfigError(
                f"--resume: {path} is writable by {who} (mode {mode:04o}); Ray would unpickle this "
                "search's state, which runs code, so anyone who could change it could run code as you. "
                f"If no one else has written to it, remove the write bits ({fix}) and resume again."
            )


@contextlib.contextmanager
def owner_only_writes() -> Iterator[None]:
    """Files and folders created meanwhile (by this process and the local Ray it starts) are writable
    by their owner only: the umask gains go-w for the duration and is put back after. The umask is the
    process's, so this is for a recipe's run, not for library code that other threads share."""
    saved = os.umask(0o022)
    os.umask(saved | 0o022)
    try:
        yield
    finally:
        os.umask(saved)
