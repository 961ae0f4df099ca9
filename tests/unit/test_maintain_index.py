"""The inbox exactly once by content, and the inbox index that lets a cycle read only new files.

Cycles here are the maintenance cycle's own inbox step (`_read_and_open_run`: read, open the run, stage in
the index) against a real registry database, ended as the cycle ends them (`finish_run` with the run's
details); no model is needed. Each case failed open on the path-only rule before (the docstring says how)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from functools import partial
from pathlib import Path

import pytest

from refit.maintain.cycle import _read_and_open_run
from refit.maintain.inbox import FORGOTTEN, read_inbox
from refit.maintain.index import INDEX_FILE, INDEX_KEY
from refit.registry import Registry
from refit.serve.capture import CAPTURE_SCHEMA, FEEDBACK_SCHEMA
from tests.unit.test_maintain_inbox import LABELS, _cap, _fb, _now, _write


def _jsonl(path: Path, rows: list[tuple[str, str | None]]) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    return path


def _cycle(reg: Registry, inbox: Path, status: str | None = "no_action"):
    """One cycle's inbox step, then its end: `status` (None: killed before it ended, the run stays running)."""
    runs = reg.runs("maintain")
    for run in runs:  # what the cycle's setup does with a run a killed process left open
        if run["status"] == "running":
            reg.finish_run(run["id"], "abandoned", run["details"])
    read = partial(
        read_inbox, inbox, quarantined=set(), text_column="text", label_column="label", label_names=LABELS
    )
    batch, run_id, record, notes = _read_and_open_run(reg, runs, read, "v1")
    if status is not None:
        reg.finish_run(run_id, status, {"files": batch.files, "quarantined": [], INDEX_KEY: record})
    return batch, notes


@pytest.fixture
def loop(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    return Registry(tmp_path / "registry"), inbox


def _index_db(reg: Registry) -> sqlite3.Connection:
    return sqlite3.connect(reg.root / "maintain" / INDEX_FILE, isolation_level=None)


def test_a_copied_or_renamed_dropped_file_is_not_trained_on_again(loop):
    """Before: a file already trained on, copied or renamed under a new name, was read as new: its rows
    were trained on twice and filled the drift window again."""
    reg, inbox = loop
    _jsonl(inbox / "a.jsonl", [("good film", "positive"), ("dull film", "negative")])
    assert _cycle(reg, inbox)[0].labelled == [("good film", 1), ("dull film", 0)]
    (inbox / "copy.jsonl").write_bytes((inbox / "a.jsonl").read_bytes())
    (inbox / "a.jsonl").rename(inbox / "renamed.jsonl")
    batch, _ = _cycle(reg, inbox)
    assert batch.labelled == [] and batch.texts == []
    assert batch.skipped == {"files whose content was already read (copies; renamed or touched files)": 2}
    assert sorted(Path(f).name for f in batch.files) == ["copy.jsonl", "renamed.jsonl"]  # marked read
    assert _cycle(reg, inbox)[0].files == []  # not opened again


def test_a_file_that_extends_an_earlier_one_adds_only_its_new_rows(loop):
    """An exporter that appends to one file and saves it under a new name each day: before, every old row
    counted again each day. The same text with another label is a new row; a repeated row counts once."""
    reg, inbox = loop
    day1 = [("good film", "positive"), ("dull film", "negative")]
    _jsonl(inbox / "day1.jsonl", day1)
    _cycle(reg, inbox)
    _jsonl(
        inbox / "day2.jsonl", [*day1, ("new one", "positive"), ("new one", "positive"), ("dull film", None)]
    )
    batch, _ = _cycle(reg, inbox)
    assert batch.labelled == [("new one", 1)] and batch.texts == ["new one", "dull film"]
    assert batch.skipped == {"dropped rows already read (same text and label: copies, supersets, repeats)": 3}
    # in one cycle too: two new files, one the superset of the other
    _jsonl(inbox / "day3.jsonl", [("third", "negative")])
    _jsonl(inbox / "day4.jsonl", [("third", "negative"), ("fourth", "positive")])
    assert _cycle(reg, inbox)[0].labelled == [("third", 0), ("fourth", 1)]
    # a file appended in place under its old name: only the appended row
    with (inbox / "day4.jsonl").open("a") as f:
        f.write(json.dumps({"text": "fifth", "label": "negative"}) + "\n")
    assert _cycle(reg, inbox)[0].labelled == [("fifth", 0)]


def test_old_capture_files_are_not_reread_and_late_labels_still_join(loop):
    """Before: every cycle re-parsed every capture and feedback file ever written. Now only new files are
    opened; old captures (texts, hidden texts) and old feedback come from the index, by request id."""
    reg, inbox = loop
    _write(
        inbox / "capture-1.parquet", [_cap("r0", "zero"), _cap("r1", "one"), _cap("h", None)], CAPTURE_SCHEMA
    )
    _write(
        inbox / "feedback-0.parquet", [_fb("r9", "negative", _now(-30))], FEEDBACK_SCHEMA
    )  # before its capture
    first, _ = _cycle(reg, inbox)
    assert first.texts == ["zero", "one"] and first.labelled == []
    # made garbage of the same size and mtime: not parsed again (it would be quarantined), and the texts
    # its late labels need are read back only if its bytes are still those read: here they are not
    old = inbox / "capture-1.parquet"
    original, st = old.read_bytes(), old.stat()
    old.write_bytes(b"x" * st.st_size)
    os.utime(old, ns=(st.st_atime_ns, st.st_mtime_ns))
    at = _now(-20)
    _write(
        inbox / "feedback-1.parquet",
        [_fb("r0", "negative", at), _fb("r1", "positive", at), _fb("h", "positive", at)],
        FEEDBACK_SCHEMA,
    )
    _write(inbox / "capture-2.parquet", [_cap("r9", "nine")], CAPTURE_SCHEMA)
    batch, _ = _cycle(reg, inbox)
    assert sorted(Path(f).name for f in batch.files) == ["capture-2.parquet", "feedback-1.parquet"]
    assert batch.texts == ["nine"] and batch.quarantined == []
    assert batch.labelled == [("nine", 0)]  # 'h' has no stored text; r0 and r1: their file changed
    assert batch.skipped == {FORGOTTEN: 2}
    old.write_bytes(original)  # restored: a copy of what was read (adds nothing), and its texts are back
    # a later correction wins over the old label (latest `at`); one at the same time that disagrees drops it
    _write(
        inbox / "feedback-2.parquet",
        [_fb("r0", "positive", _now(-10)), _fb("r1", "negative", at)],
        FEEDBACK_SCHEMA,
    )
    batch, _ = _cycle(reg, inbox)
    assert batch.labelled == [("zero", 1)]
    assert batch.skipped == {
        "requests whose latest feedback rows disagree (dropped)": 1,
        "files whose content was already read (copies; renamed or touched files)": 1,
    }
    # an old request captured again with another text is dropped, and its text is not new
    _write(inbox / "capture-3.parquet", [_cap("r9", "not nine")], CAPTURE_SCHEMA)
    batch, _ = _cycle(reg, inbox)
    assert batch.texts == [] and batch.labelled == []
    assert batch.skipped == {"request ids captured with different texts (dropped)": 1}


@pytest.mark.parametrize("end", [None, "failed", "superseded"])
def test_a_cycle_that_did_not_finish_marks_nothing_read(loop, end):
    """Killed between the read and the commit (None: the run stays 'running'), failed or superseded: its
    staged rows are dropped by the next cycle, which reads the same files once."""
    reg, inbox = loop
    _jsonl(inbox / "a.jsonl", [("good film", "positive")])
    _write(inbox / "capture-1.parquet", [_cap("r0", "zero")], CAPTURE_SCHEMA)
    _write(inbox / "feedback-1.parquet", [_fb("r0", "negative", _now(-1))], FEEDBACK_SCHEMA)
    lost, _ = _cycle(reg, inbox, status=end)
    assert _index_db(reg).execute("SELECT count(*) FROM rows").fetchone()[0] == 1  # staged, not yet counted
    batch, _ = _cycle(reg, inbox)
    assert batch.files == lost.files and sorted(batch.labelled) == [("good film", 1), ("zero", 0)]
    assert _cycle(reg, inbox)[0].files == []
    assert [r["status"] for r in reg.runs("maintain")][:1] == [end or "abandoned"]


@pytest.mark.parametrize(
    "edit",
    [
        "DELETE FROM rows",  # a row forgotten: its text would be trained on again
        "UPDATE rows SET key = 'x' || key",
        "INSERT INTO rows (run_id, key) VALUES (1, 'forged')",
        "UPDATE files SET size = size + 1",
        "UPDATE captures SET digest = 'other text'",
        "UPDATE captures SET row = row + 1",
        "UPDATE captures SET file_seq = file_seq + 1",  # the capture's text would be looked for elsewhere
        "UPDATE feedback SET label = 1",
    ],
)
def test_an_edited_index_is_rebuilt_from_the_files_never_trusted(loop, edit):
    """Every cycle checks each done run's index rows against the record in its run row: an edited, deleted
    or added row makes the cycle rebuild the index from the inbox files (noted), never use it."""
    reg, inbox = loop
    _jsonl(inbox / "a.jsonl", [("good film", "positive")])
    _write(inbox / "capture-1.parquet", [_cap("r0", "zero"), _cap("r1", "one")], CAPTURE_SCHEMA)
    _write(inbox / "feedback-1.parquet", [_fb("r1", "negative", _now(-5))], FEEDBACK_SCHEMA)
    _cycle(reg, inbox)
    _index_db(reg).execute(edit)
    _jsonl(inbox / "more.jsonl", [("good film", "positive"), ("another", "negative")])  # extends a.jsonl
    _write(inbox / "feedback-2.parquet", [_fb("r0", "negative", _now(-1))], FEEDBACK_SCHEMA)
    batch, notes = _cycle(reg, inbox)
    assert any("does not match the registry" in n and "rebuilt" in n for n in notes), notes
    assert batch.labelled == [("another", 0), ("zero", 0)] and batch.texts == ["another"]
    assert _cycle(reg, inbox)[1] == []  # the rebuilt index is trusted again


def test_an_unreadable_index_file_is_set_aside_and_rebuilt(loop):
    reg, inbox = loop
    _jsonl(inbox / "a.jsonl", [("good film", "positive")])
    _cycle(reg, inbox)
    (reg.root / "maintain" / INDEX_FILE).write_bytes(b"not a database at all" * 100)
    _jsonl(inbox / "copy.jsonl", [("good film", "positive")])
    batch, notes = _cycle(reg, inbox)
    assert batch.labelled == [] and any("was unreadable" in n for n in notes)
    assert list((reg.root / "maintain").glob(f"{INDEX_FILE}.damaged-*"))


def test_a_registry_from_before_the_index_is_migrated_once(loop):
    """A registry whose done runs record only details['files']: the first cycle builds the index from those
    files (an old capture still joins a new label, a copy of an old file adds nothing), and only once."""
    reg, inbox = loop
    _jsonl(inbox / "a.jsonl", [("good film", "positive")])
    _write(inbox / "capture-1.parquet", [_cap("r0", "zero")], CAPTURE_SCHEMA)
    old = [str((inbox / n).resolve()) for n in ("a.jsonl", "capture-1.parquet")]
    run_id = reg.start_run("maintain", {"files": old})
    reg.finish_run(run_id, "no_action", {"files": old, "quarantined": []})  # the previous format
    _jsonl(inbox / "copy.jsonl", [("good film", "positive")])
    _write(inbox / "feedback-1.parquet", [_fb("r0", "negative", _now(-1))], FEEDBACK_SCHEMA)
    batch, notes = _cycle(reg, inbox)
    assert any("predate the inbox index" in n for n in notes), notes
    assert batch.labelled == [("zero", 0)] and batch.texts == []
    assert reg.runs("maintain")[-1]["details"][INDEX_KEY]["base"] is True
    batch, notes = _cycle(reg, inbox)
    assert batch.files == [] and notes == []


def test_an_index_of_format_2_is_converted_in_place_not_rebuilt(loop):
    """Format 2 kept each capture row's file sha256 (64 hex: the index grew 46%); format 3 names the file
    by its `files` row. A registry of format 2 is converted in place and still checked against its runs'
    records (same logical rows), so nothing read by earlier cycles is lost to a rebuild."""
    reg, inbox = loop
    _write(inbox / "capture-1.parquet", [_cap("r0", "zero"), _cap("r1", "one")], CAPTURE_SCHEMA)
    _cycle(reg, inbox)
    sha = hashlib.sha256((inbox / "capture-1.parquet").read_bytes()).hexdigest()
    db = _index_db(reg)  # what format 2 wrote: the capture file's sha256 in every capture row
    db.executescript(
        """
        CREATE TABLE c2 (seq INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, request_id TEXT NOT NULL,
            digest TEXT, file TEXT NOT NULL, row INTEGER NOT NULL);
        INSERT INTO c2 SELECT c.seq, c.run_id, c.request_id, c.digest, f.sha256, c.row
            FROM captures c JOIN files f ON f.seq = c.file_seq;
        DROP TABLE captures; ALTER TABLE c2 RENAME TO captures;
        CREATE INDEX captures_rid ON captures (request_id); CREATE INDEX captures_run ON captures (run_id);
        PRAGMA user_version = 2; VACUUM;
        """
    )
    db.close()
    run = reg.runs("maintain")[-1]
    record = {**run["details"][INDEX_KEY], "format": 2}
    reg.finish_run(run["id"], run["status"], {**run["details"], INDEX_KEY: record})
    before = (reg.root / "maintain" / INDEX_FILE).read_bytes().count(sha.encode())
    _write(inbox / "feedback-1.parquet", [_fb("r0", "negative", _now(-1))], FEEDBACK_SCHEMA)
    batch, notes = _cycle(reg, inbox)
    assert any("converted from format 2 to 3" in n for n in notes), notes
    assert not any("rebuilt" in n for n in notes), notes
    assert batch.labelled == [("zero", 0)]  # r0's text found through the converted row
    assert _index_db(reg).execute("PRAGMA user_version").fetchone()[0] == 3
    after = (reg.root / "maintain" / INDEX_FILE).read_bytes().count(sha.encode())
    assert (before, after) == (4, 2)  # files row + its index; format 2 added one per capture row
    assert _cycle(reg, inbox)[1] == []


# --- SQLite's rollback journal -------------------------------------------------------------------------
def _journals(reg: Registry) -> list[str]:
    return sorted(p.name for p in (reg.root / "maintain").iterdir() if p.name.startswith(INDEX_FILE + "-"))


_KILLED_IN_A_TRANSACTION = """
import os, signal, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA cache_size = 1")  # pages spill into the file before the commit: the journal is hot
db.execute("BEGIN IMMEDIATE")
db.executemany("INSERT INTO captures (run_id, request_id, digest, file_seq, row) VALUES (999, ?, 'x', 1, 0)",
               [(f"junk{i:06d}" * 8,) for i in range(20000)])
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_index_leaves_no_journal_after_a_cycle_and_a_killed_one_is_rolled_back(loop):
    """A cycle (new captures and feedback, a cycle with nothing new, a rebuild) leaves only the index and its
    key: SQLite's rollback journal exists only inside a transaction. A process killed inside one leaves its
    journal (that is what keeps the index whole), and whoever opens the index next rolls it back. Before,
    `refit maintain forget` opened it read-only: SQLite cannot roll back a read-only connection, so the
    forget found none of the index's hashes (silently: it scrubbed only by the texts it still found) and left
    the journal behind."""
    import subprocess
    import sys

    from refit.maintain.index import request_digests

    reg, inbox = loop
    _write(inbox / "capture-1.parquet", [_cap("r0", "zero"), _cap("r1", "one")], CAPTURE_SCHEMA)
    _write(inbox / "feedback-1.parquet", [_fb("r0", "negative", _now(-1))], FEEDBACK_SCHEMA)
    assert _cycle(reg, inbox)[0].labelled == [("zero", 0)]
    assert _journals(reg) == []
    _cycle(reg, inbox)  # nothing new
    _index_db(reg).execute("UPDATE captures SET row = row + 100")  # edited: the next cycle rebuilds
    _jsonl(inbox / "a.jsonl", [("good film", "positive")])
    assert any("rebuilt" in n for n in _cycle(reg, inbox)[1])
    assert _journals(reg) == []
    maintain = reg.root / "maintain"
    before = request_digests(maintain, {"r0", "r1"}).found
    assert set(before) == {"r0", "r1"}
    proc = subprocess.run([sys.executable, "-c", _KILLED_IN_A_TRANSACTION, str(maintain / INDEX_FILE)])
    assert proc.returncode == -9 and _journals(reg) == [INDEX_FILE + "-journal"]  # a hot journal
    assert request_digests(maintain, {"r0", "r1"}).found == before  # the index as last committed
    assert _journals(reg) == []
    assert _index_db(reg).execute("SELECT count(*) FROM captures WHERE run_id = 999").fetchone() == (0,)
    subprocess.run([sys.executable, "-c", _KILLED_IN_A_TRANSACTION, str(maintain / INDEX_FILE)])
    assert _journals(reg) == [INDEX_FILE + "-journal"]  # killed again: this time a cycle opens it next
    _write(inbox / "feedback-2.parquet", [_fb("r1", "positive", _now(-1))], FEEDBACK_SCHEMA)
    batch, notes = _cycle(reg, inbox)
    assert batch.labelled == [("one", 1)] and not any("rebuilt" in n for n in notes), notes
    assert _journals(reg) == []
    assert _index_db(reg).execute("SELECT count(*) FROM captures WHERE run_id = 999").fetchone() == (0,)
