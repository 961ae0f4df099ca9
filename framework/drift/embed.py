"""Embedding production inputs the same way a version's drift reference was embedded (the reference
itself is built, saved and loaded by refit.drift.reference)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from refit.errors import ModelError
from refit.models import Encoded, Pooling, encode_texts, load_version
from refit.models.embed import Layers
from refit.models.pretrained import resolve_model

__all__ = ["VersionEncoder", "embed", "load_encoder"]

# How a fixed pre-trained encoder embeds (what scripts/results/drift_power.md measured for the base MiniLM:
# the mean-pooled last hidden state, the sentence-embedding convention such models are trained for).
ENCODER_POOLING: Pooling = "mean"
ENCODER_LAYER: Layers = -1


def load_encoder(spec: str | Path):
    """(model, tokenizer, is_version) of a fixed encoder: a refit version folder, or a pre-trained model
    ('minilm', a hub id or a local Hugging Face folder) loaded without any classifier head."""
    path = Path(spec)
    if (path / "refit.json").is_file():
        model, tokenizer, _ = load_version(path)
        return model, tokenizer, True
    from transformers import AutoModel, AutoTokenizer

    source, _ = resolve_model(str(spec))
    try:
        return AutoModel.from_pretrained(source).eval(), AutoTokenizer.from_pretrained(source), False
    except (OSError, ValueError) as e:
        raise ModelError(f"Cannot load --encoder '{spec}': {e}") from None


class VersionEncoder:
    """Loads a version once (its weights hash checked) and encodes texts with its own tokenizer.

    With `encoder`, the embeddings come from that fixed model instead, while the class probabilities
    (BBSD, accuracy estimates, class shares) stay the version's own: fine-tuning collapses a version's
    layers toward its labels, so a label-blind test sees more through an encoder that was never fine-tuned
    (scripts/results/drift_power.md), but only the version can say what it would predict. A version used
    as the encoder embeds like the reference (`pooling`, `layer`); a pre-trained model embeds with its
    mean-pooled last layer.
    """

    def __init__(
        self,
        version_dir: str | Path,
        pooling: Pooling = "mean",
        layer: Layers = -1,
        max_length: int = 128,
        batch_size: int = 64,
        device: str | None = None,
        encoder: str | Path | None = None,
    ) -> None:
        self.model, self.tokenizer, self.meta = load_version(version_dir)
        self.pooling, self.layer, self.max_length = pooling, layer, max_length
        self.batch_size, self.device = batch_size, device
        self.encoder = str(encoder) if encoder is not None else None
        self._embedder = None
        if encoder is not None:
            model, tokenizer, is_version = load_encoder(encoder)
            self._embedder = (model, tokenizer)
            if not is_version:
                self.pooling, self.layer = ENCODER_POOLING, ENCODER_LAYER

    @classmethod
    def like_reference(
        cls, version_dir: str | Path, reference_meta: dict, encoder: str | Path | None = None, **kwargs
    ) -> VersionEncoder:
        """An encoder with the pooling, layer(s) and max length the reference was made with (a reference
        that records none was made from the mean-pooled last layer, the only embedding there was then)."""
        return cls(
            version_dir,
            pooling=reference_meta.get("pooling", "mean"),
            layer=reference_meta.get("layer", -1),
            max_length=reference_meta.get("max_length", 128),
            encoder=encoder,
            **kwargs,
        )

    def how(self) -> dict:
        """What reference.json records of this embedding (the keys a reference made this way carries)."""
        how = {"pooling": self.pooling, "layer": self.layer, "max_length": self.max_length}
        return {**how, "encoder": self.encoder} if self.encoder else how

    def encode(self, texts: Sequence[str]) -> Encoded:
        own = self._encode(self.model, self.tokenizer, texts)
        if self._embedder is None:
            return own
        fixed = self._encode(*self._embedder, texts)
        return Encoded(fixed.embeddings, own.probs)

    def _encode(self, model, tokenizer, texts: Sequence[str]) -> Encoded:
        return encode_texts(
            model,
            tokenizer,
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
