"""Export: ONNX (+ graph optimisation, int8), TensorRT engines, edge bundles (one TARGETS table), benchmark.

The Predictor interface and the PyTorch / ONNX Runtime predictors they all run live in refit.inference.
"""

from refit.errors import ExportError
from refit.export.parity import parity
from refit.export.quantize import ONNX_QUANTIZERS
from refit.export.targets import TARGETS, Target, load_export

__all__ = ["ONNX_QUANTIZERS", "TARGETS", "ExportError", "Target", "load_export", "parity"]
