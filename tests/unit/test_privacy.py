"""privacy.store_texts false: no input text in any file finetune and drift write (W&B runs included), and
no secret from the environment in any output file, whatever the setting.

Every training, validation and production text carries a marker word; the output trees are searched for
it byte by byte (W&B's binary run files included). A run with store_texts true is the positive control:
the same search must find the marker there, so an empty result is not a search that sees nothing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from refit.cli import main
from tests.conftest import NEGATIVE, POSITIVE, write_jsonl

MARKER = "zebraquartz"
SECRETS = {
    "WANDB_API_KEY": "wandb-secret-0f3c9a1b2d4e5f60718293a4b5c6d7e8f9012345",
    "HF_TOKEN": "hf_fakeSecretTokenNeverWrittenAnywhere123",
    "AWS_SECRET_ACCESS_KEY": "awsFakeSecret/AccessKey+NeverWritten0987654",
}


def _rows(n: int, offset: int) -> list[dict]:
    out = []
    for i in range(n):
        j = (i + offset) % len(POSITIVE)
        out += [
            {"text": f"{MARKER} {POSITIVE[j]} {i}", "label": 1},
            {"text": f"{MARKER} {NEGATIVE[j]} {i}", "label": 0},
        ]
    return out


def _files_containing(root: Path, needle: str) -> list[str]:
    data = needle.encode()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and data in p.read_bytes())


@pytest.fixture
def secret_env(monkeypatch):
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("WANDB_MODE", "offline")


def test_store_texts_false_keeps_every_input_text_out_of_finetune_and_drift_outputs(
    tmp_path, tiny_model_dir, secret_env, capsys
):
    data = {
        s: write_jsonl(tmp_path / "data" / f"{s}.jsonl", _rows(n, k))
        for s, n, k in (("train", 24, 0), ("validation", 16, 1), ("test", 8, 2))
    }
    production = write_jsonl(
        tmp_path / "prod" / "window.jsonl", [{"text": f"{MARKER} hello chat {i}"} for i in range(40)]
    )
    out = tmp_path / "out"
    assert (
        main(
            [
                "finetune",
                "--model",
                str(tiny_model_dir),
                "--data.train",
                str(data["train"]),
                "--data.validation",
                str(data["validation"]),
                "--data.test",
                str(data["test"]),
                "--output_dir",
                str(out / "finetune"),
                "--trainer.max_steps",
                "3",
                "--data.batch_size",
                "8",
                "--data.max_length",
                "32",
                "--privacy.store_texts",
                "false",
                "--tracking.wandb",
                "true",
            ]
        )
        == 0
    )
    version = out / "finetune" / "version"
    assert (out / "finetune" / "wandb").is_dir(), "the W&B run must be among the searched files"
    # the reference keeps no text and no hash of one (a plain sha256 of a short text is reversed by
    # guessing): drift works on the embeddings alone, and says which inputs moved by their row
    assert not (version / "reference" / "texts.jsonl").exists()
    assert (version / "reference" / "embeddings.safetensors").is_file()
    inputs = [r["text"] for r in _rows(16, 1)] + [f"{MARKER} hello chat {i}" for i in range(40)]

    drift_args = [
        "drift",
        "--version",
        str(version),
        "--data",
        str(production),
        "--tests",
        "[mmd,ks]",
        "--permutations",
        "50",
        "--tracking.wandb",
        "true",
    ]
    assert main([*drift_args, "--output_dir", str(out / "drift"), "--privacy.store_texts", "false"]) in (0, 3)
    report = json.loads((out / "drift" / "drift.json").read_text())
    unlike = report["windows"][0]["most_unlike"]
    assert unlike and all(set(u) == {"row", "score"} and 1 <= u["row"] <= 40 for u in unlike)
    assert "of the window (text not stored)" in (out / "drift" / "report.html").read_text()
    assert list((out / "drift").glob("wandb/*run-*")), "the drift W&B run must be among the searched files"

    assert _files_containing(out, MARKER) == []
    for text in inputs:  # nor a plain hash of one
        assert _files_containing(out, hashlib.sha256(text.encode()).hexdigest()) == [], text
    for name, secret in SECRETS.items():
        assert _files_containing(out, secret) == [], f"{name} was written to an output file"

    # positive control: the default keeps texts, and the same search finds them (and still no secret)
    control = tmp_path / "control"
    assert main([*drift_args, "--output_dir", str(control)]) in (0, 3)
    assert "drift.json" in _files_containing(control, MARKER)
    assert "report.html" in _files_containing(control, MARKER)
    for secret in SECRETS.values():
        assert _files_containing(control, secret) == []
    assert "Traceback" not in capsys.readouterr().err
