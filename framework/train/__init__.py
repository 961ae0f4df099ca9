"""Training: the LightningModule, its optimiser, the Trainer builder and the fine-tune job.

Everything here but `evaluate_version` needs Lightning (4-6 s to import on a small machine), so those
names are imported on first use (PEP 562): a command that trains pays for it when training starts, and
`--help`, `refit drift` and a maintenance cycle that does not retrain never do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from refit.lazy import lazy_exports
from refit.train.evaluate import evaluate_version

if TYPE_CHECKING:
    from refit.train.job import VERSION_DIRNAME, FinetuneResult, check_monitor_defined, run_finetune
    from refit.train.module import SequenceClassifier
    from refit.train.optim import adamw_param_groups, linear_warmup_decay
    from refit.train.trainer import LAST_CKPT, ResumeCheckpoint, build_trainer

# name -> submodule that defines it, imported when the name is first read
_LAZY = {
    "VERSION_DIRNAME": "refit.train.job",
    "FinetuneResult": "refit.train.job",
    "run_finetune": "refit.train.job",
    "check_monitor_defined": "refit.train.job",
    "SequenceClassifier": "refit.train.module",
    "adamw_param_groups": "refit.train.optim",
    "linear_warmup_decay": "refit.train.optim",
    "LAST_CKPT": "refit.train.trainer",
    "ResumeCheckpoint": "refit.train.trainer",
    "build_trainer": "refit.train.trainer",
}

__all__ = [
    "FinetuneResult",
    "LAST_CKPT",
    "ResumeCheckpoint",
    "SequenceClassifier",
    "VERSION_DIRNAME",
    "adamw_param_groups",
    "build_trainer",
    "check_monitor_defined",
    "evaluate_version",
    "linear_warmup_decay",
    "run_finetune",
]


__getattr__ = lazy_exports(__name__, _LAZY)
