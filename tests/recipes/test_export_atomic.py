"""Adding exports to a version is atomic as a whole (issue s7-exports): a SIGKILL at every step of
`adding_exports` leaves the old sealed exports/ or the new sealed one, the next export finishes or undoes a
half-done swap exactly once under the export lock, and killed exports' `.staging-*` folders are removed then.

Before the fix a kill between installing the files and re-sealing left a new model.onnx under the old
manifest, refused by every command (the repairing `refit export` included), and the fault hook did not exist.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from refit.cli import main
from refit.errors import VersionError
from refit.export.lock import export_lock
from refit.models import MANIFEST, adding_exports, verify_version
from tests.conftest import sealed_files_version, trained_version

_ROOT = Path(__file__).resolve().parents[2]
# the on-disk names and test hook of refit.models.version, spelt out so that this file runs (and fails) on
# the code before the fix too
FAULT_ENV = "REFIT_FAULT_AT"
EXPORT_PHASES = ("exports-built", "exports-sealed", "exports-swapped-out", "exports-swapped-in")
NEW_EXPORTS, OLD_EXPORTS = ".staging-exports.new", ".exports.old-swap"

# adds model.onnx (NEW) and model.int8.onnx to VERSION (argv[1]) as `refit export` does: under the lock
_ADD = (
    "import sys; from pathlib import Path; from refit.export.lock import export_lock; "
    "from refit.models import adding_exports; v = Path(sys.argv[1]); "
    "lock = export_lock(v); lock.__enter__(); cm = adding_exports(v); s = cm.__enter__(); "
    "(s / 'model.onnx').write_bytes(b'NEW'); (s / 'model.int8.onnx').write_bytes(b'NEW int8'); "
    "cm.__exit__(None, None, None)"
)


def _env(**extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(_ROOT), **extra}


def _version(tmp_path: Path) -> Path:
    return sealed_files_version(tmp_path)


def _hidden(v: Path) -> list[str]:
    exports = (
        [p.name for p in (v / "exports").iterdir() if p.name.startswith(".")]
        if (v / "exports").is_dir()
        else []
    )
    return sorted([p.name for p in v.iterdir() if p.name.startswith(".")] + exports)


def _kill_at(v: Path, phase: str) -> None:
    proc = subprocess.run([sys.executable, "-c", _ADD, str(v)], env=_env(**{FAULT_ENV: phase}), timeout=120)
    assert proc.returncode == -9, f"the export was not killed at {phase} (rc {proc.returncode})"


@pytest.mark.parametrize("phase", EXPORT_PHASES)
def test_sigkill_at_each_step_leaves_old_or_new_sealed_exports_and_is_settled_once(tmp_path, phase):
    v = _version(tmp_path)
    _kill_at(v, phase)
    committed = phase in ("exports-swapped-out", "exports-swapped-in")
    if phase == "exports-swapped-out":  # between the two renames: readers are told how to finish it
        with pytest.raises(VersionError, match=r"killed while swapping .*Run `refit export"):
            verify_version(v)
    else:
        verify_version(v)  # old or new, but sealed: nothing refused
    assert _hidden(v)  # the killed export's staging (or the swap's other half) is still there
    with export_lock(v):
        from refit.models import settle_exports

        assert settle_exports(v)
        assert settle_exports(v) == []  # exactly once: a second pass finds nothing to do
    verify_version(v)
    assert _hidden(v) == []
    assert (v / "exports" / "model.onnx").read_bytes() == (b"NEW" if committed else b"OLD")
    assert (v / "exports" / "model.int8.onnx").exists() == committed
    assert (v / "exports" / "parity.json").read_text() == "{}"  # entries not replaced are carried over
    with export_lock(v), adding_exports(v) as staging:  # and the next export works
        (staging / "model.onnx").write_bytes(b"NEXT")
    verify_version(v)
    assert (v / "exports" / "model.onnx").read_bytes() == b"NEXT"


@pytest.mark.parametrize(
    "state", ["sealed-new-beside-old", "old-moved-aside", "old-left-after-swap", "half-deleted-new"]
)
def test_planted_half_swaps_are_finished_or_undone(tmp_path, state):
    """The on-disk states a kill can leave, planted by hand: each settles to one sealed exports/."""
    v = _version(tmp_path)
    exports, new, old = v / "exports", v / NEW_EXPORTS, v / OLD_EXPORTS
    import shutil

    shutil.copytree(exports, new)
    (new / "model.onnx").write_bytes(b"NEW")
    (new / "parity.json").write_text('{"new": 1}')
    (new / MANIFEST).write_text(
        json.dumps(
            {
                "format": "refit-manifest/1",
                "algorithm": "sha256",
                "files": [
                    {"path": n, "size": (new / n).stat().st_size, "sha256": _sha(new / n)}
                    for n in ("model.onnx", "parity.json")
                ],
            }
        )
    )
    expect = b"OLD"
    if state == "old-moved-aside":
        os.replace(exports, old)
        expect = b"NEW"
    elif state == "old-left-after-swap":
        os.replace(exports, old)
        os.replace(new, exports)
        (old / "model.onnx").unlink()  # rmtree of the old one was under way
        expect = b"NEW"
    elif state == "half-deleted-new":
        (new / "parity.json").unlink()
    with export_lock(v), adding_exports(v):  # the next export settles it first
        pass
    verify_version(v)
    assert (exports / "model.onnx").read_bytes() == expect and _hidden(v) == []


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_staging_of_killed_exports_is_removed_by_the_next_export_never_under_another(tmp_path):
    v = _version(tmp_path)
    for leftover in (v / ".staging-dead1", v / ".staging-build-dead2", v / "exports" / ".staging-old3"):
        leftover.mkdir()
        (leftover / "model.onnx").write_bytes(b"x" * 1000)
    verify_version(v)  # staging is not part of the version: loads and registry copies skip it
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(120)",
            str(v),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"  # another export is running
        with pytest.raises(Exception, match="Another refit export"), export_lock(v), adding_exports(v):
            pass
        assert len(_hidden(v)) == 3  # its staging may be live: left alone
    finally:
        holder.kill()
        holder.wait()
    with export_lock(v), adding_exports(v) as staging:
        (staging / "model.onnx").write_bytes(b"NEW")
    assert _hidden(v) == []
    verify_version(v)


def test_export_lock_holds_across_the_swap(tmp_path):
    """The lock is on the version folder, not on exports/ (which the swap replaces): a writer holding it
    still excludes another after a swap."""
    v = _version(tmp_path)
    with export_lock(v):
        with adding_exports(v) as staging:
            (staging / "model.onnx").write_bytes(b"NEW")
        fd = os.open(v, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


@pytest.mark.slow
def test_refit_export_killed_mid_swap_is_finished_by_the_next_refit_export(tmp_path, tiny_model_dir):
    """A real `refit export` SIGKILLed between the swap's renames, then `refit export` again: before the fix
    the same kill (between install and re-seal) left a version every command refused."""
    v = trained_version(tmp_path, tiny_model_dir)
    assert main(["export", "--version", str(v), "--format", "onnx"]) == 0
    old = (v / "exports" / "model.onnx").read_bytes()
    cmd = [sys.executable, "-m", "refit", "export", "--version", str(v), "--format", "onnx-int8"]
    proc = subprocess.run(
        cmd, env=_env(**{FAULT_ENV: "exports-swapped-out"}), capture_output=True, timeout=300
    )
    assert proc.returncode == -9
    assert not (v / "exports").exists() and (v / NEW_EXPORTS).is_dir()
    assert main(["export", "--version", str(v), "--format", "onnx"]) == 0  # finishes the swap, then exports
    verify_version(v)
    records = json.loads((v / "exports" / "parity.json").read_text())
    assert {"model.onnx", "model.int8.onnx"} <= records.keys()  # the killed export's swap was finished
    assert (v / "exports" / "model.int8.onnx").is_file() and (
        v / "exports" / "model.onnx"
    ).read_bytes() != b""
    assert old  # (the fp32 graph was rebuilt by the second export)
    assert _hidden(v) == []


@pytest.mark.slow
def test_the_cycles_deploy_export_is_atomic_too(tmp_path, tiny_model_dir):
    """The maintenance cycle exports a challenger (refit.maintain.deploy) the same way: under the export lock
    and through adding_exports. Before, it installed files into exports/ and then re-sealed it, so a kill in
    between left a version every command refused; now one killed mid-swap is finished by a plain export."""
    v = trained_version(tmp_path, tiny_model_dir)
    deploy = (
        "import sys; from pathlib import Path; from refit.maintain.deploy import export_and_gate; "
        "export_and_gate(Path(sys.argv[1]), ['onnx'], max_accuracy_drop=100.0, min_agreement=0.0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", deploy, str(v)], env=_env(**{FAULT_ENV: "exports-swapped-out"}), timeout=300
    )
    assert proc.returncode == -9, f"the deploy export was not killed mid-swap (rc {proc.returncode})"
    with pytest.raises(VersionError, match=r"killed while swapping"):
        verify_version(v)
    assert main(["export", "--version", str(v), "--format", "onnx"]) == 0
    verify_version(v)
    assert _hidden(v) == []
    assert "model.onnx" in json.loads((v / "exports" / "parity.json").read_text())
