"""Model compression: pruning and PyTorch quantisation methods (one table each).

The accuracy gate every compressed artefact passes lives in refit.evaluate (export uses it too).
"""

from refit.compress.methods import METHODS, Method
from refit.compress.prune import PRUNERS, prunable_linears, shrink_pruned_heads, sparsity
from refit.compress.quantize import TORCH_QUANTIZERS

__all__ = [
    "METHODS",
    "Method",
    "PRUNERS",
    "TORCH_QUANTIZERS",
    "prunable_linears",
    "shrink_pruned_heads",
    "sparsity",
]
