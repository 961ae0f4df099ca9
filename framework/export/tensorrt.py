"""TensorRT engines from ONNX: build (optimisation profile, timing cache, workspace limit), metadata, runner.

TensorRT 11 removed the precision builder flags (BuilderFlag.FP16/INT8): networks are strongly typed and
precision comes from the ONNX graph itself (a float16 graph for FP16, Q/DQ nodes for INT8). TensorRT 10
still has the flags. So the precision decides which ONNX file is parsed, and the installed major version
decides whether flags are set; `onnx_for_precision` and `builder_flags` hold that decision.

This file imports nothing from refit except, when available, its error class: the edge bundle ships a
copy of it as build_engine.py, which builds the engine on the device and re-checks parity there
(`python build_engine.py`). The runner needs torch with CUDA for device buffers.

Not yet run against a real TensorRT here: the development machines have no GPU and TensorRT cannot be
installed from their package index. The calls follow NVIDIA's documented Python API for 10.x and 11.x.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType

import numpy as np

try:
    from refit.errors import ExportError
except ImportError:  # running alone inside an edge bundle, without refit installed

    class ExportError(RuntimeError):  # type: ignore[no-redef]
        """Why an engine cannot be built or loaded."""


__all__ = [
    "Profile",
    "PRECISIONS",
    "onnx_for_precision",
    "builder_flags",
    "build_engine",
    "engine_metadata",
    "TensorRTPredictor",
    "tensorrt_major",
    "import_tensorrt",
]

PRECISIONS = ("fp32", "fp16", "int8")
INPUTS = ("input_ids", "attention_mask")


@dataclass
class Profile:
    """The optimisation profile: the engine accepts any batch and sequence length inside min..max and is
    tuned for opt."""

    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    min_seq: int = 1
    opt_seq: int = 64
    max_seq: int = 128

    def shapes(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        return (self.min_batch, self.min_seq), (self.opt_batch, self.opt_seq), (self.max_batch, self.max_seq)


def import_tensorrt() -> ModuleType:
    """The one place TensorRT is imported: missing, it fails with the extra to install (not a bare ImportError)."""
    try:
        import tensorrt
    except ImportError:
        raise ExportError(
            "This needs TensorRT, which is not installed: `pip install refit-ml[tensorrt]` on a "
            "machine with an NVIDIA GPU and driver."
        ) from None
    return tensorrt


def tensorrt_major(version: str) -> int:
    return int(version.split(".")[0])


def onnx_for_precision(precision: str, major: int) -> str:
    """Which ONNX variant an engine of `precision` is built from: 'fp32' (model.onnx), 'fp16' or 'qdq'.

    TensorRT 11 takes precision from the graph, so FP16 needs the float16 graph; TensorRT 10 builds FP16
    from the float32 graph with a flag. INT8 always comes from Q/DQ nodes (implicit calibration is gone).
    """
    if precision not in PRECISIONS:
        raise ExportError(f"Unknown TensorRT precision '{precision}'; use one of {', '.join(PRECISIONS)}.")
    if precision == "int8":
        return "qdq"
    return "fp16" if precision == "fp16" and major >= 11 else "fp32"


def builder_flags(precision: str, major: int) -> list[str]:
    """BuilderFlag names to set: none on TensorRT 11 (strongly typed); FP16 (+INT8) on TensorRT 10."""
    if major >= 11 or precision == "fp32":
        return []
    return ["FP16"] if precision == "fp16" else ["FP16", "INT8"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _gpu() -> dict:
    import torch

    if not torch.cuda.is_available():
        raise ExportError("TensorRT needs a CUDA GPU; torch sees none here.")
    props = torch.cuda.get_device_properties(0)
    return {
        "gpu": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "cuda": torch.version.cuda,
    }


def engine_metadata(plan: Path) -> dict:
    """The JSON written next to an engine: versions and settings it was built with."""
    meta_file = plan.with_name(plan.name + ".json")
    if not meta_file.is_file():
        raise ExportError(
            f"{meta_file} is missing: rebuild the engine so its TensorRT/GPU versions are known."
        )
    return json.loads(meta_file.read_text())


def _write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def build_engine(
    onnx_path: str | Path,
    plan_path: str | Path,
    *,
    precision: str = "fp16",
    profile: Profile | None = None,
    workspace_gb: float = 4.0,
    timing_cache: str | Path | None = None,
) -> dict:
    """Build and serialise an engine from `onnx_path` (already in the graph form `onnx_for_precision`
    names); writes the plan, its metadata JSON and the timing cache; returns the metadata."""
    trt = import_tensorrt()
    major = tensorrt_major(trt.__version__)
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    profile = profile or Profile()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode since 10; strongly typed in 11
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # from the file, so external weights are found
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT {trt.__version__} cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    for flag in builder_flags(precision, major):
        config.set_flag(getattr(trt.BuilderFlag, flag))
    opt_profile = builder.create_optimization_profile()
    lo, opt, hi = profile.shapes()
    for i in range(network.num_inputs):
        opt_profile.set_shape(network.get_input(i).name, lo, opt, hi)
    config.add_optimization_profile(opt_profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache = config.create_timing_cache(
        cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    )
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(
            f"TensorRT {trt.__version__} failed to build an engine from {onnx_path} (see its log)."
        )
    _write_bytes(plan_path, bytes(serialized))
    if cache_path:
        _write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
    meta = {
        "tensorrt": trt.__version__,
        **_gpu(),
        "precision": precision,
        "builder_flags": builder_flags(precision, major),
        "strongly_typed": major >= 11,
        "profile": asdict(profile),
        "workspace_gb": workspace_gb,
        "onnx": onnx_path.name,
        "onnx_sha256": _sha256(onnx_path),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _write_bytes(plan_path.with_name(plan_path.name + ".json"), (json.dumps(meta, indent=2) + "\n").encode())
    return meta


class TensorRTPredictor:
    """Runs a serialized engine on the current CUDA device (torch tensors as device buffers).

    Refuses an engine built by another TensorRT version or for another GPU architecture: TensorRT would
    fail to deserialize it with a less helpful message, or not at all.
    """

    def __init__(self, plan: str | Path, name: str = "tensorrt") -> None:
        import torch

        trt = import_tensorrt()
        plan = Path(plan)
        meta = engine_metadata(plan)
        if meta["tensorrt"] != trt.__version__:
            raise ExportError(
                f"{plan} was built with TensorRT {meta['tensorrt']}; this is TensorRT "
                f"{trt.__version__}. Engines only load in the version that built them: rebuild it "
                "here (`refit export --format tensorrt`, or build_engine.py in an edge bundle)."
            )
        gpu = _gpu()
        if meta.get("compute_capability") != gpu["compute_capability"]:
            raise ExportError(
                f"{plan} was built for a GPU of compute capability {meta.get('compute_capability')} "
                f"({meta.get('gpu')}); this {gpu['gpu']} is {gpu['compute_capability']}. Rebuild it here."
            )
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise ExportError(f"TensorRT could not deserialize {plan}; rebuild it on this machine.")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.profile = meta.get("profile")
        self.torch = torch
        self.name = name

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self.torch
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        keep = []
        for n in self.inputs:
            t = torch.from_numpy(np.ascontiguousarray(feeds[n].astype(self.dtypes[n]))).cuda()
            if not self.context.set_input_shape(n, tuple(t.shape)):  # False outside the profile
                raise ExportError(
                    f"Input '{n}' of shape {tuple(t.shape)} is outside this engine's optimisation profile "
                    f"{self.profile}: pass batches and sequence lengths inside it, or rebuild the engine "
                    "with a larger profile."
                )
            self.context.set_tensor_address(n, t.data_ptr())
            keep.append(t)
        outs = {}
        for n in self.outputs:
            shape = tuple(self.context.get_tensor_shape(n))
            outs[n] = torch.empty(shape, dtype=getattr(torch, self.dtypes[n].name), device="cuda")
            self.context.set_tensor_address(n, outs[n].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise ExportError("TensorRT execution failed (see its log).")
        stream.synchronize()
        return outs[self.outputs[0]].float().cpu().numpy()


def main(argv: list[str] | None = None) -> int:
    """Edge bundle entry point: build the engine on this device, then re-check parity on the reference set."""
    import argparse

    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description="Build a TensorRT engine from this bundle and check its parity.")
    ap.add_argument("--bundle", type=Path, default=here, help="bundle folder (default: this script's)")
    ap.add_argument(
        "--tolerance", type=float, default=None, help="max-abs logit diff allowed (default bundle.json)"
    )
    args = ap.parse_args(argv)
    bundle = json.loads((args.bundle / "bundle.json").read_text())
    major = tensorrt_major(import_tensorrt().__version__)
    onnx_file = args.bundle / bundle["onnx"][onnx_for_precision(bundle["precision"], major)]
    plan = args.bundle / "model.plan"
    build_engine(
        onnx_file,
        plan,
        precision=bundle["precision"],
        profile=Profile(**bundle["profile"]),
        workspace_gb=bundle["workspace_gb"],
        timing_cache=args.bundle / "timing.cache",
    )
    ref = np.load(args.bundle / "reference.npz")
    predictor = TensorRTPredictor(plan)
    logits = np.concatenate(
        [predictor(ref[f"input_ids_{i}"], ref[f"attention_mask_{i}"]) for i in range(int(ref["batches"]))]
    )
    expected = ref["logits"]
    diff = float(np.abs(logits - expected).max())
    agreement = float((logits.argmax(-1) == expected.argmax(-1)).mean())
    tolerance = args.tolerance if args.tolerance is not None else bundle["parity"]["max_abs_diff"]
    report = {
        "max_abs_diff": diff,
        "argmax_agreement": agreement,
        "n": int(len(expected)),
        "tolerance": tolerance,
        "min_agreement": bundle["parity"]["min_agreement"],
    }
    (args.bundle / "parity.json").write_text(json.dumps(report, indent=2) + "\n")
    ok = diff <= tolerance and agreement >= bundle["parity"]["min_agreement"]
    print(
        f"{'OK' if ok else 'PARITY FAILED'}: max-abs logit diff {diff:.2e}, argmax agreement {agreement:.4f}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
