"""When a version cannot give the twoview estimate, every consumer says so instead of acting on nothing.

Ways a version ends up without it: fine-tuned with `data.probe_rows 0` (no probe stored, the opt-out
of the probe's fine-tune-time cost), a probe sample of one class (too few rows, or a rare class), made
before the probe existed, or its drift reference re-embedded by another encoder than the one its probe
reads (`refit drift --refresh_reference --encoder version`). Fine-tuning records why (calibration.json's
no_probe) and warns where it was not asked for; `refit drift` leaves twoview out of the estimates, keeps
the others and says why in its table, drift.json and report.html; a maintenance cycle whose policy names
twoview notes why it could not act, and gives no reason to retrain from an estimate that does not exist.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import yaml

from refit.cli import main
from refit.data import demo_dir
from refit.estimate import CALIBRATION_JSON, load_calibration
from refit.models import editing_version
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


def _drift(version: Path, out: Path, capsys) -> tuple[dict, str, str]:
    """`refit drift` of the demo data against `version`: (drift.json, the printed table, report.html)."""
    argv = ["drift", "--version", str(version), "--data", "refit-demo", "--output_dir", str(out)]
    capsys.readouterr()
    assert main([*argv, "--tests", "[ks]", "--tracking.wandb", "false"]) in (0, 3)
    printed = capsys.readouterr().out
    return json.loads((out / "drift.json").read_text()), printed, (out / "report.html").read_text()


def _says_twoview_is_missing(report: dict, printed: str, html: str, why: str) -> None:
    """Every output of `refit drift` names twoview as not available, with `why` in its reason."""
    assert why in report["unavailable_estimates"]["twoview"], report["unavailable_estimates"]
    line = next(x for x in printed.splitlines() if x.startswith("Estimate twoview not available"))
    assert why in line, printed
    assert "Estimate twoview not available" in html and why.replace("'", "&#x27;") in html


def test_probe_rows_0_stores_no_probe_and_drift_leaves_twoview_out(no_probe_version, tmp_path, capsys):
    """data.probe_rows 0: calibration.json has the calibrator but no probe, and says why; `refit drift` still
    checks and estimates, with every estimator but twoview, and says twoview is not available and why."""
    raw = json.loads((no_probe_version / CALIBRATION_JSON).read_text())
    assert raw.get("probe") is None and raw["temperature"] > 0
    assert "data.probe_rows 0" in raw["no_probe"]
    assert load_calibration(no_probe_version).probe is None
    report, printed, html = _drift(no_probe_version, tmp_path / "drift", capsys)
    windows = report["windows"]
    assert windows and all(set(w["estimate"]) == OTHERS for w in windows)
    _says_twoview_is_missing(report, printed, html, "data.probe_rows 0")


def test_a_one_class_probe_sample_is_warned_about_and_recorded(tmp_path, tiny_model_dir, caplog, capsys):
    """A probe sample with one class (here data.probe_rows 1: a sample of one row; a rare class in a small
    sample does the same) cannot fit the probe: fine-tuning still succeeds, but warns with the class counts
    and data.probe_rows, records the reason in calibration.json, and `refit drift` repeats it."""
    with caplog.at_level(logging.WARNING, logger="refit.train"):
        version = _finetune(tiny_model_dir, tmp_path / "run", "--data.probe_rows", "1")
    warned = [r.getMessage() for r in caplog.records if "twoview" in r.getMessage()]
    assert len(warned) == 1 and "data.probe_rows 1" in warned[0] and "fewer than 2 classes" in warned[0]
    labels = json.loads((version / "refit.json").read_text())["labels"]
    assert any(f"({name}: 1)" in warned[0] for name in labels), warned  # the one class and its count
    cal = load_calibration(version)
    assert cal.probe is None and cal.no_probe and cal.no_probe in warned[0]
    _says_twoview_is_missing(*_drift(version, tmp_path / "drift", capsys), "data.probe_rows 1")


def test_drift_says_why_an_older_version_has_no_twoview(no_probe_version, tmp_path, capsys):
    """A calibration.json from before the reason was recorded (format /3, no probe, no no_probe): the
    reason given is that the version is older."""
    old = tmp_path / "old-version"
    shutil.copytree(no_probe_version, old)
    with editing_version(old) as tmp:
        raw = json.loads((tmp / CALIBRATION_JSON).read_text())
        del raw["no_probe"]
        (tmp / CALIBRATION_JSON).write_text(json.dumps({**raw, "format": "refit-calibration/3"}))
    assert load_calibration(old).no_probe == ""
    _says_twoview_is_missing(*_drift(old, tmp_path / "drift", capsys), "an older version")


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
        "policy.estimator is twoview" in n and "not embedded by the encoder its probe was fitted on" in n
        for n in details["notes"]
    ), details["notes"]
