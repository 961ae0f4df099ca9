"""The drift reference of a model version, and the one place that builds, fits, saves and loads it.

A reference is the embeddings and class probabilities of a sample of held-out inputs, the texts, how
they were embedded (pooling, layer, max length) and every detector's state fitted on it alone (MMD
bandwidth, KS's PCA, ...). Training (train/job.py), compression (a child re-embeds its parent's texts),
`refit drift` (refresh, --encoder) and maintenance all go through here, so the files of reference/ have
one writer and one reader.

A version's reference/ is written inside the version's atomic write (models.write_version takes a
Reference and calls `save`), never added to a finished version afterwards.

    reference/embeddings.safetensors   embeddings [n, d] float32, probs [n, classes] float32
    reference/texts.jsonl              {"text": ...} per row, in the same order (none: store_texts false)
    reference/reference.json           how it was made (+ size, dim)
    reference/detector.safetensors     fitted detector tensors, "<detector>.<field>"
    reference/detector.json            {"seed", "n_reference", "states": {detector: {field: value}}}
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from refit.drift.detectors import DETECTORS, KSState, MMDState
from refit.drift.embed import ENCODER_LAYER, ENCODER_POOLING, fingerprint, load_encoder
from refit.errors import ConfigError, VersionError
from refit.io import write_json
from refit.models import Pooling, encode_texts
from refit.models.embed import Layers, layer_list

__all__ = [
    "DEFAULT_LAYER",
    "DEFAULT_POOLING",
    "Reference",
    "build_reference",
    "fit_states",
    "load_reference",
    "reembed",
    "reference_encoder",
    "sample_texts",
    "REFERENCE_DIRNAME",
]

REFERENCE_DIRNAME = "reference"
_EMBEDDINGS, _TEXTS, _META = "embeddings.safetensors", "texts.jsonl", "reference.json"
_REBUILD = "Rebuild it with `refit drift --version DIR --refresh_reference --reference_data FILE`."
_STATE_TENSORS, _STATE_META = "detector.safetensors", "detector.json"
_HOW = ("split", "pooling", "layer", "max_length")  # what a re-embedded reference keeps of its parent's meta

# How a reference is embedded when the version embeds it itself (data.reference_encoder 'version'; new
# versions default to their base model as a fixed encoder instead: reference_encoder). Recorded in
# reference.json; windows are embedded the same way, and a reference that records no layer is read as the
# last one, which was the only choice before. Chosen by scripts/bench_drift_power.py
# (scripts/results/drift_power.md): fine-tuning collapses the last layer toward the label, so a
# label-blind test on it sees little that BBSD does not; the mean-pooled output of the second transformer
# layer still sees a nearby domain mixed in (power 0.43 vs 0.03 at 10% of a window of 200), with false
# alarms at alpha. The base model's own embedding sees it best (0.92).
DEFAULT_POOLING: Pooling = "mean"
DEFAULT_LAYER: Layers = 2


@dataclass
class Reference:
    """A drift reference in memory. `states` maps detector name -> fitted state (None: nothing to fit);
    a detector missing from it is fitted on first use and kept, so each is fitted at most once per run."""

    embeddings: torch.Tensor
    probs: torch.Tensor | None
    texts: list[str]
    meta: dict
    states: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    store_texts: bool = True  # privacy.store_texts: False writes no texts.jsonl (no text, no hash of one)

    def state(self, name: str) -> Any:
        """The fitted state of detector `name` (fitted here, on the reference only, when not stored)."""
        if name not in self.states:
            detector = DETECTORS[name]
            data = self.probs if detector.on_probs else self.embeddings
            self.states[name] = detector.fit(data, seed=self.seed) if data is not None else None
        return self.states[name]

    def save(self, folder: str | Path) -> None:
        """Write reference/ (into a version's staging folder: see models.write_version)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"embeddings": self.embeddings.contiguous().float()}
        if self.probs is not None:
            tensors["probs"] = self.probs.contiguous().float()
        save_file(tensors, str(folder / _EMBEDDINGS))
        if self.store_texts:  # else no texts.jsonl: a plain sha256 of a short text is reversed by guessing
            with (folder / _TEXTS).open("w", encoding="utf-8") as f:
                for t in self.texts:
                    f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
        meta = {k: v for k, v in self.meta.items() if k not in ("size", "dim", "texts_stored")}
        write_json(
            folder / _META,
            {
                **meta,
                "size": len(self.texts),
                "dim": int(self.embeddings.shape[1]),
                "texts_stored": self.store_texts,
            },
        )
        if self.states:
            _save_states(folder, self.states, self.seed, len(self.embeddings))


def _save_states(folder: Path, states: dict[str, Any], seed: int, n: int) -> None:
    tensors, plain = {}, {}
    for name, state in states.items():
        plain[name] = {}
        if state is None:
            continue
        for f in dataclasses.fields(state):
            value = getattr(state, f.name)
            if isinstance(value, torch.Tensor):
                tensors[f"{name}.{f.name}"] = value.contiguous()
            else:
                plain[name][f.name] = value
    save_file(tensors, str(folder / _STATE_TENSORS))
    write_json(folder / _STATE_META, {"seed": seed, "n_reference": n, "states": plain})


def _load_states(folder: Path) -> tuple[dict[str, Any], int] | None:
    """(states, seed) stored in reference/, or None when the version has none (it is then fitted on use)."""
    meta_file, tensors_file = folder / _STATE_META, folder / _STATE_TENSORS
    if not meta_file.is_file() or not tensors_file.is_file():
        return None
    meta, tensors = json.loads(meta_file.read_text()), load_file(str(tensors_file))
    if "states" not in meta:  # the one-dict layout written before detectors had typed states
        return {
            "mmd": MMDState(meta["bandwidth"]),
            "ks": KSState(tensors["pca_mean"], tensors["pca_basis"], tensors["ks_reference_rows"]),
        }, meta["seed"]
    states = {}
    for name, plain in meta["states"].items():
        if name not in DETECTORS:  # a detector this installation does not have: ignore its state
            continue
        state_type = DETECTORS[name].state_type
        if state_type is None:
            states[name] = None
            continue
        values = {
            f.name: tensors[f"{name}.{f.name}"] if f"{name}.{f.name}" in tensors else plain[f.name]
            for f in dataclasses.fields(state_type)
            if f"{name}.{f.name}" in tensors or f.name in plain
        }
        # A field added after the version was written keeps its dataclass default, which is chosen to
        # mean what the version was fitted with (e.g. MMDState.scales [1.0]: the single median kernel).
        states[name] = state_type(**values)
    return states, meta["seed"]


def fit_states(reference: Reference, seed: int | None = None) -> Reference:
    """Fit every detector in DETECTORS on the reference alone (in place), and return it."""
    if seed is not None:
        reference.seed = seed
    reference.states = {}
    for name in DETECTORS:
        reference.state(name)
    return reference


def sample_texts(texts: Sequence[str], size: int, seed: int) -> list[str]:
    """Up to `size` texts, sampled with `seed`, kept in their original order."""
    picked = sorted(random.Random(seed).sample(range(len(texts)), min(size, len(texts))))
    return [texts[i] for i in picked]


def build_reference(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    meta: dict,
    seed: int,
    batch_size: int = 64,
    max_length: int = 128,
    pooling: Pooling = DEFAULT_POOLING,
    layer: Layers = DEFAULT_LAYER,
    device: str | None = None,
    encoder: str | None = None,
    loaded_encoder: tuple | None = None,
) -> Reference:
    """Embed `texts` (held-out inputs, never training ones) with the model and fit every detector on them.

    With `encoder` (a pre-trained model: see reference_encoder), the embeddings are that model's
    mean-pooled last layer and only the probabilities are the model's; `pooling` and `layer` then do not
    apply. The encoder's weights digest is recorded, so windows are refused if it later loads others.
    `loaded_encoder`: what load_encoder(encoder) returned, where the caller has it already."""
    if encoder is not None:
        enc_model, enc_tokenizer, is_version = loaded_encoder or load_encoder(encoder)
        if is_version:
            raise ConfigError(
                f"The reference encoder must be a pre-trained model ('minilm', a hub id or a model folder), "
                f"not a refit version: {encoder}. Use 'base' to keep a parent version's encoder."
            )
        fixed = encode_texts(
            enc_model,
            enc_tokenizer,
            list(texts),
            batch_size,
            max_length,
            ENCODER_POOLING,
            ENCODER_LAYER,
            device,
        )
        own = encode_texts(model, tokenizer, list(texts), batch_size, max_length, "mean", -1, device)
        how = {
            **meta,
            "pooling": ENCODER_POOLING,
            "layer": ENCODER_LAYER,
            "max_length": max_length,
            "encoder": encoder,
            "encoder_sha256": fingerprint(enc_model),
        }
        return fit_states(Reference(fixed.embeddings, own.probs, list(texts), how), seed)
    if layer == DEFAULT_LAYER:  # a model shallower than the default layer uses its last one
        layer = min(DEFAULT_LAYER, model.config.num_hidden_layers)
    encoded = encode_texts(model, tokenizer, list(texts), batch_size, max_length, pooling, layer, device)
    if layer == "all":  # recorded as the indices themselves, so windows are embedded the same way
        layer = layer_list(layer, model.config.num_hidden_layers)
    how = {"pooling": pooling, "layer": layer, "max_length": max_length, **meta}
    return fit_states(Reference(encoded.embeddings, encoded.probs, list(texts), how), seed)


def reference_encoder(choice: str, base_model: str) -> str | None:
    """The fixed encoder a new version's reference is embedded by, from `data.reference_encoder`
    (None: the version itself, its hidden state DEFAULT_LAYER).

    'base' is the pre-trained model the lineage started from: the fine-tune's base model, or, when that is
    a refit version (a retrain from the champion), that version's own reference encoder, so every version
    of a lineage is judged in one embedding space. A model folder is recorded as an absolute path."""
    if choice == "version":
        return None
    spec = base_model if choice == "base" else choice
    path = Path(spec).expanduser()
    if (path / "refit.json").is_file():
        if choice != "base":
            raise ConfigError(
                f"Invalid value for 'data.reference_encoder': {spec} is a refit version; give 'base', "
                "'version' or a pre-trained model ('minilm', a hub id or a model folder)."
            )
        meta_file = path / REFERENCE_DIRNAME / _META
        return json.loads(meta_file.read_text()).get("encoder") if meta_file.is_file() else None
    return str(path.resolve()) if path.exists() else spec


def reembed(
    reference: Reference,
    model,
    tokenizer,
    *,
    seed: int | None = None,
    batch_size: int = 64,
    device: str | None = None,
) -> Reference:
    """The same texts embedded by another model (a compressed child, a fixed encoder), detectors refitted."""
    meta = {k: reference.meta[k] for k in _HOW if k in reference.meta}
    child = build_reference(
        model,
        tokenizer,
        reference.texts,
        meta=meta,
        seed=reference.seed if seed is None else seed,
        batch_size=batch_size,
        max_length=meta.get("max_length", 128),
        pooling=meta.get("pooling", "mean"),
        layer=meta.get("layer", -1),
        device=device,
        encoder=reference.meta.get("encoder"),  # a fixed encoder stays; only the probabilities are new
    )
    was, now = reference.meta.get("encoder_sha256"), child.meta.get("encoder_sha256")
    if was and now != was:
        raise VersionError(
            f"The reference encoder '{reference.meta['encoder']}' now loads other weights than the parent's "
            f"reference was embedded with (sha256 {now[:12]}... vs {was[:12]}...): refusing to mix them."
        )
    return child


def load_reference(version_dir: str | Path, *, finite: bool = True) -> Reference:
    """The reference stored in a version, with its detectors' fitted states (loaded once, here).

    `finite=False` skips the NaN/inf check and ignores detector state that cannot be read: for
    --refresh_reference, which replaces the embeddings and refits the state anyway (it is the way out of
    both errors)."""
    folder = Path(version_dir) / REFERENCE_DIRNAME
    tensors_file = folder / _EMBEDDINGS
    if not tensors_file.is_file():
        raise VersionError(
            f"{version_dir} has no drift reference ({tensors_file} is missing). Create one with "
            "`refit drift --version DIR --refresh_reference --reference_data FILE`."
        )
    meta_file, texts_file = folder / _META, folder / _TEXTS
    try:  # a version re-sealed over edited files passes its manifest: the contents are checked here
        tensors = load_file(str(tensors_file))
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        rows = (
            [json.loads(line) for line in texts_file.read_text().splitlines() if line]
            if texts_file.is_file()
            else []
        )
        # none: store_texts false (older versions kept each text's sha256 there, never read)
        texts = [r["text"] for r in rows if isinstance(r, dict) and "text" in r]
    except (OSError, ValueError, SafetensorError) as e:  # JSONDecodeError and bad UTF-8 are ValueErrors
        raise VersionError(f"The drift reference in {folder} cannot be read ({e}). {_REBUILD}") from None
    for key in ("embeddings", "probs"):
        value = tensors.get(key)
        if (key == "embeddings" and value is None) or (
            finite and value is not None and not torch.isfinite(value).all()
        ):
            raise VersionError(
                f"{tensors_file}: '{key}' is {'missing' if value is None else 'not all finite (NaN or inf)'}: "
                f"every drift test would compare against garbage. {_REBUILD}"
            )
    reference = Reference(
        tensors["embeddings"], tensors.get("probs"), texts, meta, store_texts=meta.get("texts_stored", True)
    )
    try:  # detector.json hand-edited or cut short, then re-sealed: a traceback before
        stored = _load_states(folder)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, SafetensorError) as e:
        if finite:
            where = (  # a JSON error names detector.json, a safetensors one its file; a missing key both
                folder / _STATE_TENSORS
                if isinstance(e, SafetensorError)
                else folder / _STATE_META
                if isinstance(e, ValueError)
                else f"{folder / _STATE_META} (with {_STATE_TENSORS})"
            )
            raise VersionError(
                f"The drift detector state {where} cannot be read ({type(e).__name__}: {e}). {_REBUILD}"
            ) from None
        stored = None
    if stored is not None:
        reference.states, reference.seed = stored
    return reference
