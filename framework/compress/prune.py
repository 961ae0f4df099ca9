"""Pruning methods, one table: each takes (model, amount, batches), changes the model in place, returns a summary.

- magnitude: global unstructured L1 magnitude over the encoder's Linear weights, made permanent. Pooler and
  classifier are left out: pruned globally with the rest they lose almost all their weights (FINDINGS.md).
  Zeros are still stored and multiplied, so neither the file nor dense-kernel latency shrinks.
- heads: attention heads with the lowest Taylor importance (Michel et al. 2019), ranked across layers.
- ffn: intermediate (feed-forward) neurons with the lowest Taylor importance, the same count in each layer,
  removed physically, so the saved model is smaller and faster.
- 2:4: in every group of 4 consecutive input weights the 2 smallest are zeroed (50%), the pattern that
  sparse tensor cores on Ampere+ GPUs run faster; dense CPU kernels do not.

transformers 5 removed `prune_heads` and the `pruned_heads` config entry, and a BERT config cannot express
a different head count per layer. So head pruning zeroes the heads' query/key/value rows and output columns
(exactly equivalent to removing them: a head whose values are zero contributes nothing), records them as
`refit_pruned_heads` in config.json so plain `transformers` still loads the model, and
`shrink_pruned_heads` removes them physically where speed matters (ONNX export, benchmark).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import prune_linear_layer

from refit.errors import ConfigError, ModelError

__all__ = [
    "LAYOUTS",
    "Layout",
    "PRUNERS",
    "Pruner",
    "prunable_linears",
    "sparsity",
    "shrink_pruned_heads",
    "magnitude",
    "heads",
    "ffn",
    "two_four",
]

# (model, amount in [0, 1], batches with input_ids/attention_mask/labels) -> summary for refit.json
Pruner = Callable[[nn.Module, float, Iterable[Any]], dict]


def prunable_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """Linear layers of the encoder body: everything in the base model except the pooler (the classifier
    head lives outside the base model)."""
    base = model.base_model
    return [(n, m) for n, m in base.named_modules() if isinstance(m, nn.Linear) and "pooler" not in n]


def sparsity(model: nn.Module) -> dict[str, float | int]:
    """Share of zero weights in the prunable layers, and parameter counts (all / non-zero)."""
    weights = [m.weight for _, m in prunable_linears(model)]
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    return {"prunable_sparsity": zeros / max(total, 1), "parameters": params, "nonzero_parameters": nonzero}


@dataclass(frozen=True)
class Layout:
    """Where one encoder family keeps what structured pruning changes, as dotted paths: `layers` from the
    base model, the rest from one layer. `qk_extra`: further per-head projections whose output rows go
    with the heads (DeBERTa's relative-position key/query projections, when not shared). `ffn_config`:
    the config field holding the feed-forward width."""

    layers: str
    query: str
    key: str
    value: str
    out: str
    ffn_in: str
    ffn_out: str
    ffn_config: str = "intermediate_size"
    qk_extra: tuple[str, ...] = ()


_BERT = Layout(
    "encoder.layer",
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)
# transformers model_type -> layout. One table: supporting another encoder family is one line here.
LAYOUTS: dict[str, Layout] = {
    **dict.fromkeys(("bert", "roberta", "xlm-roberta", "electra", "camembert"), _BERT),
    "distilbert": Layout(
        "transformer.layer",
        "attention.q_lin",
        "attention.k_lin",
        "attention.v_lin",
        "attention.out_lin",
        "ffn.lin1",
        "ffn.lin2",
        ffn_config="hidden_dim",
    ),
    "deberta-v2": Layout(
        "encoder.layer",
        "attention.self.query_proj",
        "attention.self.key_proj",
        "attention.self.value_proj",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
        qk_extra=("attention.self.pos_key_proj", "attention.self.pos_query_proj"),
    ),
}


def _get(root: nn.Module, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part, None)
    return root


def _set(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(_get(root, parent) if parent else root, name, module)


def _first_layer(model: nn.Module) -> nn.Module | None:
    layers = _get(model.base_model, _BERT.layers)
    return layers[0] if isinstance(layers, nn.ModuleList) and len(layers) else None


def _layers(model: nn.Module) -> tuple[Layout, list[nn.Module]]:
    """The model's layout and encoder layers, or a clear refusal naming what is supported."""
    model_type = getattr(model.config, "model_type", "")
    # a model type not in the table that is laid out like BERT (ERNIE, Data2VecText, a custom BERT
    # clone) is pruned as BERT, as it was before the table existed
    layout = LAYOUTS.get(model_type) or (
        _BERT if isinstance(_get(_first_layer(model), _BERT.query), nn.Linear) else None
    )
    layers = _get(model.base_model, layout.layers) if layout else None
    if not layers or not isinstance(_get(layers[0], layout.query), nn.Linear):
        raise ModelError(
            f"Structured pruning (methods 'heads' and 'ffn') supports the encoder families "
            f"{', '.join(LAYOUTS)} and any model laid out like BERT; this model is {model_type or type(model).__name__!r} "
            f"({type(model).__name__}), whose attention or feed-forward layers are laid out otherwise "
            "(ModernBERT fuses query/key/value into one projection; MPNet shares a per-head position bias "
            "across layers). "
            "Use method 'magnitude' or '2:4', or compress with fp16/bf16."
        )
    return layout, list(layers)


def _taylor_scores(
    model: nn.Module, modules: list[nn.Linear], group: int, batches: Iterable[Any]
) -> list[torch.Tensor]:
    """Importance of each group of input features of each module: the first-order change of the loss when
    the group is switched off, sum over examples of |sum over tokens and features of x * dL/dx|."""
    scores = [torch.zeros(m.in_features // group) for m in modules]
    captured: dict[int, torch.Tensor] = {}

    def capture(i: int):
        def hook(_module, args):
            args[0].retain_grad()
            captured[i] = args[0]

        return hook

    handles = [m.register_forward_pre_hook(capture(i)) for i, m in enumerate(modules)]
    model.eval()
    try:
        with torch.enable_grad():
            for b in batches:
                model.zero_grad(set_to_none=True)
                out = model(
                    input_ids=torch.as_tensor(b.input_ids),
                    attention_mask=torch.as_tensor(b.attention_mask),
                    labels=torch.as_tensor(b.labels),
                )
                out.loss.backward()
                for i, x in captured.items():
                    per_example = (x * x.grad).sum(1)  # [batch, features]
                    grouped = per_example.view(per_example.shape[0], -1, group).sum(-1)
                    scores[i] += grouped.abs().sum(0).detach().float()
                captured.clear()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    return scores


def magnitude(model: nn.Module, amount: float, batches: Iterable[Any] = ()) -> dict:
    """Zero the `amount` share of smallest-magnitude prunable weights, ranked across all layers at once."""
    from torch.nn.utils import prune

    params = [(m, "weight") for _, m in prunable_linears(model)]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=float(amount))
    for module, name in params:
        prune.remove(module, name)  # bake the mask into the weight: no reparametrisation left behind
    return {"scope": "encoder Linear weights (pooler, classifier and embeddings kept)"}


def two_four(model: nn.Module, amount: float = 0.5, batches: Iterable[Any] = ()) -> dict:
    """Keep the 2 largest of every 4 consecutive input weights of each prunable Linear (always 50%)."""
    if abs(amount - 0.5) > 1e-9:
        raise ConfigError(
            f"Method '2:4' always prunes exactly half the weights; got amount {amount}. Use 0.5."
        )
    skipped = []
    with torch.no_grad():
        for name, m in prunable_linears(model):
            w = m.weight
            if w.shape[1] % 4:
                skipped.append(name)
                continue
            groups = w.view(w.shape[0], -1, 4)
            keep = groups.abs().topk(2, dim=-1).indices
            mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
            w.copy_((groups * mask).view_as(w))
    return {"pattern": "2:4", "skipped_layers": skipped}


def _pruned_heads(config) -> dict[int, set[int]]:
    return {int(k): set(v) for k, v in (getattr(config, "refit_pruned_heads", None) or {}).items()}


def _head_rows(layer: nn.Module, layout: Layout) -> list[nn.Linear]:
    """The projections whose output rows belong to the heads: query, key, value, and any extra ones."""
    paths = (layout.query, layout.key, layout.value, *layout.qk_extra)
    return [m for m in (_get(layer, p) for p in paths) if isinstance(m, nn.Linear)]


def heads(model: nn.Module, amount: float, batches: Iterable[Any]) -> dict:
    """Zero the least important `amount` share of all attention heads (at least one head per layer stays)."""
    layout, layers = _layers(model)
    n_heads = model.config.num_attention_heads
    size = model.config.hidden_size // n_heads
    dead = _pruned_heads(model.config)
    scores = _taylor_scores(model, [_get(layer, layout.out) for layer in layers], size, batches)
    # Scores are normalised per layer (Michel et al.): raw magnitudes differ a lot between layers.
    ranked = sorted(
        (float(s[h] / (s.norm() + 1e-12)), i, h)
        for i, s in enumerate(scores)
        for h in range(n_heads)
        if h not in dead.get(i, set())
    )
    target = round(amount * n_heads * len(layers)) - sum(len(v) for v in dead.values())
    removed = 0
    for _, i, h in ranked:
        if removed >= target:
            break
        if len(dead.get(i, set())) < n_heads - 1:
            dead.setdefault(i, set()).add(h)
            removed += 1
    with torch.no_grad():
        for i, layer in enumerate(layers):
            for h in dead.get(i, ()):
                cols = slice(h * size, (h + 1) * size)
                for lin in _head_rows(layer, layout):
                    lin.weight[cols] = 0
                    if lin.bias is not None:
                        lin.bias[cols] = 0
                _get(layer, layout.out).weight[:, cols] = 0
    model.config.refit_pruned_heads = {str(i): sorted(v) for i, v in sorted(dead.items()) if v}
    return {
        "heads_pruned": sum(len(v) for v in dead.values()),
        "heads_total": n_heads * len(layers),
        "pruned_heads": model.config.refit_pruned_heads,
    }


def ffn(model: nn.Module, amount: float, batches: Iterable[Any]) -> dict:
    """Remove the least important `amount` share of feed-forward neurons, the same count in every layer."""
    layout, layers = _layers(model)
    width = _get(layers[0], layout.ffn_in).out_features
    keep_n = max(1, round(width * (1 - amount)))
    scores = _taylor_scores(model, [_get(layer, layout.ffn_out) for layer in layers], 1, batches)
    for layer, s in zip(layers, scores):
        keep = s.topk(keep_n).indices.sort().values
        _set(layer, layout.ffn_in, prune_linear_layer(_get(layer, layout.ffn_in), keep, dim=0))
        _set(layer, layout.ffn_out, prune_linear_layer(_get(layer, layout.ffn_out), keep, dim=1))
    # uniform width, so plain transformers loads the smaller model
    setattr(model.config, layout.ffn_config, keep_n)
    return {"intermediate_size": {"before": width, "after": keep_n}}


def shrink_pruned_heads(model: nn.Module) -> nn.Module:
    """Physically remove the heads listed in `config.refit_pruned_heads` (in place; returns the model).

    Only for inference copies (export, benchmark): the result has a different head count per layer, which
    a saved BERT config cannot describe.
    """
    dead = _pruned_heads(model.config)
    if not dead:
        return model
    layout, layers = _layers(model)
    size = model.config.hidden_size // model.config.num_attention_heads
    for i, gone in dead.items():
        layer = layers[i]
        alive = [h for h in range(model.config.num_attention_heads) if h not in gone]
        index = torch.tensor([h * size + d for h in alive for d in range(size)], dtype=torch.long)
        for path in (layout.query, layout.key, layout.value, *layout.qk_extra):
            if isinstance(_get(layer, path), nn.Linear):
                _set(layer, path, prune_linear_layer(_get(layer, path), index, dim=0))
        _set(layer, layout.out, prune_linear_layer(_get(layer, layout.out), index, dim=1))
        attention = _get(layer, layout.query.rpartition(".")[0])
        # the head count each family's forward reads (BERT, DeBERTa: num_attention_heads and all_head_size;
        # DistilBERT infers it from the projection's width)
        for name, value in (("num_attention_heads", len(alive)), ("n_heads", len(alive))):
            if hasattr(attention, name):
                setattr(attention, name, value)
        if hasattr(attention, "all_head_size"):
            attention.all_head_size = len(alive) * size
    model.config.refit_pruned_heads = {}
    return model


# method name -> pruner. Adding a method is one function and one line here.
PRUNERS: dict[str, Pruner] = {"magnitude": magnitude, "heads": heads, "ffn": ffn, "2:4": two_four}
