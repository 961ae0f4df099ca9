"""The metrics a fine-tune logs per epoch: evaluation's set, with evaluation's AUROC.

torchmetrics' MulticlassAUROC scores a class with no positives 0.0 (with a warning on every compute), so a
one-class validation split logged `val/auroc` 0.0 to metrics.csv, W&B and the version's refit.json, while
`refit evaluate` of the same version says "n/a (one class)". Training now computes AUROC with
refit.evaluate.auroc (the one owner of that definition): macro over the classes present, undefined with
fewer than two. An undefined AUROC is NaN inside the metric and is not logged (SequenceClassifier drops
it): a missing point, never 0.0.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.utilities import dim_zero_cat

from refit.evaluate import auroc, classification_metrics

__all__ = ["PresentClassAUROC", "training_metrics"]


class PresentClassAUROC(Metric):
    """refit.evaluate.auroc over every batch of an epoch (all ranks' batches once synced); NaN where it is
    undefined. Keeps each row's probabilities, as MulticlassAUROC without thresholds does."""

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        self.probs.append(probs.float())
        self.target.append(target)

    def compute(self) -> torch.Tensor:
        value = auroc(dim_zero_cat(self.probs), dim_zero_cat(self.target))
        return torch.tensor(float("nan") if value is None else value)


class _FromLogits(MetricCollection):
    """Softmax first, then every metric. torchmetrics' classification metrics softmax their input only
    when some value lies outside [0, 1]: a batch of logits that all fall inside it (a random or barely
    trained model: tiny ModernBERT's sat at 0.2 and 0.73) was scored as if the logits were probabilities,
    so training recorded an ECE of 0.31 where refit.evaluate (which always softmaxes) measured 0.21, and
    compress and export then refused the version as damaged."""

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        super().update(logits.float().softmax(-1), target)


def training_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """refit.evaluate's metric set for one stage ('train/', 'val/', 'test/'), its AUROC evaluation's;
    updated with logits."""
    metrics = classification_metrics(num_classes, prefix, with_auroc=False)
    metrics.add_metrics({"auroc": PresentClassAUROC()})
    return _FromLogits(dict(metrics.items(keep_base=True)), prefix=prefix)
