"""`refit maintain --once` end to end on a tiny model: promote, refuse a worse challenger, survive SIGKILL, lock."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from refit.cli import main
from refit.data import demo_dir
from refit.registry import CHAMPION, Registry
from tests.conftest import write_jsonl


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (demo_dir() / f"{name}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def champion_registry(tmp_path_factory, tiny_model_dir) -> Path:
    """A registry whose champion is the tiny model fine-tuned on the demo reviews."""
    root = tmp_path_factory.mktemp("champion")
    out = root / "run"
    assert main(["finetune", "--model", str(tiny_model_dir), "--data.dataset", "refit-demo", "--output_dir",
                 str(out), "--trainer.max_epochs", "3", "--data.batch_size", "16", "--data.max_length", "48",
                 "--optim.lr", "2e-3", "--tracking.wandb", "false", "--data.reference_size", "100"]) == 0
    registry = root / "registry"
    assert main(["registry", "register", "--root", str(registry), "--version", str(out / "version")]) == 0
    vid = json.loads((out / "version" / "refit.json").read_text())["version_id"]
    assert main(["registry", "promote", "--root", str(registry), "--version", vid, "--reason", "first",
                 "--tracking.wandb", "false"]) == 0
    return registry


@pytest.fixture
def setup(tmp_path, champion_registry):
    """A copy of the champion registry, an inbox with chat-style (shifted) labelled rows and a config."""
    registry = tmp_path / "registry"
    shutil.copytree(champion_registry, registry)
    inbox = tmp_path / "production"
    write_jsonl(inbox / "2026-11-20.jsonl", _rows("shifted")[:200])
    golden = write_jsonl(tmp_path / "golden.jsonl", _rows("validation"))
    config = {
        "registry": {"root": str(registry)},
        "inbox": {"windows": str(inbox), "golden": str(golden), "replay_size": 400, "holdout_fraction": 0.3},
        "policy": {"tests": ["mmd", "ks"], "alpha": 0.05, "permutations": 200, "min_accuracy": 0.95},
        "retrain": {"data": {"max_length": 48, "batch_size": 16, "reference_size": 100},
                    "optim": {"lr": 2e-3}, "trainer": {"max_epochs": 3},
                    "tracking": {"wandb": False}},
        "gate": {"golden_tolerance": 5.0, "recent_margin": 0.0},
        "tracking": {"wandb": False},
    }
    path = tmp_path / "maintain.yaml"
    path.write_text(yaml.safe_dump(config))
    return {"registry": registry, "config": path, "inbox": inbox, "tmp": tmp_path}


def _champion(registry: Path) -> str:
    return Registry(registry).aliases()[CHAMPION]


def test_shift_triggers_retrain_and_promotion(setup, capsys):
    before = _champion(setup["registry"])
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    reg = Registry(setup["registry"])
    run = reg.runs("maintain")[-1]
    assert run["status"] == "promoted", run["details"]
    assert run["details"]["drift"]["drift"] is True
    after = reg.aliases()[CHAMPION]
    assert after != before and reg.get(after).parent == before
    ab = run["details"]["ab"]
    assert ab["challenger"]["recent"] >= ab["champion"]["recent"]
    move = reg.history(CHAMPION)[-1]
    assert move.action == "promote" and "drift" in move.reason and move.metrics == ab
    # the new champion brings its own drift reference (from data that includes the new domain)
    assert (reg.get(after).path / "reference" / "embeddings.safetensors").is_file()
    out = capsys.readouterr().out
    assert "promoted" in out
    html = (Path(run["details"]["work_dir"]) / "report.html").read_text()
    assert "promoted" in html and "Offline A/B" in html
    # the same files are not processed twice
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    assert reg.runs("maintain")[-1]["status"] == "no_new_data"


def test_worse_challenger_is_not_promoted(setup):
    cfg = yaml.safe_load(setup["config"].read_text())
    cfg["retrain"]["optim"]["lr"] = 3.0  # a diverging retrain: the challenger comes out broken
    setup["config"].write_text(yaml.safe_dump(cfg))
    before = _champion(setup["registry"])
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    reg = Registry(setup["registry"])
    run = reg.runs("maintain")[-1]
    assert run["status"] == "rejected", run["details"]
    assert reg.aliases()[CHAMPION] == before
    assert reg.aliases()["challenger"] == run["details"]["challenger"]
    assert any("golden set" in line for line in run["details"]["gate"])


def test_sigkill_during_retraining_leaves_champion_and_database_intact(setup):
    cfg = yaml.safe_load(setup["config"].read_text())
    cfg["retrain"]["trainer"].update({"max_epochs": 200, "checkpoint_every_n_steps": 1,
                                      "early_stopping_patience": 0})
    slow = setup["tmp"] / "slow.yaml"
    slow.write_text(yaml.safe_dump(cfg))
    before = _champion(setup["registry"])
    audit_before = len(Registry(setup["registry"]).history())
    proc = subprocess.Popen([sys.executable, "-m", "refit", "maintain", "--config", str(slow), "--once"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    ckpt = setup["registry"] / "maintain" / "run-00001" / "finetune" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while time.time() < deadline and not ckpt.exists() and proc.poll() is None:
        time.sleep(0.5)
    assert ckpt.exists(), "retraining never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)

    db = sqlite3.connect(setup["registry"] / "registry.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    reg = Registry(setup["registry"])
    assert reg.aliases()[CHAMPION] == before and len(reg.history()) == audit_before
    assert reg.runs("maintain")[-1]["status"] == "running"  # died mid-cycle
    reg.get(CHAMPION)  # still verifies

    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    runs = reg.runs("maintain")
    assert runs[0]["status"] == "abandoned" and runs[-1]["status"] in ("promoted", "rejected")
    assert runs[-1]["details"]["files"] == runs[0]["details"]["files"]  # the killed cycle's files are retried


def test_second_cycle_is_refused_while_one_holds_the_lock(setup, capsys):
    from filelock import FileLock

    with FileLock(str(setup["registry"] / "maintain.lock")):
        assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 75
    assert "holds" in capsys.readouterr().err
    assert Registry(setup["registry"]).runs("maintain") == []


def test_no_champion_and_bad_schedule_are_clear_errors(tmp_path, setup, capsys):
    assert main(["maintain", "--registry.root", str(tmp_path / "empty"), "--once"]) == 2
    assert "no champion" in capsys.readouterr().err
    assert main(["maintain", "--config", str(setup["config"]), "--every", "soon"]) == 2
    assert "30m, 6h or 1d" in capsys.readouterr().err
    assert main(["maintain", "--config", str(setup["config"])]) == 2
    assert "--once" in capsys.readouterr().err
