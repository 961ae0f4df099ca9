"""Hyper-parameter search with Ray Tune over the finetune recipe's own training code."""

from refit.tune.results import TrialRow, collect_trials, write_outputs
from refit.tune.safety import check_resumable, owner_only_writes
from refit.tune.schedulers import SCHEDULERS, SEARCHERS, make_scheduler, make_searcher
from refit.tune.space import DISTRIBUTIONS, apply_overrides, to_ray, validate_space
from refit.tune.trial import REPORTED_METRIC, make_trainable

__all__ = [
    "DISTRIBUTIONS",
    "REPORTED_METRIC",
    "SCHEDULERS",
    "SEARCHERS",
    "TrialRow",
    "apply_overrides",
    "check_resumable",
    "collect_trials",
    "make_scheduler",
    "make_searcher",
    "make_trainable",
    "owner_only_writes",
    "to_ray",
    "validate_space",
    "write_outputs",
]
