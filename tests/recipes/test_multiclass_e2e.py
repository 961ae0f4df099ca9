"""The whole life of a 4-class topic model (real ag_news rows, a tiny random BERT) through the CLI:
finetune -> export -> drift -> maintain once -> serve predict/feedback.

refit was built on binary sentiment; this checks that every stage carries the K label names end to end
(metrics for K classes, K logits in the export's parity, class shares in drift, per-class recall in the
gate, K probabilities and label names in serving). The rows are read from ../shared/datasets at test time
and written under tmp_path only: none of them is part of the repository.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from refit.cli import main
from refit.registry import CHAMPION, Registry
from tests.conftest import finetune_args, shared_dataset, write_jsonl

pytest.importorskip("onnxruntime", reason="needs the [export] extra")
pytest.importorskip("fastapi", reason="needs the [serve] extra")
pytest.importorskip("httpx", reason="needs httpx (a FastAPI test dependency)")


def _balanced(path: Path, per_class: int, skip: int = 0) -> list[dict]:
    """The first `per_class` rows of each label after `skip` of that label, in file order (deterministic)."""
    seen: dict[int, int] = {}
    out = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        k = seen[row["label"]] = seen.get(row["label"], 0) + 1
        if skip < k <= skip + per_class:
            out.append({"text": row["text"], "label": row["label"]})
    return out


@pytest.mark.slow
def test_a_four_class_life_through_the_cli(tmp_path, tiny_model_dir, capsys):
    """About 7 s on 2 CPU cores (the tiny model; measured 2 Dec 2026)."""
    from tests.recipes.test_serve import options, serving

    src = shared_dataset("ag_news")
    names = [name for _, name in sorted(json.loads((src / "labels.json").read_text()).items())]
    assert len(names) == 4
    data_dir = tmp_path / "data"
    data = {
        "train": write_jsonl(data_dir / "train.jsonl", _balanced(src / "train.jsonl", 30)),
        "validation": write_jsonl(data_dir / "validation.jsonl", _balanced(src / "validation.jsonl", 10)),
        "test": write_jsonl(data_dir / "test.jsonl", _balanced(src / "test.jsonl", 10)),
    }
    (data_dir / "labels.json").write_text((src / "labels.json").read_text())

    # --- finetune: label names, metrics defined for 4 classes, calibration, rows cut at max_length -------
    run = tmp_path / "run"
    assert main(finetune_args(tiny_model_dir, data, run, "--data.reference_size", "40")) == 0
    version = run / "version"
    meta = json.loads((version / "refit.json").read_text())
    assert meta["labels"] == names
    val = meta["metrics"]["validation"]
    assert all(val[k] is not None for k in ("accuracy", "f1_macro", "auroc", "ece"))
    assert meta["metrics"]["calibration"]["n"] == 40
    calibration = json.loads((version / "calibration.json").read_text())
    assert len(calibration["class_prior"]) == 4 and len(calibration["confusion"]) == 4
    # ag_news title + description is ~40-60 tokens: at max_length 32 most rows are cut, and that is said
    assert set(meta["metrics"]["per_class"]["validation"]) == set(names)
    assert all(r["n"] == 10 for r in meta["metrics"]["per_class"]["validation"].values())
    assert "Lowest recall on validation: " in capsys.readouterr().out
    cut = meta["data"]["train"]["truncated_rows"]
    assert 0 < cut <= 120 and meta["data"]["validation"]["truncated_rows"] > 0

    # --- export: int8 ONNX, parity over 4 logits ----------------------------------------------------------
    assert (
        main(["export", "--version", str(version), "--format", "onnx-int8", "--max_accuracy_drop", "100"])
        == 0
    )
    import numpy as np
    import onnxruntime as ort

    parity = json.loads((version / "exports" / "parity.json").read_text())
    for name in ("model.onnx", "model.int8.onnx"):
        assert parity[name]["parity"]["n"] == 40 and parity[name]["validation"]["auroc"] is not None
        session = ort.InferenceSession(str(version / "exports" / name), providers=["CPUExecutionProvider"])
        feed = {i.name: np.ones((3, 8), dtype=np.int64) for i in session.get_inputs()}
        assert session.run(None, feed)[0].shape == (3, 4)  # one logit per topic

    # --- drift: an in-distribution window and a label-balance shift (2 of the 4 topics) ------------------
    windows = tmp_path / "windows"
    write_jsonl(windows / "1_same.jsonl", _balanced(src / "test.jsonl", 15, skip=10))
    write_jsonl(
        windows / "2_two_topics.jsonl",
        [r for r in _balanced(src / "test.jsonl", 30, skip=25) if r["label"] < 2],
    )
    code = main(
        ["drift", "--version", str(version), "--data", str(windows), "--output_dir", str(tmp_path / "drift")]
        + ["--tracking.wandb", "false", "--permutations", "100"]
    )
    assert code in (0, 3)  # whether the tiny model sees the shift is not the point here
    report = json.loads((tmp_path / "drift" / "drift.json").read_text())
    assert report["labels"] == names
    for window in report["windows"]:
        assert len(window["class_shares"]) == 4
        assert window["accuracy"] is not None  # labelled windows: realised accuracy over 4 classes
        assert set(window["results"]["bbsd"]["details"]["per_class_p"]) <= set(names)
        assert 0 < window["truncated_rows"] <= window["size"]  # ag_news rows at 32 tokens: most are cut
    assert "Cut at max_length 32 tokens" in capsys.readouterr().out

    # --- maintain once: late labels as names, retrain, gate with recall per class -----------------------
    registry = Registry(tmp_path / "registry")
    registered = registry.register(version)
    registry.promote(registered.id, "first release")
    late = _balanced(src / "train.jsonl", 10, skip=30)
    write_jsonl(tmp_path / "production" / "w1.jsonl", [{**r, "label": names[r["label"]]} for r in late])
    config = {
        "registry": {"root": str(registry.root)},
        "inbox": {"windows": str(tmp_path / "production"), "golden": str(data["test"]), "replay_size": 40},
        "policy": {"always_retrain": True, "tests": ["mmd"], "permutations": 100},
        "retrain": {
            "data": {"max_length": 32, "batch_size": 8, "reference_size": 20},
            "optim": {"lr": 1e-3},
            "trainer": {"max_epochs": 1, "log_every_n_steps": 1},
            "tracking": {"wandb": False},
        },
        "gate": {"golden_tolerance": 100, "recent_margin": -100, "recent_alpha": None},
        "deploy": {"formats": []},
    }
    (tmp_path / "maintain.yaml").write_text(yaml.safe_dump(config))
    assert main(["maintain", "--config", str(tmp_path / "maintain.yaml"), "--once"]) == 0
    cycle = registry.runs("maintain")[-1]
    assert cycle["status"] == "promoted", cycle["details"]
    per_class = cycle["details"]["per_class"]["golden"]
    assert set(per_class) == set(names) and all(r["n"] == 10 for r in per_class.values())
    assert any("golden set per class" in reason for reason in cycle["details"]["gate"])
    champion = registry.get(CHAMPION)
    assert champion.id != registered.id

    # --- serve: 4 probabilities keyed by name, feedback by name and by id --------------------------------
    capsys.readouterr()
    with serving(options(registry)) as (client, _):
        answer = client.post("/predict", json={"text": late[0]["text"]}).json()
        assert answer["version_id"] == champion.id
        assert list(answer["probabilities"]) == names and answer["label"] in names
        assert names.index(answer["label"]) == answer["label_id"]
        assert abs(sum(answer["probabilities"].values()) - 1) < 1e-4
        rid = answer["request_id"]
        ok = client.post(
            "/feedback", json=[{"request_id": rid, "label": "Sci/Tech"}, {"request_id": rid, "label": 2}]
        )
        assert ok.json() == {"accepted": 2, "dropped": 0}, ok.text
        bad = client.post("/feedback", json={"request_id": rid, "label": "sci/tech"})
        assert bad.status_code == 422 and all(n in bad.text for n in names)
