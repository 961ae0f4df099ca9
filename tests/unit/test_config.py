"""Config errors: exit code 2, a one-paragraph message naming the key, no traceback; shipped configs load."""

from __future__ import annotations

import subprocess
import sys

import pytest

from refit.cli import RECIPES, main, shipped_configs
from refit.config import build_parser, dotted_keys, parse_config

BAD_ARGS = [
    (["--trainer.max_epoch", "2"], ["trainer.max_epoch", "Did you mean 'trainer.max_epochs'"]),
    (["--modle", "x"], ["'modle'", "Did you mean 'model'"]),
    (["--trainer.precision", "bf16"], ["trainer.precision", "'bf16-mixed'", "got bf16"]),
    (["--trainer.max_epochs", "x"], ["trainer.max_epochs", "an integer > 0", "'x'"]),
    (["--trainer.max_epochs", "0"], ["trainer.max_epochs", "an integer > 0"]),
    (["--optim.warmup_ratio", "1.5"], ["optim.warmup_ratio", "[0, 1]"]),
    (["--optim.lr", "-1"], ["optim.lr", "> 0"]),
    (["--trainer.mode", "maximum"], ["trainer.mode", "'max'", "'min'"]),
    (["--trainer.monitor", "train/loss"], ["trainer.monitor", "val/accuracy"]),
    (["--data.dataset", "refit-demo", "--data.train", "x.jsonl"], ["data.dataset", "data.train"]),
    (["--config", "no/such/file.yaml"], ["no/such/file.yaml", "not found"]),
]


@pytest.mark.parametrize("args,expected", BAD_ARGS, ids=[" ".join(a) for a, _ in BAD_ARGS])
def test_bad_config_exits_2_with_message(args, expected, capsys):
    assert main(["finetune", *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for fragment in expected:
        assert fragment in err, f"{fragment!r} missing from: {err}"


def test_bad_key_in_yaml_names_file_and_suggests(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  learning_rate: 0.1\n")
    assert main(["finetune", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "optim.learning_rate" in err and str(bad) in err and "lr" in err


@pytest.mark.slow  # a subprocess
def test_cli_process_prints_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "refit", "finetune", "--trainer.max_epoch", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "trainer.max_epochs" in proc.stderr


def test_unknown_command_suggests(capsys):
    assert main(["finetun"]) == 2
    assert "Did you mean 'finetune'" in capsys.readouterr().err


@pytest.mark.parametrize("path", shipped_configs(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_loads_and_validates(path):
    import importlib

    recipe = path.parent.name
    assert recipe in RECIPES, f"{path} is in a folder that matches no recipe"
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith(f"# refit {recipe} --config configs/{recipe}/{path.name}")
    module = importlib.import_module(RECIPES[recipe][0])
    cfg = parse_config(build_parser(module.Config, "test", ""), module.Config, ["--config", str(path)])
    assert isinstance(cfg, module.Config)


def test_overrides_beat_the_config_file():
    from refit.settings import FinetuneConfig

    path = next(p for p in shipped_configs() if p.name == "demo.yaml" and p.parent.name == "finetune")
    parser = build_parser(FinetuneConfig, "test", "")
    cfg = parse_config(parser, FinetuneConfig, ["--config", str(path), "--trainer.max_epochs", "7"])
    assert cfg.trainer.max_epochs == 7 and cfg.data.dataset == "refit-demo"
    assert "trainer.max_epochs" in dotted_keys(FinetuneConfig)
