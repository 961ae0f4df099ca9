"""Export: ONNX (+ graph optimisation, int8), TensorRT engines, edge bundles, the runtime table, benchmark.

The Predictor interface and the PyTorch / ONNX Runtime predictors they all run live in refit.inference.
"""

from refit.errors import ExportError
from refit.export.parity import parity
from refit.export.quantize import ONNX_QUANTIZERS
from refit.export.runtimes import RUNTIMES, make_predictor

__all__ = ["ONNX_QUANTIZERS", "RUNTIMES", "ExportError", "make_predictor", "parity"]
