"""Export: ONNX (+ graph optimisation, int8), TensorRT engines, edge bundles, one Predictor interface, benchmark."""

from refit.export.errors import ExportError
from refit.export.parity import parity
from refit.export.runtimes import (
           RUNTIMES,
           Batch,
           OrtPredictor,
           Predictor,
           TorchPredictor,
           encode,
           make_predictor,
           predict_logits,
)

__all__ = ["RUNTIMES", "Batch", "ExportError", "OrtPredictor", "Predictor", "TorchPredictor", "encode",
           "make_predictor", "parity", "predict_logits"]
