"""Optimiser groups, the schedule, dropout during training, atomic version writes and hash checks."""

from __future__ import annotations

import pytest
import torch

from refit.errors import VersionError
from refit.io import atomic_dir
from refit.train import SequenceClassifier, adamw_param_groups, linear_warmup_decay


def test_no_weight_decay_on_bias_and_layernorm(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    decay, no_decay = adamw_param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decay["params"])
    assert any("LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert any(names[id(p)].endswith("bias") for p in no_decay["params"])


def test_linear_warmup_then_decay():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = linear_warmup_decay(opt, warmup_steps=4, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0) and lrs[-1] == pytest.approx(1 / 6)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))


def test_dropout_is_active_in_training(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    assert not model.training  # transformers 5 hands it over in eval mode
    module = SequenceClassifier(model, num_labels=2)
    assert all(m.training for m in module.model.modules() if isinstance(m, torch.nn.Dropout))


def test_atomic_dir_keeps_old_version_on_failure(tmp_path):
    dest = tmp_path / "version"
    with atomic_dir(dest) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(dest) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("crash while writing")
    assert (dest / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["version"]


def test_tampered_weights_are_refused(tmp_path, tiny_model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from refit.models import load_version, weights_file, write_version

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    version = write_version(tmp_path / "v", model, tok, {"recipe": "test"})
    load_version(version)  # intact: loads
    data = bytearray(weights_file(version).read_bytes())
    data[-1] ^= 0xFF
    weights_file(version).write_bytes(bytes(data))
    with pytest.raises(VersionError, match="does not match the hash"):
        load_version(version)
