"""PyTorch classifier -> ONNX with dynamic batch and sequence axes, checked, optionally graph-optimised.

The default exporter is TorchScript (`dynamo=False`) with eager attention because ONNX Runtime's BERT
optimizer only recognises that attention pattern: on MiniLM it fuses 6 Attention, EmbedLayerNormalization,
12 SkipLayerNormalization and 6 BiasGelu nodes, while on the dynamo export (and on SDPA attention) it fuses
no attention at all. The dynamo exporter stays selectable; its weights go to a separate `.onnx.data` file.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

import torch

from refit.compress.prune import shrink_pruned_heads
from refit.errors import ExportError, MissingExtra

__all__ = ["Exporter", "INPUT_NAMES", "export_onnx", "optimize_transformer", "check_onnx", "onnx_files"]

Exporter = Literal["torchscript", "dynamo"]
INPUT_NAMES = ("input_ids", "attention_mask")
_AXES = {
    "input_ids": {0: "batch", 1: "sequence"},
    "attention_mask": {0: "batch", 1: "sequence"},
    "logits": {0: "batch"},
}
# transformers model_type -> the onnxruntime.transformers optimizer's model type. Its "bert" optimizer
# matches patterns, so on each family it fuses what it recognises (tiny random models, ORT 1.32,
# scripts/results/architectures.md): BERT, DistilBERT, ELECTRA: Attention + EmbedLayerNormalization +
# GELU + LayerNorm; RoBERTa, XLM-R: Attention, GELU, LayerNorm (their padding-aware position ids hide the
# embedding pattern); DeBERTa-v2 (relative attention) and ModernBERT (fused QKV, rotary): GELU and
# LayerNorm only. Parity is measured on every export, so a fusion that changed the logits would be caught.
_ORT_MODEL_TYPES = {
    "bert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "electra": "bert",
    "distilbert": "bert",
    "camembert": "bert",
    "deberta-v2": "bert",
    "modernbert": "bert",
}


class _Logits(torch.nn.Module):
    """Positional (input_ids, attention_mask) -> logits: the graph's whole interface."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def _sample_ids(config) -> torch.Tensor:
    """Two tracing inputs, the second padded with the model's own pad id (RoBERTa's is 1, not 0). The ids
    come from the middle of the vocabulary, which every vocabulary holds and no family uses for its special
    tokens: BERT's fixed [CLS] 101 and 2023 were past the end of a small one (an IndexError at export)."""
    mid = config.vocab_size // 2
    pad = getattr(config, "pad_token_id", None) or 0
    return torch.tensor([[mid, mid + 1, mid + 2, mid + 3], [mid, mid + 4, mid + 3, pad]])


def onnx_files(path: str | Path) -> list[Path]:
    """The model file and its external-data file, when the exporter wrote one."""
    path = Path(path)
    data = path.with_name(path.name + ".data")
    return [path, data] if data.exists() else [path]


def check_onnx(path: str | Path) -> None:
    """onnx.checker on the file path (so external data and >2 GB models are handled)."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as e:
        raise ExportError(f"The exported graph {path} fails onnx.checker: {e}") from None


def export_onnx(
    model: torch.nn.Module, dest: str | Path, *, opset: int = 17, exporter: Exporter = "torchscript"
) -> Path:
    """Export a sequence classifier to `dest` (float32, dynamic batch/sequence) and check it.

    The model is copied first: export switches attention to eager and physically drops pruned heads, and
    the caller's model must not change under it.
    """
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise MissingExtra("onnx", "export") from None
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = shrink_pruned_heads(copy.deepcopy(model).float().cpu().eval())
    if exporter == "torchscript" and hasattr(work, "set_attn_implementation"):
        work.set_attn_implementation("eager")
    wrapper = _Logits(work).eval()
    sample = (_sample_ids(work.config), torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]))
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            wrapper,
            sample,
            str(dest),
            input_names=list(INPUT_NAMES),
            output_names=["logits"],
            dynamic_axes=_AXES,
            opset_version=opset,
            dynamo=exporter == "dynamo",
        )
    check_onnx(dest)
    return dest


def optimize_transformer(
    src: str | Path, dest: str | Path, model_config, *, skip_layer_norm: bool = False
) -> dict[str, int] | None:
    """ONNX Runtime's transformer optimizer (fused attention, embedding LayerNorm, GELU) for BERT-family graphs.

    Returns the fused operator counts, or None (nothing written) for an architecture outside the BERT
    family. Head count and width are passed only when every layer keeps all its heads: after head pruning
    they differ per layer, so the optimizer detects them from the graph instead.

    skip_layer_norm: also fuse residual Add + LayerNormalization into SkipLayerNormalization. Off by
    default: on CPU, ONNX Runtime 1.32's SkipLayerNormalization kernel takes 147 us on a [1, 64, 384]
    input where Add + LayerNormalization take 32 us, and leaving it unfused takes MiniLM int8 at batch 1
    from 4.56 to 3.82 ms (3.48x to 4.17x eager fp32, scripts/results/export.md; OrtPredictor keeps ORT
    from fusing it back at load). CUDA's kernel is not known to have the problem: fuse it for a GPU.
    """
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    model_type = _ORT_MODEL_TYPES.get(getattr(model_config, "model_type", ""))
    if model_type is None:
        return None
    pruned = bool(getattr(model_config, "refit_pruned_heads", None))
    heads = 0 if pruned else model_config.num_attention_heads
    hidden = 0 if pruned else model_config.hidden_size
    fusions = FusionOptions(model_type)
    fusions.enable_skip_layer_norm = skip_layer_norm
    opt = optimizer.optimize_model(
        str(src), model_type=model_type, num_heads=heads, hidden_size=hidden, optimization_options=fusions
    )
    opt.save_model_to_file(str(dest), use_external_data_format=len(onnx_files(src)) > 1)
    check_onnx(dest)
    return {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}
