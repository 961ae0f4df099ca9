"""The metric set reported for every split, from torchmetrics."""

from __future__ import annotations

from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassCalibrationError,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

__all__ = ["classification_metrics", "METRIC_NAMES"]

METRIC_NAMES = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "auroc", "ece")


def classification_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """Accuracy, macro F1/precision/recall, AUROC and expected calibration error (15 bins).

    All take logits (softmax is applied inside), so binary and multi-class share one code path.
    """
    return MetricCollection(
        {
            "accuracy": MulticlassAccuracy(num_classes, average="micro"),
            "f1_macro": MulticlassF1Score(num_classes, average="macro"),
            "precision_macro": MulticlassPrecision(num_classes, average="macro"),
            "recall_macro": MulticlassRecall(num_classes, average="macro"),
            "auroc": MulticlassAUROC(num_classes),
            "ece": MulticlassCalibrationError(num_classes, n_bins=15),
        },
        prefix=prefix,
    )
