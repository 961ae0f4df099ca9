"""Sentence embeddings from a classifier's encoder, for drift references and checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

__all__ = ["embed_texts", "Pooling"]

Pooling = Literal["mean", "cls"]


@torch.inference_mode()
def embed_texts(
    model,
    tokenizer,
    texts: Sequence[str],
    batch_size: int = 64,
    max_length: int = 128,
    pooling: Pooling = "mean",
    layer: int = -1,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """float32 [n, hidden] embeddings: mean-pooled (mask-aware) or CLS of one hidden layer.

    Inputs are sorted by length so batches carry little padding; rows come back in the input order.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    was_training = model.training
    model.eval().to(device)
    encoder = model.base_model
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(0)
    chunks = []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = tokenizer([texts[i] for i in idx], truncation=True, max_length=max_length, padding=True,
                          return_tensors="pt").to(device)
        hidden = encoder(**batch, output_hidden_states=layer != -1)
        states = hidden.last_hidden_state if layer == -1 else hidden.hidden_states[layer]
        if pooling == "cls":
            pooled = states[:, 0]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        chunks.append(pooled.float().cpu())
    if chunks:
        out = torch.empty(len(texts), chunks[0].shape[1])
        out[torch.tensor(order)] = torch.cat(chunks)
    model.train(was_training)
    return out
