"""Fault tests of `refit finetune` and `refit export` (issue s7): hostile checkpoints, a second process on
the same folder, SIGKILL at the version write. Each failed open (or left litter) before its fix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from refit.cli import main
from tests.conftest import finetune_args

_HOLD = "import filelock, sys, time; lock = filelock.FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(120)"


class _RunsCode:
    """Unpickling it calls Path.touch(marker): what a crafted checkpoint does with any callable."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def test_resume_never_unpickles_code_from_a_checkpoint(tmp_path, tiny_model_dir, toy_data, capsys):
    """read_checkpoint used torch.load(weights_only=False): a last.ckpt from a copied or downloaded run folder
    ran its code on `--resume`, before any check."""
    out = tmp_path / "run"
    marker = tmp_path / "code-ran"
    (out / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {}, "loops": {}, "x": _RunsCode(marker)}, out / "checkpoints" / "last.ckpt")
    assert main([*finetune_args(tiny_model_dir, toy_data, out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert not marker.exists()
    assert "does not unpickle such a file" in err and "last.ckpt" in err and "Traceback" not in err


def test_truncated_checkpoint_is_refused_on_resume(tmp_path, tiny_model_dir, toy_data, capsys):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    ckpt = out / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "loops": {}}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:-500])
    assert main([*finetune_args(tiny_model_dir, toy_data, out), "--resume"]) == 2
    assert "is damaged or incomplete" in capsys.readouterr().err


def _holder(lock: Path) -> subprocess.Popen:
    lock.parent.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen([sys.executable, "-c", _HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_finetune_on_the_same_output_dir_is_refused(tmp_path, tiny_model_dir, toy_data, capsys):
    """Two runs on one --output_dir both trained and wrote checkpoints/, logs/ and version/ over each other;
    now the one that comes second is refused before it reads or writes anything."""
    from refit.io import RUN_LOCK

    out = tmp_path / "run"
    holder = _holder(out / RUN_LOCK)  # another process in the middle of its run
    try:
        assert main(finetune_args(tiny_model_dir, toy_data, out)) == 2
        assert "Another refit run is writing" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == [RUN_LOCK]  # nothing of this run was written
    finally:
        holder.kill()
        holder.wait()


def test_a_second_export_of_one_version_is_refused(tmp_path, capsys):
    """Two exports of one version interleaved their installs, parity.json merges and re-seals."""
    version = tmp_path / "version"
    (version / "exports").mkdir(parents=True)
    (version / "refit.json").write_text("{}")
    hold = (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); "
        "print('held', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold, str(version)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"  # another export in the middle of its install
    try:
        assert main(["export", "--version", str(version), "--format", "onnx"]) == 2
        assert "Another refit export of" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_sigkill_during_the_version_write_then_resume(tmp_path, tiny_model_dir, toy_data):
    """A real `refit finetune` process SIGKILLed while its version is being staged: no version/ at all (never
    a partial one), a plain rerun is refused, `--resume` writes exactly one complete version, and the killed
    run's staging copy (the size of the weights) is removed instead of left for good."""
    from refit.models import verify_version

    out = tmp_path / "run"
    args = finetune_args(tiny_model_dir, toy_data, out, "--trainer.max_epochs", "1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "refit", *args],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if out.is_dir() and any(p.name.startswith(".version.tmp-") for p in out.iterdir()):
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        pytest.skip(f"the run ended (rc {proc.returncode}) before its version write could be caught")
    assert not (out / "version").exists()
    assert main(args) == 2  # the checkpoint is there: a plain rerun must not start over silently
    assert main([*args, "--resume"]) == 0
    verify_version(out / "version")
    assert json.loads((out / "version" / "refit.json").read_text())["training"]["global_step"] == 6
    assert not [p.name for p in out.iterdir() if p.name.startswith(".version.tmp-")]


def test_a_checkpoint_save_replaces_the_file_whole(tmp_path, monkeypatch):
    """Lightning stages a checkpoint in the system temp folder and moves it over last.ckpt: where /tmp is
    another filesystem (tmpfs, as on many distributions) the move is a copy into the open, truncated old
    file, and a SIGKILL during it leaves half a checkpoint, the run's only one. Here the temp folder is the
    real tmpfs /dev/shm; a reader holding the old checkpoint must never see it change under it."""
    import tempfile

    from refit.train.trainer import build_trainer

    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev or not os.access(shm, os.W_OK):
        pytest.skip("needs /dev/shm as a writable filesystem other than the test's folder")
    monkeypatch.setattr(tempfile, "tempdir", str(shm))
    trainer = build_trainer(tmp_path / "run", loggers=[], has_validation=False)
    io = trainer.strategy.checkpoint_io
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": torch.zeros(4)}, path)
    with path.open("rb") as old:
        io.save_checkpoint({"step": torch.ones(100_000)}, path)
        assert torch.load(old, weights_only=True)["step"].shape == (4,)  # the old file, intact
    assert torch.load(path, weights_only=True)["step"].shape == (100_000,)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temp file left beside it


def test_a_killed_checkpoint_save_leaves_no_litter_after_the_next_run(tmp_path, tiny_model_dir, toy_data):
    """AtomicCheckpointIO stages `.last.ckpt.tmp-*` beside last.ckpt; a kill mid-save leaves it (the size of
    the checkpoint, optimizer state included). The next run of that folder, holding its lock, removes it."""
    out = tmp_path / "run"
    litter = out / "checkpoints" / ".last.ckpt.tmp-0123abcd"
    litter.parent.mkdir(parents=True)
    litter.write_bytes(b"half a checkpoint")
    args = finetune_args(tiny_model_dir, toy_data, out, "--trainer.max_epochs", "1")
    assert main(args) == 0
    assert not litter.exists()
    assert (out / "version" / "manifest.json").is_file()


class _CtrlCWhilePickled:
    """Presses Ctrl-C (SIGINT to this process) while torch.save pickles it, i.e. mid-checkpoint."""

    def __reduce__(self):
        signal.raise_signal(signal.SIGINT)
        return (int, (7,))


def test_ctrl_c_during_a_checkpoint_save_waits_for_the_whole_file(tmp_path):
    """A Ctrl-C inside torch.save's zip writer came out as a RuntimeError ("unexpected pos") from its
    __exit__: the run died with a traceback and exit 1 (a CI run of the Ctrl-C resume test hit it). The
    interrupt is now held until the checkpoint is written whole and renamed, then delivered as usual."""
    from refit.train.trainer import AtomicCheckpointIO

    path = tmp_path / "checkpoints" / "last.ckpt"
    # Python's own Ctrl-C handler, whatever this process inherited: started in the background by a
    # non-interactive shell, SIGINT is ignored from the start, and a held Ctrl-C is rightly ignored too
    # (the autouse _restore_sigint fixture puts the inherited handler back)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"marker": _CtrlCWhilePickled(), "w": torch.ones(3)}, path)
    saved = torch.load(path, weights_only=False)  # this test's own file: its marker unpickles as int(7)
    assert saved["marker"] == 7 and torch.equal(saved["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no staging file left
