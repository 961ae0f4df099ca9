"""A new user's terminal shows refit's own progress and results, not third-party notices (issue #13.1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import damaged_version, finetune_args

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
    out = _refit_output(args, tmp_path, env)
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


def _quiet_env() -> dict:
    """The user's environment: none of the quieting variables refit sets for itself."""
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_SILENT", "HF_HUB_DISABLE_PROGRESS_BARS")}
    env.update(WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    return env


def _refit_output(args: list[str], cwd: Path, env: dict | None = None) -> str:
    """stdout + stderr of `python -m refit ARGS` run as a user would, which must succeed."""
    proc = subprocess.run(
        [sys.executable, "-m", "refit", *args],
        capture_output=True,
        text=True,
        env=env or _quiet_env(),
        timeout=600,
        cwd=cwd,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    return out


def test_registry_moves_mirrored_to_wandb_print_only_refits_lines(tmp_path, tiny_versions):
    """`refit registry promote/rollback/alias` with the W&B mirror on printed W&B's
    "wandb: Adding directory to artifact (...)... Done." line for every move."""
    root = str(tmp_path / "reg")

    def refit(*args: str) -> str:
        return _refit_output(["registry", *args, "--root", root], tmp_path)

    for v in tiny_versions[:2]:
        refit("register", "--version", str(v))
    outputs = [
        refit("promote", "--version", "v0", "--tracking.wandb", "true"),
        refit("promote", "--version", "v1", "--tracking.wandb", "true"),
        refit("rollback", "--tracking.wandb", "true"),
        refit("alias", "--alias", "staging", "--version", "v1", "--tracking.wandb", "true"),
    ]
    assert "champion: - -> v0" in outputs[0] and "champion: v1 -> v0 (rollback)" in outputs[2], outputs
    # the mirror really ran: one offline W&B run per move, each holding the version as an artifact
    assert len(list((tmp_path / "reg" / "wandb").glob("offline-run-*"))) == 4
    found = [(n, out) for out in outputs for n in ("wandb:", "Adding directory") if n in out]
    assert not found, found


def test_serves_own_progress_lines_are_info_not_warnings(tmp_path, tiny_versions, caplog):
    """`refit serve` logged "serving", "swapped" and "shut down cleanly" as WARNING: a user (or a log alert)
    reads those as something wrong. They are INFO; real trouble (a refused version) stays an ERROR."""
    import asyncio
    import logging

    pytest.importorskip("fastapi", reason="needs the [serve] extra")
    from refit.serve import ServeOptions, Server
    from refit.serve.app import build_app

    opts = ServeOptions(version=str(tiny_versions[0]), backend="pytorch", capture_dir=str(tmp_path / "inbox"))
    with caplog.at_level(logging.INFO, logger="refit.serve"):
        server = Server(opts)
        app = build_app(server=server)

        async def lifespan() -> None:  # the app's own start and stop, as uvicorn runs them
            async with app.router.lifespan_context(app):
                await asyncio.to_thread(server.reload, True)

        asyncio.run(lifespan())
    own = {r.getMessage().split(" ")[2]: r.levelname for r in caplog.records if r.name == "refit.serve"}
    assert {k: own.get(k) for k in ("serving", "swapped", "shut")} == {
        "serving": "INFO",
        "swapped": "INFO",
        "shut": "INFO",
    }, own
    assert "WARNING" not in own.values()


def test_benchmark_of_torch_int8_prints_no_quantized_tensor_deprecation(tmp_path, tiny_model_dir, toy_data):
    """`refit benchmark` printed torch's "torch.quantize_per_tensor ... are deprecated" UserWarning when it
    built the pytorch-int8 row (a baseline row; refit's own int8 path is ONNX Runtime)."""
    import json

    version = damaged_version(tmp_path, tiny_model_dir, toy_data)  # loads, and names its validation split
    args = ["benchmark", "--version", str(version), "--formats", "[pytorch, pytorch-int8]"]
    args += ["--iters", "3", "--throughput_batch", "4"]
    args += ["--tracking.wandb", "false", "--output_dir", str(tmp_path / "bench")]
    out = _refit_output(args, tmp_path)
    rows = {r["format"]: r for r in json.loads((version / "exports" / "benchmark.json").read_text())["rows"]}
    assert rows["pytorch-int8"]["p50_ms"] > 0, rows  # the quantised model really was built and run
    assert "quantize_per_tensor" not in out and "Warning" not in out, out


def test_mid_epoch_resume_prints_no_dataloader_not_resumable_warning(tmp_path, tiny_model_dir, toy_data):
    """Lightning warns "You're resuming from a checkpoint that ended before the epoch ended and your
    dataloader is not resumable ... unreliable results" on every mid-epoch `--resume`. refit's resume does
    continue correctly there (steps, schedule and optimizer state go on from the checkpoint; only the
    order of the resumed epoch's remaining batches restarts), so the notice is dropped."""
    import json
    import shutil

    from refit.cli import main

    out = tmp_path / "run"
    args = finetune_args(tiny_model_dir, toy_data, out, "--trainer.early_stopping_patience", "0")
    # 6 steps an epoch (48 rows, batch 8): stop and checkpoint at step 8, in the middle of epoch 1
    assert main([*args, "--trainer.max_steps", "8", "--trainer.checkpoint_every_n_steps", "8"]) == 0
    shutil.rmtree(out / "version")
    text = _refit_output([*args, "--resume", "--trainer.max_steps", "11"], tmp_path)
    assert json.loads((out / "version" / "refit.json").read_text())["training"]["global_step"] == 11
    assert "not resumable" not in text and "resuming from a checkpoint that ended" not in text, text
    # and Lightning's "Checkpoint directory ... exists and is not empty": on a resume it is refit's own
    assert "exists and is not empty" not in text, text
