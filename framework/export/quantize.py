"""ONNX quantisation, one table with one interface (src.onnx, dst.onnx, calibration batches -> dst).

- dynamic-int8: ONNX Runtime `quantize_dynamic` (int8 weights, activations quantised on the fly), CPU.
  Per-channel weight scales: on MiniLM fine-tuned on sst2 per-tensor scales cost 0.80 accuracy points on
  the validation split, per-channel none (-0.11, scripts/results/export.md).
- static-int8: ONNX Runtime `quantize_static`, Q/DQ format, activation ranges calibrated on N inputs.
  On ORT's CPU provider it is slower than dynamic int8 (MiniLM, batch 1: 0.7x-2.1x eager fp32 against
  4.2x): the session keeps dozens of QuantizeLinear/DequantizeLinear nodes, s8 activations get no fused
  int8 MatMul for every layer, and attention stays unfused (scripts/results/export.md).
- qdq-tensorrt: static Q/DQ with symmetric int8 weights and activations, per-channel weights, the explicit
  quantisation TensorRT builds INT8 engines from (the only INT8 route in TensorRT 11).
- fp16: float16 weights and compute with float32 inputs/outputs kept, the strongly typed FP16 graph that
  TensorRT 11 needs in place of the removed FP16 builder flag.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from refit.errors import ConfigError, MissingExtra

__all__ = [
    "ONNX_QUANTIZERS",
    "DYNAMIC_INT8_DEFAULTS",
    "dynamic_int8",
    "static_int8",
    "ort_dynamic_int8",
    "ort_static_int8",
    "qdq_for_tensorrt",
    "onnx_fp16",
]

OnnxQuantizer = Callable[[Path, Path, Sequence[Any]], Path]


def _onnx():
    try:
        import onnx
        from onnxruntime import quantization
    except ImportError:
        raise MissingExtra("onnx and onnxruntime", "export") from None
    return onnx, quantization


def _without_value_info(src: Path, work: Path) -> Path:
    """A copy of the graph without intermediate shape annotations.

    ORT's quantizer re-runs shape inference and trips over the dynamo exporter's annotations
    ("ShapeInferenceError ... (384) vs (2)", FINDINGS.md); clearing them is harmless for every exporter.
    """
    onnx, _ = _onnx()
    model = onnx.load(str(src))
    model.graph.ClearField("value_info")
    out = work / "clean.onnx"
    onnx.save(model, str(out), save_as_external_data=False)
    return out


# What dynamic int8 quantises by default; the benchmark compares it with the other choices
# (scripts/results/export.md).
DYNAMIC_INT8_DEFAULTS = {"per_channel": True, "reduce_range": False, "op_types": None}


def dynamic_int8(
    src: Path,
    dst: Path,
    *,
    per_channel: bool = True,
    reduce_range: bool = False,
    op_types: Sequence[str] | None = None,
) -> Path:
    """ONNX Runtime `quantize_dynamic` with int8 weights and every choice that matters for speed/accuracy.

    per_channel: one weight scale per output column (on fine-tuned MiniLM: -0.11 validation points against
    +0.80 per tensor, scripts/results/export.md). reduce_range: 7-bit weights, only needed on CPUs without VNNI whose u8*s8 products
    saturate. op_types: None quantises every op ORT knows (also Gather, i.e. the embedding table).
    """
    onnx, q = _onnx()
    work = dst.parent / f".{dst.name}.work"
    work.mkdir(parents=True, exist_ok=True)
    try:
        q.quantize_dynamic(
            str(_without_value_info(src, work)),
            str(dst),
            op_types_to_quantize=list(op_types) if op_types else None,
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=q.QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dst


def ort_dynamic_int8(src: Path, dst: Path, calibration: Sequence[Any] = ()) -> Path:
    """Dynamic int8 with refit's measured defaults (DYNAMIC_INT8_DEFAULTS); no calibration needed."""
    return dynamic_int8(src, dst, **DYNAMIC_INT8_DEFAULTS)


class _Reader:
    """Feeds calibration batches to ORT's calibrator (its CalibrationDataReader protocol)."""

    def __init__(self, batches: Iterable[Any]) -> None:
        self._feeds = iter([{"input_ids": b.input_ids, "attention_mask": b.attention_mask} for b in batches])

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


_CALIBRATORS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


def static_int8(
    src: Path,
    dst: Path,
    calibration: Sequence[Any],
    *,
    activation_type: Literal["int8", "uint8"] = "int8",
    symmetric: bool = True,
    per_channel: bool = True,
    method: Literal["minmax", "percentile", "entropy"] = "minmax",
    op_types: Sequence[str] = ("MatMul", "Gemm"),
) -> Path:
    """ONNX Runtime `quantize_static` in Q/DQ format with int8 weights and every choice the benchmark
    compares (scripts/results/export.md).

    activation_type/symmetric: int8 symmetric (what TensorRT takes) or uint8 asymmetric (ORT's U8S8
    kernels on x86). method: how activation ranges are read from the calibration inputs; the histogram
    ones (percentile, entropy) need every calibration batch padded to one length.
    """
    onnx, q = _onnx()
    if not calibration:
        raise ConfigError(
            "Static int8 quantisation needs calibration inputs (quantize.calibration_size > 0)."
        )
    work = dst.parent / f".{dst.name}.work"
    work.mkdir(parents=True, exist_ok=True)
    try:
        q.quantize_static(
            str(_without_value_info(src, work)),
            str(dst),
            _Reader(calibration),
            quant_format=q.QuantFormat.QDQ,
            activation_type=q.QuantType.QInt8 if activation_type == "int8" else q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
            per_channel=per_channel,
            op_types_to_quantize=list(op_types),
            calibrate_method=getattr(q.CalibrationMethod, _CALIBRATORS[method]),
            extra_options={
                "ActivationSymmetric": symmetric,
                "WeightSymmetric": True,
                "DefaultTensorType": onnx.TensorProto.FLOAT,
            },
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dst


def ort_static_int8(src: Path, dst: Path, calibration: Sequence[Any]) -> Path:
    """Q/DQ int8 with MinMax ranges from the calibration inputs (asymmetric activations, for ORT)."""
    return static_int8(src, dst, calibration, activation_type="int8", symmetric=False, per_channel=False)


def qdq_for_tensorrt(src: Path, dst: Path, calibration: Sequence[Any]) -> Path:
    """Q/DQ int8 the way TensorRT wants it: symmetric activations and weights, per-channel weights."""
    return static_int8(src, dst, calibration, activation_type="int8", symmetric=True, per_channel=True)


def onnx_fp16(src: Path, dst: Path, calibration: Sequence[Any] = ()) -> Path:
    """float16 graph with float32 inputs and outputs (ONNX Runtime's converter)."""
    onnx, _ = _onnx()
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
    return dst


ONNX_QUANTIZERS: dict[str, OnnxQuantizer] = {
    "dynamic-int8": ort_dynamic_int8,
    "static-int8": ort_static_int8,
    "qdq-tensorrt": qdq_for_tensorrt,
    "fp16": onnx_fp16,
}
