"""`refit maintain forget` reaches what cycles wrote, not only the inbox: the run folders' training files.

Before: a forget removed the requests' capture rows only, so a text a cycle had trained on stayed in
`maintain/run-N/data/train.jsonl`, and replay drew it into every later retrain. Scrubbing that file
silently would break replay instead (its sha256 is sealed in the trained version's refit.json), so the
forget records each rewrite in the registry and replay accepts exactly that recorded state. Cycles here
are the cycle's own inbox step against a real registry database; the training file is written by the
cycle's own writer, and its fingerprint by refit.data's."""

from __future__ import annotations

import json
import shlex
import stat
from pathlib import Path

import pytest
import torch

from refit.cli import main
from refit.data import file_fingerprint
from refit.drift.reference import Reference
from refit.maintain.cycle import _write_split
from refit.maintain.replay import ReplayUnavailable, draw_replay, replay_source
from refit.maintain.scrub import FORGET_KIND, redactions
from refit.registry import Registry
from refit.serve.capture import CAPTURE_SCHEMA
from tests.unit.test_maintain_inbox import LABELS, _cap, _write
from tests.unit.test_maintain_index import _cycle

SECRET = "my address is 12 Secret Lane"


@pytest.fixture
def loop(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    return Registry(tmp_path / "registry"), inbox


def _trained_run(reg: Registry, run: int = 1) -> tuple[dict, dict]:
    """The files a retraining cycle leaves in its run folder, and the refit.json lineage of its version."""
    data = reg.root.resolve() / "maintain" / f"run-{run:05d}" / "data"
    train = _write_split(data / "train.jsonl", [(SECRET, 0), ("one", 1), ("an old replay row", 0)], LABELS)
    val = _write_split(data / "validation.jsonl", [(SECRET, 0), ("kept", 1)], LABELS)
    meta = {
        "version_id": f"v{run}",
        "labels": LABELS,
        "config": {"data": {"train": train, "validation": val}},
        "data": {"train": file_fingerprint(train, 3), "validation": file_fingerprint(val, 2)},
    }
    return meta, {"train": data / "train.jsonl", "validation": data / "validation.jsonl"}


def _forget(reg: Registry, inbox, *ids: str) -> int:
    path = inbox.parent / "ids.txt"
    path.write_text("\n".join(ids) + "\n")
    return main(
        ["maintain", "forget", "--ids", str(path), "--registry.root", str(reg.root), "--inbox", str(inbox)]
    )


def test_forget_removes_trained_texts_from_run_folders_and_replay_accepts_the_recorded_state(loop, capsys):
    reg, inbox = loop
    _write(inbox / "capture-1.parquet", [_cap("r0", SECRET), _cap("r1", "one")], CAPTURE_SCHEMA)
    _cycle(reg, inbox)
    meta, files = _trained_run(reg)
    original = files["train"].read_bytes()
    assert replay_source(meta) == files["train"]

    assert _forget(reg, inbox, "r0") == 0
    out = capsys.readouterr().out
    assert "2 training/validation row(s) with those texts removed from 2 file(s)" in out
    assert "1 of the 1 request(s) had already been used by earlier cycles" in out
    assert (
        "NOT removed: what models trained on these 1 request(s) learned from them: their weights keep it"
        in out
    )
    for path in files.values():
        assert SECRET.encode() not in path.read_bytes()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [json.loads(x)["text"] for x in files["validation"].read_text().splitlines()] == ["kept"]

    run = reg.runs(FORGET_KIND)[-1]
    assert run["status"] == "done"
    assert [(r["path"], r["rows_before"], r["rows_after"]) for r in run["details"]["redacted"]] == [
        (str(files["train"]), 3, 2),
        (str(files["validation"]), 2, 1),
    ]
    assert SECRET not in json.dumps(run["details"]) and "r0" not in json.dumps(run["details"])

    # the sealed fingerprint alone no longer matches: replay trusts the forget's record, not a mismatch
    with pytest.raises(ReplayUnavailable, match="changed since training"):
        replay_source(meta)
    recorded = redactions(reg.runs(FORGET_KIND))
    assert replay_source(meta, recorded) == files["train"]
    assert sorted(t for t, _ in draw_replay(meta, files["train"], 10, 0)) == ["an old replay row", "one"]

    files["train"].write_bytes(original)  # a backup restored: it holds the forgotten text again
    with pytest.raises(ReplayUnavailable, match="before forget run"):
        replay_source(meta, recorded)


def test_a_text_whose_capture_file_is_already_gone_is_found_by_its_keyed_hash(loop, capsys):
    """The capture file was deleted by hand after a cycle read it: its text is found in the run folder by
    the HMAC the inbox index kept for the request id."""
    reg, inbox = loop
    _write(inbox / "capture-1.parquet", [_cap("r0", SECRET)], CAPTURE_SCHEMA)
    _cycle(reg, inbox)
    _, files = _trained_run(reg)
    (inbox / "capture-1.parquet").unlink()
    assert _forget(reg, inbox, "r0") == 0
    out = capsys.readouterr().out
    assert "forgot 0 of 1 request id(s)" in out  # not in a capture file, but known to have been trained on:
    assert "1 of the 1 request(s) had already been used by earlier cycles" in out
    assert SECRET.encode() not in files["train"].read_bytes()


@pytest.mark.parametrize("damage", ["index", "key"])
def test_a_damaged_inbox_index_or_key_is_said_and_exits_1(loop, capsys, damage, tiny_pair):
    """Before: a damaged index (or key) was passed over in silence: the forget exited 0 having not looked
    for the texts of requests whose capture file was already gone. Now it says what it could not check."""
    reg, inbox = loop
    _write(inbox / "capture-1.parquet", [_cap("r0", SECRET)], CAPTURE_SCHEMA)
    _cycle(reg, inbox)
    _, files = _trained_run(reg)
    _version(reg, tiny_pair, "v1", None, [(SECRET, 0), ("one", 1)])  # its text cannot be looked for
    (inbox / "capture-1.parquet").unlink()
    maintain = reg.root.resolve() / "maintain"
    target = maintain / ("inbox-index.db" if damage == "index" else "inbox-index.key")
    assert target.is_file()
    target.write_bytes(b"not what it was" * 100)
    assert _forget(reg, inbox, "r0") == 1
    out = capsys.readouterr().out
    assert "NOT checked: the inbox index" in out and str(target) in out
    assert reg.runs(FORGET_KIND)[-1]["details"]["index_problem"]
    assert "may have learned from them (unknown, not called clean): v1 (champion)" in out  # fail closed
    assert "no clean version on the champion v1's lineage to roll back to" in out
    assert SECRET.encode() in files["train"].read_bytes()  # what it could not find is still there, and said


def test_a_forget_that_finds_nothing_changes_no_run_file(loop, capsys):
    reg, inbox = loop
    _write(inbox / "capture-1.parquet", [_cap("r0", SECRET), _cap("r1", "other")], CAPTURE_SCHEMA)
    _cycle(reg, inbox)
    meta, files = _trained_run(reg)
    assert _forget(reg, inbox, "r1", "unknown") == 0
    assert "none of them had been used by a cycle" in capsys.readouterr().out
    assert SECRET.encode() in files["train"].read_bytes()
    assert replay_source(meta, redactions(reg.runs(FORGET_KIND))) == files["train"]
    assert reg.runs(FORGET_KIND)[-1]["details"]["redacted"] == []


def test_a_forget_says_how_many_of_its_requests_earlier_cycles_had_trained_on(loop, capsys):
    """Before: "forgot 3 of 4 request id(s)" whether or not cycles had trained on them, so an operator could
    not tell that models already held what those requests taught. Now it says how many had been used (their
    texts in a run folder's training/validation data: by capture text, or by the index's keyed hash when
    the capture file is gone) and that the weights keep it; the registry's forget run records the count."""
    reg, inbox = loop
    rows = [_cap("r0", SECRET), _cap("r1", "one"), _cap("r2", "never trained on")]
    _write(inbox / "capture-1.parquet", rows[:2], CAPTURE_SCHEMA)
    _write(inbox / "capture-2.parquet", rows[2:], CAPTURE_SCHEMA)
    _cycle(reg, inbox)
    _trained_run(reg)  # trained on SECRET and "one", not on r2's text
    (inbox / "capture-1.parquet").unlink()  # r0 and r1 are found by their keyed hashes only
    assert _forget(reg, inbox, "r0", "r1", "r2", "unknown") == 0
    out = capsys.readouterr().out
    assert "forgot 1 of 4 request id(s)" in out
    assert "2 of the 4 request(s) had already been used by earlier cycles" in out
    assert "3 training/validation row(s) with those texts removed from 2 file(s)" in out
    assert "trained on these 2 request(s) learned from them: their weights keep it" in out
    assert reg.runs(FORGET_KIND)[-1]["details"]["trained_on"] == 2


def test_a_forgotten_text_sealed_in_a_version_reference_is_named_and_exits_1(loop, capsys, tiny_model_dir):
    """A registered version's drift reference is sealed (manifest hash in the registry): not rewritten, so
    the forget names it and exits 1 instead of reporting success."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from refit.models import write_version

    reg, inbox = loop
    _write(inbox / "capture-1.parquet", [_cap("r0", SECRET), _cap("r1", "one")], CAPTURE_SCHEMA)
    _cycle(reg, inbox)
    reference = Reference(torch.zeros(2, 4), None, [SECRET, "one"], {})
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    version = write_version(
        inbox.parent / "v", model, tok, {"version_id": "vref", "recipe": "test"}, reference
    )
    reg.register(version)
    assert _forget(reg, inbox, "r0") == 1
    out = capsys.readouterr().out
    assert "NOT removed (sealed into the version): vref: 1 forgotten text(s) in its drift reference" in out
    assert f"`refit registry remove --version ID --root {reg.root} --yes`" in out  # the way out, said
    reg.verify("vref")  # still intact: the forget did not break its seal
    assert reg.runs(FORGET_KIND)[-1]["details"]["not_removed"]


# --- which versions learned from the forgotten texts -----------------------------------------------------
# Before: the forget said only "NOT removed: what models trained on these N request(s) learned from them",
# leaving the user to work out which versions those were and which one to roll back to. Now it names them
# from each version's refit.json (its run files and parent chain) and prints the promote line to the newest
# clean ancestor of the champion. Versions are written by the real version writer and registered.


@pytest.fixture(scope="module")
def tiny_pair(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return (
        AutoModelForSequenceClassification.from_pretrained(tiny_model_dir),
        AutoTokenizer.from_pretrained(tiny_model_dir),
    )


def _version(reg: Registry, tiny_pair, vid: str, parent: str | None, rows: list[tuple[str, int]]) -> Path:
    """Register `vid`, warm-started from `parent`, trained and validated by a cycle on `rows` (its run folder's
    files, written by the cycle's own writer); returns the run folder."""
    from refit.models import write_version

    run = reg.root.resolve() / "maintain" / f"run-{vid}"
    train = _write_split(run / "data" / "train.jsonl", rows, LABELS)
    val = _write_split(run / "data" / "validation.jsonl", rows[-1:], LABELS)
    meta = {
        "version_id": vid,
        "recipe": "maintain",
        "parent": parent,
        "labels": LABELS,
        "config": {"data": {"train": train, "validation": val}},
        "data": {"train": file_fingerprint(train, len(rows)), "validation": file_fingerprint(val, 1)},
    }
    model, tok = tiny_pair
    reg.register(write_version(reg.root.parent / "written" / vid, model, tok, meta))
    reg.promote(vid, "test")
    return run


def test_a_forget_names_the_versions_that_learned_and_the_clean_ancestor_to_roll_back_to(
    loop, capsys, tiny_pair
):
    reg, inbox = loop
    _write(inbox / "capture-1.parquet", [_cap("r0", SECRET), _cap("r1", "one")], CAPTURE_SCHEMA)
    _cycle(reg, inbox)
    _version(reg, tiny_pair, "v1", None, [("hello", 0), ("one", 1)])
    _version(reg, tiny_pair, "v2", "v1", [(SECRET, 0), ("other", 1)])  # trained on the text
    _version(reg, tiny_pair, "v3", "v2", [("later", 0), ("rows", 1)])  # not, but warm-started from v2
    assert reg.aliases()["champion"] == "v3"

    assert _forget(reg, inbox, "r0") == 0
    out = capsys.readouterr().out
    assert "versions that learned from them (their weights keep it): v2, v3 (champion)" in out
    assert "v3: warm-started from v2, which was trained on them" in out
    assert "newest clean ancestor of the champion, to roll back to: v1" in out
    details = reg.runs(FORGET_KIND)[-1]["details"]
    assert details["versions"] == {
        "learned": ["v2", "v3"],
        "unknown": [],
        "champion": "v3",
        "clean_ancestor": "v1",
    }

    # the printed line is a working command: it makes v1 the champion
    line = next(x.strip() for x in out.splitlines() if x.strip().startswith("refit registry promote"))
    assert f"--root {reg.root}" in line
    assert main(shlex.split(line)[1:]) == 0
    assert reg.aliases()["champion"] == "v1"
    capsys.readouterr()

    # forgotten again: v2's file no longer holds the text, but an earlier forget rewrote it: not called clean
    assert _forget(reg, inbox, "r0") == 0
    out = capsys.readouterr().out
    assert "versions that may have learned from them (unknown, not called clean): v2, v3" in out
    assert "already rewritten by forget run" in out
    assert "the champion v1 did not learn from them" in out


def test_a_forget_of_texts_no_version_trained_on_says_none_learned(loop, capsys, tiny_pair):
    reg, inbox = loop
    _write(inbox / "capture-1.parquet", [_cap("r0", SECRET), _cap("r1", "never trained on")], CAPTURE_SCHEMA)
    _cycle(reg, inbox)
    _version(reg, tiny_pair, "v1", None, [(SECRET, 0), ("one", 1)])
    _version(reg, tiny_pair, "v2", "v1", [("hello", 0), ("one", 1)])
    assert _forget(reg, inbox, "r1") == 0
    out = capsys.readouterr().out
    assert "no registered version learned from them" in out
    assert "the champion v2 did not learn from them" in out
    assert "may have learned" not in out and "roll back" not in out
    details = reg.runs(FORGET_KIND)[-1]["details"]["versions"]
    assert details == {"learned": [], "unknown": [], "champion": "v2", "clean_ancestor": None}


def test_a_version_whose_run_files_are_gone_is_unknown_never_clean(loop, capsys, tiny_pair):
    """Fail closed: v2's run folder was deleted, so what it was trained on cannot be checked; it and its
    descendant are "unknown", and the rollback target is the newest ancestor that can be checked."""
    import shutil

    reg, inbox = loop
    _write(inbox / "capture-1.parquet", [_cap("r0", SECRET)], CAPTURE_SCHEMA)
    _cycle(reg, inbox)
    _version(reg, tiny_pair, "v1", None, [("hello", 0), ("one", 1)])
    shutil.rmtree(_version(reg, tiny_pair, "v2", "v1", [(SECRET, 0), ("one", 1)]))
    _version(reg, tiny_pair, "v3", "v2", [("later", 0), ("rows", 1)])
    assert _forget(reg, inbox, "r0") == 0
    out = capsys.readouterr().out
    assert "no registered version is known to have learned from them" in out
    assert "versions that may have learned from them (unknown, not called clean): v2, v3 (champion)" in out
    assert "is gone: what it was trained on cannot be checked" in out
    assert "newest clean ancestor of the champion, to roll back to: v1" in out
    assert reg.runs(FORGET_KIND)[-1]["details"]["versions"]["unknown"] == ["v2", "v3"]


def test_a_champion_with_no_clean_ancestor_is_told_to_retrain_from_the_base_model(loop, capsys, tiny_pair):
    reg, inbox = loop
    _write(inbox / "capture-1.parquet", [_cap("r0", SECRET)], CAPTURE_SCHEMA)
    _cycle(reg, inbox)
    _version(reg, tiny_pair, "v1", None, [(SECRET, 0), ("one", 1)])
    _version(reg, tiny_pair, "v2", "v1", [("hello", 0), ("one", 1)])
    assert _forget(reg, inbox, "r0") == 0
    out = capsys.readouterr().out
    assert "versions that learned from them (their weights keep it): v1, v2 (champion)" in out
    assert "no clean version on the champion v2's lineage to roll back to: retrain from the base model" in out
    assert reg.runs(FORGET_KIND)[-1]["details"]["versions"]["clean_ancestor"] is None
