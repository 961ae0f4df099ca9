"""`refit finetune` end to end: version layout, reload with plain transformers, tracking, resume, DDP."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from refit.cli import main
from refit.evaluate import METRIC_NAMES
from tests.conftest import finetune_args, shared_dataset, write_jsonl


def _logits(folder: Path, texts: list[str]) -> torch.Tensor:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        return model(**tok(texts, padding=True, return_tensors="pt")).logits


def _best_checkpoint_logits(ckpt: Path, version: Path, texts: list[str]) -> torch.Tensor:
    """Logits of the best Lightning checkpoint's weights (our own file, so a full load is fine here)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    model = AutoModelForSequenceClassification.from_pretrained(version / "model").eval()
    for p in model.parameters():
        p.data.zero_()
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    tok = AutoTokenizer.from_pretrained(version / "model")
    with torch.no_grad():
        return model(**tok(texts, padding=True, return_tensors="pt")).logits


def _check_version(version: Path, splits=("train", "validation", "test")) -> dict:
    meta = json.loads((version / "refit.json").read_text())
    assert (version / "model" / "model.safetensors").is_file()
    assert (version / "model" / "config.json").is_file() and (version / "model" / "tokenizer.json").is_file()
    assert (version / "exports").is_dir()
    for split in splits:
        assert set(METRIC_NAMES) <= set(meta["metrics"][split]), split
        assert all(0.0 <= meta["metrics"][split][m] <= 1.0 for m in METRIC_NAMES)
        assert meta["metrics"][split]["loss"] > 0
    assert meta["recipe"] == "finetune" and meta["config"]["trainer"]["max_epochs"] >= 1
    assert meta["data"]["train"]["rows"] > 0 and len(meta["data"]["train"]["sha256"]) == 64
    assert {"torch", "transformers", "lightning"} <= set(meta["packages"])
    return meta


def test_finetune_tiny_model_writes_a_loadable_version(tmp_path, tiny_model_dir, toy_data, capsys):
    out = tmp_path / "run"
    assert main(finetune_args(tiny_model_dir, toy_data, out)) == 0
    version = out / "version"
    meta = _check_version(version)
    assert meta["labels"] == ["0", "1"] and meta["training"]["global_step"] == 2 * 6
    printed = capsys.readouterr().out
    assert str(version) in printed and "accuracy" in printed

    texts = [json.loads(line)["text"] for line in toy_data["validation"].read_text().splitlines()]
    torch.testing.assert_close(
        _logits(version / "model", texts),
        _best_checkpoint_logits(out / "checkpoints" / "best.ckpt", version, texts),
    )
    # the recorded validation accuracy is what the saved model really scores
    labels = [json.loads(line)["label"] for line in toy_data["validation"].read_text().splitlines()]
    acc = (_logits(version / "model", texts).argmax(-1) == torch.tensor(labels)).float().mean().item()
    assert acc == pytest.approx(meta["metrics"]["validation"]["accuracy"], abs=1e-6)

    ref = version / "reference"
    from safetensors.torch import load_file

    emb = load_file(str(ref / "embeddings.safetensors"))["embeddings"]
    assert emb.shape == (len(texts), 32) and torch.isfinite(emb).all()
    assert json.loads((ref / "reference.json").read_text())["split"] == "validation"
    assert not (out / "wandb").exists(), "tracking was off: no W&B files may be written"


def test_tracking_writes_an_offline_wandb_run_with_the_version_artifact(tmp_path, tiny_model_dir, toy_data):
    out = tmp_path / "run"
    args = finetune_args(tiny_model_dir, toy_data, out, "--trainer.max_epochs", "1")
    args[args.index("--tracking.wandb") + 1] = "true"
    assert main(args) == 0
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb")), "the offline run holds no data"
    assert (out / "logs" / "metrics.csv").is_file()


def test_existing_run_is_not_overwritten_without_resume(tmp_path, tiny_model_dir, toy_data, capsys):
    out = tmp_path / "run"
    assert main(finetune_args(tiny_model_dir, toy_data, out, "--trainer.max_steps", "2")) == 0
    written = (out / "version" / "refit.json").read_text()
    assert main(finetune_args(tiny_model_dir, toy_data, out)) == 2
    err = capsys.readouterr().err  # finished: --resume would only say "nothing to resume"
    assert "already holds a finished run" in err and "new --output_dir" in err and "--resume" not in err
    assert (out / "version" / "refit.json").read_text() == written
    shutil.rmtree(out / "version")  # a run with a checkpoint but no version yet: continue it
    assert main(finetune_args(tiny_model_dir, toy_data, out)) == 2
    assert "Continue it with --resume" in capsys.readouterr().err


def _steps_logged(out: Path) -> list[int]:
    with (out / "logs" / "metrics.csv").open() as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss_step")]


@pytest.mark.slow  # a subprocess
def test_resume_after_ctrl_c_continues_steps_optimizer_and_schedule(tmp_path, tiny_model_dir, toy_data):
    out = tmp_path / "run"
    args = finetune_args(
        tiny_model_dir,
        toy_data,
        out,
        "--trainer.max_epochs",
        "400",  # long enough that the run cannot end before the poll below sees step 8, however fast the CPU
        "--trainer.checkpoint_every_n_steps",
        "1",
        "--trainer.early_stopping_patience",
        "0",
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "refit", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # an ignored SIGINT is inherited across exec: make sure this child hears the Ctrl-C
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if last.is_file() and torch.load(last, weights_only=False)["global_step"] >= 8:
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "--resume" in output
    interrupted = torch.load(last, weights_only=False)
    step = interrupted["global_step"]
    assert 8 <= step < 400 * 6
    assert interrupted["optimizer_states"][0]["state"], "optimizer moments were not saved"

    total = step + 6
    assert main([*args, "--resume", "--trainer.max_steps", str(total)]) == 0
    meta = json.loads((out / "version" / "refit.json").read_text())
    assert meta["training"]["global_step"] == total
    resumed = torch.load(last, weights_only=False)
    assert resumed["lr_schedulers"][0]["last_epoch"] == total  # the schedule continued, it did not restart
    steps = _steps_logged(out)
    assert max(steps) >= total - 1 and min(s for s in steps if s >= step - 1) >= step - 1


@pytest.mark.slow  # two DDP processes
def test_ddp_on_two_cpu_processes_writes_one_version(tmp_path, tiny_model_dir, toy_data):
    out = tmp_path / "run"
    args = finetune_args(
        tiny_model_dir,
        toy_data,
        out,
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        "2",
        "--trainer.accelerator",
        "cpu",
        "--trainer.max_epochs",
        "1",
    )
    proc = subprocess.run([sys.executable, "-m", "refit", *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    versions = [p for p in out.iterdir() if (p / "refit.json").is_file()]
    assert versions == [out / "version"]
    meta = _check_version(out / "version")
    assert meta["config"]["trainer"]["strategy"] == "ddp"
    # 48 rows, 2 ranks x batch 8 -> 3 steps per epoch, not the 6 of a single process
    assert meta["training"]["global_step"] == 3


@pytest.mark.slow
def test_minilm_on_real_sst2_rows(tmp_path, minilm_dir):
    sst2 = shared_dataset("sst2")
    data = {}
    for split, n in (("train", 320), ("validation", 128), ("test", 128)):
        rows = [json.loads(line) for line in (sst2 / f"{split}.jsonl").read_text().splitlines()[:n]]
        data[split] = write_jsonl(tmp_path / "data" / f"{split}.jsonl", rows)
    out = tmp_path / "run"
    args = finetune_args(
        "minilm",
        data,
        out,
        "--trainer.max_epochs",
        "2",
        "--data.batch_size",
        "16",
        "--optim.lr",
        "2e-4",
        "--data.max_length",
        "64",
        "--optim.warmup_ratio",
        "0.1",
    )
    assert main(args) == 0
    meta = _check_version(out / "version")
    assert meta["base_model"] == "minilm"
    assert meta["metrics"]["validation"]["accuracy"] > 0.6  # 40 steps of MiniLM already beat chance clearly
    texts = [json.loads(line)["text"] for line in data["validation"].read_text().splitlines()[:16]]
    torch.testing.assert_close(
        _logits(out / "version" / "model", texts),
        _best_checkpoint_logits(out / "checkpoints" / "best.ckpt", out / "version", texts),
    )
