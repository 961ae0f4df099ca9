"""refit.estimate on synthetic probabilities where the truth is known: logits drawn, labels sampled from
softmax(logits), so softmax(logits) is perfectly calibrated and k * logits is over-confident with T = k."""

from __future__ import annotations

import json

import numpy as np
import pytest

from refit.errors import VersionError
from refit.estimate import (
    CALIBRATION_JSON,
    apply_temperature,
    estimate_accuracy,
    expected_calibration_error,
    fit_calibration,
    fit_temperature,
    load_calibration,
    log_probs_of,
)


def _draw(n: int, seed: int, classes: int = 2, scale: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, scale, size=(n, classes))
    probs = apply_temperature(logits, 1.0)
    labels = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
    return logits, labels


@pytest.mark.parametrize("true_t", [0.5, 1.0, 3.0])
def test_temperature_recovers_the_overconfidence_factor(true_t):
    logits, labels = _draw(20000, seed=1, classes=3)
    fitted = fit_temperature(logits * true_t, labels)
    assert fitted == pytest.approx(true_t, rel=0.08)


def test_calibration_lowers_ece_out_of_fold_and_keeps_accuracy():
    logits, labels = _draw(4000, seed=2)
    cal = fit_calibration(logits * 3, labels)
    assert cal.ece_before > 0.05 and cal.ece_after < cal.ece_before / 2
    assert cal.accuracy == pytest.approx(float((logits.argmax(1) == labels).mean()))
    assert (cal.calibrate(logits * 3).argmax(1) == logits.argmax(1)).all()  # one scalar never reorders


def test_ece_of_perfectly_calibrated_data_is_small_and_of_overconfident_large():
    logits, labels = _draw(20000, seed=3)
    assert expected_calibration_error(apply_temperature(logits, 1.0), labels) < 0.02
    assert expected_calibration_error(apply_temperature(logits * 4, 1.0), labels) > 0.08


def test_cbpe_interval_holds_the_expected_accuracy_of_a_calibrated_window():
    val_logits, val_labels = _draw(3000, seed=4)
    cal = fit_calibration(val_logits * 2, val_labels)  # over-confident model, calibrated on validation
    covered = 0
    for seed in range(20):  # windows from a shifted population: sharper logits, so a higher accuracy
        logits, labels = _draw(400, seed=100 + seed, scale=3.0)
        expected = apply_temperature(logits, 1.0).max(1).mean()  # the window's true expected accuracy
        est = estimate_accuracy(logits * 2, cal, methods=["cbpe"], seed=seed)["cbpe"]
        covered += est.low <= expected <= est.high
        assert abs(est.value - (logits.argmax(1) == labels).mean()) < 0.06
    assert covered >= 15  # 95% intervals, 20 windows; the temperature itself is estimated


def test_atc_threshold_reproduces_validation_accuracy_on_validation_and_doc_is_exact_there():
    logits, labels = _draw(1001, seed=5)
    cal = fit_calibration(logits * 1.7, labels)
    est = estimate_accuracy(logits * 1.7, cal)
    assert est["atc"].value == pytest.approx(cal.accuracy, abs=1.5 / len(labels))
    assert est["doc"].value == pytest.approx(cal.accuracy, abs=1e-9)


def test_estimators_follow_a_drop_in_accuracy():
    val_logits, val_labels = _draw(3000, seed=6, scale=3.0)
    cal = fit_calibration(val_logits, val_labels)
    logits, labels = _draw(2000, seed=7, scale=0.8)  # a harder window: accuracy falls a lot
    truth = float((logits.argmax(1) == labels).mean())
    assert truth < cal.accuracy - 0.15
    est = estimate_accuracy(logits, cal)
    for name, e in est.items():  # every estimator sees the drop (ATC overshoots it on this shift: it assumes
        assert (
            e.low <= e.ci_low <= e.value <= e.ci_high <= e.high
        )  # the confidences keep their validation shape)
        assert e.high < cal.accuracy - 0.08, name
    assert abs(est["cbpe"].value - truth) < 0.04  # still calibrated on this window: CBPE is right


def test_log_probs_stand_in_for_logits():
    logits, labels = _draw(500, seed=8)
    cal = fit_calibration(logits * 2, labels)
    a = estimate_accuracy(logits * 2, cal)
    b = estimate_accuracy(log_probs_of(apply_temperature(logits * 2, 1.0)), cal)
    for k in a:
        assert a[k].value == pytest.approx(b[k].value, abs=1e-9)


def test_bootstrap_is_seeded_and_unknown_methods_refused():
    logits, labels = _draw(300, seed=9)
    cal = fit_calibration(logits, labels)
    assert estimate_accuracy(logits, cal, seed=3) == estimate_accuracy(logits, cal, seed=3)
    with pytest.raises(ValueError, match="allowed: cbpe, atc, doc"):
        estimate_accuracy(logits, cal, methods=["nannyml"])


def test_calibration_file_round_trips_and_a_bad_one_is_refused(tmp_path):
    logits, labels = _draw(300, seed=10)
    cal = fit_calibration(logits, labels)
    assert load_calibration(tmp_path) is None  # versions made before calibration existed
    cal.save(tmp_path)
    assert load_calibration(tmp_path) == cal
    data = json.loads((tmp_path / CALIBRATION_JSON).read_text())
    (tmp_path / CALIBRATION_JSON).write_text(json.dumps({**data, "temperature": -1}))
    with pytest.raises(VersionError, match="temperature"):
        load_calibration(tmp_path)


def test_retrain_policy_needs_the_whole_interval_below_the_floor():
    from refit.maintain.policy import retrain_reasons

    def reasons(low, value, high):
        est = {"method": "cbpe", "value": value, "ci_low": low, "ci_high": high, "n": 200}
        return retrain_reasons(False, "", None, None, 0.0, None, False, est, 0.8)

    assert reasons(0.70, 0.75, 0.79) and "0.7500" in reasons(0.70, 0.75, 0.79)[0]
    assert reasons(0.72, 0.77, 0.82) == []  # estimate below the floor, interval reaches it: no retrain
    assert retrain_reasons(False, "", None, None, 0.0, None, False, None, 0.8) == []  # nothing estimated


def test_cbpe_expected_f1_tracks_the_realised_macro_f1_of_calibrated_windows():
    """#12: CBPE's expected macro-F1 against sklearn's macro-F1 of the sampled labels, on windows whose class
    balance and sharpness differ from validation's (F1, unlike accuracy, moves with the balance)."""
    from sklearn.metrics import f1_score

    from refit.estimate import estimate_f1

    val_logits, val_labels = _draw(3000, seed=7, classes=3)
    cal = fit_calibration(val_logits * 2, val_labels)
    errors, covered = [], 0
    for seed in range(10):
        logits, labels = _draw(1000, seed=200 + seed, classes=3, scale=1.0 + seed * 0.3)
        logits[:, 0] += 1.5  # skewed towards class 0
        labels = (
            np.random.default_rng(seed).random(len(logits))[:, None]
            > np.cumsum(apply_temperature(logits, 1.0), 1)
        ).sum(1)
        truth = f1_score(labels, logits.argmax(1), average="macro")
        est = estimate_f1(logits * 2, cal, seed=seed)
        errors.append(abs(est.value - truth))
        covered += est.ci_low - 0.03 <= truth <= est.ci_high + 0.03
        assert est.method == "cbpe_f1" and 0 <= est.ci_low <= est.value <= est.ci_high <= 1
    assert np.mean(errors) < 0.03 and covered >= 8
    flat = estimate_f1(np.zeros((50, 2)), cal)  # every row 50/50: the expected F1 of a coin
    assert flat.value == pytest.approx(1 / 3, abs=0.01)  # class 0 always predicted: F1_0 = 2/3, F1_1 = 0
    with pytest.raises(ValueError, match="estimate_f1 needs logits"):
        estimate_f1(np.zeros(3), cal)
