"""Hyper-parameter search with Ray Tune over the finetune recipe's own training code."""

from refit.tune.results import TrialRow, collect_trials, write_outputs
from refit.tune.schedulers import RESTORING, SCHEDULERS, SEARCHERS, make_scheduler, make_searcher, rungs
from refit.tune.space import DISTRIBUTIONS, apply_overrides, count_trials, to_ray, validate_space
from refit.tune.trial import REPORTED_METRIC, make_trainable

__all__ = [
    "DISTRIBUTIONS",
    "REPORTED_METRIC",
    "RESTORING",
    "SCHEDULERS",
    "SEARCHERS",
    "TrialRow",
    "apply_overrides",
    "collect_trials",
    "count_trials",
    "make_scheduler",
    "make_searcher",
    "make_trainable",
    "rungs",
    "to_ray",
    "validate_space",
    "write_outputs",
]
