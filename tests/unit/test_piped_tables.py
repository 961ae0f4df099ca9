"""Tables survive pipes (issue #13.2): under a pipe rich assumed 80 columns and cut ids ("v20261122-192…"),
the very ids `refit registry promote` needs. Every listing also has --format json."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from refit.cli import shipped_configs
from refit.registry import Registry
from tests.conftest import damaged_version


def _piped(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """Run with stdout a pipe (not a tty), as in `refit ... | grep`."""
    env = {**os.environ, "COLUMNS": "80"}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def test_registry_list_piped_shows_whole_ids_and_a_plain_title(tmp_path, tiny_model_dir, toy_data):
    root = tmp_path / "registry"
    version = Registry(root).register(damaged_version(tmp_path, tiny_model_dir, toy_data))
    proc = _piped("-m", "refit", "registry", "list", "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    assert version.id in proc.stdout and str(root) in proc.stdout, proc.stdout
    assert "registry registry" not in proc.stdout and "…" not in proc.stdout


def test_metric_tables_piped_never_cut_a_long_name(tmp_path):
    long = "challenger-v20261122-192233-abcdef-on-the-golden-set-of-2026-11-22"
    code = (
        "from refit.report import print_metrics; "
        f"print_metrics({{{long!r}: {{'accuracy': 0.9, 'f1_macro': 0.8, 'precision_macro': 0.7, "
        "'recall_macro': 0.6, 'auroc': 0.5, 'ece': 0.1, 'loss': 0.3}}, title='t')"
    )
    proc = _piped("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert long in proc.stdout and "…" not in proc.stdout, proc.stdout
    # ...and no column was squeezed to nothing to make room for it
    for cell in ("accuracy", "auroc", "0.9000", "0.8000", "0.7000", "0.6000", "0.5000", "0.1000", "0.3000"):
        assert cell in proc.stdout, (cell, proc.stdout)


def test_configs_lists_as_json(tmp_path):
    proc = _piped("-m", "refit", "configs", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == len(shipped_configs())
    demo = next(r for r in rows if r["config"] == "finetune/demo.yaml")
    assert demo["command"] == "refit finetune --config configs/finetune/demo.yaml"
    bad = _piped("-m", "refit", "configs", "--format", "xml")
    assert bad.returncode == 2 and "--format table|json" in bad.stderr


def test_registry_gc_piped_keeps_its_title_on_one_line(tmp_path):
    """A narrow table (three short columns) wrapped its long title to the table's width, path and all."""
    root = tmp_path / "a-registry-folder-with-a-long-name" / "registry"
    Registry(root)
    proc = _piped("-m", "refit", "registry", "gc", "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    assert f"registry gc {root} (keep the last 3 champions)" in proc.stdout, proc.stdout
    assert "Nothing to remove." in proc.stdout and "Dry run" not in proc.stdout
