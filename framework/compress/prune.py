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
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import prune_linear_layer

from refit.errors import ConfigError, ModelError

__all__ = [
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


def _bert_layers(model: nn.Module) -> list[nn.Module]:
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if not layers or not hasattr(getattr(layers[0], "attention", None), "self"):
        raise ModelError(
            f"Structured pruning supports BERT-family encoders (BERT, RoBERTa, ELECTRA, MiniLM); "
            f"{type(model).__name__} has another layout. Use method 'magnitude' or '2:4'."
        )
    return list(layers)


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


def heads(model: nn.Module, amount: float, batches: Iterable[Any]) -> dict:
    """Zero the least important `amount` share of all attention heads (at least one head per layer stays)."""
    layers = _bert_layers(model)
    n_heads = model.config.num_attention_heads
    size = model.config.hidden_size // n_heads
    dead = _pruned_heads(model.config)
    scores = _taylor_scores(model, [layer.attention.output.dense for layer in layers], size, batches)
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
            att = layer.attention
            for h in dead.get(i, ()):
                cols = slice(h * size, (h + 1) * size)
                for lin in (att.self.query, att.self.key, att.self.value):
                    lin.weight[cols] = 0
                    lin.bias[cols] = 0
                att.output.dense.weight[:, cols] = 0
    model.config.refit_pruned_heads = {str(i): sorted(v) for i, v in sorted(dead.items()) if v}
    return {
        "heads_pruned": sum(len(v) for v in dead.values()),
        "heads_total": n_heads * len(layers),
        "pruned_heads": model.config.refit_pruned_heads,
    }


def ffn(model: nn.Module, amount: float, batches: Iterable[Any]) -> dict:
    """Remove the least important `amount` share of feed-forward neurons, the same count in every layer."""
    layers = _bert_layers(model)
    width = layers[0].intermediate.dense.out_features
    keep_n = max(1, round(width * (1 - amount)))
    scores = _taylor_scores(model, [layer.output.dense for layer in layers], 1, batches)
    for layer, s in zip(layers, scores):
        keep = s.topk(keep_n).indices.sort().values
        layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, keep, dim=0)
        layer.output.dense = prune_linear_layer(layer.output.dense, keep, dim=1)
    model.config.intermediate_size = keep_n  # uniform width, so plain transformers loads the smaller model
    return {"intermediate_size": {"before": width, "after": keep_n}}


def shrink_pruned_heads(model: nn.Module) -> nn.Module:
    """Physically remove the heads listed in `config.refit_pruned_heads` (in place; returns the model).

    Only for inference copies (export, benchmark): the result has a different head count per layer, which
    a saved BERT config cannot describe.
    """
    dead = _pruned_heads(model.config)
    if not dead:
        return model
    layers = _bert_layers(model)
    size = model.config.hidden_size // model.config.num_attention_heads
    for i, gone in dead.items():
        att = layers[i].attention
        alive = [h for h in range(att.self.num_attention_heads) if h not in gone]
        index = torch.tensor([h * size + d for h in alive for d in range(size)], dtype=torch.long)
        att.self.query = prune_linear_layer(att.self.query, index, dim=0)
        att.self.key = prune_linear_layer(att.self.key, index, dim=0)
        att.self.value = prune_linear_layer(att.self.value, index, dim=0)
        att.output.dense = prune_linear_layer(att.output.dense, index, dim=1)
        att.self.num_attention_heads = len(alive)
        att.self.all_head_size = len(alive) * size
    model.config.refit_pruned_heads = {}
    return model


# method name -> pruner. Adding a method is one function and one line here.
PRUNERS: dict[str, Pruner] = {"magnitude": magnitude, "heads": heads, "ffn": ffn, "2:4": two_four}
