"""Pruning methods on a tiny random BERT: the sparsity asked for, the model still runs, structure is real."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from refit.compress.prune import PRUNERS, prunable_linears, shrink_pruned_heads, sparsity
from refit.errors import ConfigError
from refit.inference import Batch


@pytest.fixture
def model(tiny_model_dir):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()


@pytest.fixture
def batches() -> list[Batch]:
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 5000, size=(4, 8, 12)).astype(np.int64)
    return [Batch(i, np.ones_like(i), rng.integers(0, 2, size=8).astype(np.int64)) for i in ids]


def _logits(model, batch: Batch) -> torch.Tensor:
    with torch.no_grad():
        return model(
            input_ids=torch.from_numpy(batch.input_ids), attention_mask=torch.from_numpy(batch.attention_mask)
        ).logits


def test_table_holds_every_method():
    assert set(PRUNERS) == {"magnitude", "heads", "ffn", "2:4"}


def test_magnitude_reaches_the_sparsity_and_spares_pooler_and_classifier(model, batches):
    PRUNERS["magnitude"](model, 0.6, batches)
    assert sparsity(model)["prunable_sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert (model.bert.pooler.dense.weight != 0).all() and (model.classifier.weight != 0).all()
    assert not any("weight_orig" in n for n, _ in model.named_parameters())  # made permanent
    assert torch.isfinite(_logits(model, batches[0])).all()


def test_two_four_keeps_two_of_every_four(model, batches):
    PRUNERS["2:4"](model, 0.5, batches)
    for _, m in prunable_linears(model):
        groups = m.weight.view(m.weight.shape[0], -1, 4)
        assert ((groups != 0).sum(-1) <= 2).all()
    assert sparsity(model)["prunable_sparsity"] == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(ConfigError, match="half"):
        PRUNERS["2:4"](model, 0.3, batches)


def test_heads_pruning_is_exactly_head_removal(model, batches, tmp_path):
    before = sparsity(model)["nonzero_parameters"]
    summary = PRUNERS["heads"](model, 0.5, batches)
    assert summary["heads_pruned"] == 2 and summary["heads_total"] == 4
    assert all(len(v) == 1 for v in model.config.refit_pruned_heads.values())  # one head left per layer
    assert sparsity(model)["nonzero_parameters"] < before
    zeroed = _logits(model, batches[0])
    # plain transformers loads the saved model, with the same outputs
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(_logits(reloaded, batches[0]), zeroed)
    # physically removing the heads changes nothing but the size
    shrunk = shrink_pruned_heads(reloaded)
    assert shrunk.bert.encoder.layer[0].attention.self.query.out_features == 16
    torch.testing.assert_close(_logits(shrunk, batches[0]), zeroed, atol=1e-5, rtol=1e-5)


def test_ffn_pruning_shrinks_every_layer_and_saves(model, batches, tmp_path):
    params = sparsity(model)["parameters"]
    PRUNERS["ffn"](model, 0.5, batches)
    assert model.config.intermediate_size == 32
    assert all(layer.intermediate.dense.out_features == 32 for layer in model.bert.encoder.layer)
    assert sparsity(model)["parameters"] < params
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(_logits(reloaded, batches[0]), _logits(model, batches[0]))


def test_structured_pruning_refuses_other_layouts(batches):
    """ModernBERT fuses query/key/value into one projection: refused, naming the families that work
    (DistilBERT and DeBERTa-v2 are supported now: tests/unit/test_architectures.py)."""
    from transformers import ModernBertConfig, ModernBertForSequenceClassification

    from refit.errors import ModelError

    modern = ModernBertForSequenceClassification(
        ModernBertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    )
    with pytest.raises(ModelError, match="supports the encoder families bert, .*distilbert, deberta-v2"):
        PRUNERS["heads"](modern, 0.5, batches)
