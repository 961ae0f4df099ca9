"""The edge bundle: everything a device needs to build its own TensorRT engine and prove it matches.

TensorRT engines are tied to the TensorRT version and GPU that built them, so for a Jetson or any other
target the engine must be built there. The bundle carries the ONNX graphs (float32, plus the float16 or
Q/DQ int8 graph the precision needs), calibration inputs, reference inputs with the PyTorch logits, a
`build_engine.py` (a copy of refit's TensorRT module: Python API build + parity check, no refit needed)
and a `build_engine.sh` (trtexec, build only).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from refit.export.tensorrt import Profile
from refit.inference import Batch

__all__ = ["PARITY_DEFAULTS", "write_bundle"]

# Default on-device parity thresholds per precision: (max-abs logit diff, min argmax agreement).
PARITY_DEFAULTS = {"fp32": (1e-3, 0.999), "fp16": (5e-2, 0.99), "int8": (1.0, 0.97)}

_SH = """#!/usr/bin/env bash
# Build model.plan with trtexec (build only; `python build_engine.py` also re-checks parity).
set -euo pipefail
cd "$(dirname "$0")"
ver=$(trtexec --help 2>&1 | grep -o 'TensorRT v[0-9]*' | head -1 | grep -o '[0-9]*$')
major=$((ver / 10000))
flags=()
onnx={weak}
if [ "$major" -ge 11 ]; then
  onnx={strong}   # TensorRT 11: precision comes from the graph (strongly typed)
else
  flags=({flags10})  # TensorRT 10: precision builder flags
fi
trtexec --onnx="$onnx" --saveEngine=model.plan --timingCacheFile=timing.cache \\
  --minShapes={min} --optShapes={opt} --maxShapes={max} \\
  --memPoolSize=workspace:{workspace_mib}M "${{flags[@]}}"
"""

_README = """# Edge bundle for {version_id} ({precision})

On the device (TensorRT 10 or 11, torch with CUDA, numpy):

    python build_engine.py          # builds model.plan, then checks it against reference.npz -> parity.json
    bash build_engine.sh            # or: build only, with trtexec

| file | what |
|---|---|
{files}

Written by refit; its TensorRT code follows NVIDIA's documented 10.x/11.x Python API but has not yet been
run against a real TensorRT by refit's developers (no GPU where it was written): check parity.json.

Inputs are `input_ids` and `attention_mask` (int64, [batch, sequence]); the output is `logits`.
The engine accepts batch {min_batch}..{max_batch} and sequence {min_seq}..{max_seq} (tuned for {opt_batch} x {opt_seq}).
"""


def _shape(batch: int, seq: int) -> str:
    return f"input_ids:{batch}x{seq},attention_mask:{batch}x{seq}"


def _save_batches(path: Path, batches: Sequence[Batch], **extra: np.ndarray) -> None:
    arrays = {
        f"{k}_{i}": getattr(b, k) for i, b in enumerate(batches) for k in ("input_ids", "attention_mask")
    }
    np.savez_compressed(path, batches=np.array(len(batches)), **arrays, **extra)


def write_bundle(
    folder: Path,
    onnx: dict[str, Path],
    *,
    precision: str,
    profile: Profile,
    workspace_gb: float,
    calibration: Sequence[Batch],
    reference: Sequence[Batch],
    reference_logits: np.ndarray,
    version_id: str,
) -> Path:
    """Write the bundle into `folder`. `onnx` maps graph kind ('fp32', 'fp16', 'qdq') to files to copy."""
    from refit.export import tensorrt
    from refit.export.tensorrt import onnx_for_precision

    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    for kind, src in onnx.items():
        names[kind] = f"model.{kind}.onnx" if kind != "fp32" else "model.onnx"
        shutil.copy(src, folder / names[kind])
    _save_batches(folder / "calibration.npz", calibration)
    _save_batches(folder / "reference.npz", reference, logits=reference_logits.astype(np.float32))
    shutil.copy(tensorrt.__file__, folder / "build_engine.py")
    tol, agree = PARITY_DEFAULTS[precision]
    bundle = {
        "version_id": version_id,
        "precision": precision,
        "onnx": names,
        "profile": profile.__dict__,
        "workspace_gb": workspace_gb,
        "parity": {"max_abs_diff": tol, "min_agreement": agree},
        "tensorrt": ">=10",
    }
    (folder / "bundle.json").write_text(json.dumps(bundle, indent=2) + "\n")
    lo, opt, hi = profile.shapes()
    flags10 = {"fp32": "", "fp16": "--fp16", "int8": "--fp16 --int8"}[precision]
    (folder / "build_engine.sh").write_text(
        _SH.format(
            weak=names[onnx_for_precision(precision, 10)],
            strong=names[onnx_for_precision(precision, 11)],
            flags10=flags10,
            min=_shape(*lo),
            opt=_shape(*opt),
            max=_shape(*hi),
            workspace_mib=int(workspace_gb * 1024),
        )
    )
    (folder / "build_engine.sh").chmod(0o755)
    files = {
        **{n: f"{k} graph" for k, n in names.items()},
        "calibration.npz": f"{sum(len(b.input_ids) for b in calibration)} calibration inputs (validation)",
        "reference.npz": f"{len(reference_logits)} reference inputs and their PyTorch float32 logits",
        "build_engine.py": "build the engine (TensorRT Python API) and check parity",
        "build_engine.sh": "build the engine with trtexec",
        "bundle.json": "settings and parity thresholds",
    }
    (folder / "README.md").write_text(
        _README.format(
            version_id=version_id,
            precision=precision,
            files="\n".join(f"| {k} | {v} |" for k, v in files.items()),
            **profile.__dict__,
        )
    )
    return folder
