"""`refit compress` end to end: a gated child version with lineage, recovery keeps the zeros, the gate refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refit.cli import main
from tests.conftest import damaged_version, trained_version


@pytest.fixture(scope="module")
def version(tmp_path_factory, tiny_model_dir) -> Path:
    return trained_version(tmp_path_factory.mktemp("compress"), tiny_model_dir)


def _meta(folder: Path) -> dict:
    return json.loads((folder / "refit.json").read_text())


def _with_recovery(version, out, *method: str) -> list[str]:
    """`refit compress` of `version` into `out` with `method`'s flags and a one-epoch recovery fine-tune."""
    return [
        "compress",
        "--version",
        str(version),
        *method,
        "--recovery.epochs",
        "1",
        "--recovery.lr",
        "1e-3",
        "--tracking.wandb",
        "false",
        "--output_dir",
        str(out),
    ]


def test_heads_with_recovery_writes_a_child_version(version, tmp_path, capsys):
    out = tmp_path / "heads"
    assert (
        main(
            _with_recovery(version, out, "--method", "heads", "--amount", "0.5", "--importance_samples", "16")
        )
        == 0
    )
    child = _meta(out / "version")
    assert child["parent"] == _meta(version)["version_id"] and child["recipe"] == "compress"
    c = child["compression"]
    assert c["summary"]["heads_pruned"] == 2 and c["gate"]["passed"]
    assert c["after"]["prunable_sparsity"] == pytest.approx(0.25, abs=0.01)  # recovery did not regrow heads
    assert (
        child["metrics"]["validation"]["accuracy"]
        >= _meta(version)["metrics"]["validation"]["accuracy"] - 0.01
    )
    assert (out / "version" / "reference" / "embeddings.safetensors").is_file()
    # the child carries its own detector state, fitted on its own embeddings of the parent's reference texts
    from refit.drift import load_reference
    from refit.drift.mmd import median_bandwidth

    parent_ref, child_ref = load_reference(version), load_reference(out / "version")
    assert child_ref.texts == parent_ref.texts and set(child_ref.states) >= {"mmd", "ks"}
    assert child_ref.states["mmd"].bandwidth == pytest.approx(
        median_bandwidth(child_ref.embeddings, seed=child_ref.seed)
    )
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(
        out / "version" / "model"
    )  # plain transformers loads it
    assert "latency" in capsys.readouterr().out


@pytest.mark.parametrize("method,amount", [("ffn", 0.5), ("2:4", 0.5), ("fp16", 0.0)])
def test_methods_write_gated_children(version, tmp_path, method, amount):
    out = tmp_path / "c"
    assert (
        main(
            [
                "compress",
                "--version",
                str(version),
                "--method",
                method,
                "--amount",
                str(amount),
                "--importance_samples",
                "16",
                "--max_accuracy_drop",
                "5",
                "--tracking.wandb",
                "false",
                "--output_dir",
                str(out),
            ]
        )
        == 0
    )
    c = _meta(out / "version")["compression"]
    if method == "fp16":
        assert c["after"]["size_mb"] < 0.6 * c["before"]["size_mb"]
    if method == "2:4":
        assert c["after"]["prunable_sparsity"] == pytest.approx(0.5, abs=1e-3)
    if method == "ffn":
        assert c["after"]["parameters"] < c["before"]["parameters"]
    # the child keeps its parent's calibrator (sealed in its own manifest), and says so
    from refit.estimate import load_calibration
    from refit.models import verify_version

    verify_version(out / "version")
    parent_cal, child_cal = load_calibration(version), load_calibration(out / "version")
    assert child_cal.temperature == parent_cal.temperature and "inherited" in child_cal.note


def test_gate_refuses_an_over_pruned_model(version, tmp_path, capsys):
    out = tmp_path / "over"
    code = main(
        [
            "compress",
            "--version",
            str(version),
            "--method",
            "magnitude",
            "--amount",
            "0.97",
            "--output_dir",
            str(out),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "accuracy gate failed" in err and "Traceback" not in err
    assert not (out / "version").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".version")]  # no half-written temp folder
    assert json.loads((out / "gate.json").read_text())["passed"] is False


def test_compress_needs_a_version(capsys):
    assert main(["compress", "--method", "heads"]) == 2
    assert "--version" in capsys.readouterr().err


def test_gate_refuses_a_parent_that_no_longer_scores_its_record(tmp_path, tiny_model_dir, toy_data, capsys):
    """#9 item 3: the parent's refit.json says 1.0, its weights score 0.5 now; gating the child against the
    parent as it scores now would pass (0.5 -> 0.5), so the recipe refuses and names the metric."""
    parent = damaged_version(tmp_path, tiny_model_dir, toy_data)
    out = tmp_path / "child"
    code = main(["compress", "--version", str(parent), "--method", "fp16", "--output_dir", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "no longer reproduces" in err and "accuracy" in err and "recorded 1.0000, now 0.5000" in err
    assert not (out / "version").exists()
    # with a tolerance wide enough to accept the difference, the same parent passes the parent check
    assert (
        main(
            [
                "compress",
                "--version",
                str(parent),
                "--method",
                "fp16",
                "--parent_tolerance",
                "70",
                "--max_accuracy_drop",
                "60",
                "--output_dir",
                str(out),
            ]
        )
        == 0
    )
    gate = json.loads((out / "gate.json").read_text())
    assert gate["recorded"]["accuracy"] == 1.0 and gate["accuracy_drop_points"] == pytest.approx(50.0)


def test_rerun_after_a_compress_killed_mid_recovery(version, tmp_path, capsys):
    """What a SIGKILL during the recovery fine-tune leaves (its checkpoint, the pruned input) made the
    rerun fail with "already holds a run (checkpoints/last.ckpt). Continue it with --resume", a flag
    compress does not have. The intermediate is discarded and the recovery redone; a finished child is
    still never overwritten."""
    out = tmp_path / "killed"
    (out / "recovery" / "checkpoints").mkdir(parents=True)
    (out / "recovery" / "checkpoints" / "last.ckpt").write_bytes(b"half a checkpoint")
    (out / "recovery-input").mkdir()
    args = _with_recovery(version, out, "--method", "magnitude", "--amount", "0.2")
    assert main(args) == 0
    assert "the intermediate of an earlier compress that did not finish" in capsys.readouterr().out
    assert _meta(out / "version")["recipe"] == "compress"
    assert main(args) == 2
    assert "already holds a child version" in capsys.readouterr().err
