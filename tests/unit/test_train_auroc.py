"""Training's own AUROC agrees with evaluation's: missing (None) where a split holds one class, never 0.0.

torchmetrics' MulticlassAUROC scored a one-class validation split 0.0 with a warning on every epoch, so
metrics.csv, W&B and the version's refit.json said 0.0 where `refit evaluate` says "n/a (one class)".
"""

from __future__ import annotations

import csv
import json
import warnings

import pytest
import torch

from refit.data import read_table
from refit.evaluate import auroc, check_parent_reproduces
from refit.settings import DataConfig, OptimConfig, TrackingConfig, TrainerConfig
from refit.train import evaluate_version
from refit.train.job import run_finetune
from refit.train.metrics import training_metrics
from tests.conftest import finetune_args, toy_rows, write_jsonl


def _one_class(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["label"] == 0]


def test_the_training_auroc_is_evaluations_over_the_classes_present():
    """Three classes, class 2 absent from the labels: evaluation's AUROC (classes 0 and 1), not the
    torchmetrics macro average that counts the absent class as 0.0."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 3, generator=gen)
    labels = torch.randint(0, 2, (40,), generator=gen)
    metrics = training_metrics(3, "val/")
    for part in (slice(0, 17), slice(17, 40)):  # two batches, as in an epoch
        metrics.update(logits[part], labels[part])
    got = float(metrics.compute()["val/auroc"])
    assert got == pytest.approx(auroc(logits.softmax(-1), labels), abs=1e-6)


def test_one_class_gives_an_undefined_auroc_without_warnings():
    metrics = training_metrics(2, "val/")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torchmetrics warned "No positive samples" on each compute
        metrics.update(torch.randn(8, 2), torch.zeros(8, dtype=torch.long))
        values = metrics.compute()
    assert torch.isnan(values["val/auroc"]), values  # undefined, not 0.0
    assert values["val/accuracy"] == values["val/accuracy"]  # the rest are still computed


@pytest.fixture(scope="module")
def one_class_run(tmp_path_factory, tiny_model_dir):
    """A fine-tune whose validation (and test) split holds only class 0, W&B offline on."""
    root = tmp_path_factory.mktemp("one-class")
    files = {
        "train": str(write_jsonl(root / "data" / "train.jsonl", toy_rows(8, 0))),
        "validation": str(write_jsonl(root / "data" / "validation.jsonl", _one_class(toy_rows(6, 1)))),
        "test": str(write_jsonl(root / "data" / "test.jsonl", _one_class(toy_rows(4, 2)))),
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_finetune(
            str(tiny_model_dir),
            data=DataConfig(**files, max_length=32, batch_size=8, eval_batch_size=4, reference_size=0),
            optim=OptimConfig(lr=1e-3),
            trainer=TrainerConfig(max_epochs=2, early_stopping_patience=2, log_every_n_steps=1),
            tracking=TrackingConfig(wandb=True, mode="offline"),
            output_dir=root / "run",
        )
    return result, root / "run", [str(w.message) for w in caught]


def test_one_class_validation_records_no_auroc_in_refit_json(one_class_run):
    result, _, _ = one_class_run
    meta = json.loads((result.version_dir / "refit.json").read_text())
    for split in ("validation", "test"):
        assert meta["metrics"][split]["auroc"] is None, meta["metrics"][split]  # JSON null, as evaluate
        assert isinstance(meta["metrics"][split]["accuracy"], float)
    assert isinstance(meta["metrics"]["train"]["auroc"], float)  # the train split holds both classes


def test_the_parent_check_reproduces_a_one_class_version(one_class_run):
    """Export and compress compare evaluation's scores now with the recorded ones: they agree, AUROC too."""
    result, out, _ = one_class_run
    meta = json.loads((result.version_dir / "refit.json").read_text())
    texts, labels = read_table(out.parent / "data" / "validation.jsonl", "text", "label")
    now = evaluate_version(result.version_dir, texts, labels, max_length=32)
    assert now["auroc"] is None and meta["metrics"]["validation"]["auroc"] is None
    assert check_parent_reproduces(meta, now, tolerance=0.5, recipe="export")["reproduced"]


def test_one_class_validation_logs_no_zero_auroc_and_no_warning(one_class_run):
    _, out, messages = one_class_run
    assert not [m for m in messages if "positive samples" in m.lower() or "auroc" in m.lower()], messages
    (csv_file,) = out.glob("**/metrics.csv")
    rows = list(csv.DictReader(csv_file.open()))
    assert any(r.get("val/accuracy") for r in rows), "no validation epoch was logged"
    logged = [r[k] for r in rows for k in ("val/auroc", "test/auroc") if r.get(k)]
    assert logged == [], f"an undefined AUROC was logged: {logged}"
    assert list(out.glob("wandb/offline-run-*/*.wandb")), "the offline W&B run holds no data"


def test_monitoring_auroc_on_a_one_class_validation_split_is_refused_up_front(
    tmp_path, tiny_model_dir, capsys
):
    from refit.cli import main

    data = {
        "train": write_jsonl(tmp_path / "data" / "train.jsonl", toy_rows(8, 0)),
        "validation": write_jsonl(tmp_path / "data" / "validation.jsonl", _one_class(toy_rows(6, 1))),
        "test": write_jsonl(tmp_path / "data" / "test.jsonl", toy_rows(4, 2)),
    }
    out = tmp_path / "run"
    assert main(finetune_args(tiny_model_dir, data, out, "--trainer.monitor", "val/auroc")) == 2
    err = capsys.readouterr().err
    assert "trainer.monitor" in err and "val/auroc" in err and "one class" in err, err
    assert str(data["validation"]) in err, err
    assert "Traceback" not in err
    assert not (out / "checkpoints").exists(), "training ran before the refusal"
