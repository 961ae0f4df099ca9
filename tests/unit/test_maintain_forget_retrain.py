"""`refit maintain forget --retrain`: the forget also repairs the model (refit.maintain.repair).

Before: a forget named the versions that learned the forgotten texts and left "retrain from the base model
without them" to the user, so the served champion kept carrying them. Now one clean challenger is trained
from the loop's base model on the scrubbed training files of the champion's lineage, gated against the
newest clean ancestor (never against the tainted champion) or the loop's absolute floor, and promoted by
compare-and-swap in the transaction that finishes the forget's run.

Real registry, versions written by the real version writer, run files by the cycle's own writer, a real
fine-tune of the tiny random BERT (tests/conftest.py): constant-label training rows and a constant-label
golden set make which model wins the gate a matter of construction, not of luck.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from refit.cli import main
from refit.data import file_fingerprint
from refit.maintain.cycle import _write_split
from refit.maintain.replay import replay_source
from refit.maintain.scrub import FORGET_KIND, redactions
from refit.models import read_version, write_version
from refit.registry import Registry
from refit.serve.capture import CAPTURE_SCHEMA
from tests.conftest import write_jsonl
from tests.unit.test_maintain_inbox import LABELS, _cap, _write
from tests.unit.test_maintain_index import _cycle

SECRET = "my address is 12 Secret Lane"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return (
        AutoModelForSequenceClassification.from_pretrained(tiny_model_dir),
        AutoTokenizer.from_pretrained(tiny_model_dir),
    )


def _biased(tiny, label: int | None):
    """The tiny model nudged off the base, or (label given) one that predicts `label` for every input: a known
    golden score."""
    model, tok = tiny
    model = copy.deepcopy(model)
    with torch.no_grad():
        if label is None:  # a trained version never has the base's weights (forget --retrain refuses a
            model.classifier.bias.add_(1e-3)  # base holding a tainted version's weights: by their sha256)
            return model, tok
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([10.0, -10.0] if label == 0 else [-10.0, 10.0]))
    return model, tok


def _version(reg, tiny, vid, parent, rows, *, predicts=None, own_file: Path | None = None) -> None:
    """Register and promote `vid` (warm-started from `parent`), trained on `rows`: a cycle's run files
    (the cycle's own writer), or `own_file` (your own data, outside the loop's run folders)."""
    folder = own_file.parent if own_file else reg.root.resolve() / "maintain" / f"run-{vid}" / "data"
    train = _write_split(own_file or folder / "train.jsonl", rows, LABELS)
    val = _write_split(folder / "validation.jsonl", rows[-1:], LABELS)
    meta = {
        "version_id": vid,
        "recipe": "maintain",
        "parent": parent,
        "labels": LABELS,
        "config": {"data": {"train": train, "validation": val}},
        "data": {"train": file_fingerprint(train, len(rows)), "validation": file_fingerprint(val, 1)},
    }
    model, tok = _biased(tiny, predicts)
    reg.register(write_version(reg.root.parent / "written" / vid, model, tok, meta))
    reg.promote(vid, "test")


def _rows(label: int, n: int = 8, tag: str = "") -> list[tuple[str, int]]:
    """`n` rows of class `label` and two of the other class (a classifier needs both): the tiny model
    trained on them predicts `label` (what the gate tests below are built on)."""
    return [(f"a {tag} review number {i}", label) for i in range(n)] + [
        (f"an odd {tag} review {i}", 1 - label) for i in range(2)
    ]


@pytest.fixture
def loop(tmp_path, tiny_model_dir):
    """A registry whose inbox captured SECRET as request r0 (read by a cycle: in the inbox index), and a
    loop config whose base model is the tiny BERT."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    reg = Registry(tmp_path / "registry")
    _write(inbox / "capture-1.parquet", [_cap("r0", SECRET), _cap("r1", "one")], CAPTURE_SCHEMA)
    _cycle(reg, inbox)
    return reg, inbox


def _loop_yaml(reg: Registry, inbox: Path, model: Path, golden_label: int, **over) -> Path:
    golden = write_jsonl(
        inbox.parent / "golden.jsonl",
        [{"text": f"a golden review number {i}", "label": golden_label} for i in range(6)],
    )
    config = {
        "registry": {"root": str(reg.root)},
        "inbox": {"windows": str(inbox), "golden": str(golden)},
        "policy": {"min_accuracy": over.get("min_accuracy")},
        "retrain": {
            "model": str(model),
            "data": {"max_length": 16, "batch_size": 8, "reference_size": 4},
            "optim": {"lr": 5e-3, "warmup_ratio": 0.0},
            "trainer": {"max_epochs": 3, "early_stopping_patience": 0, "log_every_n_steps": 1},
        },
        "gate": {"golden_tolerance": 1.0},
        "deploy": {"formats": []},
    }
    path = inbox.parent / "maintain.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _argv(reg: Registry, inbox: Path, loop_yaml: Path | None, *ids: str) -> list[str]:
    path = inbox.parent / "ids.txt"
    path.write_text("\n".join(ids) + "\n")
    argv = ["maintain", "forget", "--ids", str(path), "--registry.root", str(reg.root), "--inbox", str(inbox)]
    return argv + (["--retrain", "--loop", str(loop_yaml)] if loop_yaml else [])


def _forget_retrain(reg, inbox, loop_yaml) -> int:
    return main(_argv(reg, inbox, loop_yaml, "r0"))


def _champion_data(reg: Registry) -> tuple[dict, str]:
    """The champion's refit.json and the text of its training and validation files."""
    meta = read_version(reg.get("champion").path)
    data = meta["config"]["data"]
    return meta, Path(data["train"]).read_text() + Path(data["validation"]).read_text()


def test_a_tainted_champion_is_replaced_by_a_clean_challenger_trained_from_the_base_model(
    loop, tiny, tiny_model_dir, capsys
):
    reg, inbox = loop
    _version(reg, tiny, "v1", None, [(SECRET, 0), *_rows(0, 6, "first")])  # learned SECRET
    _version(reg, tiny, "v2", "v1", _rows(0, 6, "second"))  # warm-started from v1: learned too
    config = _loop_yaml(reg, inbox, tiny_model_dir, golden_label=0)

    assert _forget_retrain(reg, inbox, config) == 0
    out = capsys.readouterr().out
    champion = reg.aliases()["champion"]
    assert champion not in ("v1", "v2")
    assert f"retrain: promoted {champion} (was v2): the served model no longer carries the texts" in out
    assert "from the loop's base model" in out and "none holds a forgotten text" in out
    meta, text = _champion_data(reg)
    assert meta["parent"] is None and meta["config"]["model"] == str(tiny_model_dir)  # not warm-started
    assert SECRET not in text
    # trained on the union of the lineage's training files (scrubbed), not on the replay file alone
    assert all(f"a {tag} review number 5" in text for tag in ("first", "second"))
    assert "/maintain/run-forget-" in meta["config"]["data"]["train"]  # where later forgets scrub it
    # the next cycle's replay source: the new champion's training file, verified by its fingerprint
    assert replay_source(meta, redactions(reg.runs(FORGET_KIND))) == Path(meta["config"]["data"]["train"])

    run = reg.runs(FORGET_KIND)[-1]
    assert run["status"] == "done"
    assert run["details"]["retrain"]["status"] == "promoted"
    assert run["details"]["retrain"]["promoted"] == champion
    assert SECRET not in json.dumps(run["details"]) and '"r0"' not in json.dumps(run["details"])
    promotions = [m for m in reg.history("champion") if m.action == "promote" and m.to_version == champion]
    assert len(promotions) == 1 and promotions[0].from_version == "v2"

    # a rerun with the same ids finds a clean champion: nothing scrubbed, trained or promoted again
    assert _forget_retrain(reg, inbox, config) == 0
    out = capsys.readouterr().out
    assert f"retrain: not needed: the champion {champion} did not learn from them" in out
    assert reg.aliases()["champion"] == champion
    assert reg.runs(FORGET_KIND)[-1]["details"]["redacted"] == []
    assert len(reg.list_versions()) == 3


@pytest.mark.parametrize("winner", ["challenger", "ancestor"])
def test_with_a_clean_ancestor_the_gate_picks_between_it_and_the_challenger(
    loop, tiny, tiny_model_dir, capsys, winner
):
    """The golden set is all class 0. The challenger learns the training rows' class; the clean ancestor
    v1 predicts one class for every input. Whichever is right on the golden set is promoted, and the
    tainted champion v2 (which predicts class 0: right on all of it) is never what they are compared with."""
    reg, inbox = loop
    label = 0 if winner == "challenger" else 1  # the class every training row has
    _version(reg, tiny, "v1", None, _rows(label, 6, "first"), predicts=1 - label)
    _version(reg, tiny, "v2", "v1", [(SECRET, label), *_rows(label, 6, "second")], predicts=0)
    config = _loop_yaml(reg, inbox, tiny_model_dir, golden_label=0)

    assert _forget_retrain(reg, inbox, config) == 0
    out = capsys.readouterr().out
    retrain = reg.runs(FORGET_KIND)[-1]["details"]["retrain"]
    assert retrain["ancestor"] == "v1"
    assert "gate between the clean ancestor and the challenger" in out
    assert "vs the clean ancestor v1: golden set" in retrain["gate"][0]
    expected = retrain["challenger"] if winner == "challenger" else "v1"
    assert retrain["promoted"] == expected == reg.aliases()["champion"]
    other = "v1" if winner == "challenger" else retrain["challenger"]
    assert retrain["golden"][expected] > retrain["golden"][other]
    assert "v2" not in retrain["golden"]  # the tainted champion was not scored


def test_no_clean_ancestor_and_a_challenger_below_the_floor_leaves_the_champion_and_exits_1(
    loop, tiny, tiny_model_dir, capsys
):
    reg, inbox = loop
    _version(reg, tiny, "v1", None, [(SECRET, 1), *_rows(1, 6, "first")])
    config = _loop_yaml(reg, inbox, tiny_model_dir, golden_label=0, min_accuracy=0.5)
    assert _forget_retrain(reg, inbox, config) == 1
    out = capsys.readouterr().out
    assert "NOT repaired: the champion v1 still serves and still carries the forgotten texts" in out
    assert reg.aliases()["champion"] == "v1"
    retrain = reg.runs(FORGET_KIND)[-1]["details"]["retrain"]
    assert retrain["status"] == "kept" and retrain["golden"][retrain["challenger"]] < 0.5
    assert reg.runs(FORGET_KIND)[-1]["status"] == "done"


def test_training_data_still_holding_a_forgotten_text_is_refused_before_training(
    loop, tiny, tiny_model_dir, tmp_path, capsys
):
    """v1 was fine-tuned on your own file, which a forget does not rewrite, and it holds SECRET too: the
    clean retrain would train on it, so it refuses (exit 1) and trains nothing."""
    reg, inbox = loop
    own = tmp_path / "own-data" / "train.jsonl"
    _version(reg, tiny, "v1", None, [(SECRET, 0), *_rows(0, 6, "own")], own_file=own)
    _version(reg, tiny, "v2", "v1", [(SECRET, 0), *_rows(0, 6, "second")])
    config = _loop_yaml(reg, inbox, tiny_model_dir, golden_label=0)
    assert _forget_retrain(reg, inbox, config) == 1
    out = capsys.readouterr().out
    assert "retrain: REFUSED: Refusing to train: 1 row(s)" in out and "still carries the texts" in out
    assert SECRET not in out
    assert reg.aliases()["champion"] == "v2" and len(reg.list_versions()) == 2
    assert not list((reg.root / "maintain").glob("run-forget-*"))
    assert reg.runs(FORGET_KIND)[-1]["details"]["retrain"]["status"] == "refused"


def test_a_lineage_training_file_that_is_gone_is_left_out_and_named(loop, tiny, tiny_model_dir, capsys):
    """v1's run folder was deleted: v1 and v2 are "unknown" (tainted, never clean); the clean retrain trains
    on what can still be verified (v2's scrubbed file) and names what it left out."""
    import shutil

    reg, inbox = loop
    _version(reg, tiny, "v1", None, _rows(0, 6, "first"))
    shutil.rmtree(reg.root.resolve() / "maintain" / "run-v1")
    _version(reg, tiny, "v2", "v1", [(SECRET, 0), *_rows(0, 6, "second")])
    config = _loop_yaml(reg, inbox, tiny_model_dir, golden_label=0)
    assert _forget_retrain(reg, inbox, config) == 0
    out = capsys.readouterr().out
    assert "retrain: training file left out: v1: v1's training data is gone" in out
    retrain = reg.runs(FORGET_KIND)[-1]["details"]["retrain"]
    assert (retrain["files"], retrain["rows"], retrain["status"]) == (1, 8, "promoted")
    _, text = _champion_data(reg)
    assert "second" in text and "first" not in text and SECRET not in text


@pytest.mark.parametrize(
    "mistake, said",
    [
        ("no loop", "--retrain needs the loop's config: --loop LOOP.yaml"),
        ("no retrain", "--loop is read only with --retrain"),
        ("other registry", "maintains the registry"),
        ("no golden", "'inbox.golden' in --loop"),
    ],
)
def test_a_bad_retrain_request_is_refused_before_anything_is_forgotten(
    loop, tiny_model_dir, tmp_path, capsys, mistake, said
):
    reg, inbox = loop
    config = _loop_yaml(reg, inbox, tiny_model_dir, golden_label=0)
    argv = _argv(reg, inbox, config, "r0")
    if mistake == "no loop":
        argv = argv[: argv.index("--loop")]
    elif mistake == "no retrain":
        argv.remove("--retrain")
    else:
        values = yaml.safe_load(config.read_text())
        if mistake == "other registry":
            values["registry"]["root"] = str(tmp_path / "elsewhere")
        else:
            values["inbox"]["golden"] = str(tmp_path / "missing.jsonl")
        config.write_text(yaml.safe_dump(values))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err
    assert reg.runs(FORGET_KIND) == []  # nothing forgotten by a command that was refused


@pytest.mark.slow
def test_a_kill_during_the_retrain_leaves_the_champion_and_a_rerun_finishes_once(loop, tiny, tiny_model_dir):
    """A real `refit maintain forget --retrain` subprocess SIGKILLs itself (REFIT_FAULT_AT, the cycle's own
    fault points): mid-training, then after registering its challenger, then just after the promote commit
    (that rerun gates the registered challenger instead of training another); a fourth has nothing to do."""
    reg, inbox = loop
    _version(reg, tiny, "v1", None, [(SECRET, 0), *_rows(0, 6, "first")])
    config = _loop_yaml(reg, inbox, tiny_model_dir, golden_label=0)
    argv = [sys.executable, "-m", "refit.cli", *_argv(reg, inbox, config, "r0")]

    def forget(fault: str | None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "REFIT_FAULT_AT"} | {"PYTHONUNBUFFERED": "1"}
        return subprocess.run(
            argv,
            env={**env, **({"REFIT_FAULT_AT": fault} if fault else {})},
            capture_output=True,
            text=True,
            timeout=300,
        )

    killed = forget("training")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert reg.aliases()["champion"] == "v1"  # the old champion still serves
    assert [r["status"] for r in reg.runs(FORGET_KIND)] == ["running"]

    killed = forget("gate")  # the rerun trains and registers a challenger, and is killed before its gate
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert "recorded as abandoned" in killed.stdout
    assert reg.aliases()["champion"] == "v1"
    challenger = reg.aliases()["challenger"]

    # gates and promotes that challenger (not trained again), and is killed just after the commit
    killed = forget("promoted")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert f"reusing the clean challenger {challenger}" in killed.stdout
    champion = reg.aliases()["champion"]
    assert champion == challenger
    assert [r["status"] for r in reg.runs(FORGET_KIND)] == ["abandoned", "abandoned", "done"]
    assert len(reg.list_versions()) == 2  # v1 and the one clean challenger

    last = forget(None)
    assert last.returncode == 0, last.stderr[-2000:]
    assert "retrain: not needed" in last.stdout
    assert reg.aliases()["champion"] == champion
    promotions = [m for m in reg.history("champion") if m.action == "promote" and m.from_version == "v1"]
    assert [m.to_version for m in promotions] == [champion]  # promoted exactly once
    assert not list((reg.root / "maintain").glob("run-forget-*/finetune/checkpoints"))
