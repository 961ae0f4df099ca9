"""refit.train.job's end of a fine-tune: the validation logits are computed once, and what refit.json records
(validation metrics, calibration) is what a separate pass over validation with the saved model gives."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from refit.data import load_splits
from refit.estimate import fit_calibration
from refit.evaluate import score
from refit.inference import TorchPredictor, encode, predict_logits
from refit.settings import DataConfig, OptimConfig, TrackingConfig, TrainerConfig
from refit.train.job import run_finetune


class _RowsAfterFit(Callback):
    """Counts the rows the classifier runs on after training ends (final validation, test, calibration)."""

    def __init__(self) -> None:
        self.rows = 0

    def on_fit_end(self, trainer, pl_module) -> None:
        def count(_module, _args, kwargs) -> None:
            self.rows += kwargs["input_ids"].shape[0]

        pl_module.model.register_forward_pre_hook(count, with_kwargs=True)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir):
    from tests.conftest import toy_rows, write_jsonl

    root = tmp_path_factory.mktemp("job")
    files = {
        s: str(write_jsonl(root / "data" / f"{s}.jsonl", toy_rows(n, o)))
        for s, n, o in (("train", 16, 0), ("validation", 11, 1), ("test", 4, 2))
    }
    # eval batch 8 over 22 validation rows: batches of 8, 8, 6, each padded to its own longest text
    data = DataConfig(**files, max_length=32, batch_size=8, eval_batch_size=8, reference_size=0)
    counter = _RowsAfterFit()
    result = run_finetune(
        str(tiny_model_dir),
        data=data,
        optim=OptimConfig(lr=1e-3),
        trainer=TrainerConfig(max_epochs=2, early_stopping_patience=0, log_every_n_steps=1),
        tracking=TrackingConfig(wandb=False),
        output_dir=root / "run",
        callbacks=[counter],
    )
    return result, data, counter


def test_validation_runs_once_after_training(finished_run):
    """Final validation (22 rows) and test (8 rows) only: calibration no longer runs validation again."""
    _, _, counter = finished_run
    assert counter.rows == 22 + 8


def test_recorded_metrics_match_a_separate_pass_over_validation(finished_run):
    """The old path's numbers: the saved model run over validation by refit.inference, scored by the same
    torchmetrics set and calibrated by the same fit, agree with what refit.json records."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    result, data, _ = finished_run
    meta = json.loads((result.version_dir / "refit.json").read_text())
    splits = load_splits(data.train, data.validation, data.test)
    texts, labels = splits.texts["validation"], np.asarray(splits.labels["validation"])
    folder = result.version_dir / "model"
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    logits = predict_logits(
        TorchPredictor(model), encode(AutoTokenizer.from_pretrained(folder), texts, 32, 8)
    )
    recorded = meta["metrics"]["validation"]
    separate = score(logits, labels, 2)
    for name, value in separate.items():
        assert recorded[name] == pytest.approx(value, abs=1e-5), name
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    assert recorded["loss"] == pytest.approx(loss, abs=1e-5)
    calibration = fit_calibration(logits, labels, source="validation", seed=42).metrics()
    assert calibration["n"] == 22
    for name, value in calibration.items():
        assert meta["metrics"]["calibration"][name] == pytest.approx(value, abs=1e-4), name
