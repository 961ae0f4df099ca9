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
    with pytest.raises(ValueError, match="allowed: cbpe, atc, doc, cbpe_ls"):
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


def _label_shift(n: int, share_positive: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pure label shift: y drawn with the given prior, x | y fixed (class 0 tight around -1, class 1 wide
    around +1, so the two classes' recalls differ and accuracy moves with the prior); logits are the exact
    log-likelihoods, i.e. calibrated posteriors for a balanced prior."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < share_positive).astype(np.int64)
    sd = np.where(y == 1, 1.5, 0.5)
    x = rng.normal(np.where(y == 1, 1.0, -1.0), sd)
    logits = np.stack(
        [-((x + 1) ** 2) / (2 * 0.25) - np.log(0.5), -((x - 1) ** 2) / (2 * 2.25) - np.log(1.5)], 1
    )
    return logits, y


def test_cbpe_ls_follows_accuracy_under_pure_label_shift_where_cbpe_does_not():
    """#12: the window's prior is recovered by BBSE and the re-weighted CBPE tracks the accuracy, which moves
    with the prior because one class is easier; plain CBPE, calibrated for validation's balance, does not."""
    from refit.estimate import window_prior

    val_logits, val_labels = _label_shift(4000, 0.5, seed=11)
    cal = fit_calibration(val_logits, val_labels)
    assert np.asarray(cal.confusion).sum() == pytest.approx(1.0)
    assert cal.class_prior == pytest.approx([0.5, 0.5], abs=0.03)
    for share in (0.1, 0.5, 0.9):
        logits, labels = _label_shift(3000, share, seed=12)
        truth = float((logits.argmax(1) == labels).mean())
        assert window_prior(logits, cal)[1] == pytest.approx(share, abs=0.04)
        est = estimate_accuracy(logits, cal, methods=["cbpe", "cbpe_ls"], seed=1)
        assert abs(est["cbpe_ls"].value - truth) < 0.025, share
        assert est["cbpe_ls"].ci_low <= est["cbpe_ls"].value <= est["cbpe_ls"].ci_high
        if share != 0.5:
            assert abs(est["cbpe"].value - truth) > 2 * abs(est["cbpe_ls"].value - truth) + 0.02, share


def test_cbpe_ls_bootstrap_re_estimates_the_prior_of_each_replicate():
    """The prior is a window statistic: a replicate with other class shares has another prior, so the
    interval is the spread of re-estimated values, not of rows scored under one fixed prior."""
    from refit.estimate import ESTIMATORS, window_prior

    val_logits, val_labels = _label_shift(4000, 0.5, seed=13)
    cal = fit_calibration(val_logits, val_labels)
    logits, _ = _label_shift(300, 0.8, seed=14)
    stack = np.stack([logits[:150], logits[150:]])  # two windows at once: leading axis = replicate
    per = ESTIMATORS["cbpe_ls"](stack, cal)
    for k in range(2):
        assert per[k] == pytest.approx(ESTIMATORS["cbpe_ls"](stack[k], cal))
        assert window_prior(stack, cal)[k] == pytest.approx(window_prior(stack[k], cal))


def test_a_calibration_from_before_the_confusion_table_serves_the_other_estimators(tmp_path):
    """calibration.json format /1 (no confusion table) still loads; cbpe_ls is left out by default and
    refused by name when asked for; a corrupt table is refused on load."""
    logits, labels = _draw(300, seed=15)
    cal = fit_calibration(logits, labels)
    cal.save(tmp_path)
    data = json.loads((tmp_path / CALIBRATION_JSON).read_text())
    old = {k: v for k, v in data.items() if k not in ("confusion", "class_prior")}
    (tmp_path / CALIBRATION_JSON).write_text(json.dumps({**old, "format": "refit-calibration/1"}))
    legacy = load_calibration(tmp_path)
    assert legacy.confusion is None and set(estimate_accuracy(logits, legacy)) == {"cbpe", "atc", "doc"}
    with pytest.raises(ValueError, match="cbpe_ls.*confusion table"):
        estimate_accuracy(logits, legacy, methods=["cbpe_ls"])
    (tmp_path / CALIBRATION_JSON).write_text(json.dumps({**data, "confusion": [[0.5, 0.5], [0.5, 0.5]]}))
    with pytest.raises(VersionError, match="sum to 1"):
        load_calibration(tmp_path)
