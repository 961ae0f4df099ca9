"""Embedding production inputs the same way a version's drift reference was embedded (the reference
itself is built, saved and loaded by refit.drift.reference)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch

from refit.errors import ModelError, VersionError
from refit.models import Encoded, Pooling, encode_texts, load_version
from refit.models.embed import Layers
from refit.models.pretrained import quiet_transformers, resolve_model

__all__ = ["ENCODER_LAYER", "ENCODER_POOLING", "VersionEncoder", "embed", "fingerprint", "load_encoder"]

# How a fixed pre-trained encoder embeds (what scripts/results/drift_power.md measured for the base MiniLM:
# the mean-pooled last hidden state, the sentence-embedding convention such models are trained for).
ENCODER_POOLING: Pooling = "mean"
ENCODER_LAYER: Layers = -1


def fingerprint(model) -> str:
    """sha256 of a model's weights (names and bytes, in name order). A reference records its encoder's,
    so an encoder that now loads other weights (a moved folder, a hub id that was updated) is refused
    rather than compared with embeddings it did not make."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


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
        with quiet_transformers():  # a classifier checkpoint's head is not needed: no notice about it
            model, info = AutoModel.from_pretrained(source, output_loading_info=True)
            tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise ModelError(f"Cannot load the drift encoder '{spec}': {e}") from None
    return _without_fresh_weights(model, info["missing_keys"], spec).eval(), tokenizer, False


def _without_fresh_weights(model, missing: Sequence[str], spec: str | Path):
    """The encoder with no randomly initialised part left: such weights differ at every load, so the
    fingerprint would too, and a reference would be refused by the very encoder that made it.

    A RoBERTa or XLM-R sequence classifier (every fine-tuned one, refit's versions included: its head
    replaces the pooler) carries no pooler, which AutoModel then adds at random. No embedding uses the
    pooler (they pool hidden states), so it is dropped. Any other weight missing would change the
    embeddings themselves from load to load: refused."""
    fresh = sorted(k for k in missing if k.split(".", 1)[0] != "pooler")
    if fresh:
        raise ModelError(
            f"The drift encoder '{spec}' lacks trained weights for {', '.join(fresh[:3])}"
            f"{' ...' if len(fresh) > 3 else ''} ({len(fresh)} tensors), which would be random at every load. "
            "Use a complete pre-trained checkpoint, or 'version' (the version's own hidden layers)."
        )
    if len(missing) and getattr(model, "pooler", None) is not None:
        model.pooler = None  # BertModel/RobertaModel skip a None pooler (pooler_output is then None)
    return model


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
        expect_sha256: str | None = None,
    ) -> None:
        self.model, self.tokenizer, self.meta = load_version(version_dir)
        self.pooling, self.layer, self.max_length = pooling, layer, max_length
        self.batch_size, self.device = batch_size, device
        self.encoder = str(encoder) if encoder is not None else None
        self.encoder_sha256: str | None = None
        self._embedder = None
        if encoder is not None:
            model, tokenizer, is_version = load_encoder(encoder)
            self._embedder = (model, tokenizer)
            if not is_version:  # a version's own files are verified against its manifest on load
                self.pooling, self.layer = ENCODER_POOLING, ENCODER_LAYER
                self.encoder_sha256 = fingerprint(model)
            if expect_sha256 and self.encoder_sha256 != expect_sha256:
                raise VersionError(
                    f"The drift reference of {version_dir} was embedded by encoder '{encoder}' with weights "
                    f"sha256 {expect_sha256[:12]}..., but '{encoder}' now loads other weights "
                    f"({(self.encoder_sha256 or 'a version')[:12]}...): its windows would be compared in "
                    "another embedding space. Re-embed the reference (`refit drift --version DIR "
                    "--refresh_reference`) or pass --encoder for this check."
                )

    @classmethod
    def like_reference(
        cls, version_dir: str | Path, reference_meta: dict, encoder: str | Path | None = None, **kwargs
    ) -> VersionEncoder:
        """An encoder with the encoder, pooling, layer(s) and max length the reference was made with (a
        reference that records none was made from the version's mean-pooled last layer, the only embedding
        there was then). `encoder` overrides the reference's own fixed encoder, for one check."""
        stored = reference_meta.get("encoder")
        return cls(
            version_dir,
            pooling=reference_meta.get("pooling", "mean"),
            layer=reference_meta.get("layer", -1),
            max_length=reference_meta.get("max_length", 128),
            encoder=encoder or stored,
            expect_sha256=None if encoder else reference_meta.get("encoder_sha256"),
            **kwargs,
        )

    def how(self) -> dict:
        """What reference.json records of this embedding (the keys a reference made this way carries)."""
        how = {"pooling": self.pooling, "layer": self.layer, "max_length": self.max_length}
        if self.encoder:
            how["encoder"] = self.encoder
        if self.encoder_sha256:
            how["encoder_sha256"] = self.encoder_sha256
        return how

    def encode(self, texts: Sequence[str]) -> Encoded:
        own = self._encode(self.model, self.tokenizer, texts)
        if self._embedder is None:
            return own
        fixed = self._encode(*self._embedder, texts)
        return Encoded(fixed.embeddings, own.probs, max(own.truncated, fixed.truncated))

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
    pooling: Pooling | None = None,
    layer: Layers | None = None,
    max_length: int | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """float32 [n, d] embeddings of `texts`, made as the version's drift reference was made (its fixed
    encoder, or its own pooling and layer), so they compare with the reference. `pooling` or `layer`
    instead embed with the version's own hidden states (mean-pooled last layer where one is not given)."""
    if pooling is None and layer is None:
        from refit.drift.reference import load_reference  # its one reader; reference.py builds on this module

        meta = dict(load_reference(version_dir).meta)
        if max_length is not None:
            meta["max_length"] = max_length
        return (
            VersionEncoder.like_reference(version_dir, meta, batch_size=batch_size).encode(texts).embeddings
        )
    return (
        VersionEncoder(
            version_dir, pooling or "mean", -1 if layer is None else layer, max_length or 128, batch_size
        )
        .encode(texts)
        .embeddings
    )
