"""The stages that matter most, on a tiny random model of each architecture users bring from the hub.

refit was built on BERT; these are DistilBERT, ELECTRA, RoBERTa, XLM-R, DeBERTa-v2, ModernBERT and MPNet as
refit.models.tiny.save_tiny_arch builds them (hidden 32, 2 layers; RoBERTa-style ones with their own
BPE/Unigram tokenizer, pad id 1 and no token_type_ids), built once per session under a tmp folder. What
each catches, measured before its fix (scripts/results/architectures.md):
- export: the tracing sample used BERT's ids 101/2023, past the end of a small vocabulary (IndexError);
- drift: a RoBERTa/XLM-R checkpoint has no pooler, AutoModel added a random one at every load, so the
  encoder's fingerprint changed and the version's own reference was refused as another embedding space;
- training metrics: a batch of logits all inside [0, 1] was scored by torchmetrics as probabilities, so
  ModernBERT's recorded ECE differed from evaluation's and compress/export refused the version as damaged;
- structured pruning: DistilBERT's and DeBERTa's layouts were refused or crashed ('no attribute query');
- ONNX optimizer: a model type it is not given (ModernBERT then, MPNet now) was exported unfused silently.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from refit.cli import main
from refit.models.tiny import TINY_ARCHS
from tests.conftest import finetune_args, toy_rows, write_jsonl

ARCHS = [a for a in TINY_ARCHS if a != "bert"]  # BERT is what every other test runs on
STRUCTURED = ["distilbert", "electra", "roberta", "xlm-roberta", "deberta-v2"]


@pytest.fixture(scope="session")
def arch_dirs(tmp_path_factory, minilm_dir) -> dict[str, Path]:
    """Every tiny architecture saved as a model folder (about 2 s for all)."""
    from refit.models.tiny import save_tiny_arch

    root = tmp_path_factory.mktemp("tiny-archs")
    return {arch: save_tiny_arch(arch, root / arch) for arch in ARCHS}


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, arch_dirs):
    """arch -> (version folder, toy data): one 1-epoch fine-tune per architecture, made on first use."""
    made: dict[str, tuple[Path, dict]] = {}

    def get(arch: str) -> tuple[Path, dict]:
        if arch not in made:
            root = tmp_path_factory.mktemp(f"ft-{arch}")
            data = {
                s: write_jsonl(root / "data" / f"{s}.jsonl", toy_rows(n, o))
                for s, n, o in (("train", 12, 0), ("validation", 8, 1), ("test", 4, 2))
            }
            args = finetune_args(arch_dirs[arch], data, root / "run", "--trainer.max_epochs", "1")
            assert main([*args, "--data.reference_size", "16"]) == 0
            made[arch] = (root / "run" / "version", data)
        return made[arch]

    return get


def _logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _batch(tokenizer) -> dict:
    texts = ["a wonderful, warm film", "dull", "i hated every minute of it, far too long"]
    return tokenizer(texts, padding=True, return_tensors="pt")


@pytest.mark.parametrize("arch", ARCHS)
def test_finetune_then_onnx_export_matches_pytorch(arch, finetuned, capsys):
    """Fine-tune, then `refit export`: it exits 0 (the version reproduces its recorded metrics, the graph
    traces) and the ONNX logits equal PyTorch's on the validation inputs."""
    version, _ = finetuned(arch)
    assert main(["export", "--version", str(version), "--format", "onnx"]) == 0, capsys.readouterr().err
    record = json.loads((version / "exports" / "parity.json").read_text())["model.onnx"]
    assert record["parity"]["argmax_agreement"] == 1.0
    assert record["parity"]["max_abs_diff"] < 1e-4
    # ONNX Runtime's optimizer is given the families refit.export.onnx names; MPNet is not one, and the
    # export says its graph went unfused instead of skipping the optimizer silently
    assert record["info"]["optimized"] == (arch != "mpnet")
    assert ("not graph-optimised" in capsys.readouterr().out) == (arch == "mpnet")


@pytest.mark.parametrize("arch", ARCHS)
def test_drift_accepts_the_versions_own_reference(arch, finetuned, tmp_path, capsys):
    """`refit drift` on a window embeds with the encoder the reference recorded and runs (exit 0)."""
    version, data = finetuned(arch)
    out = tmp_path / "drift"
    code = main(
        ["drift", "--version", str(version), "--data", str(data["test"]), "--min_window", "4"]
        + ["--tests", "[mmd,bbsd]", "--permutations", "50", "--output_dir", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    assert json.loads((out / "drift.json").read_text())


@pytest.mark.parametrize("arch", ARCHS)
def test_the_drift_encoder_loads_the_same_weights_every_time(arch, arch_dirs):
    from refit.drift.embed import fingerprint, load_encoder
    from refit.models import encode_texts

    first, tokenizer, _ = load_encoder(arch_dirs[arch])
    second, _, _ = load_encoder(arch_dirs[arch])
    assert fingerprint(first) == fingerprint(second)
    texts = ["a wonderful, warm film", "dull"]
    a = encode_texts(first, tokenizer, texts, device="cpu").embeddings
    b = encode_texts(second, tokenizer, texts, device="cpu").embeddings
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("arch", STRUCTURED)
def test_head_pruning_zeroes_exactly_what_physical_removal_drops(arch, arch_dirs):
    """Zeroed heads change the logits (they did something) and removing them physically changes nothing
    more: the export path's smaller model computes what the saved one does."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from refit.compress.prune import PRUNERS, shrink_pruned_heads

    model = AutoModelForSequenceClassification.from_pretrained(arch_dirs[arch])
    tokenizer = AutoTokenizer.from_pretrained(arch_dirs[arch])
    batch = _batch(tokenizer)
    before = _logits(model, batch)
    enc = tokenizer(["a warm film", "a dull mess"], padding=True, return_tensors="pt")
    importance = [
        type(
            "B",
            (),
            {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": [1, 0]},
        )
    ]
    summary = PRUNERS["heads"](model, 0.5, importance)
    assert summary["heads_pruned"] == 2  # one of the two heads in each of the two layers
    zeroed = _logits(model, batch)
    assert not torch.allclose(zeroed, before)
    small = shrink_pruned_heads(copy.deepcopy(model))
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert params(small) < params(model)
    torch.testing.assert_close(_logits(small, batch), zeroed, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", STRUCTURED)
def test_ffn_pruning_saves_a_model_plain_transformers_reloads(arch, arch_dirs, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from refit.compress.prune import PRUNERS

    model = AutoModelForSequenceClassification.from_pretrained(arch_dirs[arch])
    tokenizer = AutoTokenizer.from_pretrained(arch_dirs[arch])
    enc = tokenizer(["a warm film", "a dull mess"], padding=True, return_tensors="pt")
    importance = [
        type(
            "B",
            (),
            {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": [1, 0]},
        )
    ]
    summary = PRUNERS["ffn"](model, 0.5, importance)
    assert summary["intermediate_size"] == {"before": 64, "after": 32}
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    batch = _batch(tokenizer)
    torch.testing.assert_close(_logits(reloaded, batch), _logits(model, batch))


def test_structured_pruning_refuses_modernbert_by_name(arch_dirs):
    from transformers import AutoModelForSequenceClassification

    from refit.compress.prune import PRUNERS
    from refit.errors import ModelError

    model = AutoModelForSequenceClassification.from_pretrained(arch_dirs["modernbert"])
    with pytest.raises(ModelError, match="'modernbert'.*Use method 'magnitude' or '2:4'"):
        PRUNERS["ffn"](model, 0.5, [])


def test_training_ece_softmaxes_logits_that_look_like_probabilities():
    """Logits all inside [0, 1] (a barely trained model's) are still logits: the ECE a fine-tune records
    is evaluation's (refit.evaluate.score), not the one of the raw logits read as probabilities."""
    from refit.evaluate import score
    from refit.train.metrics import training_metrics

    logits = torch.tensor([[0.2, 0.73], [0.19, 0.74], [0.6, 0.3], [0.21, 0.7]] * 5)
    labels = torch.tensor([0, 1, 0, 0] * 5)
    metrics = training_metrics(2, "val/")
    metrics.update(logits, labels)
    got = metrics.compute()
    expected = score(logits.numpy(), labels.numpy(), 2)
    assert float(got["val/ece"]) == pytest.approx(expected["ece"], abs=1e-6)
    assert float(got["val/accuracy"]) == pytest.approx(expected["accuracy"], abs=1e-6)


def test_a_new_encoder_family_is_one_layout_line(arch_dirs, tmp_path, monkeypatch):
    """The extension point: MPNet is refused until its layout is registered, then `ffn` prunes it and plain
    transformers reloads the smaller model (its heads are not registered here: MPNet's position bias is
    per head and shared by the layers, which physical head removal would have to follow)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from refit.compress.prune import LAYOUTS, PRUNERS, Layout
    from refit.errors import ModelError

    model = AutoModelForSequenceClassification.from_pretrained(arch_dirs["mpnet"])
    tokenizer = AutoTokenizer.from_pretrained(arch_dirs["mpnet"])
    enc = tokenizer(["a warm film", "a dull mess"], padding=True, return_tensors="pt")
    importance = [
        type(
            "B",
            (),
            {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": [1, 0]},
        )
    ]
    with pytest.raises(ModelError, match="'mpnet'"):
        PRUNERS["ffn"](model, 0.5, importance)
    monkeypatch.setitem(
        LAYOUTS,
        "mpnet",
        Layout("encoder.layer", "attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o",
               "intermediate.dense", "output.dense"),
    )  # fmt: skip
    assert PRUNERS["ffn"](model, 0.5, importance)["intermediate_size"]["after"] == 32
    model.save_pretrained(tmp_path)
    batch = _batch(tokenizer)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    torch.testing.assert_close(_logits(reloaded, batch), _logits(model, batch))


def test_a_model_type_outside_the_table_laid_out_like_bert_is_pruned_as_bert():
    """ERNIE copies BERT's modules under its own model_type: pruned as BERT (as before the table), not
    refused for its name."""
    from transformers import ErnieConfig, ErnieForSequenceClassification

    from refit.compress.prune import LAYOUTS, PRUNERS

    assert "ernie" not in LAYOUTS
    torch.manual_seed(0)
    model = ErnieForSequenceClassification(
        ErnieConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100
        )
    )
    ids = torch.randint(3, 100, (2, 8))
    importance = [type("B", (), {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": [0, 1]})]
    assert PRUNERS["heads"](model, 0.5, importance)["heads_pruned"] == 2
    assert PRUNERS["ffn"](model, 0.5, importance)["intermediate_size"]["after"] == 32


def test_a_drift_encoder_missing_weights_beyond_the_pooler_is_refused(arch_dirs, tmp_path):
    """Only the unused pooler may be missing: an encoder weight absent from the checkpoint would be random
    at every load (other embeddings each time), so it is refused by name, not fingerprinted."""
    import shutil

    from safetensors.torch import load_file, save_file

    from refit.drift.embed import load_encoder
    from refit.errors import ModelError

    folder = tmp_path / "roberta-incomplete"
    shutil.copytree(arch_dirs["roberta"], folder)
    weights = load_file(folder / "model.safetensors")
    gone = next(k for k in weights if k.endswith("layer.0.attention.self.query.weight"))
    del weights[gone]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        ModelError, match=r"lacks trained weights for encoder\.layer\.0\.attention\.self\.query"
    ):
        load_encoder(folder)
