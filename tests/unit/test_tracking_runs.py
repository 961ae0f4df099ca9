"""The standalone W&B runs (a drift check, a job summary) are set up by one function (refit.tracking._start_run):
both land under the job's output folder with their job type and name, and `disabled` writes nothing.
Real W&B, offline."""

from __future__ import annotations

import pytest

from refit.tracking import log_drift_run, log_summary_run

pytest.importorskip("wandb", reason="needs wandb (the [dev] extra)")


def _report() -> dict:
    return {
        "version": {"id": "v-abc"},
        "config": {"alpha": 0.05},
        "tests": ["mmd"],
        "windows": [{"name": "w0", "size": 10, "drift": False, "results": {"mmd": {"p_value": 0.4}}}],
        "drift": False,
    }


def _logged(folder) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*.wandb"))


def test_drift_and_summary_runs_are_offline_runs_under_the_output_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "drift" / "report.html").parent.mkdir()
    (tmp_path / "drift" / "report.html").write_text("<p>drift</p>")
    drift = log_drift_run(_report(), tmp_path / "drift", "offline", "refit-test")
    summary = log_summary_run(
        "maintain", "cycle-7", {"decision": "keep"}, tmp_path / "m", "offline", "refit-test"
    )
    for folder, job_type, name in ((drift, b"drift", b"drift-v-abc"), (summary, b"maintain", b"cycle-7")):
        assert folder is not None and str(tmp_path) in folder
        logged = _logged(tmp_path / ("drift" if job_type == b"drift" else "m"))
        assert job_type in logged and name in logged


def test_disabled_tracking_starts_no_run(tmp_path):
    assert log_drift_run(_report(), tmp_path / "d", "disabled", "refit-test") is None
    assert log_summary_run("maintain", "c", {}, tmp_path / "m", "disabled", "refit-test") is None
    assert not (tmp_path / "d").exists() and not (tmp_path / "m").exists()
