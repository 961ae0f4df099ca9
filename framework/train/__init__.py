"""Training: the LightningModule, its optimiser, the Trainer builder and the fine-tune job."""

from refit.train.evaluate import evaluate_version
from refit.train.job import VERSION_DIRNAME, FinetuneResult, run_finetune
from refit.train.module import SequenceClassifier
from refit.train.optim import adamw_param_groups, linear_warmup_decay
from refit.train.trainer import LAST_CKPT, ResumeCheckpoint, build_trainer

__all__ = [
    "FinetuneResult",
    "LAST_CKPT",
    "ResumeCheckpoint",
    "SequenceClassifier",
    "VERSION_DIRNAME",
    "adamw_param_groups",
    "build_trainer",
    "evaluate_version",
    "linear_warmup_decay",
    "run_finetune",
]
