"""Sentence embeddings and class probabilities from a classifier, in one forward pass.

Drift checks need both: embeddings for MMD/KS/classifier tests and softmax outputs for BBSD. Which hidden
layer(s) and pooling make the embedding is the drift reference's choice (refit.drift.reference records it);
several layers are pooled one by one and concatenated, because fine-tuning collapses the last layer toward
the label while earlier layers still see what the words are (scripts/results/drift.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from refit.data.batching import cut_rows
from refit.errors import ConfigError

__all__ = ["Encoded", "Layers", "Pooling", "encode_texts", "layer_list", "pool_hidden"]

Pooling = Literal["mean", "cls"]
# One hidden-state index (0 = the embedding layer, -1 = the last), several (pooled one by one, then
# concatenated), or "all": every hidden state, resolved by `layer_list` against the model.
Layers = int | Sequence[int] | Literal["all"]


@dataclass
class Encoded:
    embeddings: torch.Tensor  # float32 [n, hidden * number of layers]
    probs: torch.Tensor | None  # float32 [n, num_labels]; None from an encoder without a classifier head
    truncated: int = 0  # inputs cut at max_length: embedded and classified on their first tokens only


def pool_hidden(states: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """[batch, hidden]: the CLS token's state, or the mask-aware mean over the tokens."""
    if pooling == "cls":
        return states[:, 0]
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def layer_list(layer: Layers, num_hidden_layers: int) -> list[int]:
    """The hidden-state indices a `layer` value names, in order ("all": 0 .. num_hidden_layers)."""
    if layer == "all":
        return list(range(num_hidden_layers + 1))
    layers = [int(layer)] if isinstance(layer, int) else [int(i) for i in layer]
    bad = [i for i in layers if not -(num_hidden_layers + 1) <= i <= num_hidden_layers]
    if bad:
        raise ConfigError(
            f"layer {bad[0]} does not exist: this model has hidden states 0..{num_hidden_layers} "
            f"(0 = embeddings, -1 = last layer)"
        )
    return layers


@torch.inference_mode()
def encode_texts(
    model,
    tokenizer,
    texts: Sequence[str],
    batch_size: int = 64,
    max_length: int = 128,
    pooling: Pooling = "mean",
    layer: Layers = -1,
    device: str | torch.device | None = None,
) -> Encoded:
    """Mean-pooled (mask-aware) or CLS embeddings of one hidden layer (or several, concatenated), plus
    softmax outputs (None for a plain encoder, e.g. a sentence-embedding model, which has no logits).

    Inputs are sorted by length so batches carry little padding; rows come back in the input order.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    layers = layer_list(layer, model.config.num_hidden_layers)
    was_training = model.training
    model.eval().to(device)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    embs, probs, cut = [], [], 0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in idx], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )
        cut += cut_rows(batch, max_length)
        batch = batch.to(device)
        out = model(**batch, output_hidden_states=True)
        pooled = [pool_hidden(out.hidden_states[i], batch["attention_mask"], pooling) for i in layers]
        embs.append(torch.cat(pooled, dim=1).float().cpu())
        logits = getattr(out, "logits", None)
        if logits is not None:
            probs.append(logits.float().softmax(-1).cpu())
    model.train(was_training)
    if not embs:
        hidden, labels = model.config.hidden_size * len(layers), model.config.num_labels
        return Encoded(torch.empty(0, hidden), torch.empty(0, labels))
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return Encoded(torch.cat(embs)[inverse], torch.cat(probs)[inverse] if probs else None, cut)
