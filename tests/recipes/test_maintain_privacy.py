"""privacy.store_texts false through `refit maintain --once`: a real promoting cycle on a tiny random model,
its W&B run on (offline), then every byte under the registry is searched for the marker word every inbox
and golden-set text carries, and for the plain sha256 of each of those texts.

The inbox holds JSONL windows of labelled and unlabelled rows, the captures of two servers with late
feedback (one with `capture.store_texts` true: texts and their plain sha256 in the capture file, what a
loop that retrains on captures needs; one with it false: neither), and a file the cycle quarantines. The
one place texts are allowed (README, Tracking: Privacy) is the run folder's training/validation rows, the
challenger's training data; the search must find the marker there, and the same cycle with store_texts
true must show up as a leak (the new champion's reference texts), so an empty result is not a search that
sees nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from refit.cli import main
from refit.data import demo_dir
from refit.errors import DataError
from refit.maintain.index import INDEX_FILE
from refit.registry import CHAMPION, Registry
from refit.serve.capture import CAPTURE_SCHEMA, FEEDBACK_SCHEMA, capture_row, feedback_row
from tests.conftest import write_jsonl
from tests.unit.test_maintain_inbox import _cap, _now, _write
from tests.unit.test_maintain_index import _cycle
from tests.unit.test_maintain_privacy import _V1_SCHEMA, SECRET

MARKER = "zebraquartz"
ALLOWED = {"data/train.jsonl", "data/validation.jsonl"}  # under maintain/run-*/: the challenger's rows


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (demo_dir() / f"{name}.jsonl").read_text().splitlines()]


def _marked(rows: list[dict]) -> list[dict]:
    return [{**r, "text": f"{MARKER} {r['text']} {i}"} for i, r in enumerate(rows)]


def _holding(root: Path, needles: list[str]) -> dict[str, list[str]]:
    """file (relative to root) -> the needles found in its bytes; files holding none are left out."""
    found = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            hits = [n for n in needles if n.encode() in data]
            if hits:
                found[str(p.relative_to(root))] = hits
    return found


def _allowed(rel: str) -> bool:
    parts = Path(rel).parts
    return (
        len(parts) == 4
        and parts[0] == "maintain"
        and parts[1].startswith("run-")
        and ("/".join(parts[2:]) in ALLOWED)
    )


def _captures(inbox: Path, rows: list[dict], store_text: bool, name: str) -> None:
    """What `refit serve` writes for these requests (its own row builder), and a late label for each."""
    caps = [
        capture_row(f"{name}-{i}", _now(-5), "v", r["text"], 1, "positive", [0.4, 0.6], store_text)
        for i, r in enumerate(rows)
    ]
    _write(inbox / f"capture-{name}.parquet", caps, CAPTURE_SCHEMA)
    labels = [feedback_row(f"{name}-{i}", str(r["label"]), _now(-1)) for i, r in enumerate(rows)]
    _write(inbox / f"feedback-{name}.parquet", labels, FEEDBACK_SCHEMA)


@pytest.fixture
def loop(tmp_path, tiny_model_dir, monkeypatch):
    """A registry whose champion is the tiny model briefly fine-tuned on the demo reviews (no marker), the
    inbox of the module docstring (shifted rows, marked), a marked golden set, and a cycle's config."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "champion"
    common = ["--data.max_length", "48", "--data.batch_size", "16", "--tracking.wandb", "false"]
    argv = ["finetune", "--model", str(tiny_model_dir), "--data.dataset", "refit-demo"]
    assert main([*argv, "--output_dir", str(out), "--trainer.max_steps", "4", *common]) == 0
    registry = tmp_path / "registry"
    assert main(["registry", "register", "--root", str(registry), "--version", str(out / "version")]) == 0
    vid = json.loads((out / "version" / "refit.json").read_text())["version_id"]
    promote = ["registry", "promote", "--root", str(registry), "--version", vid, "--reason", "first"]
    assert main([*promote, "--tracking.wandb", "false"]) == 0
    shifted = _marked(_rows("shifted")[:170])
    window, kept, unkept, unlabelled = shifted[:90], shifted[90:120], shifted[120:150], shifted[150:]
    golden = _marked(_rows("validation"))
    write_jsonl(tmp_path / "production" / "2026-11-20.jsonl", window)
    write_jsonl(tmp_path / "production" / "2026-11-21.jsonl", [{"text": r["text"]} for r in unlabelled])
    _captures(tmp_path / "production", kept, True, "a")
    _captures(tmp_path / "production", unkept, False, "b")
    # a file whose label column holds a text (columns swapped): quarantined, and its reason must not quote it
    write_jsonl(tmp_path / "production" / "swapped.jsonl", [{"text": "1", "label": f"{MARKER} my words"}])
    config = {
        "registry": {"root": str(registry)},
        "inbox": {
            "windows": str(tmp_path / "production"),
            "golden": str(write_jsonl(tmp_path / "golden.jsonl", golden)),
            "replay_size": 100,
            "holdout_fraction": 0.3,
        },
        "policy": {"tests": ["mmd", "ks"], "permutations": 50, "always_retrain": True},
        "retrain": {
            "data": {"max_length": 48, "batch_size": 16, "reference_size": 40},
            "trainer": {"max_steps": 4},
        },
        # any challenger passes: the promotion (and its W&B alias mirror) is part of what is searched
        "gate": {"golden_tolerance": 100.0, "recent_margin": -100.0, "recent_alpha": None},
        "deploy": {"formats": []},
        "tracking": {"wandb": True},
    }
    path = tmp_path / "maintain.yaml"
    path.write_text(yaml.safe_dump(config))
    return registry, path, [r["text"] for r in shifted + golden]


@pytest.mark.parametrize("store_texts", [False, True], ids=["store_texts-false", "control-store_texts-true"])
def test_store_texts_false_keeps_inputs_out_of_everything_a_cycle_writes_but_its_training_rows(
    loop, store_texts, capsys
):
    registry, config, texts = loop
    cfg = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**cfg, "privacy": {"store_texts": store_texts}}))
    before = Registry(registry).aliases()[CHAMPION]
    assert main(["maintain", "--config", str(config), "--once"]) == 0
    reg = Registry(registry)
    run = reg.runs("maintain")[-1]
    assert run["status"] == "promoted", run["details"]
    after = reg.aliases()[CHAMPION]
    assert after != before
    # what is searched: the new champion with its refreshed reference, the run folder, the index, the
    # database, the cycle's W&B run (with the promotion mirrored into it) and the reports
    assert (reg.get(after).path / "reference" / "embeddings.safetensors").is_file()
    assert run["details"]["reference"]["recent"] > 0  # the reference was built from the marked inputs
    # the window's rows and the stored captures' labels; those and the unlabelled rows are inputs
    assert run["details"]["counts"] == {"inputs": 140, "labelled": 120}
    (quarantined,) = run["details"]["quarantined"]
    assert Path(quarantined["file"]).name == "swapped.jsonl"
    if not store_texts:  # where it was refused is kept, what the file held is not
        assert quarantined["reason"].endswith(
            "swapped.jsonl, row 1: refused; why is not kept "
            "(privacy.store_texts false: the reason may quote the file's values)"
        ), quarantined
    else:
        assert "is not one of the model's labels" in quarantined["reason"]
    work = Path(run["details"]["work_dir"])
    assert (work / "report.html").is_file() and (work / "cycle.json").is_file()
    assert (registry / "registry.db").is_file() and (registry / "maintain" / "inbox-index.db").is_file()
    assert list(registry.glob("wandb/*run-*/*.wandb")), "the cycle's W&B run must be among the searched files"

    hashes = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    found = _holding(registry, [MARKER, *hashes])
    # positive control: the challenger's own training rows hold the marked texts, and the search sees them
    assert any(_allowed(rel) and MARKER in hits for rel, hits in found.items()), found
    leaks = {rel: [h if h == MARKER else f"sha256 {h[:12]}..." for h in hits] for rel, hits in found.items()}
    outside = {rel: hits for rel, hits in leaks.items() if not _allowed(rel)}
    if store_texts:  # the control: the same search sees texts the cycle keeps on purpose
        ref = (reg.get(after).path / "reference" / "texts.jsonl").resolve().relative_to(registry.resolve())
        assert MARKER in outside.get(str(ref), []), sorted(outside)
    else:
        assert outside == {}
    assert "Traceback" not in capsys.readouterr().err


# --- an unreadable index of the first format (it kept captured texts) --------------------------------------
def test_a_damaged_index_of_the_first_format_is_deleted_not_set_aside_with_its_texts(tmp_path):
    """A `.damaged-*` file is kept forever: one of format 2 or 3 holds no text (set aside for a look), but
    one of the first format held captured texts. Damaged past SQLite's reading (its schema page here), it
    cannot be vacuumed, so it is deleted, with a note. Before the fix it was set aside, texts and all."""
    reg, inbox = Registry(tmp_path / "registry"), tmp_path / "inbox"
    inbox.mkdir()
    index = reg.root / "maintain" / INDEX_FILE
    index.parent.mkdir(parents=True)
    db = sqlite3.connect(index, isolation_level=None)
    db.executescript(_V1_SCHEMA)
    db.execute("INSERT INTO captures (run_id, request_id, text) VALUES (1, 'r0', ?)", (SECRET,))
    db.close()
    data = bytearray(index.read_bytes())
    data[100:300] = b"\xff" * 200  # the schema page's cells (the 100-byte file header is left readable)
    index.write_bytes(bytes(data))
    assert SECRET.encode() in index.read_bytes()
    _write(inbox / "capture-1.parquet", [_cap("r1", "new text")], CAPTURE_SCHEMA)
    batch, notes = _cycle(reg, inbox)
    assert batch.texts == ["new text"]
    assert any("first format" in n and "deleted" in n for n in notes), notes
    assert not list(index.parent.glob(f"{INDEX_FILE}.damaged-*"))
    assert [p.name for p in index.parent.iterdir() if SECRET.encode() in p.read_bytes()] == []


def test_a_damaged_index_of_format_3_is_still_set_aside_for_a_look(tmp_path):
    """It holds no text (ids, file names, keyed hashes), so the rule above deletes only what may."""
    reg, inbox = Registry(tmp_path / "registry"), tmp_path / "inbox"
    inbox.mkdir()
    _write(inbox / "capture-1.parquet", [_cap("r0", "zero")], CAPTURE_SCHEMA)
    _cycle(reg, inbox)
    index = reg.root / "maintain" / INDEX_FILE
    data = bytearray(index.read_bytes())
    data[100:300] = b"\xff" * 200
    index.write_bytes(bytes(data))
    _write(inbox / "capture-2.parquet", [_cap("r1", "one")], CAPTURE_SCHEMA)
    _, notes = _cycle(reg, inbox)
    assert any("was unreadable" in n and "moved to" in n for n in notes), notes
    assert len(list(index.parent.glob(f"{INDEX_FILE}.damaged-*"))) == 1
    assert b"zero" not in next(index.parent.glob(f"{INDEX_FILE}.damaged-*")).read_bytes()


# --- a cycle that fails or refuses, with privacy.store_texts false ------------------------------------------
# Each case stops the cycle at one point with marked texts in play (the inbox's captures and files, the golden
# set). What is searched: every file under the registry (its W&B run included) but the run folder's training
# rows, what W&B and the libraries wrote outside it (HOME's cache, config and data folders, and TMPDIR: the
# command runs in a subprocess with both set to folders of the test), and the command's stdout and stderr.
def _golden_swapped(tmp_path: Path, cfg: dict) -> None:  # the golden set's columns swapped: texts as labels
    rows = [{"text": str(r["label"]), "label": f"{MARKER} {r['text']}"} for r in _rows("validation")[:20]]
    cfg["inbox"]["golden"] = str(write_jsonl(tmp_path / "golden-swapped.jsonl", rows))


def _golden_mixed(tmp_path: Path, cfg: dict) -> None:  # a text in one row's label: the label kinds mix
    rows = [{"text": r["text"], "label": r["label"]} for r in _rows("validation")[:20]]
    rows[3]["label"] = f"{MARKER} in the label column"
    cfg["inbox"]["golden"] = str(write_jsonl(tmp_path / "golden-mixed.jsonl", rows))


def _feedback_label_is_a_text(tmp_path: Path, cfg: dict) -> None:  # a late label that holds a text
    rows = _marked(_rows("shifted")[170:180])
    _captures(tmp_path / "production", rows, True, "c")
    labels = [feedback_row(f"c-{i}", f"{MARKER} label {i}", _now(-1)) for i in range(len(rows))]
    _write(tmp_path / "production" / "feedback-c.parquet", labels, FEEDBACK_SCHEMA)


def _training_fails(tmp_path: Path, cfg: dict) -> None:  # an accelerator this machine lacks
    cfg["retrain"]["trainer"]["accelerator"] = "gpu"


def _gate_refuses(tmp_path: Path, cfg: dict) -> None:
    cfg["gate"] = {"golden_tolerance": 0.0, "recent_margin": 100.0}


# case -> (change to the config and inbox, exit code, status of the run or None where no run is opened)
FAILURES = {
    "golden-label": (_golden_swapped, 2, None),
    "golden-label-kinds": (_golden_mixed, 2, None),
    "feedback-label": (_feedback_label_is_a_text, 0, "promoted"),  # quarantined; the cycle goes on
    "training": (_training_fails, 1, "failed"),
    "gate": (_gate_refuses, 0, "rejected"),
    # the control: with store_texts true the promoted champion's reference keeps texts, and W&B's staging
    # copy of it under HOME holds them too: the search outside the registry sees what is there
    "control-store_texts-true": (lambda tmp_path, cfg: None, 0, "promoted"),
}


def _leaks(registry: Path, texts: list[str], *folders: Path, **streams: str) -> dict[str, list[str]]:
    """Where a marked text or the sha256 of one turns up outside the run folder's training rows."""
    needles = [MARKER, *(hashlib.sha256(t.encode()).hexdigest() for t in texts)]
    found = {rel: hits for rel, hits in _holding(registry, needles).items() if not _allowed(rel)}
    for folder in folders:
        found |= {f"{folder.name}/{rel}": hits for rel, hits in _holding(folder, needles).items()}
    return found | {name: [MARKER] for name, text in streams.items() if MARKER in text}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(FAILURES))
def test_a_cycle_that_fails_or_refuses_keeps_inputs_out_of_what_it_writes_and_prints(loop, tmp_path, case):
    registry, config, texts = loop
    cfg = yaml.safe_load(config.read_text())
    change, code, status = FAILURES[case]
    change(tmp_path, cfg)
    control = case.startswith("control")
    config.write_text(yaml.safe_dump({**cfg, "privacy": {"store_texts": control}}))
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir(), tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") or k == "WANDB_SILENT"}
    env |= {"HOME": str(home), "TMPDIR": str(tmp), "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [sys.executable, "-m", "refit", "maintain", "--config", str(config), "--once"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == code, proc.stdout[-2000:] + proc.stderr[-2000:]
    runs = Registry(registry).runs("maintain")
    if status is None:  # refused before the cycle opened a run: the message says where, not what
        assert runs == [] and "Traceback" not in proc.stderr
        assert "The golden set ('inbox.golden' " in proc.stderr, proc.stderr
        assert "(privacy.store_texts false: it may quote an input text)" in proc.stderr, proc.stderr
    else:
        assert runs[-1]["status"] == status, runs[-1]["details"]
    leaks = _leaks(registry, texts, home, tmp, stdout=proc.stdout, stderr=proc.stderr)
    if control:
        staged = [rel for rel in leaks if rel.startswith("home/.local/share/wandb/artifacts/staging/")]
        assert staged and any(rel.endswith("texts.jsonl") for rel in leaks), sorted(leaks)
    else:
        assert leaks == {}


def test_a_golden_set_label_refusal_names_the_row_and_quotes_the_value_only_when_texts_may_be_kept(
    loop, tmp_path, capsys
):
    registry, config, _ = loop
    cfg = yaml.safe_load(config.read_text())
    _golden_swapped(tmp_path, cfg)
    for store_texts in (True, False):
        config.write_text(yaml.safe_dump({**cfg, "privacy": {"store_texts": store_texts}}))
        assert main(["maintain", "--config", str(config), "--once"]) == 2
        err = capsys.readouterr().err
        assert f"The golden set ('inbox.golden' {cfg['inbox']['golden']}), row 1: " in err, err
        assert (MARKER in err) == store_texts and "Traceback" not in err, err
    assert Registry(registry).runs("maintain") == []


def _quoting_tokenizer(monkeypatch, error: type[Exception], cut: int | None = None) -> None:
    """A fault injected into transformers (not refit): the tokenizer fails on a batch holding a marked text
    with an error that quotes it (its first `cut` characters), as library errors quote their input."""
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    real = PreTrainedTokenizerBase.__call__

    def call(self, text=None, *args, **kwargs):
        batch = [text] if isinstance(text, str) else list(text or [])
        marked = next((t for t in batch if isinstance(t, str) and MARKER in t), None)
        if marked is not None:
            raise error(f"cannot tokenize {marked[:cut]!r}" + ("..." if cut else ""))
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerBase, "__call__", call)


def _quoting_onnxruntime(monkeypatch, error: type[Exception], text: str) -> None:
    """A fault injected into ONNX Runtime (not refit): running the exported challenger fails with an error
    that quotes an input, at the export and parity point of the cycle."""
    import onnxruntime

    def run(self, *args, **kwargs):
        raise error(f"cannot run the session on {text!r}")

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", run)


@pytest.mark.parametrize(
    "point, error",
    [("drift", ValueError), ("drift", DataError), ("drift-cut", DataError), ("export", RuntimeError)],
    ids=["drift-library-error", "drift-refit-error", "drift-refit-error-cut", "export-library-error"],
)
def test_an_error_quoting_an_input_is_not_recorded_with_store_texts_false(
    loop, monkeypatch, capsys, point, error
):
    """The net under every failure: a cycle failing on an error whose message quotes an input (a library's,
    not kept at all; refit's own, kept with the text replaced) records and prints no input text."""
    registry, config, texts = loop
    cfg = yaml.safe_load(config.read_text())
    if point.startswith("drift"):
        _quoting_tokenizer(monkeypatch, error, 20 if point == "drift-cut" else None)
    else:
        cfg["deploy"] = {"formats": ["onnx"]}
        _quoting_onnxruntime(monkeypatch, error, texts[0])
    config.write_text(yaml.safe_dump({**cfg, "privacy": {"store_texts": False}}))
    assert main(["maintain", "--config", str(config), "--once"]) == 1
    out = capsys.readouterr()
    run = Registry(registry).runs("maintain")[-1]
    assert run["status"] == "failed" and run["details"]["error"].startswith(error.__name__), run["details"]
    # where it failed is kept
    assert ("_export" if point == "export" else "_check_drift") in run["details"]["traceback"]
    if error is DataError:
        quoted = "'<part of an input text>'" if point == "drift-cut" else "'<an input text>'"
        assert f"cannot tokenize {quoted}" in run["details"]["error"], run["details"]["error"]
    assert _leaks(registry, texts, stdout=out.out, stderr=out.err) == {}
