"""Every extension point is one table: a dummy entry written in one place plus one registration line works
end to end (CLI choices, running it). The drift-test table has its own such test in test_drift_stats.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refit.cli import RECIPES, main
from tests.conftest import toy_rows, write_jsonl


@pytest.fixture
def plain_version(tmp_path, tiny_model_dir) -> Path:
    """An untrained tiny version with toy data and no recorded metrics (nothing to reproduce)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from refit.models import write_version

    val = write_jsonl(tmp_path / "val.jsonl", toy_rows(4, 1))
    train = write_jsonl(tmp_path / "train.jsonl", toy_rows(8, 0))
    meta = {
        "labels": ["0", "1"],
        "config": {"data": {"train": str(train), "validation": str(val), "max_length": 16}},
    }
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    return write_version(tmp_path / "v", model, AutoTokenizer.from_pretrained(tiny_model_dir), meta)


def test_a_new_compression_method_is_one_function_and_one_line(plain_version, tmp_path, monkeypatch):
    from refit.compress import METHODS, Method

    def halve_classifier(model, amount, batches):  # the new method
        model.classifier.weight.data *= 0.5  # rescales logits only: predictions (and the gate) unchanged
        return model, {"halved": "classifier"}

    monkeypatch.setitem(METHODS, "halve", Method(halve_classifier, hint="Do not halve."))  # the one line
    out = tmp_path / "c"
    assert (
        main(["compress", "--version", str(plain_version), "--method", "halve", "--output_dir", str(out)])
        == 0
    )
    record = json.loads((out / "version" / "refit.json").read_text())["compression"]
    assert record["method"] == "halve" and record["summary"] == {"halved": "classifier"}
    assert main(["compress", "--version", str(plain_version), "--method", "nope"]) == 2  # not a choice


def test_a_new_export_target_is_one_function_and_one_line(plain_version, monkeypatch, capsys):
    from refit.export import TARGETS, Target, load_export
    from refit.export.onnx import export_onnx
    from refit.export.targets import Artefact
    from refit.inference import OrtPredictor

    pytest.importorskip("onnxruntime", reason="needs the [export] extra")

    def plain_onnx(model, staging, opts):  # the new target: an unoptimised graph under its own name
        path = export_onnx(model, staging / "model.plain.onnx", opset=opts.opset)
        return [Artefact("model.plain.onnx", [path], lambda: OrtPredictor(path), {"plain": True})]

    monkeypatch.setitem(
        TARGETS,
        "plain-onnx",
        Target(plain_onnx, "unoptimised ONNX", "model.plain.onnx", lambda p, device: OrtPredictor(p, device)),
    )  # the one line
    assert main(["export", "--version", str(plain_version), "--format", "plain-onnx"]) == 0
    assert (plain_version / "exports" / "model.plain.onnx").is_file()
    assert json.loads((plain_version / "exports" / "parity.json").read_text())["model.plain.onnx"]["info"][
        "plain"
    ]
    assert load_export(plain_version, "plain-onnx").session is not None
    from refit.export.benchmark import formats

    assert "plain-onnx" in formats()  # the benchmark measures it too
    assert main(["export", "--version", str(plain_version), "--format", "nope"]) == 2
    assert "plain-onnx" in capsys.readouterr().err  # listed among the allowed formats


def test_a_new_recipe_is_one_file_and_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "hello_recipe.py").write_text(
        '"""refit hello: greets."""\n'
        "from dataclasses import dataclass\n\n\n"
        "@dataclass\nclass Config:\n"
        '    """Args:\n        name: Who to greet.\n    """\n\n'
        '    name: str = "world"\n\n\n'
        "def run(cfg: Config) -> int:\n"
        '    print(f"hello {cfg.name}")\n'
        "    return 0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(RECIPES, "hello", ("hello_recipe", "greet someone"))  # the one line
    assert main(["hello", "--name", "refit"]) == 0
    assert "hello refit" in capsys.readouterr().out
    assert main([]) == 2 and "greet someone" in capsys.readouterr().out  # listed in the usage


def test_a_new_tune_scheduler_is_one_function_and_one_line(monkeypatch):
    pytest.importorskip("ray", reason="Ray Tune is an optional extra (refit-ml[tune])")
    from refit.config import parse_config_dict
    from refit.errors import ConfigError
    from refit.recipes.tune import Config
    from refit.tune import SCHEDULERS, make_scheduler

    def median(max_t, grace_period, reduction_factor, space):  # the new scheduler
        from ray.tune.schedulers import MedianStoppingRule

        return MedianStoppingRule(grace_period=grace_period)

    with pytest.raises(ConfigError, match="allowed: asha, pbt, fifo"):
        parse_config_dict(Config, {"scheduler": "median"})
    monkeypatch.setitem(SCHEDULERS, "median", median)  # the one line
    cfg = parse_config_dict(Config, {"scheduler": "median"})
    built = make_scheduler(cfg.scheduler, max_t=4, grace_period=2, reduction_factor=2, space={})
    assert type(built).__name__ == "MedianStoppingRule"
