"""Model compression: pruning and quantisation methods (one table each) and the accuracy gate."""

from refit.compress.gate import (
    AccuracyGateError,
    GateData,
    check_gate,
    evaluation_texts,
    load_gate_data,
    score,
)
from refit.compress.prune import PRUNERS, prunable_linears, shrink_pruned_heads, sparsity
from refit.compress.quantize import ONNX_QUANTIZERS, TORCH_QUANTIZERS

__all__ = [
    "AccuracyGateError", "GateData", "ONNX_QUANTIZERS", "PRUNERS", "TORCH_QUANTIZERS", "check_gate", "evaluation_texts",
    "load_gate_data",
    "prunable_linears", "score", "shrink_pruned_heads", "sparsity",
]
