"""Commands that read a version's exports/ while an export may be writing them take the version's export
lock (issue s8-locks), end to end on a tiny trained version with real ONNX exports and real other processes
holding the lock: `refit benchmark` (shared, while it loads and times) and `refit drift
--refresh_reference` (exclusive: it rewrites the whole version, exports/ included).

Before, `refit benchmark` loaded and timed exports/ with no lock: an export swapping a new exports/ in at
that moment made it fail on a missing file, or time half the old files and half the new.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import refit.recipes.benchmark as bench
from refit.cli import main
from refit.export.lock import export_lock
from refit.models import adding_exports, verify_version
from tests.conftest import trained_version

pytest.importorskip("onnxruntime", reason="needs the [export] extra")

_ROOT = Path(__file__).resolve().parents[2]

# argv: VERSION SOURCE. Holds the version's export lock in the middle of adding exports: a copy of SOURCE
# is staged as the new model.onnx, not yet swapped in; swaps it in after a line on stdin.
_EXPORTING = r"""
import shutil, sys
from pathlib import Path
from refit.export.lock import export_lock
from refit.models import adding_exports

v = Path(sys.argv[1])
with export_lock(v), adding_exports(v) as staging:
    shutil.copy(sys.argv[2], staging / "model.onnx")
    print("held", flush=True)
    sys.stdin.readline()
"""

# argv: VERSION. Tries to take the export lock at once: prints "refused" or "got it".
_TRY_WRITE = r"""
import sys
from pathlib import Path
from refit.errors import ExportError
from refit.export.lock import export_lock

try:
    with export_lock(Path(sys.argv[1])):
        print("got it")
except ExportError:
    print("refused")
"""


@pytest.fixture(scope="module")
def version(tmp_path_factory, tiny_model_dir) -> Path:
    v = trained_version(tmp_path_factory.mktemp("bench-lock"), tiny_model_dir)
    assert main(["export", "--version", str(v), "--format", "onnx-int8"]) == 0  # model.onnx + int8
    return v


def _args(version: Path, out: Path, *extra: str) -> list[str]:
    return [
        "benchmark",
        "--version",
        str(version),
        "--formats",
        "[onnx]",
        "--iters",
        "3",
        "--throughput_batch",
        "4",
        "--tracking.wandb",
        "false",
        "--output_dir",
        str(out),
        *extra,
    ]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(_ROOT)}


def _onnx_row(version: Path) -> dict:
    rows = json.loads((version / "exports" / "benchmark.json").read_text())["rows"]
    return next(r for r in rows if r["format"] == "onnx")


def _exporting(version: Path, source: Path) -> subprocess.Popen:
    writer = subprocess.Popen(
        [sys.executable, "-c", _EXPORTING, str(version), str(source)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert writer.stdout.readline().strip() == "held"
    return writer


def test_benchmark_waits_for_a_running_export_then_times_its_new_files(version, tmp_path):
    new = tmp_path / "int8-as-model.onnx"  # the new exports/ holds the int8 graph as model.onnx
    new.write_bytes((version / "exports" / "model.int8.onnx").read_bytes())
    old_mb = round((version / "exports" / "model.onnx").stat().st_size / 1e6, 2)
    new_mb = round(new.stat().st_size / 1e6, 2)
    assert old_mb != new_mb
    writer = _exporting(version, new)
    try:
        release = threading.Timer(2.0, lambda: (writer.stdin.write("\n"), writer.stdin.flush()))
        started = time.monotonic()
        release.start()
        assert main(_args(version, tmp_path / "out")) == 0
        assert time.monotonic() - started >= 2.0  # it waited for the export
        assert writer.wait(timeout=60) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.wait()
    verify_version(version)
    row = _onnx_row(version)
    assert row["note"] == "from exports/" and row["size_mb"] == new_mb  # the new file, whole


def test_no_export_can_start_while_benchmark_times_exports(version, tmp_path, monkeypatch):
    """While a row is timed, another process asking for the export lock is refused."""
    seen = []
    real = bench.benchmark_row

    def probing(*args, **kwargs):
        probe = [sys.executable, "-c", _TRY_WRITE, str(version)]
        seen.append(subprocess.run(probe, capture_output=True, text=True, env=_env(), timeout=60).stdout)
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "benchmark_row", probing)
    assert main(_args(version, tmp_path / "out")) == 0
    assert [s.strip() for s in seen] == ["refused"]
    probe = subprocess.run(
        [sys.executable, "-c", _TRY_WRITE, str(version)], capture_output=True, text=True, env=_env()
    )
    assert probe.stdout.strip() == "got it"  # and the benchmark let go when it was done


def test_benchmark_gives_up_on_an_export_that_holds_the_version_too_long(version, tmp_path, capsys):
    before = (version / "exports" / "manifest.json").read_bytes()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from refit.export.lock import export_lock\n"
            "with export_lock(Path(sys.argv[1])):\n    print('held', flush=True); sys.stdin.readline()",
            str(version),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(_args(version, tmp_path / "out", "--lock_wait_s", "1")) == 2
        err = capsys.readouterr().err
        assert f"Another refit export of {version}" in err and "kept it over 1 s" in err
        assert "Traceback" not in err
        assert (version / "exports" / "manifest.json").read_bytes() == before  # nothing written
    finally:
        holder.kill()
        holder.wait()


def test_results_are_not_written_for_files_an_export_replaced_after_the_timing(
    version, tmp_path, monkeypatch, capsys
):
    """Between the timing (shared lock) and the write (exclusive lock) an export may run: its files are
    not the ones timed, so the results are refused rather than written beside them."""
    real = bench.machine

    def export_meanwhile():  # called after the timing, before the write
        records = json.loads((version / "exports" / "parity.json").read_text())
        with export_lock(version), adding_exports(version) as staging:  # a re-export: new parity records
            (staging / "parity.json").write_text(json.dumps({**records, "re-exported": True}))
        return real()

    monkeypatch.setattr(bench, "machine", export_meanwhile)
    results = version / "exports" / "benchmark.json"
    before = results.read_bytes() if results.exists() else None  # an earlier test's, or none
    assert main(_args(version, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "changed while" in err and "Run refit benchmark again" in err and "Traceback" not in err
    assert (results.read_bytes() if results.exists() else None) == before  # not written
    verify_version(version)


def test_a_reference_refresh_waits_for_a_running_export_and_keeps_its_exports(version, tmp_path):
    """The refresh rewrites the whole version (a re-sealed copy swapped in), copying exports/: with no lock,
    an export swapping exports/ meanwhile was lost with the old folder, or the copy made between its two
    renames was sealed without any exports/."""
    import shutil

    from tests.conftest import toy_rows, write_jsonl

    v = tmp_path / "v"
    shutil.copytree(version, v)
    new = tmp_path / "new.onnx"
    new.write_bytes((v / "exports" / "model.int8.onnx").read_bytes())
    holdout = write_jsonl(tmp_path / "holdout.jsonl", toy_rows(20, 3))
    detector = (v / "reference" / "detector.json").read_bytes()
    writer = _exporting(v, new)
    release = threading.Timer(1.5, lambda: (writer.stdin.write("\n"), writer.stdin.flush()))
    try:
        started = time.monotonic()
        release.start()
        args = ["drift", "--version", str(v), "--refresh_reference", "--reference_data", str(holdout)]
        assert main([*args, "--tracking.wandb", "false"]) == 0
        assert time.monotonic() - started >= 1.5 and writer.wait(timeout=60) == 0
    finally:
        release.cancel()
        if writer.poll() is None:
            writer.kill()
        writer.wait()
    verify_version(v)
    assert (v / "exports" / "model.onnx").read_bytes() == new.read_bytes()  # the export's swap is kept
    assert (v / "reference" / "detector.json").read_bytes() != detector  # and the refresh is done


def test_a_registry_version_is_benchmarked_without_being_written_and_refused_for_export(
    version, tmp_path, capsys
):
    """A registry pins its versions' files, exports/ included, at registration. Before, `refit benchmark` of
    a registered version (the champion too) wrote its results into that version's exports/ and `refit
    export` added files there: the registry refused the version from then on, everywhere."""
    registry = tmp_path / "registry"
    assert main(["registry", "register", "--root", str(registry), "--version", str(version)]) == 0
    vid = json.loads((version / "refit.json").read_text())["version_id"]
    held = registry / "versions" / vid
    before = sorted(p.name for p in (held / "exports").iterdir())
    capsys.readouterr()

    assert main(_args(held, tmp_path / "out")) == 0
    assert "Wrote " + str(tmp_path / "out" / "benchmark.json") in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "benchmark.json").read_text())["version_id"] == vid
    assert sorted(p.name for p in (held / "exports").iterdir()) == before

    assert main(["export", "--version", str(held), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert f"is a version of the registry {registry.resolve()}" in err and "Traceback" not in err
    assert sorted(p.name for p in (held / "exports").iterdir()) == before
    assert main(["registry", "verify", "--root", str(registry)]) == 0  # still accepted, untouched
