"""Drift tests on synthetic data: calibrated under no drift, powerful under a shift, honest p-values."""

from __future__ import annotations

import pytest
import torch

from refit.drift import DETECTORS, bbsd_test, classifier_test, ks_test, mmd_test
from refit.drift.mmd import median_bandwidth
from refit.drift.state import fit_state, load_state, save_state


def _gauss(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) + shift


@pytest.mark.parametrize("test", [mmd_test, ks_test, classifier_test])
def test_shift_is_detected_and_no_shift_is_not(test):
    ref = _gauss(300, 16, 0)
    assert test(ref, _gauss(150, 16, 1, shift=0.5)).drift
    kwargs = {"permutations": 200} if test is mmd_test else {}
    assert test(ref, _gauss(150, 16, 2), **kwargs).p_value > 0.01


def test_mmd_p_value_is_never_zero_and_has_the_permutation_form():
    res = mmd_test(_gauss(100, 8, 0), _gauss(100, 8, 1, shift=3.0), permutations=99, seed=0)
    assert res.p_value == pytest.approx(1 / 100)  # (0 + 1) / (99 + 1), never 0
    res = mmd_test(_gauss(100, 8, 0), _gauss(100, 8, 1), permutations=99, seed=0)
    assert round(res.p_value * 100) == pytest.approx(res.p_value * 100)  # (k + 1) / (B + 1)


def test_mmd_false_alarm_rate_over_many_null_splits():
    rejections = 0
    trials = 60
    for t in range(trials):
        ref, cur = _gauss(80, 6, 1000 + t), _gauss(60, 6, 2000 + t)
        rejections += mmd_test(ref, cur, permutations=99, seed=t, alpha=0.05).drift
    assert rejections / trials <= 0.15  # alpha 0.05; binomial noise at 60 trials stays well under this


def test_bandwidth_is_fitted_on_the_reference_only():
    ref = _gauss(200, 8, 0)
    bw = median_bandwidth(ref)
    res = mmd_test(ref, _gauss(100, 8, 1, shift=10.0), permutations=50)
    assert res.details["bandwidth"] == pytest.approx(bw)


def test_ks_and_bbsd_explain_what_moved():
    ref = _gauss(400, 5, 0)
    cur = _gauss(200, 5, 1)
    cur[:, 0] += 2.0
    res = ks_test(ref, cur, n_components=5)
    assert res.drift and res.details["components_moved"] and "PC" in res.explanation
    probs_ref = torch.tensor([[0.8, 0.2]] * 100 + [[0.2, 0.8]] * 100)
    probs_cur = torch.tensor([[0.8, 0.2]] * 20 + [[0.2, 0.8]] * 180)
    res = bbsd_test(probs_ref, probs_cur, label_names=["neg", "pos"])
    assert res.drift and "pos 50% -> 90%" in res.explanation


def test_state_round_trip_and_table(tmp_path):
    ref = _gauss(120, 12, 0)
    state = fit_state(ref)
    save_state(tmp_path, state)
    loaded = load_state(tmp_path)
    assert loaded["bandwidth"] == pytest.approx(state["bandwidth"])
    torch.testing.assert_close(loaded["pca_basis"], state["pca_basis"])
    for name, detector in DETECTORS.items():
        a, b = (ref.softmax(1)[:, :3], ref.softmax(1)[:60, :3]) if name == "bbsd" else (ref, _gauss(60, 12, 5))
        res = detector(a, b, alpha=0.05, seed=0, state=loaded, permutations=50)
        assert res.name == name and 0 < res.p_value <= 1
