"""Shared inference pieces: tokenised batches, one Predictor interface, PyTorch and ONNX Runtime predictors,
batched logits and wall-clock timing.

Low level on purpose: gates (refit.evaluate), compression, export, the benchmark and serving all drive a
model through these, so none of them has to import another to score or time a model. Parity checks,
accuracy gates and the benchmark all call a Predictor the same way (token ids and attention mask in,
logits out, all numpy), so every format is measured by one code path and differences between rows come
from the runtime, not from how each was driven.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from refit.errors import ExportError, MissingExtra

__all__ = [
    "Batch",
    "Predictor",
    "TorchPredictor",
    "OrtPredictor",
    "ORT_OPT_LEVELS",
    "ORT_CPU_DISABLED_OPTIMIZERS",
    "physical_cores",
    "ORT_PROVIDERS",
    "encode",
    "predict_logits",
    "latency_ms",
    "interleaved_p50_ms",
    "throughput",
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
ORT_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads share one core's int8 units, so ORT's
    intra-op pool gains nothing from them); the logical count where the topology is not readable."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topo / "physical_package_id").read_text(), (topo / "core_id").read_text()))
        except OSError:
            return len(cpus)
    return max(1, len(cores))


# graph_optimization_level names -> onnxruntime.GraphOptimizationLevel members.
ORT_OPT_LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


# ONNX Runtime graph fusions that make CPU inference slower (scripts/results/export.md): its CPU
# SkipLayerNormalization kernel (1.32) takes 147 us on a [1, 64, 384] input where the Add and
# LayerNormalization it replaces take 32 us; without it MiniLM int8 at batch 1 goes from 4.56 to 3.82 ms.
ORT_CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


class OrtPredictor:
    """An ONNX Runtime session with the CPU settings measured best for refit's models
    (scripts/results/export.md): intra-op threads = physical cores, one inter-op thread (the graph is a
    chain), all graph optimisations but the slow ones on CPU (ORT_CPU_DISABLED_OPTIMIZERS), idle threads
    spinning (int8 MiniLM 4.1x eager fp32 against 2.7x without). Pass spinning=False where other threads
    need the cores (refit serve does)."""

    def __init__(
        self,
        path: str | Path | bytes,
        device: str = "cpu",
        threads: int | None = None,
        name: str | None = None,
        spinning: bool = True,
        opt_level: str = "all",
        save_optimized: str | Path | None = None,
    ) -> None:
        """save_optimized: also write the graph ORT optimised for this session there (to see which
        kernels the session really runs)."""
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingExtra("onnxruntime", "export") from None
        if device not in ORT_PROVIDERS:
            raise ExportError(
                f"Unknown ONNX Runtime device '{device}'; use one of {', '.join(ORT_PROVIDERS)}."
            )
        if opt_level not in ORT_OPT_LEVELS:
            raise ExportError(
                f"Unknown ONNX Runtime opt_level '{opt_level}'; use one of {', '.join(ORT_OPT_LEVELS)}."
            )
        wanted = ORT_PROVIDERS[device][0]
        if wanted not in ort.get_available_providers():
            raise ExportError(
                f"ONNX Runtime here has no {wanted} (available: {', '.join(ort.get_available_providers())}). "
                "Install `onnxruntime-gpu` (with TensorRT libraries for the TensorRT provider) on a GPU machine."
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or physical_cores()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_OPT_LEVELS[opt_level])
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        if save_optimized:
            options.optimized_model_filepath = str(save_optimized)
        self.session = ort.InferenceSession(
            path if isinstance(path, bytes) else str(path),  # bytes: a model held in memory (refit serve)
            options,
            providers=ORT_PROVIDERS[device],
            disabled_optimizers=list(ORT_CPU_DISABLED_OPTIMIZERS) if device == "cpu" else [],
        )
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.name = name or f"onnxruntime-{device}"

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64)}
        return self.session.run(None, {k: v for k, v in feed.items() if k in self.inputs})[0].astype(
            np.float32
        )


def encode(
    tokenizer,
    texts: Sequence[str],
    max_length: int,
    batch_size: int,
    labels: Sequence[int] | None = None,
    pad_to_max: bool = False,
) -> list[Batch]:
    """Tokenised batches in input order (padded to each batch's longest text, or to max_length)."""
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(
            list(texts[start : start + batch_size]),
            truncation=True,
            max_length=max_length,
            padding="max_length" if pad_to_max else True,
            return_tensors="np",
        )
        lab = None if labels is None else np.asarray(labels[start : start + batch_size], dtype=np.int64)
        out.append(Batch(enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64), lab))
    return out


def predict_logits(predictor: Predictor, batches: Sequence[Batch]) -> np.ndarray:
    """Logits of every batch, concatenated in order."""
    return np.concatenate([predictor(b.input_ids, b.attention_mask) for b in batches])


def latency_ms(predictor: Predictor, batch: Batch, warmup: int, iters: int) -> tuple[float, float]:
    """p50 and p95 of single-call wall time."""
    for _ in range(warmup):
        predictor(batch.input_ids, batch.attention_mask)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        predictor(batch.input_ids, batch.attention_mask)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), float(np.percentile(times, 95))


def interleaved_p50_ms(
    predictors: Sequence[Predictor], batch: Batch, *, warmup: int, iters: int, rounds: int
) -> list[float]:
    """p50 single-call ms of each predictor, measured in alternating rounds (median of the round medians):
    two models timed one after the other, minutes apart, compare the machine's load as much as the models
    (a shared CPU swung a parent/child pair from 490/14 ms to 27/435 ms that way)."""
    per_round: list[list[float]] = [[] for _ in predictors]
    for _ in range(rounds):
        for times, predictor in zip(per_round, predictors, strict=True):
            times.append(latency_ms(predictor, batch, warmup, iters)[0])
    return [statistics.median(times) for times in per_round]


def throughput(predictor: Predictor, batch: Batch, warmup: int, iters: int) -> float:
    """Samples per second over `iters` calls on one batch."""
    for _ in range(warmup):
        predictor(batch.input_ids, batch.attention_mask)
    start = time.perf_counter()
    for _ in range(iters):
        predictor(batch.input_ids, batch.attention_mask)
    return iters * len(batch.input_ids) / (time.perf_counter() - start)
