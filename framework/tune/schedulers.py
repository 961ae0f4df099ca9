"""Trial schedulers and searchers, one small table each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from refit.errors import ConfigError

__all__ = ["SCHEDULERS", "SEARCHERS", "make_scheduler", "make_searcher"]


def _asha(max_t: int, grace_period: int, reduction_factor: float, space: dict) -> Any:
    from ray.tune.schedulers import ASHAScheduler

    class LastValidationKeptASHA(ASHAScheduler):
        """ASHA with every rung before a trial's last validation. Ray stops any trial that reaches max_t
        and puts a rung at max_t whenever it is grace * rf^k; a trial stopped there has paid for all its
        training and would lose its final evaluation and version for nothing. So the scheduler's own stop
        comes one report after max_t, and rungs at or past max_t are dropped (Ray has no option for it;
        tests/recipes/test_tune.py checks the rungs a search really stops at)."""

        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            for bracket in self._brackets:
                bracket._rungs = [(t, seen) for t, seen in bracket._rungs if t < max_t]

    return LastValidationKeptASHA(
        time_attr="training_iteration",
        max_t=max_t + 1,
        grace_period=grace_period,
        reduction_factor=reduction_factor,
    )


def _pbt(max_t: int, grace_period: int, reduction_factor: float, space: dict) -> Any:
    from ray.tune.schedulers import PopulationBasedTraining

    return PopulationBasedTraining(
        time_attr="training_iteration", perturbation_interval=max(1, grace_period), hyperparam_mutations=space
    )


def _fifo(max_t: int, grace_period: int, reduction_factor: float, space: dict) -> Any:
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


SCHEDULERS: dict[str, Callable[..., Any]] = {"asha": _asha, "pbt": _pbt, "fifo": _fifo}


def _optuna(metric: str, mode: str, seed: int, max_concurrent: int) -> Any:
    try:
        import optuna
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise ConfigError("searcher 'optuna' needs `pip install optuna`.") from None
    searcher = OptunaSearch(metric=metric, mode=mode, sampler=optuna.samplers.TPESampler(seed=seed))
    return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent) if max_concurrent else searcher


def _random(metric: str, mode: str, seed: int, max_concurrent: int) -> Any:
    from ray.tune.search import BasicVariantGenerator

    # seeded, so that two searches with the same seed (say FIFO and ASHA) try the same configs. The limit
    # goes to the generator itself: Tune ignores TuneConfig.max_concurrent_trials (with a warning) when it
    # is handed a generator instance, and every trial would have run at once.
    return BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent)


SEARCHERS: dict[str, Callable[..., Any]] = {"random": _random, "optuna": _optuna}


def make_scheduler(name: str, *, max_t: int, grace_period: int, reduction_factor: float, space: dict) -> Any:
    return SCHEDULERS[name](max_t, grace_period, reduction_factor, space)


def make_searcher(name: str, *, metric: str, mode: str, seed: int, max_concurrent: int = 0) -> Any:
    """`max_concurrent`: trials running at once, 0 = as many as resources allow."""
    return SEARCHERS[name](metric, mode, seed, max_concurrent)
