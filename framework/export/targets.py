"""Export targets, ONE table: each entry says how to build its artefacts into a staging folder, which file
it installs in exports/, how to run that file, and what it is for. `refit export --format` choices, the
benchmark's rows and the loading of an installed export all read TARGETS, so adding a format is one
build function and one line here.

The export recipe gates every artefact (accuracy and parity on the validation split) before `install`
moves it into the version's exports/ folder, so a failed export leaves nothing half-written behind.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from refit.errors import ExportError
from refit.export.edge import write_bundle
from refit.export.onnx import Exporter, export_onnx, onnx_files, optimize_transformer
from refit.export.quantize import DYNAMIC_INT8_DEFAULTS, ONNX_QUANTIZERS
from refit.export.tensorrt import Profile, build_engine, onnx_for_precision
from refit.inference import (
    ORT_CPU_DISABLED_OPTIMIZERS,
    Batch,
    OrtPredictor,
    Predictor,
    TorchPredictor,
    predict_logits,
)

__all__ = ["ExportOptions", "Artefact", "Target", "TARGETS", "install", "is_installed", "load_export"]


@dataclass
class ExportOptions:
    """Flat settings shared by the targets (each uses the ones it needs)."""

    opset: int = 17
    exporter: Exporter = "torchscript"
    optimize: bool = True
    quantize: str = "dynamic-int8"  # a key of ONNX_QUANTIZERS, for onnx-int8
    calibration: Sequence[Batch] = ()
    precision: str = "fp16"  # tensorrt and edge
    profile: Profile = field(default_factory=Profile)
    workspace_gb: float = 4.0
    timing_cache: Path | None = None  # an earlier build's cache, reused to build faster
    device: str = "cpu"  # ONNX Runtime device the ONNX artefacts are checked on
    reference: Sequence[Batch] = ()  # edge: inputs whose PyTorch logits ship with the bundle
    version_id: str = ""


@dataclass
class Artefact:
    """One gated output: its name in exports/, the paths to install, how to run it, facts for parity.json."""

    name: str
    files: list[Path]
    predictor: Callable[[], Predictor]
    info: dict = field(default_factory=dict)


def _raw(model: torch.nn.Module, staging: Path, opts: ExportOptions) -> Path:
    """The plain float32 export (standard ONNX ops only: what TensorRT and the quantisers start from)."""
    raw = staging / "raw" / "model.onnx"
    return raw if raw.exists() else export_onnx(model, raw, opset=opts.opset, exporter=opts.exporter)


def _ort(path: Path, opts: ExportOptions, name: str) -> Callable[[], Predictor]:
    return lambda: OrtPredictor(path, opts.device, name=name)


def onnx_target(model: torch.nn.Module, staging: Path, opts: ExportOptions) -> list[Artefact]:
    """model.onnx: float32, dynamic axes, graph-optimised for BERT-family models when `optimize`.

    SkipLayerNormalization is fused only for a GPU: ONNX Runtime's CPU kernel for it is slower than the
    Add + LayerNormalization it replaces (refit.export.onnx.optimize_transformer)."""
    raw = _raw(model, staging, opts)
    out = staging / "model.onnx"
    sln = opts.device != "cpu"
    fused = optimize_transformer(raw, out, model.config, skip_layer_norm=sln) if opts.optimize else None
    if fused is None:
        for f in onnx_files(raw):
            shutil.copy(f, staging / f.name)
    info = {
        "opset": opts.opset,
        "exporter": opts.exporter,
        "optimized": fused is not None,
        "fused_ops": fused or {},
        "skip_layer_norm_fused": bool(fused) and sln,
    }
    if opts.optimize and fused is None:  # said, not silently skipped: the user asked for optimize
        info["not_optimized"] = (
            "ONNX Runtime's transformer optimizer was not run: refit.export.onnx gives it only the model "
            f"types checked with it, and '{getattr(model.config, 'model_type', '?')}' is not one. model.onnx "
            "is the exported graph as is (ONNX Runtime still applies its generic optimisations at load)."
        )
    return [Artefact("model.onnx", onnx_files(out), _ort(out, opts, "onnx"), info)]


def onnx_int8_target(model: torch.nn.Module, staging: Path, opts: ExportOptions) -> list[Artefact]:
    """model.int8.onnx (plus model.onnx): dynamic int8 from the optimised graph (fastest on CPU); static
    Q/DQ from the plain graph, whose MatMuls the quantiser can see (fused Attention hides them)."""
    fp32 = onnx_target(model, staging, opts)
    src = fp32[0].files[0] if opts.quantize == "dynamic-int8" else _raw(model, staging, opts)
    out = ONNX_QUANTIZERS[opts.quantize](src, staging / "model.int8.onnx", opts.calibration)
    info = {
        "quantization": opts.quantize,
        "calibration_inputs": sum(len(b.input_ids) for b in opts.calibration)
        if opts.quantize != "dynamic-int8"
        else 0,
    }
    if opts.quantize == "dynamic-int8":
        info["options"] = dict(DYNAMIC_INT8_DEFAULTS)
    if opts.device == "cpu":  # what OrtPredictor keeps ORT from doing to the graph at load
        info["ort_disabled_optimizers"] = list(ORT_CPU_DISABLED_OPTIMIZERS)
    return [*fp32, Artefact("model.int8.onnx", [out], _ort(out, opts, "onnx-int8"), info)]


def _graph_for(kind: str, raw: Path, staging: Path, opts: ExportOptions) -> Path:
    """The float32, float16 or Q/DQ int8 graph a TensorRT build of that kind parses."""
    if kind == "fp32":
        return raw
    quantizer = {"fp16": "fp16", "qdq": "qdq-tensorrt"}[kind]
    return ONNX_QUANTIZERS[quantizer](raw, staging / f"model.{kind}.onnx", opts.calibration)


def tensorrt_target(model: torch.nn.Module, staging: Path, opts: ExportOptions) -> list[Artefact]:
    """model.plan (+ model.plan.json metadata, timing.cache), built here with the TensorRT Python API."""
    from refit.export.tensorrt import TensorRTPredictor, import_tensorrt, tensorrt_major

    major = tensorrt_major(
        import_tensorrt().__version__
    )  # fails first, with the extra to install, when TensorRT is missing
    graph = _graph_for(onnx_for_precision(opts.precision, major), _raw(model, staging, opts), staging, opts)
    cache = staging / "timing.cache"
    if opts.timing_cache and opts.timing_cache.is_file():
        shutil.copy(opts.timing_cache, cache)
    plan = staging / "model.plan"
    meta = build_engine(
        graph,
        plan,
        precision=opts.precision,
        profile=opts.profile,
        workspace_gb=opts.workspace_gb,
        timing_cache=cache,
    )
    files = [plan, plan.with_name("model.plan.json"), cache]
    return [Artefact("model.plan", files, lambda: TensorRTPredictor(plan), meta)]


def edge_target(model: torch.nn.Module, staging: Path, opts: ExportOptions) -> list[Artefact]:
    """edge/: a bundle that builds and checks the engine on the device. The graph that will be built is
    checked here on ONNX Runtime (the engine itself is checked on the device by build_engine.py)."""
    raw = _raw(model, staging, opts)
    kinds = {onnx_for_precision(opts.precision, major) for major in (10, 11)} | {"fp32"}
    graphs = {kind: _graph_for(kind, raw, staging, opts) for kind in sorted(kinds)}
    reference_logits = predict_logits(TorchPredictor(model), opts.reference)
    folder = write_bundle(
        staging / "edge",
        graphs,
        precision=opts.precision,
        profile=opts.profile,
        workspace_gb=opts.workspace_gb,
        calibration=opts.calibration,
        reference=opts.reference,
        reference_logits=reference_logits,
        version_id=opts.version_id,
    )
    checked = graphs[onnx_for_precision(opts.precision, 11)]
    info = {"precision": opts.precision, "checked_graph": checked.name, "profile": opts.profile.__dict__}
    return [Artefact("edge", [folder], _ort(checked, opts, f"edge-{opts.precision}"), info)]


def _run_onnx(path: Path, device: str) -> Predictor:
    return OrtPredictor(path, device, name=path.name)


def _run_engine(path: Path, device: str) -> Predictor:
    from refit.export.tensorrt import TensorRTPredictor

    return TensorRTPredictor(path)


Build = Callable[[torch.nn.Module, Path, ExportOptions], list[Artefact]]


@dataclass(frozen=True)
class Target:
    """One export format.

    build: writes the artefacts into a staging folder (the recipe gates them, then installs them).
    file: the artefact in exports/ that runs (None: nothing to run here, e.g. an edge bundle).
    run: loads that file as a Predictor on a device.
    benchmark_builds: the benchmark may build it for its run when exports/ lacks it (cheap, runs here).
    """

    build: Build
    help: str
    file: str | None = None
    run: Callable[[Path, str], Predictor] | None = None
    benchmark_builds: bool = True


# format name -> target. Adding a format is one build function and one line here.
TARGETS: dict[str, Target] = {
    "onnx": Target(onnx_target, "float32 ONNX, graph-optimised (model.onnx)", "model.onnx", _run_onnx),
    "onnx-int8": Target(
        onnx_int8_target, "int8 ONNX for CPU (model.int8.onnx + model.onnx)", "model.int8.onnx", _run_onnx
    ),
    "tensorrt": Target(
        tensorrt_target,
        "TensorRT engine, built on this GPU (model.plan)",
        "model.plan",
        _run_engine,
        benchmark_builds=False,
    ),
    "edge": Target(edge_target, "bundle that builds and checks the engine on the device (edge/)"),
}


def load_export(version_dir: str | Path, fmt: str, device: str = "cpu") -> Predictor:
    """The installed export of `fmt` in VERSION/exports/, ready to run (what serving and benchmarks load)."""
    target = TARGETS.get(fmt)
    if target is None or target.file is None:
        runnable = [n for n, t in TARGETS.items() if t.file]
        raise ExportError(f"Unknown or non-runnable export format '{fmt}'; use one of {', '.join(runnable)}.")
    path = Path(version_dir) / "exports" / target.file
    if not path.is_file():
        raise ExportError(
            f"{path} is missing: run `refit export --version {version_dir} --format {fmt}` first."
        )
    return target.run(path, device)


def is_installed(artefact: Artefact, exports: Path) -> bool:
    """Whether exports/ already holds this artefact byte for byte (every one of its files), e.g. the model.onnx
    an onnx-int8 build rebuilds as its float32 intermediate with the options the onnx export used."""
    return all(
        src.is_file()
        and (exports / src.name).is_file()
        and filecmp.cmp(src, exports / src.name, shallow=False)
        for src in artefact.files
    )


def install(artefacts: Sequence[Artefact], exports: Path) -> list[Path]:
    """Move gated artefacts into exports/, each file or folder by rename (a folder replaces the old one)."""
    placed = []
    for artefact in artefacts:
        for src in artefact.files:
            dest = exports / src.name
            old = None
            if dest.is_dir():
                old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
                os.replace(dest, old)
            os.replace(src, dest)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            placed.append(dest)
    return placed
