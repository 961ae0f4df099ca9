"""`refit finetune --resume` at every point of a run, end to end on the tiny model (issue #9, item 10).

The toy training split has 48 rows; at batch size 8 an epoch is 6 optimizer steps.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import torch

from refit.cli import main
from tests.conftest import finetune_args

STEPS_PER_EPOCH = 6


def _metrics_rows(out: Path) -> list[dict]:
    with (out / "logs" / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def _unfinished_run(tmp_path: Path, model: Path, data: dict, *stop: str) -> tuple[Path, list[str]]:
    """A run stopped early (by `stop`) whose version is then removed: what a kill after the last checkpoint
    and before the next one (or before the version was written) leaves behind."""
    out = tmp_path / "run"
    args = finetune_args(model, data, out, "--trainer.early_stopping_patience", "0")
    assert main([*args, *stop]) == 0
    shutil.rmtree(out / "version")
    return out, args


def _steps(n: int) -> tuple[str, ...]:
    return "--trainer.max_steps", str(n), "--trainer.checkpoint_every_n_steps", str(n)


def test_resume_right_after_the_last_batch_of_an_epoch(tmp_path, tiny_model_dir, toy_data):
    """last.ckpt is saved by the validation at the end of epoch 0, after its last batch and before its epoch
    end: a process killed before the next checkpoint resumes straight into the epoch end with no batch of its
    own (it crashed with 'No samples to concatenate'). One epoch of a two-epoch run leaves exactly that."""
    out, args = _unfinished_run(tmp_path, tiny_model_dir, toy_data, "--trainer.max_epochs", "1")
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert ckpt["global_step"] == STEPS_PER_EPOCH and ckpt["epoch"] == 0  # saved inside epoch 0
    rows_before = _metrics_rows(out)

    total = 2 * STEPS_PER_EPOCH
    assert main([*args, "--resume"]) == 0
    meta = json.loads((out / "version" / "refit.json").read_text())
    assert meta["training"]["global_step"] == total
    rows_after = _metrics_rows(out)
    # logs/metrics.csv was appended to, not overwritten: the first process's rows are still there.
    assert len(rows_after) > len(rows_before)
    steps_before = [r["step"] for r in rows_before]
    assert [r["step"] for r in rows_after[: len(rows_before)]] == steps_before
    assert max(int(r["step"]) for r in rows_after if r.get("train/loss_step")) >= total - 1


def test_resume_in_the_middle_of_an_epoch(tmp_path, tiny_model_dir, toy_data):
    out, args = _unfinished_run(tmp_path, tiny_model_dir, toy_data, *_steps(STEPS_PER_EPOCH + 2))
    assert main([*args, "--resume", "--trainer.max_steps", str(2 * STEPS_PER_EPOCH - 1)]) == 0
    assert json.loads((out / "version" / "refit.json").read_text())["training"]["global_step"] == 11


def test_resume_with_another_training_setup_is_refused_unless_asked(
    tmp_path, tiny_model_dir, toy_data, capsys
):
    out, args = _unfinished_run(tmp_path, tiny_model_dir, toy_data, *_steps(2))
    ckpt = out / "checkpoints" / "last.ckpt"
    saved = ckpt.read_bytes()
    for change, key in (
        (["--optim.lr", "0.5"], "optim.lr"),
        (["--data.batch_size", "4"], "data.batch_size"),
        (["--data.train", str(toy_data["test"])], "data.train"),
    ):
        assert main([*args, *change, "--resume"]) == 2
        err = capsys.readouterr().err
        assert key in err and "--resume_with_changes" in err and "Traceback" not in err
    # the same file path with other content is another data set too
    train = Path(toy_data["train"])
    train.write_text(train.read_text() + json.dumps({"text": "one more row", "label": 1}) + "\n")
    assert main([*args, "--resume"]) == 2
    assert "data.train" in capsys.readouterr().err
    assert ckpt.read_bytes() == saved, "a refused resume must leave the checkpoint alone"
    assert not (out / "version").exists()
    # asked for: it continues under the new settings
    assert (
        main([*args, "--resume", "--resume_with_changes", "--optim.lr", "0.5", "--trainer.max_steps", "4"])
        == 0
    )
    meta = json.loads((out / "version" / "refit.json").read_text())
    assert meta["training"]["global_step"] == 4 and meta["config"]["optim"]["lr"] == 0.5


def test_resuming_a_finished_run_says_it_is_finished(tmp_path, tiny_model_dir, toy_data, capsys):
    out = tmp_path / "run"
    args = finetune_args(tiny_model_dir, toy_data, out, "--trainer.max_steps", "2")
    assert main(args) == 0
    refit_json = (out / "version" / "refit.json").read_text()
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    assert "finished" in capsys.readouterr().out
    assert (out / "version" / "refit.json").read_text() == refit_json
