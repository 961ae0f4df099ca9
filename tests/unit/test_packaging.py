"""The distribution maps framework/, kernels/, recipes/ and configs/ under `refit` and nothing else."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # a subprocess
def test_only_refit_is_importable_outside_the_checkout(tmp_path):
    code = (
        "import importlib.util as u, refit.kernels, refit.recipes, refit.configs\n"
        "print([n for n in ('framework', 'kernels', 'recipes') if u.find_spec(n)])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.slow  # builds a wheel in a subprocess
def test_wheel_holds_refit_with_configs_and_demo_data(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    names = zipfile.ZipFile(next(tmp_path.glob("refit_ml-*.whl"))).namelist()
    assert {n.split("/")[0] for n in names} == {
        "refit",
        *{n.split("/")[0] for n in names if ".dist-info" in n},
    }
    assert "refit/configs/finetune/demo.yaml" in names and "refit/data/demo/train.jsonl" in names
    assert "refit/kernels/mmd.py" in names and "refit/recipes/finetune.py" in names
