"""Compression methods, ONE table. Each entry carries everything a recipe needs to know about it, so the
compress recipe holds no method names: adding a method is one function and one line in METHODS.

    apply(model, amount, batches) -> (model, summary)   batches: tokenised training inputs, when `needs_data`
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from refit.compress.prune import PRUNERS
from refit.compress.quantize import TORCH_QUANTIZERS

__all__ = ["Method", "METHODS"]

_RECOVER = "add --recovery.epochs 1"
_DENSE_NOTE = (
    "Note: zeros are still stored and multiplied, so unstructured and 2:4 sparsity neither shrink the "
    "file nor speed up dense CPU kernels (2:4 needs sparse tensor cores on an Ampere+ GPU)."
)
_HEADS_NOTE = (
    "Note: pruned heads are zeroed in the child's weights, so its file size is unchanged; they are "
    "physically removed (smaller, faster) when the version is exported (`refit export`) or benchmarked; "
    "the latency above is already measured with them removed."
)


@dataclass(frozen=True)
class Method:
    """apply: compresses (in place or not) and returns (model, summary for refit.json).
    hint: what to try when the accuracy gate refuses the result.
    needs_data: apply wants tokenised training inputs (importance scores).
    recoverable: a recovery fine-tune may follow (the result is still a trainable float model).
    note: printed after the report (what the user might wrongly expect from this method)."""

    apply: Callable[[torch.nn.Module, float, Sequence[Any]], tuple[torch.nn.Module, dict]]
    hint: str
    needs_data: bool = False
    recoverable: bool = True
    note: str = ""


def _pruner(name: str) -> Callable[[torch.nn.Module, float, Sequence[Any]], tuple[torch.nn.Module, dict]]:
    return lambda model, amount, batches: (model, PRUNERS[name](model, amount, batches))


def _cast(name: str) -> Callable[[torch.nn.Module, float, Sequence[Any]], tuple[torch.nn.Module, dict]]:
    return lambda model, amount, batches: (TORCH_QUANTIZERS[name](model), {"dtype": name})


# method name -> Method. One line per method.
METHODS: dict[str, Method] = {
    "magnitude": Method(_pruner("magnitude"), f"Lower --amount or {_RECOVER}.", note=_DENSE_NOTE),
    "heads": Method(
        _pruner("heads"), f"Prune fewer heads (--amount) or {_RECOVER}.", needs_data=True, note=_HEADS_NOTE
    ),
    "ffn": Method(_pruner("ffn"), f"Lower --amount or {_RECOVER}.", needs_data=True),
    "2:4": Method(_pruner("2:4"), "Add --recovery.epochs 1 (2:4 always prunes half).", note=_DENSE_NOTE),
    "fp16": Method(_cast("fp16"), "Use bf16, or keep fp32 for this model.", recoverable=False),
    "bf16": Method(_cast("bf16"), "Use fp16 on GPU, or keep fp32 for this model.", recoverable=False),
}
