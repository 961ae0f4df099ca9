"""`refit maintain init --dir DIR` lays out a loop that `refit maintain --config DIR/maintain.yaml --once` runs
(issue #13.3): registry with a champion, an inbox with a drifted labelled window, a golden set, a config."""

from __future__ import annotations

import json

import pytest
import yaml

from refit.cli import main
from refit.data import demo_dir
from refit.registry import CHAMPION, Registry

TINY = ["--lr", "2e-3", "--max_epochs", "3", "--max_length", "48"]  # the tiny random BERT needs a high lr


def test_init_then_one_cycle_runs_the_loop(tmp_path, tiny_model_dir, capsys):
    """About 20 s on 2 CPU cores with the tiny model: a fine-tune, then a cycle with retrain and int8 export."""
    loop = tmp_path / "demo-loop"
    assert main(["maintain", "init", "--dir", str(loop), "--model", str(tiny_model_dir), *TINY]) == 0
    out = capsys.readouterr().out
    config = loop / "maintain.yaml"
    assert f"refit maintain --config {config} --once" in out
    # the layout: a champion trained on the demo data, a drifted labelled window, the golden set
    registry = Registry(loop / "registry")
    champion = registry.get(CHAMPION)
    assert json.loads((champion.path / "refit.json").read_text())["config"]["data"]["dataset"] == "refit-demo"
    assert (loop / "production" / "shifted.jsonl").read_text() == (demo_dir() / "shifted.jsonl").read_text()
    assert (loop / "golden.jsonl").read_text() == (demo_dir() / "test.jsonl").read_text()
    cfg = yaml.safe_load(config.read_text())
    assert cfg["registry"]["root"] == str(loop / "registry") and cfg["inbox"]["windows"] == str(
        loop / "production"
    )
    # the base the champion was fine-tuned from, for `forget --retrain` (it retrained from minilm before)
    assert cfg["retrain"]["model"] == str(tiny_model_dir.resolve())
    assert not (loop / "runs" / "champion" / "checkpoints").exists()  # no 2x-model-size leftovers
    # the second command: one cycle sees the drift, retrains and gates (replay from the bundled data)
    assert main(["maintain", "--config", str(config), "--once"]) == 0
    run = registry.runs("maintain")[-1]
    assert run["details"]["drift"]["drift"] is True, run["details"]
    assert run["status"] in ("promoted", "rejected"), run["details"]
    assert run["details"]["replay"]["rows"] == 400 and run["details"]["challenger"]
    assert f"cycle {run['id']}: {run['status']}" in capsys.readouterr().out
    # tracking is on (offline W&B, the demo config's default): one W&B run for the whole cycle (#13.1)
    runs = sorted(p.name for p in loop.rglob("offline-run-*") if p.is_dir())
    assert len(runs) == 1, runs


def test_init_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    loop = tmp_path / "loop"
    loop.mkdir()
    (loop / "notes.txt").write_text("mine")
    assert main(["maintain", "init", "--dir", str(loop)]) == 2
    err = capsys.readouterr().err
    assert str(loop) in err and "not empty" in err and "Traceback" not in err
    assert [p.name for p in loop.iterdir()] == ["notes.txt"]


def test_init_that_fails_leaves_no_half_made_folder(tmp_path, capsys):
    loop = tmp_path / "loop"
    assert main(["maintain", "init", "--dir", str(loop), "--model", str(tmp_path / "no-such-model")]) == 2
    assert "no-such-model" in capsys.readouterr().err
    assert not loop.exists()


def test_init_has_its_own_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["maintain", "init", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "refit maintain init" in out and "--dir" in out and "--model" in out
