"""Search-space validation: every mistake names the key, before Ray starts."""

from __future__ import annotations

import pytest

from refit.errors import ConfigError
from refit.tune import apply_overrides, validate_space


@pytest.mark.parametrize(
    "space,fragment",
    [
        ({}, "search space is empty"),
        ({"trainer.max_epoch": {"randint": [1, 3]}}, "Did you mean 'trainer.max_epochs'"),
        ({"optim.lr": {"loguniform": [1e-3, 1e-5]}}, "wrong way round"),
        ({"optim.lr": {"loguniform": [0.0, 1e-3]}}, "must be > 0"),
        ({"optim.lr": {"normal": [0, 1]}}, "exactly one of loguniform"),
        ({"optim.lr": {"uniform": [1e-5]}}, "expected [low, high]"),
        ({"data.batch_size": {"choice": []}}, "non-empty list"),
        # each trial reports its own monitor under one name: a loss would be ranked against an accuracy
        (
            {"trainer.monitor": {"choice": ["val/loss", "val/accuracy"]}},
            "'trainer.monitor' cannot be searched",
        ),
        ({"trainer.mode": {"choice": ["min", "max"]}}, "the search's objective"),
        ({"data.validation": {"choice": ["a.jsonl", "b.jsonl"]}}, "the same validation split"),
        # the trial sets these itself: a searched value would be ignored in silence
        ({"output_dir": {"choice": ["runs/a", "runs/b"]}}, "each trial writes under the search's folder"),
        ({"resume": {"choice": [True, False]}}, "Tune restarts trials itself"),
    ],
)
def test_bad_space_is_a_clear_error(space, fragment):
    with pytest.raises(ConfigError) as err:
        validate_space(space)
    assert fragment in str(err.value)


def test_valid_space_and_overrides():
    space = validate_space(
        {
            "optim.lr": {"loguniform": [1e-5, 1e-3]},
            "data.batch_size": {"choice": [8, 16]},
            "trainer.max_epochs": {"grid": [1, 2]},
        }
    )
    assert space["data.batch_size"] == ("choice", [8, 16])
    base = {"optim": {"lr": 1e-4, "eps": 1e-8}, "data": {"batch_size": 32}}
    out = apply_overrides(base, {"optim.lr": 3e-4, "data.batch_size": 8})
    assert out == {"optim": {"lr": 3e-4, "eps": 1e-8}, "data": {"batch_size": 8}}
    assert base["optim"]["lr"] == 1e-4  # the base is not modified


def test_ray_objects_are_built():
    pytest.importorskip("ray", reason="Ray Tune is an optional extra (refit-ml[tune])")
    from refit.tune import to_ray

    ray_space = to_ray(
        validate_space({"optim.lr": {"loguniform": [1e-5, 1e-3]}, "trainer.max_epochs": {"grid": [1, 2]}})
    )
    assert ray_space["trainer.max_epochs"] == {"grid_search": [1, 2]}
    assert 1e-5 <= ray_space["optim.lr"].sample() <= 1e-3


def test_the_search_driver_loads_neither_lightning_nor_transformers():
    """The driver only samples, schedules and writes the outputs; Lightning and transformers (about 8 s of
    imports here) load in the trial workers, which train. A fresh interpreter, so earlier tests' imports do
    not count."""
    import subprocess
    import sys

    heavy = ("torch", "lightning", "transformers", "torchmetrics")
    code = (
        "import sys, refit.cli, refit.recipes.tune, refit.tune, refit.report; "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"the tune driver imports {out.strip()}"


def test_environment_sets_values_only_for_the_duration(monkeypatch):
    """The local Ray's processes start inside this block and keep its values; the caller's environment is
    left as it was (a variable it had is restored, one it lacked is removed)."""
    import os

    from refit.recipes.tune import _environment

    monkeypatch.setenv("REFIT_TEST_KEPT", "before")
    monkeypatch.delenv("REFIT_TEST_NEW", raising=False)
    with _environment({"REFIT_TEST_KEPT": "during", "REFIT_TEST_NEW": "1"}):
        assert os.environ["REFIT_TEST_KEPT"] == "during" and os.environ["REFIT_TEST_NEW"] == "1"
    assert os.environ["REFIT_TEST_KEPT"] == "before"
    assert "REFIT_TEST_NEW" not in os.environ


def test_tied_trials_give_the_same_best_whatever_the_order_of_results(tmp_path):
    """Ray lists results in another order after a resume; the best of equal scores is the first trial."""
    from refit.tune import TrialRow, write_outputs

    rows = []
    for trial in ("t_00002", "t_00000", "t_00001"):
        version = tmp_path / trial / "version"
        version.mkdir(parents=True)
        (version / "refit.json").write_text(trial)
        final = 0.5 if trial != "t_00001" else 0.7
        rows.append(TrialRow(trial, "finished", {"optim.lr": 1e-5}, final, final, 2, 1.0, str(version)))
    for mode, want in (("max", "t_00001"), ("min", "t_00000")):
        for order in (rows, rows[::-1]):
            out = tmp_path / f"out-{mode}-{len(list(tmp_path.iterdir()))}"
            out.mkdir()
            _, best_version, best = write_outputs(order, {"data": {}}, out, mode, "val/accuracy")
            assert best.trial == want and (best_version / "refit.json").read_text() == want
