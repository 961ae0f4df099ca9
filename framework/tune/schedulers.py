"""Trial schedulers and searchers, one small table each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from refit.errors import ConfigError

__all__ = ["RESTORING", "SCHEDULERS", "SEARCHERS", "make_scheduler", "make_searcher", "rungs"]


def _asha(max_t: int, grace_period: int, reduction_factor: float, space: dict, num_samples: int) -> Any:
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


def _pbt(max_t: int, grace_period: int, reduction_factor: float, space: dict, num_samples: int) -> Any:
    from ray.tune.schedulers import PopulationBasedTraining

    return PopulationBasedTraining(
        time_attr="training_iteration", perturbation_interval=max(1, grace_period), hyperparam_mutations=space
    )


def _fifo(max_t: int, grace_period: int, reduction_factor: float, space: dict, num_samples: int) -> Any:
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


def rungs(max_t: int, grace_period: int, reduction_factor: float) -> list[int]:
    """The validations at which trials are compared: grace * rf^k, all before a trial's last (max_t)."""
    out, t = [], float(grace_period)
    while t < max_t:
        if not out or int(t) > out[-1]:
            out.append(int(t))
        t *= reduction_factor
    return out


def _halving(max_t: int, grace_period: int, reduction_factor: float, space: dict, num_samples: int) -> Any:
    from ray.tune.schedulers import HyperBandScheduler
    from ray.tune.schedulers.hyperband import _Bracket

    class SuccessiveHalving(HyperBandScheduler):
        """Synchronous successive halving, one bracket holding every trial: each trial pauses at a rung
        until all live trials have reached it, then the best 1/rf go on and the rest stop.

        Why not ASHA: with few workers, Ray's asynchronous ASHA continues every trial that is first at a
        rung (nothing to compare it with yet), so on 8 trials and 2 workers half of them ran to the end
        (37 of 64 validations; scripts/results/tune.md). Why not Ray's HyperBand: it fills its most
        conservative bracket (no stopping at all) first, so 8 trials never reach an aggressive one. Ray's
        own bracket (_Bracket) does the bookkeeping; this class only puts every trial into one bracket
        whose rungs are those of `rungs()`, all before the last validation (like refit's ASHA, so that a
        trial that trained to the end always writes its version). Pausing needs a checkpoint at every
        report (trial_checkpoints) and a mid-epoch resume, as PBT does.
        """

        def __init__(self) -> None:
            super().__init__(
                time_attr="training_iteration",
                max_t=max_t,
                reduction_factor=reduction_factor,
                stop_last_trials=False,  # the survivors run to their own end
            )
            self._bracket = _Bracket(
                time_attr="training_iteration",
                max_trials=num_samples,
                init_t_attr=grace_period,
                max_t_attr=max_t,
                eta=reduction_factor,
                s=len(rungs(max_t, grace_period, reduction_factor)),
                stop_last_trials=False,
            )
            self._hyperbands = [[self._bracket]]
            self._added, self._processing = 0, False

        def on_trial_add(self, tune_controller, trial) -> None:
            if self._added == num_samples:
                raise RuntimeError(f"SuccessiveHalving was built for {num_samples} trials; got one more.")
            self._added += 1
            self._bracket.add_trial(trial)
            self._trial_info[trial] = self._bracket, 0

        def on_trial_result(self, tune_controller, trial, result: dict) -> str:
            self._bracket.update_trial_stats(trial, result)
            if self._bracket.continue_trial(trial):
                return self.CONTINUE
            if self._added < num_samples:  # trials not yet started must reach this rung too
                return self.PAUSE
            return self._process_bracket(tune_controller, self._bracket)

        def on_trial_remove(self, tune_controller, trial) -> None:
            # Ray's HyperBand re-examines a bracket after a removal only until its first halving; here
            # a trial that fails later must not leave the others paused for ever.
            self._bracket.cleanup_trial(trial)
            if self._added == num_samples:
                self._process_bracket(tune_controller, self._bracket)

        def _process_bracket(self, tune_controller, bracket) -> str:
            if self._processing:  # stopping a bad trial removes it, which lands here again
                return self.PAUSE
            self._processing = True
            try:
                return super()._process_bracket(tune_controller, bracket)
            finally:
                self._processing = False

    return SuccessiveHalving()


SCHEDULERS: dict[str, Callable[..., Any]] = {"asha": _asha, "halving": _halving, "pbt": _pbt, "fifo": _fifo}
# schedulers that pause and restore trials: they need a checkpoint from every report
RESTORING = ("halving", "pbt")


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


def make_scheduler(
    name: str, *, max_t: int, grace_period: int, reduction_factor: float, space: dict, num_samples: int
) -> Any:
    return SCHEDULERS[name](max_t, grace_period, reduction_factor, space, num_samples)


def make_searcher(name: str, *, metric: str, mode: str, seed: int, max_concurrent: int = 0) -> Any:
    """`max_concurrent`: trials running at once, 0 = as many as resources allow."""
    return SEARCHERS[name](metric, mode, seed, max_concurrent)
