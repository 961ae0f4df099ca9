"""refit.estimate's twoview estimator on synthetic two-view data where the truth is known.

Each row has a class y, a base-encoder embedding (class mean + noise: the probe's view) and the version's
logits (a class margin + independent noise, with a lean toward class 0). A window under label shift keeps
both views' class-conditionals; a window where the domain gives the version an extra lean moves only the
version's predictions, so only the version's BBSE prior moves."""

from __future__ import annotations

import json

import numpy as np
import pytest

from refit.errors import VersionError
from refit.estimate import (
    CALIBRATION_JSON,
    ESTIMATORS,
    estimate_accuracy,
    fit_calibration,
    fit_probe,
    load_calibration,
    twoview_unavailable,
    usable,
)

DIM = 8


def _rows(n: int, positive: float, seed: int, lean: float = 0.0):
    """(version logits [n, 2], base embeddings [n, DIM], labels) with a `positive` share of class 1."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < positive).astype(np.int64)
    means = np.zeros((2, DIM))
    means[0, 0], means[1, 0] = -1.0, 1.0
    emb = means[y] + rng.normal(0, 1.0, size=(n, DIM))
    margin = 1.0 * (2 * y - 1) - 0.8 - lean + rng.normal(0, 1.2, size=n)
    logits = np.stack([-margin / 2, margin / 2], axis=1)
    return logits, emb, y


def _calibration():
    train_logits, train_emb, train_y = _rows(1500, 0.5, seed=1)
    val_logits, val_emb, val_y = _rows(1500, 0.5, seed=2)
    cal = fit_calibration(val_logits, val_y)
    cal.probe = fit_probe(train_emb, train_y, val_emb, val_logits, val_y)
    return cal


def _truth(logits, y) -> float:
    return float((logits.argmax(1) == y).mean())


def test_twoview_follows_a_label_shift_both_views_see():
    """85% of the window in the class the version is best at: its accuracy rises; doc, which reads only the
    confidence, misses it, twoview (the two priors agree) follows it."""
    cal = _calibration()
    logits, emb, y = _rows(3000, 0.15, seed=3)
    truth = _truth(logits, y)
    assert truth > cal.accuracy + 0.04
    est = estimate_accuracy(logits, cal, embeddings=emb, bootstrap=50)
    assert abs(est["twoview"].value - truth) < 0.03
    assert abs(est["doc"].value - truth) > abs(est["twoview"].value - truth) + 0.02
    assert est["twoview"].low <= est["twoview"].value <= est["twoview"].high


def test_twoview_does_not_read_a_lean_of_the_version_as_a_prior():
    """A balanced-ish window where only the version leans to class 0: its accuracy falls. Every estimator
    over-states it (the unsafe direction), cbpe_ls most, since it takes the lean for a prior; twoview sees the
    probe's prior move the other way, makes no label-shift correction and over-states least."""
    cal = _calibration()
    logits, emb, y = _rows(3000, 0.6, seed=4, lean=1.5)
    truth = _truth(logits, y)
    assert truth < cal.accuracy - 0.05
    est = estimate_accuracy(logits, cal, embeddings=emb, bootstrap=50)
    assert est["cbpe_ls"].value > max(est["doc"].value, est["cbpe"].value) > truth + 0.05
    assert truth < est["twoview"].value < min(est["doc"].value, est["cbpe"].value) - 0.05


def test_twoview_scores_a_stack_of_replicates_like_each_one():
    cal = _calibration()
    logits, emb, _ = _rows(400, 0.3, seed=5)
    second = cal.probe.logits(emb)
    stack, second_stack = np.stack([logits[:200], logits[200:]]), np.stack([second[:200], second[200:]])
    both = ESTIMATORS["twoview"](stack, cal, second_stack)
    for k in range(2):
        assert both[k] == pytest.approx(ESTIMATORS["twoview"](stack[k], cal, second_stack[k]))


def test_twoview_needs_the_window_embeddings_and_a_probe(tmp_path):
    """Without embeddings twoview is left out by default and refused by name; a calibration.json from before
    the probe (format /2) still loads and serves the others; a malformed probe is refused on load."""
    cal = _calibration()
    logits, emb, _ = _rows(300, 0.5, seed=6)
    assert "twoview" not in estimate_accuracy(logits, cal, bootstrap=5)
    assert "twoview" in usable(cal, embeddings=True) and "twoview" not in usable(cal)
    with pytest.raises(ValueError, match="twoview needs the window's base-encoder embeddings"):
        estimate_accuracy(logits, cal, methods=["twoview"])
    with pytest.raises(ValueError, match="8-d embeddings"):
        estimate_accuracy(logits, cal, methods=["twoview"], embeddings=emb[:, :4])
    cal.save(tmp_path)
    assert load_calibration(tmp_path) == cal
    data = json.loads((tmp_path / CALIBRATION_JSON).read_text())
    assert data["format"] == "refit-calibration/4"
    old = {k: v for k, v in data.items() if k != "probe"}
    (tmp_path / CALIBRATION_JSON).write_text(json.dumps({**old, "format": "refit-calibration/2"}))
    legacy = load_calibration(tmp_path)
    assert legacy.probe is None
    assert set(estimate_accuracy(logits, legacy, embeddings=emb, bootstrap=5)) == {
        "cbpe",
        "atc",
        "doc",
        "cbpe_ls",
    }
    with pytest.raises(ValueError, match="twoview.*probe, format /3"):
        estimate_accuracy(logits, legacy, methods=["twoview"], embeddings=emb)
    bad = {**data, "probe": {**data["probe"], "stack_bias": [0.0]}}
    (tmp_path / CALIBRATION_JSON).write_text(json.dumps(bad))
    with pytest.raises(VersionError, match=f"{CALIBRATION_JSON}.*stack_bias"):
        load_calibration(tmp_path)


def test_twoview_unavailable_names_each_reason():
    """'' where the window's encoder is the probe's; otherwise one reason per case, the recorded one first."""
    cal = _calibration()
    cal.probe.encoder, cal.probe.encoder_sha256 = "base-model", "a" * 64
    assert twoview_unavailable(cal, "a" * 64) == ""
    assert "not embedded by the encoder its probe was fitted on (base-model)" in twoview_unavailable(
        cal, "b" * 64
    )
    assert "not embedded" in twoview_unavailable(cal, None)
    assert "no calibration.json" in twoview_unavailable(None, "a" * 64)
    cal.probe, cal.no_probe = None, "fine-tuned with data.probe_rows 0"
    assert twoview_unavailable(cal, "a" * 64) == "the version has no probe: fine-tuned with data.probe_rows 0"
    cal.no_probe = ""  # a calibration.json from before the reason was stored
    assert "an older version" in twoview_unavailable(cal, "a" * 64)


def test_a_probe_needs_two_classes_in_its_training_rows():
    logits, emb, y = _rows(100, 0.5, seed=7)
    with pytest.raises(ValueError, match=">= 2 classes"):
        fit_probe(emb, np.zeros(100, dtype=np.int64), emb, logits, y)


def test_fine_tuning_stores_a_probe_that_twoview_uses(tmp_path, tiny_model_dir):
    """A fine-tune whose reference is embedded by a fixed encoder (the default, data.reference_encoder base)
    stores the probe in calibration.json; twoview then answers on windows embedded as the reference was."""
    from refit.drift.embed import embed
    from refit.settings import DataConfig, OptimConfig, TrackingConfig, TrainerConfig
    from refit.train import run_finetune

    result = run_finetune(
        str(tiny_model_dir),
        data=DataConfig(dataset="refit-demo", max_length=32, batch_size=32, reference_size=50),
        optim=OptimConfig(lr=2e-3),
        trainer=TrainerConfig(max_epochs=1),
        tracking=TrackingConfig(wandb=False),
        output_dir=tmp_path / "run",
    )
    cal = load_calibration(result.version_dir)
    assert cal.probe is not None and cal.probe.dim == 32 and cal.probe.train_rows > 0
    reference = json.loads((result.version_dir / "reference" / "reference.json").read_text())
    assert cal.probe.encoder_sha256 == reference["encoder_sha256"]  # the reference's encoder, checked
    texts = ["a wonderful film", "dull and far too long", "I loved every minute", "a waste of time"] * 10
    emb = embed(result.version_dir, texts).numpy()
    logits = np.random.default_rng(0).normal(size=(len(texts), 2))  # any logits: the version's own view
    est = estimate_accuracy(logits, cal, embeddings=emb, methods=["twoview"], bootstrap=10)["twoview"]
    assert 0 <= est.low <= est.value <= est.high <= 1 and est.n == len(texts)


def test_twoview_is_near_the_truth_without_shift_for_three_classes():
    """In-distribution windows of a 3-class task: the stack and the prior gate work for k classes too."""
    rng = np.random.default_rng(8)

    def rows(n: int):
        y = rng.integers(0, 3, n)
        emb = np.eye(3, DIM)[y] * 1.5 + rng.normal(0, 1.0, size=(n, DIM))
        logits = np.eye(3)[y] * 1.5 + rng.normal(0, 1.0, size=(n, 3))
        return logits, emb, y

    train_logits, train_emb, train_y = rows(1500)
    val_logits, val_emb, val_y = rows(1500)
    cal = fit_calibration(val_logits, val_y)
    cal.probe = fit_probe(train_emb, train_y, val_emb, val_logits, val_y)
    errors = []
    for _ in range(5):
        logits, emb, y = rows(1000)
        est = estimate_accuracy(logits, cal, embeddings=emb, methods=["twoview"], bootstrap=20)["twoview"]
        errors.append(abs(est.value - _truth(logits, y)))
    assert np.mean(errors) < 0.03
