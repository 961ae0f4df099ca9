"""Embedding production inputs the same way a version's drift reference was embedded (the reference
itself is built, saved and loaded by refit.drift.reference)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from refit.models import Encoded, Pooling, encode_texts, load_version
from refit.models.embed import Layers

__all__ = ["VersionEncoder", "embed"]


class VersionEncoder:
    """Loads a version once (its weights hash checked) and encodes texts with its own tokenizer."""

    def __init__(
        self,
        version_dir: str | Path,
        pooling: Pooling = "mean",
        layer: Layers = -1,
        max_length: int = 128,
        batch_size: int = 64,
        device: str | None = None,
    ) -> None:
        self.model, self.tokenizer, self.meta = load_version(version_dir)
        self.pooling, self.layer, self.max_length = pooling, layer, max_length
        self.batch_size, self.device = batch_size, device

    @classmethod
    def like_reference(cls, version_dir: str | Path, reference_meta: dict, **kwargs) -> VersionEncoder:
        """An encoder with the pooling, layer(s) and max length the reference was made with (a reference
        that records none was made from the mean-pooled last layer, the only embedding there was then)."""
        return cls(
            version_dir,
            pooling=reference_meta.get("pooling", "mean"),
            layer=reference_meta.get("layer", -1),
            max_length=reference_meta.get("max_length", 128),
            **kwargs,
        )

    def encode(self, texts: Sequence[str]) -> Encoded:
        return encode_texts(
            self.model,
            self.tokenizer,
            texts,
            self.batch_size,
            self.max_length,
            self.pooling,
            self.layer,
            self.device,
        )


def embed(
    version_dir: str | Path,
    texts: Sequence[str],
    pooling: Pooling = "mean",
    layer: Layers = -1,
    max_length: int = 128,
    batch_size: int = 64,
) -> torch.Tensor:
    """float32 [n, hidden] embeddings of `texts` by a version (mean-pooled last hidden state by default)."""
    return VersionEncoder(version_dir, pooling, layer, max_length, batch_size).encode(texts).embeddings
