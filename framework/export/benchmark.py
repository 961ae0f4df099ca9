"""Format benchmark (in the spirit of Ultralytics' export benchmark): one row per format with its file
size, validation accuracy, latency at batch 1, throughput at a larger batch and speed-up over eager fp32.

Every row is driven through the same Predictor interface on the same inputs (real validation texts,
padded or truncated to a fixed length so every format does the same work).
"""

from __future__ import annotations

import copy
import os
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from refit.compress.prune import shrink_pruned_heads
from refit.compress.quantize import torch_dynamic_int8
from refit.errors import ExportError
from refit.export.onnx import onnx_files
from refit.export.targets import TARGETS, ExportOptions
from refit.inference import (
    Batch,
    Predictor,
    TorchPredictor,
    latency_ms,
    predict_logits,
    throughput,
)
from refit.models import weights_file

__all__ = [
    "BASELINES",
    "formats",
    "Skip",
    "Row",
    "benchmark_row",
    "skipped_row",
    "add_speedups",
    "to_markdown",
    "rows_to_json",
    "machine",
    "noise_warning",
    "NOISY_P95_OVER_P50",
]

# p95 over p50 at batch 1 beyond which a row's timing is called noisy: a quiet run here measured 1.1-1.4
# (scripts/results/export.md); a run shared with other work measured 0.44x where 1.5x was true, with
# nothing but a pytorch-int8 p95 of 379 ms to show for it (first-hour walkthrough, s10).
NOISY_P95_OVER_P50 = 2.0


@dataclass
class Row:
    format: str
    file: str | None
    size_mb: float | None
    accuracy: float | None
    p50_ms: float | None
    p95_ms: float | None
    throughput: float | None  # samples/s at the throughput batch size
    speedup: float | None = None  # eager fp32 p50 / this p50
    note: str = ""


def _size_mb(files: Sequence[Path]) -> float:
    return round(sum(f.stat().st_size for f in files if f.is_file()) / 1e6, 2)


def benchmark_row(
    fmt: str,
    predictor: Predictor,
    files: Sequence[Path],
    *,
    eval_batches: Sequence[Batch],
    labels: np.ndarray,
    latency_batch: Batch,
    throughput_batch: Batch,
    iters: int,
    note: str = "",
) -> Row:
    logits = predict_logits(predictor, eval_batches)
    p50, p95 = latency_ms(predictor, latency_batch, warmup=max(3, iters // 10), iters=iters)
    thr = throughput(predictor, throughput_batch, warmup=2, iters=max(3, iters // 10))
    return Row(
        fmt,
        files[0].name if files else None,
        _size_mb(files) if files else None,
        float((logits.argmax(-1) == labels).mean()),
        round(p50, 3),
        round(p95, 3),
        round(thr, 1),
        note=note,
    )


def skipped_row(fmt: str, reason: str) -> Row:
    return Row(fmt, None, None, None, None, None, None, note=f"skipped: {reason}")


def add_speedups(rows: list[Row], baseline: str = "pytorch") -> list[Row]:
    base = next((r.p50_ms for r in rows if r.format == baseline and r.p50_ms), None)
    for r in rows:
        r.speedup = round(base / r.p50_ms, 2) if base and r.p50_ms else None
    return rows


def machine() -> dict:
    """What the numbers were measured on (they mean nothing without it)."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            ln.split(":", 1)[1].strip()
            for ln in cpuinfo.read_text().splitlines()
            if ln.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _cell(value, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def to_markdown(rows: Sequence[Row], title: str, settings: dict, host: dict) -> str:
    lines = [
        f"# {title}",
        "",
        f"Machine: {host['cpu']}, {host['cores']} cores ({host['torch_threads']} threads), "
        f"{'GPU ' + host['gpu'] if host['gpu'] else 'no GPU'}; torch {host['torch']}.",
        "Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()) + ".",
        "",
        "| format | file | size (MB) | val accuracy | p50 ms (b1) | p95 ms (b1) | samples/s | speed-up | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.format} | {_cell(r.file)} | {_cell(r.size_mb, '{:.1f}')} | {_cell(r.accuracy, '{:.4f}')} | "
            f"{_cell(r.p50_ms, '{:.2f}')} | {_cell(r.p95_ms, '{:.2f}')} | {_cell(r.throughput, '{:.1f}')} | "
            f"{_cell(r.speedup, '{:.2f}x')} | {r.note} |"
        )
    warning = noise_warning(rows, host)
    lines += (["", f"**{warning}**"] if warning else []) + [
        "",
        "Unstructured (magnitude) sparsity stores and multiplies its zeros: it does not shrink the file or "
        "speed up dense kernels; only removed structure (heads, FFN neurons) or int8/fp16 kernels do.",
    ]
    return "\n".join(lines) + "\n"


def noise_warning(rows: Sequence[Row], host: dict) -> str | None:
    """A sentence saying the timings are not to be trusted, or None: one run on a machine doing other work
    can invert a speed-up, and the table alone does not show it. Judged by each row's p95/p50 spread."""
    noisy = [
        f"{r.format} {r.p95_ms / r.p50_ms:.1f}x"
        for r in rows
        if r.p50_ms and r.p95_ms and r.p95_ms / r.p50_ms > NOISY_P95_OVER_P50
    ]
    if not noisy:
        return None
    return (
        f"Noisy timings: p95 over p50 is {', '.join(noisy)} (a quiet run stays under {NOISY_P95_OVER_P50:g}x; "
        f"load average {host.get('load_average_1m')} on {host.get('cores')} cores): other work shared the "
        "machine, so the speed-ups may be wrong. Run again on an idle machine before trusting them."
    )


def rows_to_json(rows: Sequence[Row]) -> list[dict]:
    return [asdict(r) for r in rows]


class Skip(Exception):
    """A format that cannot be measured here; its row says why."""


def _pytorch(model: torch.nn.Module, version_dir: Path, staging: Path) -> tuple[Predictor, list[Path], str]:
    return TorchPredictor(_inference_copy(model)), [weights_file(version_dir)], "eager fp32"


def _pytorch_int8(
    model: torch.nn.Module, version_dir: Path, staging: Path
) -> tuple[Predictor, list[Path], str]:
    return (
        TorchPredictor(torch_dynamic_int8(_inference_copy(model)), name="pytorch-int8"),
        [],
        "torch.ao dynamic int8, in memory",
    )


def _export(fmt: str):
    """A row for export target `fmt` (refit.export.targets.TARGETS): its file in exports/, or one built for
    this run when the target is cheap to build here."""
    target = TARGETS[fmt]

    def make(model: torch.nn.Module, version_dir: Path, staging: Path) -> tuple[Predictor, list[Path], str]:
        path, note = Path(version_dir) / "exports" / target.file, "from exports/"
        if not path.is_file():
            if not target.benchmark_builds:
                raise Skip(
                    f"no exports/{target.file} (run `refit export --format {fmt}` where it can be built)"
                )
            artefact = next(a for a in target.build(model, staging, ExportOptions()) if a.name == target.file)
            path, note = artefact.files[0], "built for this run (not in exports/)"
        try:
            return target.run(path, "cpu"), onnx_files(path), note
        except ExportError as e:
            raise Skip(str(e)) from None

    return make


def _inference_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A float32 copy with pruned heads physically removed (what a deployment would run)."""
    return shrink_pruned_heads(copy.deepcopy(model).float().eval())


# The in-memory PyTorch rows; every runnable export target adds its own row (formats()).
BASELINES = {"pytorch": _pytorch, "pytorch-int8": _pytorch_int8}


def formats() -> dict:
    """format name -> maker(model, version_dir, staging) -> (predictor, files, note): the baselines, then
    every export target that has a runnable file. A maker opens files in exports/: call it, and time what
    it returns, under refit.export.lock.exports_read_lock (as `refit benchmark` does)."""
    return {**BASELINES, **{name: _export(name) for name, t in TARGETS.items() if t.file and t.run}}
