"""The inbox index keeps no text: what the maintenance loop can still train on is what is still on disk.

Before: the index kept every captured text, so deleting a capture file (a deletion request, a retention
policy) did not stop a late label from training on the deleted text. Cycles here are the cycle's own inbox
step against a real registry database (tests/unit/test_maintain_index.py's `_cycle`); no model is needed."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import stat

import pyarrow.parquet as pq
import pytest

from refit.cli import main
from refit.maintain.inbox import FORGOTTEN
from refit.maintain.index import FORMAT, INDEX_FILE, INDEX_KEY, KEY_FILE, file_stamp
from refit.registry import Registry
from refit.serve.capture import CAPTURE_SCHEMA, FEEDBACK_SCHEMA
from tests.unit.test_maintain_inbox import _cap, _fb, _now, _write
from tests.unit.test_maintain_index import _cycle, _index_db, _jsonl


@pytest.fixture
def loop(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    return Registry(tmp_path / "registry"), inbox


SECRET = "my address is 12 Secret Lane"  # a text that must leave the loop's memory with its file


def _index_bytes(reg) -> bytes:
    return (reg.root / "maintain" / INDEX_FILE).read_bytes()


def test_a_deleted_capture_file_is_forgotten_and_its_late_label_not_trained_on(loop):
    reg, inbox = loop
    _write(inbox / "capture-1.parquet", [_cap("r0", SECRET)], CAPTURE_SCHEMA)
    _write(inbox / "capture-2.parquet", [_cap("r1", "kept text")], CAPTURE_SCHEMA)
    first, _ = _cycle(reg, inbox)
    assert sorted(first.texts) == ["kept text", SECRET]
    assert SECRET.encode() not in _index_bytes(reg) and b"kept text" not in _index_bytes(reg)
    (inbox / "capture-1.parquet").unlink()  # the operator honours a deletion request
    _write(
        inbox / "feedback-1.parquet",
        [_fb("r0", "negative", _now(-1)), _fb("r1", "positive", _now(-1))],
        FEEDBACK_SCHEMA,
    )
    batch, _ = _cycle(reg, inbox)
    assert batch.labelled == [("kept text", 1)]
    assert batch.skipped == {FORGOTTEN: 1}
    assert f"skipped 1 {FORGOTTEN}" in batch.notes
    assert _cycle(reg, inbox)[0].files == []  # the label was used up: never trained on later


def test_a_capture_still_on_disk_under_another_name_is_still_found(loop):
    """The text is read from any file a finished cycle read with the same bytes (a copy kept elsewhere)."""
    reg, inbox = loop
    _write(inbox / "capture-1.parquet", [_cap("r0", "zero"), _cap("r1", "one")], CAPTURE_SCHEMA)
    _cycle(reg, inbox)
    (inbox / "capture-1.parquet").rename(inbox / "capture-1b.parquet")  # read as a copy: marked read
    assert _cycle(reg, inbox)[0].texts == []
    (inbox / "archive").mkdir()
    (inbox / "capture-1b.parquet").rename(inbox / "archive" / "c.parquet")  # moved where no cycle read it
    _write(inbox / "feedback-1.parquet", [_fb("r1", "negative", _now(-1))], FEEDBACK_SCHEMA)
    batch, _ = _cycle(reg, inbox)
    assert batch.labelled == [] and batch.skipped == {FORGOTTEN: 1}
    (inbox / "archive" / "c.parquet").rename(inbox / "capture-1b.parquet")  # back where a cycle read it
    _write(inbox / "feedback-2.parquet", [_fb("r0", "positive", _now(-1))], FEEDBACK_SCHEMA)
    assert _cycle(reg, inbox)[0].labelled == [("zero", 1)]


def test_a_capture_file_rewritten_without_one_request_forgets_only_that_request(loop):
    """Rows removed (or redacted) in place: the rewritten file is read as new (its requests are old: no new
    texts), the removed request's label is not trained on, the kept ones still join."""
    reg, inbox = loop
    path = inbox / "capture-1.parquet"
    _write(path, [_cap("r0", SECRET), _cap("r1", "one"), _cap("r2", "two")], CAPTURE_SCHEMA)
    _cycle(reg, inbox)
    table = pq.read_table(path)
    pq.write_table(table.filter([rid != "r0" for rid in table.column("request_id").to_pylist()]), path)
    at = _now(-1)
    rows = [_fb("r0", "negative", at), _fb("r2", "positive", at)]
    _write(inbox / "feedback-1.parquet", rows, FEEDBACK_SCHEMA)
    batch, _ = _cycle(reg, inbox)
    assert batch.texts == [] and batch.labelled == [("two", 1)]
    _write(inbox / "feedback-2.parquet", [_fb("r1", "negative", at)], FEEDBACK_SCHEMA)  # a later cycle
    batch, _ = _cycle(reg, inbox)
    assert batch.labelled == [("one", 0)] and batch.skipped == {}
    _write(inbox / "feedback-3.parquet", [_fb("r0", "positive", _now())], FEEDBACK_SCHEMA)  # a correction
    batch, _ = _cycle(reg, inbox)
    assert batch.labelled == [] and batch.skipped == {FORGOTTEN: 1}


def test_hashes_of_texts_are_keyed_by_a_private_per_registry_key(loop):
    """A plain sha256 of a short text can be reversed by hashing guesses: every hash of a text in the index
    is an HMAC under the registry's own key, which is owner-only and named (not kept) by each run's record."""
    reg, inbox = loop
    _jsonl(inbox / "a.jsonl", [("yes", "positive")])
    _write(inbox / "capture-1.parquet", [_cap("r0", "no")], CAPTURE_SCHEMA)
    _cycle(reg, inbox)
    key_file = reg.root / "maintain" / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((reg.root / "maintain" / INDEX_FILE).stat().st_mode) == 0o600
    db = _index_db(reg)
    (row_key,) = db.execute("SELECT key FROM rows").fetchone()
    (digest,) = db.execute("SELECT digest FROM captures").fetchone()
    guesses = {hashlib.sha256(t.encode()).hexdigest()[:32] for t in ("no", json.dumps(["yes", "positive"]))}
    assert row_key not in guesses and digest not in guesses
    record = reg.runs("maintain")[-1]["details"][INDEX_KEY]
    assert record["format"] == FORMAT and key_file.read_text().strip() not in json.dumps(record)
    # another registry hashes the same text differently
    other = Registry(reg.root.parent / "other")
    _cycle(other, inbox)
    assert _index_db(other).execute("SELECT digest FROM captures").fetchone()[0] != digest


def test_a_lost_key_rebuilds_the_index_under_a_new_one(loop):
    reg, inbox = loop
    _write(inbox / "capture-1.parquet", [_cap("r0", "zero")], CAPTURE_SCHEMA)
    _jsonl(inbox / "a.jsonl", [("good film", "positive")])
    _cycle(reg, inbox)
    (reg.root / "maintain" / KEY_FILE).unlink()
    _jsonl(inbox / "copy.jsonl", [("good film", "positive")])  # a copy: still not new after the rebuild
    _write(inbox / "feedback-1.parquet", [_fb("r0", "negative", _now(-1))], FEEDBACK_SCHEMA)
    batch, notes = _cycle(reg, inbox)
    assert any("key changed" in n for n in notes), notes
    assert batch.labelled == [("zero", 0)] and batch.texts == []
    assert _cycle(reg, inbox)[1] == []


# --- migration from the first format (texts in the index) ------------------------------------------------
_V1_SCHEMA = """
CREATE TABLE files (seq INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, path TEXT NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, kind TEXT NOT NULL);
CREATE TABLE rows (seq INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, key TEXT NOT NULL);
CREATE TABLE captures (seq INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, request_id TEXT NOT NULL, text TEXT);
CREATE TABLE feedback (seq INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, request_id TEXT NOT NULL,
    at TEXT NOT NULL, label INTEGER NOT NULL);
"""


def test_an_index_of_the_first_format_is_emptied_vacuumed_and_rebuilt_without_texts(loop):
    """Last session's registry: its index kept captured texts, and its runs' records have no format. The
    first cycle drops those tables and VACUUMs (the texts are gone from the file's bytes, free pages too),
    rebuilds from the files still in the inbox (a deleted capture file's text is forgotten), notes it once."""
    reg, inbox = loop
    caps = [inbox / "capture-1.parquet", inbox / "capture-2.parquet"]
    _write(caps[0], [_cap("r0", SECRET)], CAPTURE_SCHEMA)
    _write(caps[1], [_cap("r1", "kept text")], CAPTURE_SCHEMA)
    index = reg.root / "maintain" / INDEX_FILE
    index.parent.mkdir(parents=True)
    db = sqlite3.connect(index, isolation_level=None)
    db.executescript(_V1_SCHEMA)
    files = [str(p.resolve()) for p in caps]
    run_id = reg.start_run("maintain", {"files": files})
    for p in caps:
        st, sha = p.stat(), hashlib.sha256(p.read_bytes()).hexdigest()
        db.execute(
            "INSERT INTO files (run_id, path, size, mtime_ns, sha256, kind) "
            "VALUES (?, ?, ?, ?, ?, 'capture')",
            (run_id, str(p.resolve()), st.st_size, st.st_mtime_ns, sha),
        )
    db.executemany(
        "INSERT INTO captures (run_id, request_id, text) VALUES (?, ?, ?)",
        [(run_id, "r0", SECRET), (run_id, "r1", "kept text")],
    )
    db.close()
    assert SECRET.encode() in index.read_bytes()
    record = {"counts": {"files": 2, "captures": 2}, "sha256": {}, "file": file_stamp(index), "base": True}
    reg.finish_run(run_id, "no_action", {"files": files, "quarantined": [], INDEX_KEY: record})
    caps[0].unlink()  # deleted before the upgrade: its text must not survive in the index
    _write(
        inbox / "feedback-1.parquet",
        [_fb("r0", "negative", _now(-1)), _fb("r1", "positive", _now(-1))],
        FEEDBACK_SCHEMA,
    )
    batch, notes = _cycle(reg, inbox)
    assert any("previous format" in n and "vacuumed" in n for n in notes), notes
    assert batch.labelled == [("kept text", 1)] and batch.texts == []
    assert any("1 feedback label(s) match no captured request" in n for n in batch.notes)  # r0: unknown now
    data = index.read_bytes()
    assert SECRET.encode() not in data and b"kept text" not in data
    assert sqlite3.connect(index).execute("PRAGMA user_version").fetchone()[0] == FORMAT
    assert not [p for p in index.parent.iterdir() if p.name.startswith(INDEX_FILE + "-")]  # no journal left
    assert _cycle(reg, inbox)[1] == []  # once


# --- refit maintain forget ---------------------------------------------------------------------------------
def test_forget_by_request_id_removes_the_rows_from_the_capture_files(loop, capsys):
    """Without deleting whole files: the requests' rows leave the capture files (a file left empty is
    deleted), their late labels are not trained on, the other requests in those files still join theirs."""
    reg, inbox = loop
    _write(inbox / "capture-1.parquet", [_cap("r0", SECRET), _cap("r1", "one")], CAPTURE_SCHEMA)
    _write(inbox / "capture-2.parquet", [_cap("r2", SECRET + " again")], CAPTURE_SCHEMA)
    _cycle(reg, inbox)
    ids = inbox.parent / "ids.txt"
    ids.write_text("# deletion requests\nr0\n\nr2\nnever-seen\n")
    assert (
        main(
            ["maintain", "forget", "--ids", str(ids), "--registry.root", str(reg.root), "--inbox", str(inbox)]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "forgot 2 of 3 request id(s): 2 capture row(s) removed; 1 file(s) rewritten, 1 deleted" in out
    assert sorted(p.name for p in inbox.iterdir()) == ["capture-1.parquet"]
    assert SECRET.encode() not in (inbox / "capture-1.parquet").read_bytes()
    assert stat.S_IMODE((inbox / "capture-1.parquet").stat().st_mode) == 0o600
    at = _now(-1)
    rows = [_fb("r0", "negative", at), _fb("r1", "positive", at), _fb("r2", "positive", at)]
    _write(inbox / "feedback-1.parquet", rows, FEEDBACK_SCHEMA)
    batch, _ = _cycle(reg, inbox)
    assert batch.labelled == [("one", 1)] and batch.texts == []
    assert batch.skipped[FORGOTTEN] == 2


def test_forget_refuses_bad_input_with_exit_2(loop, capsys):
    reg, inbox = loop
    empty = inbox.parent / "empty.txt"
    empty.write_text("# nothing\n\n")
    for argv, said in [
        ([], "--ids FILE"),
        (["--ids", str(inbox.parent / "missing.txt")], "Cannot read 'ids' file"),
        (["--ids", str(empty)], "lists no request id"),
    ]:
        assert main(["maintain", "forget", *argv, "--registry.root", str(reg.root)]) == 2
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err, err
    ids = inbox.parent / "ids.txt"
    ids.write_text("r0\n")
    assert main(["maintain", "forget", "--ids", str(ids), "--registry.root", str(inbox.parent / "nope")]) == 2
    assert "Check --registry.root" in capsys.readouterr().err
    assert (
        main(["maintain", "forget", "--ids", str(ids), "--registry.root", str(reg.root), "--inbox", "nope/"])
        == 2
    )
    assert "Inbox folder not found: 'inbox'" in capsys.readouterr().err
