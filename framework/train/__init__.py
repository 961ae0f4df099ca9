"""Training: the LightningModule, its metrics and optimiser, and the Trainer builder."""

from refit.train.evaluate import evaluate_version, score_probs
from refit.train.job import VERSION_DIRNAME, FinetuneResult, run_finetune
from refit.train.metrics import METRIC_NAMES, classification_metrics
from refit.train.module import SequenceClassifier
from refit.train.optim import adamw_param_groups, linear_warmup_decay
from refit.train.trainer import LAST_CKPT, ResumeCheckpoint, build_trainer

__all__ = [
    "FinetuneResult", "LAST_CKPT", "METRIC_NAMES", "ResumeCheckpoint", "SequenceClassifier", "adamw_param_groups",
    "build_trainer", "classification_metrics", "evaluate_version", "score_probs", "linear_warmup_decay", "run_finetune", "VERSION_DIRNAME",
]
