"""One Predictor interface over PyTorch, ONNX Runtime (CPU, CUDA, TensorRT providers) and TensorRT engines.

Parity checks, accuracy gates and the benchmark all call a Predictor the same way (token ids and attention
mask in, logits out, all numpy), so every format is measured by one code path and differences between rows
come from the runtime, not from how each was driven.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from refit.export.errors import ExportError, missing_extra

__all__ = [
    "Batch", "Predictor", "TorchPredictor", "OrtPredictor", "RUNTIMES", "make_predictor", "encode", "predict_logits",
]


@dataclass
class Batch:
    """Token ids and attention mask (int64, [batch, seq]) plus labels when known."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    labels: np.ndarray | None = None


class Predictor(Protocol):
    """Anything that maps a batch of token ids and masks to float32 logits [batch, num_labels]."""

    name: str

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


class TorchPredictor:
    """An eager PyTorch classifier; `device` and the model's own dtype decide where and how it runs."""

    def __init__(self, model: torch.nn.Module, device: str = "cpu", name: str = "pytorch") -> None:
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.name = name

    @torch.inference_mode()
    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        ids = torch.from_numpy(np.ascontiguousarray(input_ids)).to(self.device)
        mask = torch.from_numpy(np.ascontiguousarray(attention_mask)).to(self.device)
        return self.model(input_ids=ids, attention_mask=mask).logits.float().cpu().numpy()


# ONNX Runtime provider per device; TensorRT's provider falls back to CUDA for nodes it cannot take.
_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


class OrtPredictor:
    """An ONNX Runtime session. Threads default to torch's count so CPU rows compare like for like."""

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None,
                 name: str | None = None, spinning: bool = True) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise missing_extra("onnxruntime", "export") from None
        if device not in _PROVIDERS:
            raise ExportError(f"Unknown ONNX Runtime device '{device}'; use one of {', '.join(_PROVIDERS)}.")
        wanted = _PROVIDERS[device][0]
        if wanted not in ort.get_available_providers():
            raise ExportError(
                f"ONNX Runtime here has no {wanted} (available: {', '.join(ort.get_available_providers())}). "
                "Install `onnxruntime-gpu` (with TensorRT libraries for the TensorRT provider) on a GPU machine."
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        if not spinning:  # idle ORT threads sleep instead of spinning: a server's other threads need the cores
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=_PROVIDERS[device])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.name = name or f"onnxruntime-{device}"

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64)}
        return self.session.run(None, {k: v for k, v in feed.items() if k in self.inputs})[0].astype(np.float32)


def _tensorrt(source: str | Path, device: str = "cuda", **kwargs) -> Predictor:
    from refit.export.tensorrt import TensorRTPredictor

    return TensorRTPredictor(source, **kwargs)


# runtime name -> factory(source, device, **options). A new runtime is one class and one line here.
RUNTIMES: dict[str, Callable[..., Predictor]] = {
    "pytorch": TorchPredictor,
    "onnxruntime": OrtPredictor,
    "tensorrt": _tensorrt,
}


def make_predictor(runtime: str, source, device: str = "cpu", **options) -> Predictor:
    """A Predictor for `source` (a model for 'pytorch', a file path otherwise) on `device`."""
    if runtime not in RUNTIMES:
        raise ExportError(f"Unknown runtime '{runtime}'; use one of {', '.join(RUNTIMES)}.")
    return RUNTIMES[runtime](source, device, **options)


def encode(tokenizer, texts: Sequence[str], max_length: int, batch_size: int,
           labels: Sequence[int] | None = None, pad_to_max: bool = False) -> list[Batch]:
    """Tokenised batches in input order (padded to each batch's longest text, or to max_length)."""
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[start : start + batch_size]), truncation=True, max_length=max_length,
                        padding="max_length" if pad_to_max else True, return_tensors="np")
        lab = None if labels is None else np.asarray(labels[start : start + batch_size], dtype=np.int64)
        out.append(Batch(enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64), lab))
    return out


def predict_logits(predictor: Predictor, batches: Sequence[Batch]) -> np.ndarray:
    """Logits of every batch, concatenated in order."""
    return np.concatenate([predictor(b.input_ids, b.attention_mask) for b in batches])
