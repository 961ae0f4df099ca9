"""PyTorch quantisation, one table with one interface (model -> model).

- fp16 / bf16: cast the weights, for GPU inference (halves the file; on CPU they are slow, not fast).
- dynamic-int8: `torch.ao.quantization.quantize_dynamic` on Linear layers, for CPU. Deprecated in torch 2.13
  in favour of torchao but still working; the result cannot be saved in Hugging Face format, so it is
  a benchmark/inference form, not a model version.

The ONNX quantisers (graph -> graph) belong to export: refit.export.quantize.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["TORCH_QUANTIZERS", "cast_fp16", "cast_bf16", "torch_dynamic_int8"]

TorchQuantizer = Callable[[torch.nn.Module], torch.nn.Module]


def cast_fp16(model: torch.nn.Module) -> torch.nn.Module:
    return model.half()


def cast_bf16(model: torch.nn.Module) -> torch.nn.Module:
    return model.to(torch.bfloat16)


def torch_dynamic_int8(model: torch.nn.Module) -> torch.nn.Module:
    """int8 weights for every Linear; activations quantised per batch at run time (CPU only)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.ao.quantization.quantize_dynamic(
            model.float().cpu().eval(), {torch.nn.Linear}, dtype=torch.qint8
        )


TORCH_QUANTIZERS: dict[str, TorchQuantizer] = {
    "fp16": cast_fp16,
    "bf16": cast_bf16,
    "dynamic-int8": torch_dynamic_int8,
}
