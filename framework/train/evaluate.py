"""Scoring a model version on labelled texts with the same metrics as training."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from refit.data import to_label_ids
from refit.evaluate import score_probs
from refit.models import encode_texts, load_version

__all__ = ["evaluate_version"]


def evaluate_version(
    version_dir: str | Path,
    texts: Sequence[str],
    labels: Sequence,
    *,
    batch_size: int = 64,
    max_length: int = 128,
) -> dict[str, float]:
    """Metrics of a version on labelled texts; labels may be ids or the version's label names."""
    model, tokenizer, meta = load_version(version_dir)
    ids = to_label_ids(list(labels), meta.get("labels") or [])
    probs = encode_texts(model, tokenizer, list(texts), batch_size, max_length).probs
    return score_probs(probs, ids)
