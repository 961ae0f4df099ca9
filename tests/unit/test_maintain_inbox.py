"""The maintenance cycle's inbox reader attacked with crafted files (the inbox is writable by more than the
server). Each case failed open before its fix (the docstring says how): every file is refused or skipped
with a counted reason, the valid files beside it are still read, and nothing else changes what the
cycle would train on. Real Parquet/JSONL files in a real folder; no model is needed."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refit.maintain.forget import forget_requests
from refit.maintain.inbox import (
    DUPLICATE,
    MAX_FILE_BYTES,
    MAX_LINE_BYTES,
    MAX_ROWS,
    REREAD,
    REREAD_REWRITTEN,
    read_inbox,
)
from refit.maintain.known import InboxEntries, in_memory
from refit.serve.capture import CAPTURE_SCHEMA, FEEDBACK_SCHEMA, capture_row

LABELS = ["negative", "positive"]


def _now(minutes: float = 0) -> str:
    return (datetime.now(timezone.utc) + timedelta(minutes=minutes)).isoformat(timespec="milliseconds")


def _cap(rid: str, text: str | None, at: str | None = None) -> dict:
    return {
        "request_id": rid,
        "at": at or _now(),
        "version_id": "v1",
        "text": text,
        "text_sha256": hashlib.sha256((text or "").encode()).hexdigest(),
        "prediction": 1,
        "label": "positive",
        "probs": [0.4, 0.6],
    }


def _fb(rid: str, label: str, at: str) -> dict:
    return {"request_id": rid, "label": label, "at": at}


def _write(path: Path, rows: list[dict], schema=None) -> Path:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def _read(folder: Path, done: InboxEntries | None = None):
    """A cycle's read after finished cycles that read `done` (nothing by default)."""
    return read_inbox(
        folder,
        known=in_memory(done),
        quarantined=set(),
        text_column="text",
        label_column="label",
        label_names=LABELS,
    )


def _good(folder: Path) -> None:
    """A valid capture of r0/r1 and their labels: must be read whatever is beside it."""
    _write(folder / "capture-a.parquet", [_cap("r0", "good zero"), _cap("r1", "good one")], CAPTURE_SCHEMA)
    _write(
        folder / "feedback-a.parquet",
        [_fb("r0", "negative", _now(-1)), _fb("r1", "positive", _now(-1))],
        FEEDBACK_SCHEMA,
    )


GOOD = [("good zero", 0), ("good one", 1)]


# --- item 1: conflicting feedback ---------------------------------------------------------------------
def test_conflicting_feedback_is_decided_by_time_not_by_file_name(tmp_path):
    """Before: the label in the file sorting last won ('feedback-b' over 'feedback-a'), whatever the time:
    a correction written first in name order was lost. Now the latest `at` wins."""
    _write(tmp_path / "capture-a.parquet", [_cap("r0", "which is it")], CAPTURE_SCHEMA)
    _write(tmp_path / "feedback-a.parquet", [_fb("r0", "positive", _now(-1))], FEEDBACK_SCHEMA)  # correction
    _write(tmp_path / "feedback-b.parquet", [_fb("r0", "negative", _now(-60))], FEEDBACK_SCHEMA)  # older
    assert _read(tmp_path).labelled == [("which is it", 1)]
    # ... and the other way round: the name order does not matter
    (tmp_path / "feedback-a.parquet").rename(tmp_path / "feedback-c.parquet")
    assert _read(tmp_path).labelled == [("which is it", 1)]


def test_feedback_rows_with_the_same_latest_time_and_different_labels_drop_the_request(tmp_path):
    """Before: the last row read won. A tie cannot say which is the correction: the request is dropped from
    the labelled window and counted; an older disagreeing row does not matter."""
    _good(tmp_path)
    _write(tmp_path / "capture-b.parquet", [_cap("r9", "tied")], CAPTURE_SCHEMA)
    at = _now(-2)
    rows = [_fb("r9", "negative", _now(-30)), _fb("r9", "positive", at), _fb("r9", "negative", at)]
    _write(tmp_path / "feedback-b.parquet", rows, FEEDBACK_SCHEMA)
    batch = _read(tmp_path)
    assert sorted(batch.labelled) == sorted(GOOD)
    assert batch.skipped == {"requests whose latest feedback rows disagree (dropped)": 1}
    assert any("disagree" in n for n in batch.notes)


# --- item 4: crafted files -----------------------------------------------------------------------------
def test_feedback_and_captures_from_the_future_are_skipped_and_counted(tmp_path):
    """Before: a row stamped in 2099 was used (and, once time decides conflicts, would win every one)."""
    _good(tmp_path)
    _write(tmp_path / "feedback-b.parquet", [_fb("r1", "negative", _now(60 * 24 * 365))], FEEDBACK_SCHEMA)
    _write(tmp_path / "capture-b.parquet", [_cap("r7", "from tomorrow", _now(60 * 24))], CAPTURE_SCHEMA)
    batch = _read(tmp_path)
    assert sorted(batch.labelled) == sorted(GOOD) and sorted(batch.texts) == ["good one", "good zero"]
    assert batch.skipped == {
        "feedback rows stamped in the future": 1,
        "capture rows stamped in the future": 1,
    }


def test_a_request_id_captured_twice_with_different_texts_is_dropped(tmp_path):
    """Before: the capture file sorting last replaced the text of a real request, so the real request's
    label went to the crafted text. Now the request is dropped; an identical copy is one request."""
    _good(tmp_path)
    _write(
        tmp_path / "capture-b.parquet", [_cap("r1", "attacker text"), _cap("r0", "good zero")], CAPTURE_SCHEMA
    )
    batch = _read(tmp_path)
    assert batch.labelled == [("good zero", 0)] and batch.texts == ["good zero"]
    assert batch.skipped == {
        "request ids captured with different texts (dropped)": 1,
        "duplicate capture rows of one request (kept once)": 1,
    }


def test_a_copy_of_an_already_read_capture_or_feedback_file_adds_nothing(tmp_path):
    """Before: a copy of a capture (or feedback) file read by an earlier cycle, under a new name, made its
    requests new again: their texts re-entered drift and their labels were trained on twice."""
    _good(tmp_path)
    seen = _read(tmp_path).entries  # a finished cycle read capture-a and feedback-a
    assert _read(tmp_path, seen).labelled == []
    (tmp_path / "capture-z.parquet").write_bytes((tmp_path / "capture-a.parquet").read_bytes())
    batch = _read(tmp_path, seen)
    assert batch.labelled == [] and batch.texts == []
    (tmp_path / "feedback-z.parquet").write_bytes((tmp_path / "feedback-a.parquet").read_bytes())
    assert _read(tmp_path, seen).labelled == []  # nor does a copy of an already read feedback file


def test_rows_a_finished_cycle_read_are_not_called_duplicates_after_a_forget_rewrote_their_file(tmp_path):
    """Before: after `refit maintain forget` rewrote a capture file, the next cycle noted its untouched rows
    as "duplicate capture rows of one request" (270 in an end-to-end run): they were rows the index
    already knew. Now they are counted as already read, in a rewritten file; a new file repeating an old
    request is counted as already read elsewhere, and two rows of one request in new data stay duplicates."""
    rows = [_cap("r0", "good zero"), _cap("r1", "good one"), _cap("r2", "good two"), _cap("r3", "three")]
    _write(tmp_path / "capture-a.parquet", rows, CAPTURE_SCHEMA)
    seen = _read(tmp_path).entries  # a finished cycle read capture-a
    assert forget_requests(tmp_path, {"r0"}).rewritten == [str(tmp_path / "capture-a.parquet")]
    _write(tmp_path / "capture-b.parquet", [_cap("r2", "good two"), _cap("r9", "new"), _cap("r9", "new")])
    batch = _read(tmp_path, seen)
    assert batch.texts == ["new"] and batch.labelled == []
    assert batch.skipped == {REREAD_REWRITTEN: 3, REREAD: 1, DUPLICATE: 1}
    assert f"skipped 3 {REREAD_REWRITTEN}" in batch.notes
    assert "forget" in REREAD_REWRITTEN and "duplicate" not in REREAD_REWRITTEN + REREAD


def test_serve_files_of_another_format_version_are_quarantined(tmp_path):
    """Before: any Parquet named capture-*/feedback-* with request_id and text/label columns was read,
    whatever else it held or lacked (a feedback file without `at`, a label column of floats)."""
    _good(tmp_path)
    _write(tmp_path / "feedback-b.parquet", [{"request_id": "r1", "label": "negative"}])  # no 'at'
    _write(tmp_path / "feedback-c.parquet", [{"request_id": "r0", "label": 1.0, "at": _now(-1)}])
    _write(tmp_path / "capture-b.parquet", [{**_cap("r5", "v2 row"), "schema": 2}])
    batch = _read(tmp_path)
    assert sorted(batch.labelled) == sorted(GOOD)
    reasons = {Path(q["file"]).name: q["reason"] for q in batch.quarantined}
    assert set(reasons) == {"feedback-b.parquet", "feedback-c.parquet", "capture-b.parquet"}
    assert "another format version" in reasons["feedback-b.parquet"]
    assert "expected string" in reasons["feedback-c.parquet"]


def test_labels_of_another_label_set_and_bad_times_quarantine_their_file(tmp_path):
    _good(tmp_path)
    _write(tmp_path / "feedback-b.parquet", [_fb("r0", "spam", _now(-1))], FEEDBACK_SCHEMA)
    _write(tmp_path / "feedback-c.parquet", [_fb("r1", "negative", "yesterday")], FEEDBACK_SCHEMA)
    _write(tmp_path / "feedback-d.parquet", [_fb("r1", "negative", "2026-01-01T00:00:00")], FEEDBACK_SCHEMA)
    batch = _read(tmp_path)
    assert sorted(batch.labelled) == sorted(GOOD)
    reasons = {Path(q["file"]).name: q["reason"] for q in batch.quarantined}
    assert "'spam'" in reasons["feedback-b.parquet"] and "row 1" in reasons["feedback-b.parquet"]
    assert "UTC offset" in reasons["feedback-c.parquet"] and "UTC offset" in reasons["feedback-d.parquet"]


def test_a_unicode_digit_label_is_quarantined_not_a_crash(tmp_path):
    """Before: '²' passed to_label_ids' isdigit() test, then int('²') raised ValueError: a crafted feedback
    or dropped file crashed every cycle (`refit serve` refuses it, a file in the inbox was not checked);
    an Arabic-Indic one was silently taken for label 1."""
    _good(tmp_path)
    _write(tmp_path / "feedback-b.parquet", [_fb("r0", "\u00b2", _now(-1))], FEEDBACK_SCHEMA)
    (tmp_path / "dropped.jsonl").write_text(json.dumps({"text": "t", "label": "\u0661"}) + "\n")  # Arabic 1
    batch = _read(tmp_path)
    assert sorted(batch.labelled) == sorted(GOOD)
    assert sorted(Path(q["file"]).name for q in batch.quarantined) == ["dropped.jsonl", "feedback-b.parquet"]


def test_a_capture_row_edited_after_it_was_written_is_skipped(tmp_path):
    """Before: a row whose text was changed (its text_sha256 no longer matching) was trained on as captured."""
    _good(tmp_path)
    edited = {**_cap("r5", "what was served"), "text": "what someone wrote in"}
    _write(tmp_path / "capture-b.parquet", [edited, _cap("r6", "untouched")], CAPTURE_SCHEMA)
    batch = _read(tmp_path)
    assert sorted(batch.texts) == ["good one", "good zero", "untouched"]
    assert batch.skipped == {"capture rows whose text does not match its text_sha256 (edited)": 1}


def test_huge_lines_huge_files_and_non_utf8_are_quarantined(tmp_path):
    """Before: a JSONL line or a file of any size was read whole into memory."""
    _good(tmp_path)
    (tmp_path / "huge-line.jsonl").write_text(json.dumps({"text": "x" * (MAX_LINE_BYTES + 1)}) + "\n")
    (tmp_path / "latin1.jsonl").write_bytes(
        json.dumps({"text": "caf\u00e9"}, ensure_ascii=False).encode("latin-1") + b"\n"
    )
    with open(tmp_path / "huge.jsonl", "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    batch = _read(tmp_path)
    assert sorted(batch.labelled) == sorted(GOOD) and sorted(batch.texts) == ["good one", "good zero"]
    reasons = {Path(q["file"]).name: q["reason"] for q in batch.quarantined}
    assert set(reasons) == {"huge-line.jsonl", "latin1.jsonl", "huge.jsonl"}
    assert "line 1" in reasons["huge-line.jsonl"] and "UTF-8" in reasons["latin1.jsonl"]
    assert "limit" in reasons["huge.jsonl"] and all(q["sha256"] for q in batch.quarantined)


def test_content_that_crashed_the_decoders_is_quarantined_not_a_crash(tmp_path):
    """Before: nested JSON (RecursionError) and a long CSV field (csv.Error; now one over 1 MiB) escaped the reader as
    non-DataErrors and crashed every cycle, with a traceback, for as long as the file sat in the inbox;
    invalid UTF-8 inside a Parquet string and a Parquet file of more rows than any server writes must
    stay refused (the second was read whole, however many rows it decoded to)."""
    _good(tmp_path)
    bad = b"\xff\xfe not utf-8"
    offsets = pa.array([0, len(bad)], pa.int32()).buffers()[1]
    text = pa.Array.from_buffers(pa.string(), 1, [None, offsets, pa.py_buffer(bad)])
    pq.write_table(pa.table({"text": text}), tmp_path / "bytes-in-a-string.parquet")
    (tmp_path / "nested.jsonl").write_text('{"text": ' + "[" * 100_000 + "\n")
    (tmp_path / "long-field.csv").write_text('text\n"' + ("x" * 999 + "\n") * 1100 + '"\n')  # > 1 MiB
    pq.write_table(
        pa.table({"text": pa.array(["a"] * (MAX_ROWS + 1)).dictionary_encode()}), tmp_path / "rows.parquet"
    )
    batch = _read(tmp_path)
    assert sorted(batch.labelled) == sorted(GOOD) and sorted(batch.texts) == ["good one", "good zero"]
    reasons = {Path(q["file"]).name: q["reason"] for q in batch.quarantined}
    assert set(reasons) == {"bytes-in-a-string.parquet", "nested.jsonl", "long-field.csv", "rows.parquet"}
    assert "UTF-8" in reasons["bytes-in-a-string.parquet"] and "nested" in reasons["nested.jsonl"]
    assert "CSV" in reasons["long-field.csv"] and "rows" in reasons["rows.parquet"]


def test_a_parquet_decompression_bomb_is_refused_before_it_expands(tmp_path):
    """Before: a 49 KB Parquet file holding one 1 MiB string dictionary-encoded 2,100 times was decoded
    whole (2.2 GB in memory) before anything looked at it. Now its expanded size is summed from the
    dictionary and the file quarantined; measured in a fresh process by Arrow's peak allocation."""
    import subprocess
    import sys

    big = pa.DictionaryArray.from_arrays(pa.array([0] * 2100, pa.int32()), pa.array(["x" * (1 << 20)]))
    pq.write_table(pa.table({"text": big}), tmp_path / "bomb.parquet")
    assert (tmp_path / "bomb.parquet").stat().st_size < 100_000
    script = (
        "import json, sys, pyarrow as pa; from pathlib import Path; from refit.maintain.inbox import read_inbox; "
        "b = read_inbox(Path(sys.argv[1]), quarantined=set(), text_column='text', "
        "label_column='label', label_names=['negative', 'positive']); "
        "print(json.dumps({'q': [q['reason'] for q in b.quarantined], 'texts': len(b.texts), "
        "'peak': pa.default_memory_pool().max_memory()}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["texts"] == 0 and len(result["q"]) == 1 and "decodes to 2202009600 bytes" in result["q"][0]
    assert result["peak"] < 200 * 1024**2, result


def test_links_and_fifos_in_the_inbox_are_skipped_never_followed_or_waited_on(tmp_path):
    """Before: a symbolic link named like a data file was followed (it read a file outside the inbox,
    recorded under the target's path), and a FIFO swapped in after the listing blocked the cycle forever."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    _good(inbox)
    outside = tmp_path / "secret.jsonl"
    outside.write_text(json.dumps({"text": "not for training", "label": "positive"}) + "\n")
    (inbox / "linked.jsonl").symlink_to(outside)
    os.mkfifo(inbox / "pipe.jsonl")
    done = threading.Event()
    result = {}

    def read():
        result["batch"] = _read(inbox)
        done.set()

    threading.Thread(target=read, daemon=True).start()
    if not done.wait(20):
        with open(inbox / "pipe.jsonl", "wb"):  # unblock the reader so the test process can end
            pass
        pytest.fail("the inbox reader blocked on a FIFO")
    batch = result["batch"]
    assert sorted(batch.labelled) == sorted(GOOD) and "not for training" not in batch.texts
    assert batch.skipped == {"entries that are not readable regular files (links, FIFOs, ...)": 2}
    assert all(str(outside) not in f for f in batch.files) and batch.quarantined == []


def test_files_appearing_while_the_cycle_reads_are_left_whole_to_the_next_cycle(tmp_path):
    """A writer renaming new files in while the reader runs: each batch reads whole files only, every file
    it lists was parsed from the bytes it hashed, and no row is lost or read twice across batches."""

    def writer():
        for i in range(200):
            tmp = tmp_path / f".capture-{i:04d}.parquet.tmp"
            _write(tmp, [_cap(f"w{i}", f"text {i}")], CAPTURE_SCHEMA)
            tmp.rename(tmp_path / f"capture-{i:04d}.parquet")

    thread = threading.Thread(target=writer)
    thread.start()
    seen = InboxEntries()
    texts: list[str] = []
    reads = 0
    while thread.is_alive():
        batch = _read(tmp_path, seen)
        assert batch.quarantined == [] and batch.skipped == {}
        seen.update(batch.entries)
        texts += batch.texts
        reads += 1
    thread.join()
    batch = _read(tmp_path, seen)
    texts += batch.texts
    written = len(list(tmp_path.glob("capture-*.parquet")))
    assert written == 200 and reads > 1
    assert sorted(texts) == sorted(f"text {i}" for i in range(written))


def test_capture_files_with_and_without_the_plain_text_hash_are_both_read(tmp_path):
    """Serve no longer writes a plain sha256 when it does not store the text (a guessable hash); a capture
    file written before that (text null, plain hash kept) must still be read like a new one, not quarantined."""
    old = {**_cap("r7", None), "text_sha256": hashlib.sha256(b"a short secret").hexdigest()}
    _write(tmp_path / "capture-old.parquet", [old, _cap("r8", "stored before")], CAPTURE_SCHEMA)
    new = [
        capture_row("r9", _now(), "v1", "not stored", 1, "positive", [0.4, 0.6], store_text=False),
        capture_row("r10", _now(), "v1", "stored now", 1, "positive", [0.4, 0.6], store_text=True),
    ]
    assert new[0]["text_sha256"] is None and new[1]["text_sha256"] is not None
    _write(tmp_path / "capture-new.parquet", new, CAPTURE_SCHEMA)
    fb = [_fb(r, "positive", _now(-1)) for r in ("r7", "r8", "r9", "r10")]
    _write(tmp_path / "feedback-a.parquet", fb, FEEDBACK_SCHEMA)
    batch = _read(tmp_path)
    assert batch.quarantined == [] and not batch.skipped
    assert sorted(batch.texts) == ["stored before", "stored now"]
    assert sorted(batch.labelled) == [("stored before", 1), ("stored now", 1)]
    assert set(batch.entries.captures) == {"r7", "r8", "r9", "r10"}
