"""A serving slot: one verified model version, its tokenizer and the backend that runs it.

A slot is built completely (verified, loaded, warmed up, parity-checked) before the server points at it,
and it is never changed afterwards: a hot swap builds a second slot and replaces the reference, so requests
that already hold the old slot finish on it.

Backends are one table (`BACKENDS`): a name -> a function (version folder, PyTorch model, device) that returns
a Predictor (the export package's interface: token ids + mask in, logits out) or raises `Unavailable`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from refit.errors import VersionError
from refit.estimate import apply_temperature, load_calibration
from refit.export.parity import parity
from refit.inference import OrtPredictor, Predictor, TorchPredictor
from refit.models.version import load_version

__all__ = ["BACKENDS", "AUTO_ORDER", "Unavailable", "Slot", "load_slot", "pad_batch", "softmax"]

log = logging.getLogger("refit.serve")


class Unavailable(Exception):
    """This backend cannot run this version here (no such export, no GPU, missing package)."""


def _onnx(filename: str) -> Callable[..., Predictor]:
    def make(version_dir: Path, model: torch.nn.Module, device: str, threads: int | None) -> Predictor:
        path = version_dir / "exports" / filename
        if not path.is_file():
            raise Unavailable(f"no exports/{filename}")
        try:
            # No spinning: the event loop, tokenisation and capture threads share the cores with inference.
            return OrtPredictor(
                _onnx_in_memory(path),
                "cuda" if device == "cuda" else "cpu",
                threads=threads,
                name=f"onnxruntime:{filename}",
                spinning=False,
            )
        except ImportError as e:
            raise Unavailable(str(e)) from None

    return make


def _onnx_in_memory(path: Path) -> Path | bytes:
    """The model as bytes when its weights are in an external-data file (the dynamo exporter's
    `model.onnx.data`), else the path.

    ONNX Runtime memory-maps external data: an in-place write to model.onnx.data after the session was
    built changed the served model's outputs, unverified. A single-file model is read (copied) at load, so
    its path is safe; models over protobuf's 2 GB limit cannot be held as bytes and keep the mapping.
    """
    from refit.export.onnx import onnx_files

    if len(onnx_files(path)) == 1:
        return path
    import onnx

    model = onnx.load(str(path))  # pulls the external data in
    try:
        return model.SerializeToString()
    except ValueError:  # over 2 GB
        log.warning("refit serve: %s is over 2 GB: its external data stays memory-mapped", path)
        return path


def _pytorch(version_dir: Path, model: torch.nn.Module, device: str, threads: int | None) -> Predictor:
    return TorchPredictor(model, "cuda" if device == "cuda" else "cpu", name="pytorch")


def _tensorrt(version_dir: Path, model: torch.nn.Module, device: str, threads: int | None) -> Predictor:
    """The version's TensorRT engine. Code path only on refit's CPU-only development machines."""
    plan = version_dir / "exports" / "model.plan"
    if device != "cuda":
        raise Unavailable("TensorRT needs a CUDA device")
    if not plan.is_file():
        raise Unavailable("no exports/model.plan")
    from refit.export.tensorrt import TensorRTPredictor

    return TensorRTPredictor(plan)


# backend name -> factory. A new backend is one function and one line here.
BACKENDS: dict[str, Callable[..., Predictor]] = {
    "onnx-int8": _onnx("model.int8.onnx"),
    "onnx": _onnx("model.onnx"),
    "pytorch": _pytorch,
    "tensorrt": _tensorrt,
}
# What `backend: auto` tries, in order, per device.
AUTO_ORDER = {"cpu": ("onnx-int8", "onnx", "pytorch"), "cuda": ("tensorrt", "onnx", "pytorch")}
# The export artefact each backend runs, as named in exports/parity.json.
_ARTEFACT = {"onnx-int8": "model.int8.onnx", "onnx": "model.onnx", "tensorrt": "model.plan"}
# A long text is cut to this many characters per token of max_length before tokenising (Slot.tokenize).
_CHARS_PER_TOKEN = 32
# Parity when the version has no parity.json record: (largest max-abs logit diff, least argmax agreement).
_DEFAULT_PARITY = {"onnx-int8": (0.5, 0.75), "onnx": (1e-3, 1.0), "tensorrt": (0.1, 0.9)}
_WARMUP_TEXTS = [
    "a short one",
    "this is a somewhat longer input sentence, used only to warm the model up",
    "warm-up",
    "x " * 40,
]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


@dataclass
class Slot:
    """Everything a request needs to be answered by one version; immutable once built."""

    version_id: str
    path: Path
    backend: str
    predictor: Predictor
    tokenizer: object
    labels: list[str]
    max_length: int
    pad_id: int = 0
    parity: dict = field(default_factory=dict)
    # The version's fitted temperature (calibration.json) that served logits are divided by before the
    # softmax; None for raw softmax (asked for, or a version without calibration). One scalar: the argmax,
    # and so every label served, is the same either way.
    temperature: float | None = None

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Served probabilities of a batch of logits."""
        if self.temperature is None:
            return softmax(logits)
        return apply_temperature(logits, self.temperature).astype(np.float32)

    # A fast tokenizer keeps its truncation setting in state that every call sets, so concurrent calls
    # (requests tokenise on worker threads) must not overlap: _prefix's call with truncation off let another
    # request's texts through whole (3 202 tokens where max_length is 32), and its batch failed.
    _tokenizing: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, unpadded (the batcher pads each bucket). Runs off the event loop.

        The tokenizer tokenises a whole text before truncating it: one 4 MB text took 2.9 s. A long text is
        first cut at a space; the cut is used only when it still holds more than `max_length` tokens, so
        the ids are exactly those of the whole text (no word before the cut changes), else the whole text.
        """
        with self._tokenizing:
            texts = [self._prefix(t) for t in texts]
            return self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]

    def _prefix(self, text: str) -> str:
        chars = _CHARS_PER_TOKEN * self.max_length
        if len(text) <= chars:
            return text
        cut = text.rfind(" ", 0, chars)
        if cut <= 0:
            return text
        head = text[:cut]
        n = len(self.tokenizer(head, add_special_tokens=False, truncation=False)["input_ids"])
        return head if n > self.max_length else text

    def label_of(self, index: int) -> str:
        return self.labels[index] if index < len(self.labels) else str(index)


def _labels(meta: dict, model: torch.nn.Module) -> list[str]:
    labels = meta.get("labels")
    if labels:
        return [str(x) for x in labels]
    id2label = getattr(model.config, "id2label", None) or {}
    return [str(id2label.get(i, i)) for i in range(model.config.num_labels)]


def _max_length(meta: dict, tokenizer, override: int) -> int:
    if override:
        return override
    data = (meta.get("config") or {}).get("data") or {}
    return int(data.get("max_length") or min(getattr(tokenizer, "model_max_length", 512), 512))


def _warm_texts(version_dir: Path) -> list[str]:
    """Held-out texts from the version's drift reference when it has them (realistic lengths), else fixed ones."""
    ref = version_dir / "reference" / "texts.jsonl"
    texts: list[str] = []
    if ref.is_file():
        with ref.open(encoding="utf-8") as f:
            for line in f:
                if len(texts) >= 16:
                    break
                try:
                    texts.append(str(json.loads(line)["text"]))
                except (ValueError, KeyError, TypeError):
                    continue
    return texts or list(_WARMUP_TEXTS)


def pad_batch(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token id lists to the longest one: (input_ids, attention_mask), int64."""
    width = max(len(x) for x in ids)
    out = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, row in enumerate(ids):
        out[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return out, mask


def _check_parity(
    backend: str,
    version_dir: Path,
    predictor: Predictor,
    model: torch.nn.Module,
    ids: np.ndarray,
    mask: np.ndarray,
) -> dict:
    """The export against the PyTorch model of the same version on the warm-up inputs, within the tolerance
    the export recorded in exports/parity.json (or a default per backend when it recorded none)."""
    if backend == "pytorch":
        return {}
    measured = parity(TorchPredictor(model)(ids, mask), predictor(ids, mask))
    record = {}
    parity_file = version_dir / "exports" / "parity.json"
    if parity_file.is_file():
        try:
            record = (json.loads(parity_file.read_text()).get(_ARTEFACT[backend]) or {}).get("parity") or {}
        except (ValueError, AttributeError):
            raise VersionError(f"{parity_file} is corrupt; refusing version {version_dir.name}.") from None
    if record:  # a few inputs may differ a little more than the export's validation set did; not much more
        max_diff = 2 * float(record.get("max_abs_diff", 0.0)) + 1e-3
        min_agree = float(record.get("argmax_agreement", 1.0)) - 0.25
    else:
        max_diff, min_agree = _DEFAULT_PARITY[backend]
    if measured["max_abs_diff"] > max_diff or measured["argmax_agreement"] < min_agree:
        raise VersionError(
            f"{_ARTEFACT[backend]} of {version_dir.name} does not reproduce its PyTorch model: max-abs logit "
            f"diff {measured['max_abs_diff']:.3g} (allowed {max_diff:.3g}), argmax agreement "
            f"{measured['argmax_agreement']:.2f} (allowed >= {min_agree:.2f}) on {measured['n']} inputs. "
            "Re-export it (`refit export`); refusing to serve it."
        )
    return {**measured, "allowed_max_abs_diff": max_diff, "source": "parity.json" if record else "default"}


def _snapshot(folder: Path) -> dict[str, tuple[int, ...]]:
    """(device, inode, size, mtime, ctime) of every entry under a version folder, not following links.

    Taken before verification and again after the slot is built: if nothing changed, the bytes that were
    loaded are the bytes that were verified. A writer cannot hide an edit or a swap-and-restore: writing
    changes mtime and ctime, a rename changes the inode or the ctime, and ctime cannot be set back.
    """
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in (*dirnames, *filenames):
            path = os.path.join(dirpath, name)
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(path)
                out[os.path.relpath(path, folder)] = (
                    st.st_dev,
                    st.st_ino,
                    st.st_size,
                    st.st_mtime_ns,
                    st.st_ctime_ns,
                )
    return out


def _changed(before: dict, after: dict) -> str | None:
    for rel in sorted(before.keys() | after.keys()):
        if before.get(rel) != after.get(rel):
            what = "appeared" if rel not in before else "disappeared" if rel not in after else "was modified"
            return f"{rel} {what}"
    return None


def _in_memory(model: torch.nn.Module) -> torch.nn.Module:
    """The model with every tensor in the process's own memory.

    transformers 5 leaves parameters memory-mapped from model.safetensors: an in-place write to the served
    version's weights file after loading (one flipped byte) changed the weights being served, unverified.
    A deep copy moves every storage into private memory (tied weights stay tied) and the mapping is dropped.
    """
    return copy.deepcopy(model)


def load_slot(
    version_dir: str | Path,
    backend: str = "auto",
    device: str = "cpu",
    threads: int | None = None,
    max_length: int = 0,
    check: Callable[[], None] | None = None,
    calibrated: bool = False,
) -> Slot:
    """Verify, load, warm up and parity-check a version; raise VersionError instead of serving a bad one.

    Verification is the version module's own (read_version / load_version check the files against the
    hashes recorded when the version was written), so whatever it checks, the server checks; `check` is
    more of it (the registry's: the manifest is the one recorded at registration). Both run inside a
    snapshot of the folder's file identities, and the slot is refused if any file changed before it was
    built: verifying one file and then loading another (swapped in between) would serve unverified bytes.
    """
    version_dir = Path(version_dir)
    started = time.perf_counter()
    # No export lock (refit.export.lock.exports_read_lock) here, on purpose: a server must never stall on
    # an export (it holds the version for minutes). The snapshot already fails closed on a swap during the
    # load: the version is refused, the slot in service keeps serving, and a reload after the export loads it.
    before = _snapshot(version_dir)
    try:
        if check is not None:
            check()
        slot = _build(version_dir, backend, device, threads, max_length, calibrated)
    except VersionError as e:  # a file that went missing mid-load is a change, not a damaged version
        if changed := _changed(before, _snapshot(version_dir)):
            raise _changed_error(version_dir, changed, e) from None
        raise
    if changed := _changed(before, _snapshot(version_dir)):
        raise _changed_error(version_dir, changed)
    log.info(
        "refit serve: loaded %s with %s in %.1f s",
        slot.version_id,
        slot.backend,
        time.perf_counter() - started,
    )
    return slot


def _changed_error(version_dir: Path, changed: str, cause: Exception | None = None) -> VersionError:
    return VersionError(
        f"{version_dir} changed while it was being verified and loaded ({changed}); refusing it, since "
        "what was loaded may not be what was verified. Reload once the version is no longer being written."
        + (f" (Loading it failed with: {cause})" if cause else "")
    )


def _build(
    version_dir: Path, backend: str, device: str, threads: int | None, max_length: int, calibrated: bool
) -> Slot:
    """The slot itself: load (verified), choose the backend, warm up, check the outputs and parity."""
    model, tokenizer, meta = load_version(version_dir)
    calibration = load_calibration(version_dir) if calibrated else None  # read after the verification
    model = _in_memory(model)
    order = AUTO_ORDER["cuda" if device == "cuda" else "cpu"] if backend == "auto" else (backend,)
    reasons = []
    predictor = chosen = None
    for name in order:
        try:
            predictor, chosen = BACKENDS[name](version_dir, model, device, threads), name
            break
        except Unavailable as e:
            reasons.append(f"{name}: {e}")
    if predictor is None:
        raise VersionError(f"No backend can serve {version_dir} here ({'; '.join(reasons)}).")
    labels = _labels(meta, model)
    slot = Slot(
        str(meta.get("version_id") or version_dir.name),
        version_dir,
        chosen,
        predictor,
        tokenizer,
        labels,
        _max_length(meta, tokenizer, max_length),
        tokenizer.pad_token_id or 0,
        temperature=calibration.temperature if calibration is not None else None,
    )
    ids, mask = pad_batch(slot.tokenize(_warm_texts(version_dir)), slot.pad_id)
    try:
        for _ in range(2):  # warm-up: first calls allocate and pick kernels
            logits = predictor(ids, mask)
        logits = predictor(ids[:1], mask[:1])
    except Exception as e:
        raise VersionError(f"{chosen} backend failed on warm-up inputs for {version_dir}: {e}") from None
    if logits.shape[-1] != len(labels):
        raise VersionError(
            f"{version_dir}: the model outputs {logits.shape[-1]} classes but refit.json names "
            f"{len(labels)} labels."
        )
    slot.parity = _check_parity(chosen, version_dir, predictor, model, ids, mask)
    return slot
