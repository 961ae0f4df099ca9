"""`refit export` and `refit benchmark` end to end on a tiny trained version; one slow test on MiniLM."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from refit.cli import main
from tests.conftest import damaged_version, trained_version, write_jsonl

pytest.importorskip("onnxruntime", reason="needs the [export] extra")


@pytest.fixture(scope="module")
def version(tmp_path_factory, tiny_model_dir) -> Path:
    return trained_version(tmp_path_factory.mktemp("export"), tiny_model_dir)


def _staging_left(exports: Path) -> list[Path]:
    return [p for p in exports.iterdir() if p.name.startswith(".")]


def test_onnx_export_has_dynamic_axes_and_parity(version):
    import onnx

    from refit.inference import OrtPredictor

    assert main(["export", "--version", str(version), "--format", "onnx"]) == 0
    exports = version / "exports"
    onnx.checker.check_model(str(exports / "model.onnx"))
    record = json.loads((exports / "parity.json").read_text())["model.onnx"]
    assert record["parity"]["max_abs_diff"] <= 1e-4 and record["parity"]["argmax_agreement"] == 1.0
    assert record["info"]["fused_ops"].get("Attention") == 2  # ORT's BERT fusion found both layers
    assert "SkipLayerNormalization" not in record["info"]["fused_ops"]  # slower on CPU (export.md)
    assert record["info"]["skip_layer_norm_fused"] is False
    predictor = OrtPredictor(exports / "model.onnx")
    for batch, seq in ((1, 5), (7, 31)):  # batch and sequence are dynamic
        ids = np.full((batch, seq), 2000, dtype=np.int64)
        assert predictor(ids, np.ones_like(ids)).shape == (batch, 2)
    assert not _staging_left(exports)


def test_onnx_int8_static_and_dynamic(version):
    for mode in ("static", "dynamic"):
        assert (
            main(
                [
                    "export",
                    "--version",
                    str(version),
                    "--format",
                    "onnx-int8",
                    "--quantize.mode",
                    mode,
                    "--quantize.calibration_size",
                    "8",
                ]
            )
            == 0
        )
        record = json.loads((version / "exports" / "parity.json").read_text())["model.int8.onnx"]
        assert record["info"]["quantization"] == f"{mode}-int8"
        if mode == "dynamic":  # the choices measured in scripts/results/export.md, recorded with the artefact
            assert record["info"]["options"] == {"per_channel": True, "reduce_range": False, "op_types": None}
            assert record["info"]["ort_disabled_optimizers"] == ["SkipLayerNormFusion"]
        assert record["parity"]["argmax_agreement"] == 1.0 and record["accuracy_drop_points"] <= 1.0


def test_failed_gate_writes_nothing(tmp_path, tiny_model_dir, capsys):
    """A version whose decision boundary runs through the middle of its validation inputs, labelled with its
    own float32 predictions: int8 rounding flips near-ties, so a 0-point tolerance refuses the int8 export
    and exports/ stays as it was (no model.onnx either, no staging folder)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from refit.inference import TorchPredictor, encode, predict_logits
    from refit.models import write_version

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    words = ["film", "plot", "actor", "scene", "music", "story", "ending", "cast"]
    texts = [f"{a} {b} {i}" for i in range(32) for a in words for b in words[:1]]
    gap = np.diff(predict_logits(TorchPredictor(model), encode(tok, texts, 16, 64)), axis=-1)[:, 0]
    with torch.no_grad():
        model.classifier.bias[1] -= float(np.median(gap))
    labels = predict_logits(TorchPredictor(model), encode(tok, texts, 16, 64)).argmax(-1)
    val = write_jsonl(tmp_path / "val.jsonl", [{"text": t, "label": int(y)} for t, y in zip(texts, labels)])
    meta = {
        "labels": ["0", "1"],
        "config": {"data": {"train": str(val), "validation": str(val), "max_length": 16}},
    }
    version = write_version(tmp_path / "edgy", model, tok, meta)
    code = main(["export", "--version", str(version), "--format", "onnx-int8", "--max_accuracy_drop", "0"])
    assert code == 2
    assert "accuracy gate failed for onnx-int8 artefact model.int8.onnx" in capsys.readouterr().err
    assert list((version / "exports").iterdir()) == []


def test_edge_bundle_holds_what_the_device_needs(version):
    assert (
        main(
            [
                "export",
                "--version",
                str(version),
                "--format",
                "edge",
                "--tensorrt.precision",
                "int8",
                "--quantize.calibration_size",
                "8",
                "--reference_size",
                "8",
            ]
        )
        == 0
    )
    edge = version / "exports" / "edge"
    names = {p.name for p in edge.iterdir()}
    assert {
        "model.onnx",
        "model.qdq.onnx",
        "calibration.npz",
        "reference.npz",
        "build_engine.py",
        "build_engine.sh",
        "bundle.json",
        "README.md",
    } <= names
    bundle = json.loads((edge / "bundle.json").read_text())
    assert bundle["precision"] == "int8" and bundle["onnx"]["qdq"] == "model.qdq.onnx"
    ref = np.load(edge / "reference.npz")
    assert ref["logits"].shape == (8, 2) and int(ref["batches"]) == 1
    assert "--int8" in (edge / "build_engine.sh").read_text()
    compile((edge / "build_engine.py").read_text(), "build_engine.py", "exec")  # runs without refit installed


def test_tensorrt_without_tensorrt_is_a_clear_error(version, capsys):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here; the engine test below covers it")
    except ImportError:
        pass
    assert main(["export", "--version", str(version), "--format", "tensorrt"]) == 2
    assert "refit-ml[tensorrt]" in capsys.readouterr().err
    assert not (version / "exports" / "model.plan").exists() and not _staging_left(version / "exports")


def test_tensorrt_engine_build_and_parity(version):
    pytest.importorskip(
        "tensorrt",
        reason="TensorRT is not installed (it cannot be installed on this CPU-only "
        "machine); this runs on a GPU machine with pip install refit-ml[tensorrt]",
    )
    import torch

    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA GPU")
    assert (
        main(
            [
                "export",
                "--version",
                str(version),
                "--format",
                "tensorrt",
                "--device",
                "cpu",
                "--tensorrt.precision",
                "fp16",
                "--tensorrt.max_seq",
                "32",
            ]
        )
        == 0
    )
    record = json.loads((version / "exports" / "parity.json").read_text())["model.plan"]
    assert record["parity"]["argmax_agreement"] >= 0.99
    assert json.loads((version / "exports" / "model.plan.json").read_text())["gpu"]


def test_benchmark_table(version, tmp_path):
    assert (
        main(
            [
                "benchmark",
                "--version",
                str(version),
                "--formats",
                "[pytorch, pytorch-int8, onnx, tensorrt]",
                "--iters",
                "3",
                "--throughput_batch",
                "4",
                "--tracking.wandb",
                "false",
                "--output_dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    result = json.loads((version / "exports" / "benchmark.json").read_text())
    rows = {r["format"]: r for r in result["rows"]}
    assert rows["pytorch"]["speedup"] == 1.0 and rows["pytorch"]["accuracy"] == 1.0
    assert rows["onnx"]["p50_ms"] > 0 and rows["onnx"]["size_mb"] > 0
    assert rows["tensorrt"]["note"].startswith("skipped")
    assert "| format |" in (version / "exports" / "benchmark.md").read_text()
    assert result["machine"]["cores"] >= 1


def test_export_needs_a_version(capsys):
    assert main(["export"]) == 2
    assert "--version" in capsys.readouterr().err


@pytest.mark.slow
def test_minilm_onnx_parity(tmp_path, minilm_dir):
    """MiniLM (with a fresh 2-class head) on the bundled demo validation set: ONNX fp32 matches PyTorch."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from refit.models import write_version

    model = AutoModelForSequenceClassification.from_pretrained(minilm_dir, num_labels=2).eval()
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    from refit.data import load_splits

    labels = load_splits(None, None, None, "refit-demo").label_names
    meta = {"labels": labels, "config": {"data": {"dataset": "refit-demo", "max_length": 64}}}
    version = write_version(tmp_path / "minilm", model, tok, meta)
    assert main(["export", "--version", str(version), "--format", "onnx", "--max_accuracy_drop", "0.5"]) == 0
    record = json.loads((version / "exports" / "parity.json").read_text())["model.onnx"]
    assert record["parity"]["max_abs_diff"] <= 1e-4 and record["parity"]["argmax_agreement"] == 1.0
    assert record["info"]["fused_ops"]["Attention"] == 6
    shutil.rmtree(version)


def test_export_refuses_a_version_that_no_longer_scores_its_record(
    tmp_path, tiny_model_dir, toy_data, capsys
):
    """#9 item 3 for export: the ONNX artefact would match the damaged PyTorch model (0.5 -> 0.5) and pass;
    the version's recorded 1.0 makes the export refuse it, writing nothing."""
    version = damaged_version(tmp_path, tiny_model_dir, toy_data)
    code = main(["export", "--version", str(version), "--format", "onnx"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "no longer reproduces" in err and "recorded 1.0000, now 0.5000" in err
    assert list((version / "exports").iterdir()) == []


def test_export_with_a_relative_version_path(version, monkeypatch):
    """`refit export --version runs/demo/version`, as the README writes it: a path relative to the working
    directory seals exports/, first export and re-export (it was taken as relative to exports/ and refused)."""
    trained = version
    monkeypatch.chdir(trained.parent.parent)
    relative = trained.relative_to(trained.parent.parent)
    assert main(["export", "--version", str(relative), "--format", "onnx", "--onnx.optimize", "false"]) == 0
    assert main(["export", "--version", str(relative), "--format", "onnx", "--onnx.optimize", "false"]) == 0
    sealed = json.loads((trained / "exports" / "manifest.json").read_text())
    assert {"model.onnx", "parity.json"} <= {f["path"] for f in sealed["files"]}


def test_onnx_int8_keeps_or_replaces_the_record_of_the_onnx_exports_model_onnx(version, tmp_path, capsys):
    """onnx-int8 rebuilds model.onnx as its float32 intermediate: it recorded it under format onnx-int8, in
    place of the onnx export's record. Now an identical rebuild keeps the onnx record; a different one (other
    options) replaces it, names the record it replaces and says so."""
    copy = shutil.copytree(version, tmp_path / "version")

    def parity_of() -> dict:
        return json.loads((copy / "exports" / "parity.json").read_text())

    assert main(["export", "--version", str(copy), "--format", "onnx"]) == 0
    onnx_record = parity_of()["model.onnx"]
    assert onnx_record["format"] == "onnx"
    capsys.readouterr()
    assert main(["export", "--version", str(copy), "--format", "onnx-int8"]) == 0
    records = parity_of()
    assert records["model.onnx"] == onnx_record and records["model.int8.onnx"]["format"] == "onnx-int8"
    assert "model.onnx: identical to the one the onnx export of" in capsys.readouterr().out
    args = ["export", "--version", str(copy), "--format", "onnx-int8", "--onnx.optimize", "false"]
    assert main(args) == 0
    record = parity_of()["model.onnx"]
    assert record["format"] == "onnx-int8" and record["settings"]["onnx"]["optimize"] is False
    assert record["info"]["optimized"] is False
    assert record["replaces"] == {"format": "onnx", "created_at": onnx_record["created_at"]}
    assert "model.onnx: differs from the one the onnx export of" in capsys.readouterr().out
