"""One writer per folder, readers that do not race writers (issue s8-locks): refit.io.folder_lock and its
users (hold_folder, export_lock, exports_read_lock), raced with real processes.

Each other process is a real interpreter holding the lock through refit's own code until the test tells it
to let go (a line on its stdin), or until it is SIGKILLed.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from refit.errors import ExportError
from refit.export.lock import export_lock, exports_read_lock
from refit.io import RUN_LOCK, FolderBusy, hold_folder
from refit.models import adding_exports, verify_version
from tests.conftest import sealed_files_version

_ROOT = Path(__file__).resolve().parents[2]

# argv: KIND PATH. Takes the lock of KIND, prints "held", waits for a line on stdin, lets go. It takes the
# version's locks as export_lock / exports_read_lock do (refit.io.folder_lock on the version folder; that
# import alone starts in 0.03 s, refit.export in 1.5 s) so that the tests' own side, which takes them
# through export_lock, checks that both name the same lock. "swap" holds the exclusive lock in the middle of
# adding exports: the new files are staged, not yet swapped in.
_HOLDER = r"""
import sys
from pathlib import Path
from refit.io import folder_lock, hold_folder

kind, path = sys.argv[1], Path(sys.argv[2])
def busy():
    return RuntimeError("busy")
lock = {
    "folder": lambda: hold_folder(path, "refit run"),
    "read": lambda: folder_lock(path, busy, shared=True, wait_s=60),
    "file": lambda: folder_lock(path.parent, busy, lock_file=path.name),
}
with lock.get(kind, lambda: folder_lock(path, busy))():
    if kind == "swap":
        from refit.models import adding_exports

        with adding_exports(path) as staging:
            (staging / "model.onnx").write_bytes(b"NEW")
            (staging / "model.int8.onnx").write_bytes(b"NEW int8")
            print("held", flush=True)
            sys.stdin.readline()
    else:
        print("held", flush=True)
        sys.stdin.readline()
"""

# argv: VERSION. Waits for the shared lock, then reads exports/ whole: verified, and every file's bytes.
_READER = r"""
import json, sys
from pathlib import Path
from refit.export.lock import exports_read_lock
from refit.models import verify_version

v = Path(sys.argv[1])
print("waiting", flush=True)
with exports_read_lock(v, wait_s=60):
    verify_version(v)
    files = {p.name: p.read_text() for p in sorted((v / "exports").iterdir()) if p.name != "manifest.json"}
    print(json.dumps(files), flush=True)
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(_ROOT)}


def _start(script: str, *args: str | Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def _hold(kind: str, path: Path) -> subprocess.Popen:
    proc = _start(_HOLDER, kind, path)
    assert proc.stdout.readline().strip() == "held", f"the {kind} holder did not get its lock"
    return proc


def _release(proc: subprocess.Popen) -> None:
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.wait(timeout=60) == 0


def _stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _silent_for(proc: subprocess.Popen, seconds: float) -> bool:
    """True if `proc` printed nothing more and is still running after `seconds`."""
    ready, _, _ = select.select([proc.stdout], [], [], seconds)
    return not ready and proc.poll() is None


@pytest.fixture
def version(tmp_path) -> Path:
    return sealed_files_version(tmp_path)


def test_two_writers_of_one_version_one_is_refused_naming_the_folder(version):
    holder = _hold("export", version)
    try:
        with pytest.raises(ExportError, match="Another refit export of") as e, export_lock(version):
            pass
        assert str(version) in str(e.value) and "run this command again" in str(e.value)
        started = time.monotonic()
        with pytest.raises(ExportError, match="kept it over 1 s"), export_lock(version, wait_s=1):
            pass
        assert time.monotonic() - started >= 1  # it waited its deadline before giving up
    finally:
        _stop(holder)


def test_two_runs_on_one_output_folder_one_is_refused(tmp_path):
    out = tmp_path / "run"
    holder = _hold("folder", out)
    try:
        busy = pytest.raises(FolderBusy, match="Another refit compress is writing")
        with busy as e, hold_folder(out, "refit compress"):
            pass
        assert str(out) in str(e.value) and "--output_dir" in str(e.value)
    finally:
        _stop(holder)


def test_a_reader_waits_for_the_writer_then_reads_the_whole_new_sealed_exports(version):
    """Before, `refit benchmark` read exports/ with no lock: a swap at that moment failed it on a missing
    file, or it timed half the old files and half the new."""
    writer = _hold("swap", version)  # new files staged, swap not done
    reader = _start(_READER, version)
    try:
        assert reader.stdout.readline().strip() == "waiting"
        assert _silent_for(reader, 1.5), "the reader read exports/ while an export held it"
        _release(writer)  # the export swaps its exports/ in and lets go
        files = json.loads(reader.stdout.readline())
        assert reader.wait(timeout=60) == 0
        assert files == {"model.int8.onnx": "NEW int8", "model.onnx": "NEW", "parity.json": "{}"}
    finally:
        _stop(writer, reader)


def test_readers_share_and_keep_writers_out_until_the_last_one_leaves(version):
    readers = [_hold("read", version), _hold("read", version)]  # both hold it at once
    try:
        with exports_read_lock(version, wait_s=0):  # and a third
            pass
        with (
            pytest.raises(ExportError, match="or another command is reading its exports"),
            export_lock(version),
        ):
            pass
        _release(readers[0])
        with pytest.raises(ExportError), export_lock(version):  # one reader still holds it
            pass
        _release(readers[1])
        with export_lock(version):
            pass
    finally:
        _stop(*readers)


def test_a_writer_waits_for_a_reader_within_its_deadline(version):
    reader = _hold("read", version)
    release = threading.Timer(1.0, lambda: (reader.stdin.write("\n"), reader.stdin.flush()))
    try:
        started = time.monotonic()
        release.start()
        with export_lock(version, wait_s=30):
            assert time.monotonic() - started >= 1.0  # it got the lock only once the reader let go
            assert reader.wait(timeout=30) == 0
    finally:
        release.cancel()
        _stop(reader)


def test_a_reader_gives_up_at_its_deadline_with_a_clear_error(version):
    writer = _hold("export", version)
    try:
        started = time.monotonic()
        busy = pytest.raises(ExportError, match=r"held its exports/ for over 1 s")
        with busy as e, exports_read_lock(version, wait_s=1):
            pass
        assert time.monotonic() - started >= 1 and str(version) in str(e.value)
    finally:
        _stop(writer)


@pytest.mark.parametrize("kind", ["export", "read", "swap"])
def test_a_sigkilled_holder_of_a_version_never_blocks_the_next_one(version, kind):
    holder = _hold(kind, version)
    holder.send_signal(signal.SIGKILL)
    assert holder.wait(timeout=30) == -signal.SIGKILL
    with export_lock(version):  # at once: wait_s 0
        from refit.models import settle_exports

        settle_exports(version)  # (a killed swap leaves staging for the next writer to remove)
    verify_version(version)
    assert (version / "exports" / "model.onnx").read_bytes() == b"OLD"
    assert not [p for p in version.iterdir() if p.name.startswith(".")]  # no lock file in a sealed version


def test_a_sigkilled_run_never_blocks_its_rerun_and_lock_only_folders_go(tmp_path):
    out = tmp_path / "runs" / "a"
    holder = _hold("folder", out)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert (out / RUN_LOCK).exists()  # the killed run's lock file stays, but no OS lock on it
    with hold_folder(out, "refit run"):
        (out / "version").mkdir()
    assert (out / "version").is_dir()
    fresh = tmp_path / "new" / "deeper"
    with hold_folder(fresh, "refit run"):  # made only for the lock, and nothing written
        assert (fresh / RUN_LOCK).exists()
    assert not (tmp_path / "new").exists()


def test_registering_waits_for_a_running_export_and_copies_its_new_exports(tmp_path, tiny_versions):
    """The registry copies a version into itself: a copy made between the exports swap's two renames
    verified without any exports/ and was registered without them, silently."""
    import shutil

    from refit.registry import Registry

    v = tmp_path / "v"
    shutil.copytree(tiny_versions[0], v)
    with adding_exports(v) as staging:
        (staging / "model.onnx").write_bytes(b"OLD")
    writer = _hold("swap", v)  # new exports staged, swap not done
    registry, done = Registry(tmp_path / "registry"), {}

    def register() -> None:
        try:
            done["version"] = registry.register(v)
        except Exception as e:  # (reported by the assertion below)
            done["error"] = e

    thread = threading.Thread(target=register)
    try:
        thread.start()
        thread.join(1.5)
        assert thread.is_alive() and not done, "the registry copied the version while an export held it"
        _release(writer)
        thread.join(60)
    finally:
        _stop(writer)
    registered = done["version"].path
    assert (registered / "exports" / "model.onnx").read_bytes() == b"NEW"
    assert (registered / "exports" / "model.int8.onnx").read_bytes() == b"NEW int8"
    verify_version(registered)


def test_maintain_cycles_never_overlap_once_refuses_and_a_loop_waits(tmp_path):
    """refit maintain's cycle lock (registry/maintain.lock) is the same lock: --once is refused at once with
    the caller's error, a loop waits for the running cycle to end."""
    import math

    from refit.maintain import cycle_lock

    lock_file = tmp_path / "registry" / "maintain.lock"
    lock_file.parent.mkdir()
    holder = _hold("file", lock_file)  # a cycle running in another process

    class Busy(Exception):
        pass

    release = threading.Timer(1.0, lambda: (holder.stdin.write("\n"), holder.stdin.flush()))
    try:
        with pytest.raises(Busy), cycle_lock(lock_file, Busy, wait_s=0):
            pass
        started = time.monotonic()
        release.start()
        with cycle_lock(lock_file, Busy, wait_s=math.inf):
            assert time.monotonic() - started >= 1.0 and holder.wait(timeout=30) == 0
    finally:
        release.cancel()
        _stop(holder)
