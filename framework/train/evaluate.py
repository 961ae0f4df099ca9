"""Scoring a model version on labelled texts with the same metrics as training."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from refit.data import to_label_ids
from refit.models import encode_texts, load_version
from refit.train.metrics import classification_metrics

__all__ = ["evaluate_version", "score_probs"]


def score_probs(probs: torch.Tensor, labels: Sequence[int]) -> dict[str, float]:
    """accuracy, macro F1/precision/recall, AUROC, ECE of predicted probabilities."""
    metrics = classification_metrics(probs.shape[1], prefix="")
    values = metrics(probs.float(), torch.as_tensor(list(labels), dtype=torch.long))
    return {k: float(v) for k, v in values.items()}


def evaluate_version(version_dir: str | Path, texts: Sequence[str], labels: Sequence, batch_size: int = 64,
                     max_length: int = 128) -> dict[str, float]:
    """Metrics of a version on labelled texts; labels may be ids or the version's label names."""
    model, tokenizer, meta = load_version(version_dir)
    ids = to_label_ids(list(labels), meta.get("labels") or [])
    probs = encode_texts(model, tokenizer, list(texts), batch_size, max_length).probs
    return score_probs(probs, ids)
