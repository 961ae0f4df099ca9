"""`refit tune --resume` hands the search folder to Ray, which unpickles tuner.pkl and the trial states:
it refuses a folder with anything another account owns or could write (ssh's rule for ~/.ssh).

Real files, real modes (os.chmod) and, for the owner rule, a real os.chown where the tests run as root (as
CI does); elsewhere a user cannot give a file away, so the owner case patches os.geteuid instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from refit.errors import ConfigError
from refit.tune import check_resumable, owner_only_writes


def _search(tmp_path: Path) -> Path:
    """A folder shaped like a Ray search: the files Tuner.restore unpickles, owner-only modes."""
    out = tmp_path / "tune" / "demo"
    trial = out / "trials" / "trial_0"
    trial.mkdir(parents=True)
    for f in (out / "tuner.pkl", out / "experiment_state-2026.json", out / "searcher-state-2026.pkl"):
        f.write_bytes(b"state")
    (trial / "error.pkl").write_bytes(b"state")
    for p in [out, *out.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return out


def test_an_owner_only_search_folder_passes(tmp_path):
    check_resumable(_search(tmp_path))


@pytest.mark.parametrize(
    "entry,mode",
    [
        (".", 0o775),
        ("tuner.pkl", 0o664),
        ("experiment_state-2026.json", 0o646),
        ("searcher-state-2026.pkl", 0o666),
        ("trials", 0o777),
        ("trials/trial_0/error.pkl", 0o660),
    ],
)
def test_anything_writable_by_group_or_others_is_refused_naming_it(tmp_path, entry, mode):
    out = _search(tmp_path)
    path = out / entry if entry != "." else out
    path.chmod(mode)
    with pytest.raises(ConfigError) as e:
        check_resumable(out)
    msg = str(e.value)
    assert f"{path} is writable by" in msg and f"mode {mode:04o}" in msg and "chmod" in msg and "go-w" in msg
    assert ("others" in msg) == bool(mode & 0o002) and ("group" in msg) == bool(mode & 0o020)


def test_a_link_is_judged_by_its_target_and_a_broken_one_refused(tmp_path):
    out = _search(tmp_path)
    planted = tmp_path / "planted.pkl"
    planted.write_bytes(b"x")
    planted.chmod(0o666)
    (out / "tuner.pkl").unlink()
    (out / "tuner.pkl").symlink_to(planted)
    with pytest.raises(ConfigError, match="is writable by group and others"):
        check_resumable(out)
    planted.unlink()
    with pytest.raises(ConfigError, match="cannot check .*tuner.pkl"):
        check_resumable(out)


def test_skipped_top_level_entries_are_not_checked(tmp_path):
    out = _search(tmp_path)
    (out / ".refit-run.lock").write_text("")
    (out / ".refit-run.lock").chmod(0o666)
    check_resumable(out, skip=frozenset({".refit-run.lock"}))
    with pytest.raises(ConfigError):
        check_resumable(out)


_OTHER_UID = 54321


@pytest.mark.parametrize("entry", [".", "tuner.pkl", "trials/trial_0/error.pkl"])
def test_an_entry_owned_by_another_account_is_refused_naming_it(tmp_path, monkeypatch, entry):
    """As root (CI) each entry is given away by a real os.chown. A user cannot give a file away, so
    elsewhere os.geteuid is patched instead, which makes the whole search someone else's: its top folder
    is then the entry named, so only the '.' case runs that way (the others need root)."""
    root = os.geteuid() == 0
    if not root and entry != ".":
        pytest.skip("only root can give one file to another uid (os.chown); CI runs as root")
    out = _search(tmp_path)
    path = out if entry == "." else out / entry
    if root:
        os.chown(path, _OTHER_UID, _OTHER_UID)
    else:
        monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + _OTHER_UID)
    with pytest.raises(ConfigError) as e:
        check_resumable(out)
    msg = str(e.value)
    assert f"--resume: {path} belongs to " in msg and ", not to you (" in msg, msg
    assert f"cp -r {out} {out}-mine" in msg, msg
    if root:
        assert f"uid {_OTHER_UID}" in msg, msg
        os.chown(path, 0, 0)  # back to root's: the same folder is then accepted
        check_resumable(out)


def test_owner_only_writes_holds_back_group_write_and_restores_the_umask(tmp_path):
    saved = os.umask(0o002)  # a per-user-group distribution's default: Ray would write 0664 files
    try:
        with owner_only_writes():
            fd = os.open(tmp_path / "state.pkl", os.O_CREAT | os.O_WRONLY, 0o666)
            os.close(fd)
            (tmp_path / "folder").mkdir()
        assert os.umask(0o002) == 0o002  # put back
    finally:
        os.umask(saved)
    assert (tmp_path / "state.pkl").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755
    check_resumable(tmp_path)
