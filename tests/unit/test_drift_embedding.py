"""How a drift reference is embedded and how its MMD kernel is chosen: layers, pooling, bandwidths.

The default (chosen by scripts/bench_drift_power.py, explained in the README) is stored in each version's
reference; a version written before it keeps what it recorded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from refit.drift import DETECTORS, mmd_test
from refit.drift.detectors import MMDState
from refit.drift.embed import VersionEncoder
from refit.drift.mmd import median_bandwidth
from refit.drift.reference import (
    DEFAULT_LAYER,
    DEFAULT_POOLING,
    Reference,
    build_reference,
    fit_states,
    load_reference,
)
from refit.models import encode_texts
from refit.models.embed import layer_list

TEXTS = ["a fine film", "dull and long", "the plot is clever", "i left early", "warm and funny", "meh"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return (
        AutoModelForSequenceClassification.from_pretrained(tiny_model_dir),
        AutoTokenizer.from_pretrained(tiny_model_dir),
    )


def _gauss(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + shift


def test_several_layers_are_pooled_one_by_one_and_concatenated(tiny):
    model, tok = tiny
    hidden = model.config.hidden_size
    both = encode_texts(model, tok, TEXTS, batch_size=4, max_length=16, layer=[0, -1], device="cpu")
    first = encode_texts(model, tok, TEXTS, batch_size=4, max_length=16, layer=0, device="cpu")
    last = encode_texts(model, tok, TEXTS, batch_size=4, max_length=16, layer=-1, device="cpu")
    assert both.embeddings.shape == (len(TEXTS), 2 * hidden)
    torch.testing.assert_close(both.embeddings, torch.cat([first.embeddings, last.embeddings], 1))
    torch.testing.assert_close(both.probs, last.probs)
    assert not torch.allclose(first.embeddings, last.embeddings)  # two different layers, not one twice
    every = encode_texts(model, tok, TEXTS, batch_size=4, max_length=16, layer="all", device="cpu")
    assert every.embeddings.shape == (len(TEXTS), (model.config.num_hidden_layers + 1) * hidden)
    torch.testing.assert_close(every.embeddings[:, :hidden], first.embeddings)
    cls = encode_texts(model, tok, TEXTS, max_length=16, pooling="cls", layer=[0, -1], device="cpu")
    assert cls.embeddings.shape == both.embeddings.shape and not torch.allclose(
        cls.embeddings, both.embeddings
    )


def test_inputs_cut_at_max_length_are_counted_across_batches(tiny):
    """A 2,000-character post at max_length 16 is judged on its first 16 tokens: the count says how many
    of a window's rows that happened to (refit drift prints it and writes it to drift.json)."""
    model, tok = tiny
    long = "words " * 30
    texts = [long, *TEXTS, long, long]
    exact = len(tok(long)["input_ids"])
    cut = encode_texts(model, tok, texts, batch_size=2, max_length=16, device="cpu")
    assert cut.truncated == 3 and cut.embeddings.shape[0] == len(texts)
    assert encode_texts(model, tok, texts, batch_size=2, max_length=exact, device="cpu").truncated == 0
    assert encode_texts(model, tok, TEXTS, max_length=16, device="cpu").truncated == 0


def _version_with(root, model, tok, reference) -> Path:
    from refit.models import write_version

    return write_version(root, model, tok, {"version_id": root.name, "recipe": "test"}, reference)


def test_a_new_reference_records_the_default_embedding_and_windows_follow_it(tiny, tmp_path):
    model, tok = tiny
    ref = build_reference(model, tok, TEXTS, meta={"split": "validation"}, seed=0, max_length=16)
    n = model.config.num_hidden_layers
    assert ref.meta["pooling"] == DEFAULT_POOLING
    assert layer_list(ref.meta["layer"], n) == layer_list(DEFAULT_LAYER, n)
    assert ref.meta["layer"] != "all"  # the indices themselves are recorded, not a word that could change
    version = _version_with(tmp_path / "new", model, tok, ref)
    loaded = load_reference(version)
    encoder = VersionEncoder.like_reference(version, loaded.meta, device="cpu")
    assert layer_list(encoder.layer, n) == layer_list(DEFAULT_LAYER, n) and encoder.pooling == DEFAULT_POOLING
    torch.testing.assert_close(encoder.encode(TEXTS).embeddings, loaded.embeddings)


def test_an_old_reference_without_a_layer_is_embedded_from_the_last_layer_as_it_was(tiny, tmp_path):
    model, tok = tiny
    old = encode_texts(model, tok, TEXTS, max_length=16, layer=-1, device="cpu")  # the old, only, embedding
    version = _version_with(
        tmp_path / "old", model, tok, Reference(old.embeddings, old.probs, TEXTS, {"max_length": 16})
    )
    encoder = VersionEncoder.like_reference(version, load_reference(version).meta, device="cpu")
    assert encoder.layer == -1 and encoder.pooling == "mean"
    torch.testing.assert_close(encoder.encode(TEXTS).embeddings, old.embeddings)


def test_multi_bandwidth_statistic_is_the_sum_of_single_kernel_statistics():
    ref, cur = _gauss(120, 8, 0), _gauss(80, 8, 1, shift=0.2)
    widths = [1.0, 2.5, 6.0]
    multi = mmd_test(ref, cur, permutations=99, seed=3, bandwidth=widths)
    singles = [mmd_test(ref, cur, permutations=99, seed=3, bandwidth=w).statistic for w in widths]
    assert multi.statistic == pytest.approx(sum(singles), rel=1e-5)
    assert multi.details["bandwidth"] == widths
    assert round(multi.p_value * 100) == pytest.approx(multi.p_value * 100)  # (k + 1) / (B + 1)


def test_multi_bandwidth_mmd_keeps_false_alarms_at_alpha_on_null_splits():
    state = MMDState(median_bandwidth(_gauss(150, 6, 7)), [0.25, 0.5, 1.0, 2.0, 4.0])
    trials, hits = 60, 0
    for t in range(trials):
        ref, cur = _gauss(150, 6, 100 + t), _gauss(60, 6, 500 + t)
        hits += DETECTORS["mmd"].test(state, ref, cur, alpha=0.05, seed=t, permutations=99).drift
    assert hits / trials <= 0.15  # alpha 0.05; binomial noise at 60 trials stays well under this


def test_narrow_bandwidths_see_a_shift_of_a_few_points_that_the_median_width_misses():
    """A fifth of the window moved a little along one axis: the sum with narrower kernels finds it."""
    ref = _gauss(400, 16, 0)
    cur = _gauss(200, 16, 1)
    cur[:40, 0] += 1.5
    bw = median_bandwidth(ref)
    single = mmd_test(ref, cur, permutations=199, seed=0, bandwidth=bw)
    multi = mmd_test(ref, cur, permutations=199, seed=0, bandwidth=[bw * s for s in (0.25, 0.5, 1, 2, 4)])
    assert multi.p_value <= single.p_value


def test_mmd_state_written_before_scales_loads_as_the_single_median_kernel(tmp_path):
    ref = _gauss(100, 8, 0)
    reference = fit_states(Reference(ref, None, [f"t{i}" for i in range(100)], {}), seed=0)
    reference.save(tmp_path / "reference")
    meta_file = tmp_path / "reference" / "detector.json"
    meta = json.loads(meta_file.read_text())
    meta["states"]["mmd"].pop("scales")  # what a version written before multi-bandwidth MMD holds
    meta_file.write_text(json.dumps(meta))
    old = load_reference(tmp_path).states["mmd"]
    assert old.scales == [1.0] and old.bandwidth == pytest.approx(median_bandwidth(ref, seed=0))
    cur = _gauss(50, 8, 1, shift=0.3)
    got = DETECTORS["mmd"].test(old, ref, cur, alpha=0.05, seed=0, permutations=99)
    want = mmd_test(ref, cur, permutations=99, seed=0, bandwidth=old.bandwidth)
    assert got.statistic == pytest.approx(want.statistic) and got.p_value == want.p_value


def test_new_mmd_state_stores_the_default_scales_and_uses_them(tmp_path):
    ref = _gauss(100, 8, 0)
    reference = fit_states(Reference(ref, None, [f"t{i}" for i in range(100)], {}), seed=0)
    reference.save(tmp_path / "reference")
    state = load_reference(tmp_path).states["mmd"]
    assert state.scales == list(DETECTORS["mmd"].scales)
    cur = _gauss(50, 8, 1, shift=0.3)
    got = DETECTORS["mmd"].test(state, ref, cur, alpha=0.05, seed=0, permutations=99)
    widths = [state.bandwidth * s for s in state.scales]
    assert got.statistic == pytest.approx(mmd_test(ref, cur, 99, 0, 0.05, widths).statistic)


def test_a_layer_the_model_lacks_is_a_config_error_and_a_shallow_model_uses_its_last_layer(tiny):
    from refit.errors import ConfigError

    model, tok = tiny
    n = model.config.num_hidden_layers
    with pytest.raises(ConfigError, match=f"hidden states 0..{n}"):
        layer_list(n + 1, n)
    shallow = type(model)(type(model.config)(**{**model.config.to_dict(), "num_hidden_layers": 1}))
    ref = build_reference(shallow, tok, TEXTS, meta={"split": "validation"}, seed=0, max_length=16)
    assert ref.meta["layer"] == min(DEFAULT_LAYER, 1)
    assert ref.embeddings.shape == (len(TEXTS), shallow.config.hidden_size)
