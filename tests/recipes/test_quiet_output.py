"""A new user's terminal shows refit's own progress and results, not third-party notices (issue #13.1)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import finetune_args

NOISE = [
    "weights_only",  # torch.load FutureWarning / Lightning's notice
    "LeafSpec",  # torch pytree deprecation raised inside Lightning
    "anonymous setting",  # W&B
    "Run history",  # W&B's run summary at finish
    "wandb:",  # any other W&B banner line
    "litlogger",  # Lightning's tip
    "GPU available",
    "TPU available",
    "Loading weights",  # transformers' per-load progress bar
]


def test_finetune_with_tracking_prints_no_third_party_noise(tmp_path, tiny_model_dir, toy_data):
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_SILENT", "HF_HUB_DISABLE_PROGRESS_BARS")}
    env.update(WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    args = finetune_args(
        tiny_model_dir, toy_data, tmp_path / "run", "--tracking.wandb", "true", "--trainer.max_epochs", "1"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "refit", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    # refit's own result lines are all there, the W&B run included (tracking really was on)...
    assert "refit finetune: v" in out and "Model version:" in out and "W&B run:" in out, out
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*")), "the offline W&B run was not written"
    # ...and none of the known third-party notices
    found = [n for n in NOISE if n in out]
    assert not found, f"noise {found} in:\n{out}"


def test_both_wordings_of_onnxruntimes_pre_processing_advice_are_dropped():
    """`refit export --format edge` printed ORT's static-quantisation wording, which the filter missed."""
    import logging

    from refit.cli import _quiet_third_party

    _quiet_third_party()
    root = logging.getLogger()

    def shown(msg: str) -> bool:
        record = logging.LogRecord("root", logging.WARNING, __file__, 1, msg, None, None)
        return all(f.filter(record) for f in root.filters)

    assert not shown("Please consider to run pre-processing before quantization. Refer to example: ...")
    assert not shown(
        "Please consider pre-processing before quantization. See https://github.com/microsoft/..."
    )
    assert shown("Please consider something else entirely")
