"""Sentence embeddings and class probabilities from a classifier, in one forward pass.

Drift checks need both: embeddings for MMD/KS/classifier tests and softmax outputs for BBSD.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["Encoded", "Pooling", "encode_texts"]

Pooling = Literal["mean", "cls"]


@dataclass
class Encoded:
    embeddings: torch.Tensor  # float32 [n, hidden]
    probs: torch.Tensor  # float32 [n, num_labels]


@torch.inference_mode()
def encode_texts(
    model,
    tokenizer,
    texts: Sequence[str],
    batch_size: int = 64,
    max_length: int = 128,
    pooling: Pooling = "mean",
    layer: int = -1,
    device: str | torch.device | None = None,
) -> Encoded:
    """Mean-pooled (mask-aware) or CLS embeddings of one hidden layer, plus softmax outputs.

    Inputs are sorted by length so batches carry little padding; rows come back in the input order.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    was_training = model.training
    model.eval().to(device)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    embs, probs = [], []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in idx], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        ).to(device)
        out = model(**batch, output_hidden_states=True)
        states = out.hidden_states[layer]
        if pooling == "cls":
            pooled = states[:, 0]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        embs.append(pooled.float().cpu())
        probs.append(out.logits.float().softmax(-1).cpu())
    model.train(was_training)
    if not embs:
        hidden, labels = model.config.hidden_size, model.config.num_labels
        return Encoded(torch.empty(0, hidden), torch.empty(0, labels))
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return Encoded(torch.cat(embs)[inverse], torch.cat(probs)[inverse])
