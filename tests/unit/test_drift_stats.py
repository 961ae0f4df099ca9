"""Drift tests on synthetic data: calibrated under no drift, powerful under a shift, honest p-values."""

from __future__ import annotations

import pytest
import torch

from refit.drift import DETECTORS, bbsd_test, classifier_test, ks_test, mmd_test
from refit.drift.detectors import KSState, MMDState
from refit.drift.mmd import median_bandwidth
from refit.drift.reference import Reference, fit_states, load_reference


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
    reference = fit_states(Reference(ref, ref.softmax(1)[:, :3], [f"t{i}" for i in range(120)], {}), seed=0)
    reference.save(tmp_path / "reference")
    loaded = load_reference(tmp_path)
    assert isinstance(loaded.states["mmd"], MMDState) and isinstance(loaded.states["ks"], KSState)
    assert loaded.states["mmd"].bandwidth == pytest.approx(median_bandwidth(ref, seed=0))
    torch.testing.assert_close(loaded.states["ks"].basis, reference.states["ks"].basis)
    torch.testing.assert_close(loaded.states["ks"].rows, reference.states["ks"].rows)
    assert loaded.texts == reference.texts and loaded.seed == 0
    for name, detector in DETECTORS.items():
        a, b = (loaded.probs, ref.softmax(1)[:60, :3]) if detector.on_probs else (ref, _gauss(60, 12, 5))
        res = detector.test(loaded.state(name), a, b, alpha=0.05, seed=0, permutations=50)
        assert res.name == name and 0 < res.p_value <= 1


def test_ks_state_is_fitted_on_one_half_and_tests_the_other():
    """The statistics did not change with the typed states: PCA on a seeded random half, KS on the rest."""
    ref = _gauss(100, 8, 3)
    state = DETECTORS["ks"].fit(ref, seed=7)
    order = torch.randperm(100, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(state.rows, order[50:].sort().values)
    assert set(state.rows.tolist()).isdisjoint(order[:50].tolist())
    expected = ks_test(ref[state.rows], _gauss(40, 8, 4), 0.05, pca=(state.mean, state.basis))
    got = DETECTORS["ks"].test(state, ref, _gauss(40, 8, 4), alpha=0.05)
    assert got.p_value == expected.p_value


def test_a_new_detector_is_one_class_and_one_line(monkeypatch):
    """Extension point: a dummy test registered with one line runs through run_window's loop and the recipe
    config's validation (`--tests`)."""
    from dataclasses import dataclass

    from refit.drift.result import DriftResult
    from refit.recipes.drift import Config

    @dataclass
    class MeanState:
        mean: torch.Tensor

    class MeanShift:
        on_probs = False
        state_type = MeanState

        def fit(self, reference, *, seed=0):
            return MeanState(reference.mean(0))

        def test(self, state, reference, current, *, alpha, seed=0, permutations=500, label_names=None):
            gap = float((current.mean(0) - state.mean).norm())
            return DriftResult("mean-shift", gap, 0.001 if gap > 1 else 0.5, alpha, gap > 1)

    monkeypatch.setitem(DETECTORS, "mean-shift", MeanShift())  # the one registration line
    assert Config(version="v", data="d", tests=["mean-shift"]).tests == ["mean-shift"]
    ref = _gauss(50, 4, 0)
    reference = fit_states(Reference(ref, None, [], {}), seed=0)
    assert isinstance(reference.states["mean-shift"], MeanState)
    result = DETECTORS["mean-shift"].test(
        reference.state("mean-shift"), ref, _gauss(50, 4, 1, shift=2.0), alpha=0.05
    )
    assert result.drift
