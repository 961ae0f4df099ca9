"""When a version cannot give the twoview estimate, every consumer says so instead of acting on nothing.

Two ways a version ends up without it: fine-tuned with `data.probe_rows 0` (no probe stored, the opt-out
of the probe's fine-tune-time cost), or its drift reference re-embedded by another encoder than the one
its probe reads (`refit drift --refresh_reference --encoder version`). `refit drift` leaves twoview out of
the estimates and keeps the others; a maintenance cycle whose policy names twoview notes why it could not
act, and gives no reason to retrain from an estimate that does not exist.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from refit.cli import main
from refit.data import demo_dir
from refit.estimate import CALIBRATION_JSON, load_calibration
from refit.registry import CHAMPION, Registry
from tests.conftest import write_jsonl

OTHERS = {"cbpe", "atc", "doc", "cbpe_ls"}  # the estimators that need no probe


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (demo_dir() / f"{name}.jsonl").read_text().splitlines()]


def _finetune(model: Path, out: Path, *extra: str) -> Path:
    """A tiny version of the demo reviews (1 epoch on 128 rows): its reference and probe by the base model."""
    argv = ["finetune", "--model", str(model), "--data.dataset", "refit-demo", "--output_dir", str(out)]
    argv += ["--trainer.max_epochs", "1", "--data.max_train_samples", "128", "--data.max_length", "32"]
    argv += ["--optim.lr", "2e-3", "--tracking.wandb", "false", "--data.reference_size", "60", *extra]
    assert main(argv) == 0
    return out / "version"


@pytest.fixture(scope="module")
def no_probe_version(tmp_path_factory, tiny_model_dir) -> Path:
    return _finetune(tiny_model_dir, tmp_path_factory.mktemp("no-probe") / "run", "--data.probe_rows", "0")


def _cycle(tmp_path: Path, version: Path) -> dict:
    """One `refit maintain --once` with `version` as champion and policy.estimator twoview at a floor of 1.0
    (any estimate's interval ends below it, so an estimate would be a reason to retrain); drift off (alpha
    0) and min_new_labels out of reach, so nothing else calls for a retrain and none is started."""
    registry = tmp_path / "registry"
    assert main(["registry", "register", "--root", str(registry), "--version", str(version)]) == 0
    vid = json.loads((version / "refit.json").read_text())["version_id"]
    promote = ["registry", "promote", "--root", str(registry), "--version", vid, "--reason", "first"]
    assert main([*promote, "--tracking.wandb", "false"]) == 0
    inbox = tmp_path / "production"
    write_jsonl(inbox / "2026-11-20.jsonl", _rows("shifted")[:100])
    config = {
        "registry": {"root": str(registry)},
        "inbox": {
            "windows": str(inbox),
            "golden": str(write_jsonl(tmp_path / "golden.jsonl", _rows("validation"))),
            "replay_size": 0,
        },
        "policy": {
            "tests": ["mmd"],
            "alpha": 0.0,
            "permutations": 50,
            "min_estimated_accuracy": 1.0,
            "estimator": "twoview",
            "min_new_labels": 100000,
        },
        "retrain": {"data": {"max_length": 32}, "tracking": {"wandb": False}},
        "deploy": {"formats": []},
        "tracking": {"wandb": False},
    }
    path = tmp_path / "maintain.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["maintain", "--config", str(path), "--once"]) == 0
    reg = Registry(registry)
    assert reg.aliases()[CHAMPION] == vid
    return reg.runs("maintain")[-1]


def test_probe_rows_0_stores_no_probe_and_drift_leaves_twoview_out(no_probe_version, tmp_path):
    """data.probe_rows 0: calibration.json has the calibrator but no probe; `refit drift` still checks and
    estimates, with every estimator but twoview."""
    raw = json.loads((no_probe_version / CALIBRATION_JSON).read_text())
    assert raw.get("probe") is None and raw["temperature"] > 0
    assert load_calibration(no_probe_version).probe is None
    out = tmp_path / "drift"
    argv = ["drift", "--version", str(no_probe_version), "--data", "refit-demo", "--output_dir", str(out)]
    assert main([*argv, "--tests", "[ks]", "--tracking.wandb", "false"]) in (0, 3)
    windows = json.loads((out / "drift.json").read_text())["windows"]
    assert windows and all(set(w["estimate"]) == OTHERS for w in windows)


def test_probe_rows_must_not_be_negative(capsys):
    assert main(["finetune", "--data.probe_rows", "-1"]) == 2
    err = capsys.readouterr().err
    assert "data.probe_rows" in err and "Traceback" not in err


def test_maintain_notes_a_champion_without_a_probe(no_probe_version, tmp_path):
    run = _cycle(tmp_path, no_probe_version)
    details = run["details"]
    assert run["status"] == "no_action" and details["reasons"] == []
    assert set(details["estimate"]) == OTHERS  # the others are still recorded
    assert any(
        "policy.estimator is twoview" in n and "has no probe" in n and "data.probe_rows 0" in n
        for n in details["notes"]
    ), details["notes"]


def test_maintain_notes_a_champion_whose_reference_another_encoder_embeds(tmp_path, tiny_model_dir):
    """The champion has a probe, but its reference was re-embedded by the version's own layers (as a user
    would: `refit drift --refresh_reference --encoder version`), so no window is embedded the way the probe
    reads: twoview is not estimated, the cycle says why, and the floor it cannot check retrains nothing."""
    version = _finetune(tiny_model_dir, tmp_path / "run")
    assert load_calibration(version).probe is not None
    assert main(["drift", "--version", str(version), "--refresh_reference", "--encoder", "version"]) == 0
    run = _cycle(tmp_path, version)
    details = run["details"]
    assert run["status"] == "no_action" and details["reasons"] == []
    assert set(details["estimate"]) == OTHERS
    assert any(
        "twoview could not be estimated" in n and "no longer embedded by the encoder its probe" in n
        for n in details["notes"]
    ), details["notes"]
