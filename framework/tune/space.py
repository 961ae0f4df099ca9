"""Search spaces in YAML over any dotted key of the finetune config, validated before Ray starts.

space:
  optim.lr: {loguniform: [1.0e-5, 1.0e-3]}
  data.batch_size: {choice: [16, 32]}
  optim.warmup_ratio: {uniform: [0.0, 0.2]}
  trainer.max_epochs: {randint: [1, 4]}      # upper bound exclusive, as in Ray
  optim.weight_decay: {grid: [0.0, 0.01]}    # every value, crossed with the samples
"""

from __future__ import annotations

import difflib
from typing import Any

from refit.config import dotted_keys
from refit.errors import ConfigError
from refit.settings import FinetuneConfig

__all__ = ["DISTRIBUTIONS", "validate_space", "to_ray", "apply_overrides"]

DISTRIBUTIONS = ("loguniform", "uniform", "choice", "randint", "grid")
_BOUNDED = ("loguniform", "uniform", "randint")

# Keys a search cannot vary, and why. Each trial reports its own `trainer.monitor` to Tune under one name, so a
# space over the objective or over what the trials are scored on would rank a loss against an accuracy, or one
# validation set against another, as if they were one measure; the trial itself sets where it writes.
_FIXED_PER_SEARCH = {
    "trainer.monitor": "it is the search's objective, one per search: set it once under finetune.trainer",
    "trainer.mode": "it is the search's objective, one per search: set it once under finetune.trainer",
    "data.validation": "every trial is scored on the same validation split: set it once under finetune.data",
    "data.dataset": "every trial is scored on the same validation split: set it once under finetune.data",
    "data.dataset_config": "every trial is scored on the same validation split: set it once under finetune.data",
    "data.text_column": "every trial is scored on the same validation split: set it once under finetune.data",
    "data.label_column": "every trial is scored on the same validation split: set it once under finetune.data",
    "data.test": "the best trial is tested on one test split: set it once under finetune.data",
    "output_dir": "each trial writes under the search's folder (set --storage_path / --name)",
    "resume": "Tune restarts trials itself (resume a search with refit tune --resume)",
    "resume_with_changes": "Tune restarts trials itself (resume a search with refit tune --resume)",
}


def validate_space(space: dict[str, Any]) -> dict[str, tuple[str, list]]:
    """{dotted key: (distribution, arguments)}; every problem is a ConfigError naming the key."""
    if not space:
        raise ConfigError(
            "The search space is empty: give 'space' at least one key, e.g. "
            "optim.lr: {loguniform: [1.0e-5, 1.0e-3]}."
        )
    valid = dotted_keys(FinetuneConfig)
    out = {}
    for key, spec in space.items():
        if key not in valid:
            close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"space: '{key}' is not a key of the finetune config.{hint}")
        if key in _FIXED_PER_SEARCH:
            raise ConfigError(f"space: '{key}' cannot be searched: {_FIXED_PER_SEARCH[key]}.")
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
            raise ConfigError(
                f"space.{key}: give exactly one of {', '.join(DISTRIBUTIONS)}, e.g. "
                f"{{loguniform: [1.0e-5, 1.0e-3]}}; got {spec!r}."
            )
        kind, args = next(iter(spec.items()))
        if not isinstance(args, list) or not args:
            raise ConfigError(f"space.{key}.{kind}: expected a non-empty list, got {args!r}.")
        if kind in _BOUNDED:
            if len(args) != 2 or not all(isinstance(a, (int, float)) for a in args):
                raise ConfigError(f"space.{key}.{kind}: expected [low, high], got {args!r}.")
            low, high = args
            if low >= high:
                raise ConfigError(
                    f"space.{key}.{kind}: bounds the wrong way round or equal ({low} >= {high})."
                )
            if kind == "loguniform" and low <= 0:
                raise ConfigError(f"space.{key}.loguniform: bounds must be > 0, got {low}.")
        out[key] = (kind, args)
    return out


def to_ray(space: dict[str, tuple[str, list]]) -> dict[str, Any]:
    """Ray Tune sampling objects, keyed by the dotted finetune keys."""
    from ray import tune

    makers = {
        "loguniform": lambda a: tune.loguniform(*a),
        "uniform": lambda a: tune.uniform(*a),
        "randint": lambda a: tune.randint(*a),
        "choice": tune.choice,
        "grid": tune.grid_search,
    }
    return {key: makers[kind](args) for key, (kind, args) in space.items()}


def apply_overrides(config: dict, overrides: dict[str, Any]) -> dict:
    """A copy of a nested finetune config dict with dotted-key values replaced."""
    import copy

    out = copy.deepcopy(config)
    for key, value in overrides.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value.item() if hasattr(value, "item") else value
    return out
