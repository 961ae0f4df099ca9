"""The capture writer: rotating Parquet files named as the maintenance cycle expects, never blocking, and
dropping (counted, logged once) instead of failing when it cannot write."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from refit.serve.capture import (
    CAPTURE,
    CAPTURE_SCHEMA,
    FEEDBACK,
    FEEDBACK_SCHEMA,
    RotatingParquetWriter,
    being_written,
    capture_row,
    feedback_row,
    file_kind,
)

FINAL = re.compile(r"^capture-\d{8}T\d{6}Z-[0-9a-f]{6}\.parquet$")
# the open file names its owner (host ~ pid namespace, pid) so that a restarted server can clean it up
OPEN = re.compile(r"^\.capture-\d{8}T\d{6}Z-[0-9a-f]{6}@[A-Za-z0-9._-]+~\d+\.\d+\.parquet\.tmp$")


def rows(n: int, store_text: bool = True) -> list[dict]:
    return [
        capture_row(
            f"{i:032x}",
            "2026-01-01T00:00:00.000+00:00",
            "v1",
            f"text {i}",
            i % 2,
            "positive" if i % 2 else "negative",
            [0.25, 0.75],
            store_text,
        )
        for i in range(n)
    ]


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_writers_file_names_are_told_apart_by_the_one_naming_rule(tmp_path):
    """The inbox, `refit maintain forget` and the request-id check name the server's files through
    file_kind / being_written (before, each spelt "capture-" and ".parquet" again): the names the writer
    really gives are what those read."""
    writers = {
        kind: RotatingParquetWriter(tmp_path / kind, kind, schema, flush_seconds=0.05)
        for kind, schema in ((CAPTURE, CAPTURE_SCHEMA), (FEEDBACK, FEEDBACK_SCHEMA))
    }
    writers[CAPTURE].put(rows(1))
    writers[FEEDBACK].put([feedback_row(f"{0:032x}", "positive", "2026-01-01T00:00:00.000+00:00")])
    for kind, writer in writers.items():
        wait_for(lambda w=writer: w.in_open_file == 1)
        (dot,) = [p.name for p in (tmp_path / kind).iterdir()]
        assert file_kind(dot) is None and being_written(dot, kind), dot
        assert not being_written(dot, CAPTURE if kind == FEEDBACK else FEEDBACK)
        writer.close()
        (final,) = [p.name for p in (tmp_path / kind).iterdir()]
        assert file_kind(final) == kind and not being_written(final, kind), final
    for other in ("capture-1.jsonl", "captures.parquet", "x-capture-1.parquet", "feedback.parquet"):
        assert file_kind(other) is None, other
    assert file_kind("capture-1.PARQUET") == CAPTURE  # the suffix in any case, as the inbox always read it


def test_open_file_is_a_dot_file_until_rotation_by_rows(tmp_path):
    writer = RotatingParquetWriter(tmp_path, "capture", CAPTURE_SCHEMA, rotate_rows=4, flush_seconds=0.05)
    writer.put(rows(2))
    wait_for(lambda: writer.in_open_file == 2)
    names = [p.name for p in tmp_path.iterdir()]
    assert len(names) == 1 and OPEN.match(names[0]), names  # being written: invisible to readers
    writer.put(rows(9))
    writer.close()
    files = sorted(tmp_path.iterdir())
    assert all(FINAL.match(p.name) for p in files), [p.name for p in files]
    sizes = sorted(pq.read_metadata(p).num_rows for p in files)
    assert sum(sizes) == 11 and max(sizes) <= 4 and len(files) == 3
    table = pq.read_table(files[0])
    assert table.schema.remove_metadata().equals(CAPTURE_SCHEMA)


def test_rotation_by_seconds_finalises_without_shutdown(tmp_path):
    writer = RotatingParquetWriter(
        tmp_path, "capture", CAPTURE_SCHEMA, rotate_seconds=0.3, flush_seconds=0.05
    )
    writer.put(rows(3))
    wait_for(lambda: any(FINAL.match(p.name) for p in tmp_path.iterdir()))
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
    writer.close()
    assert sum(pq.read_metadata(p).num_rows for p in tmp_path.iterdir()) == 3


def test_row_makers_run_on_the_writer_and_texts_can_be_left_out(tmp_path):
    writer = RotatingParquetWriter(tmp_path, "capture", CAPTURE_SCHEMA)
    writer.put([lambda i=i: rows(5, store_text=False)[i] for i in range(5)])
    writer.close()
    table = pq.read_table(next(tmp_path.glob("capture-*.parquet"))).to_pylist()
    assert [r["request_id"] for r in table] == [f"{i:032x}" for i in range(5)]
    # no plain hash without the text either: a sha256 of a short text is reversed by guessing
    assert all(r["text"] is None and r["text_sha256"] is None for r in table)


def test_full_queue_drops_and_counts_instead_of_waiting(tmp_path):
    dropped = []
    writer = RotatingParquetWriter(
        tmp_path, "capture", CAPTURE_SCHEMA, max_queue=8, on_dropped=dropped.append
    )
    batch = rows(1)
    started = time.perf_counter()
    accepted = sum(writer.put(batch * 1) for _ in range(20000))
    elapsed = time.perf_counter() - started
    writer.close()
    assert writer.dropped > 0 and accepted + writer.dropped == 20000 and sum(dropped) == writer.dropped
    assert elapsed < 5  # never waited for the writer
    assert sum(pq.read_metadata(p).num_rows for p in tmp_path.glob("capture-*.parquet")) == accepted


def test_unwritable_folder_drops_rows_and_logs_once(tmp_path, caplog):
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    writer = RotatingParquetWriter(blocked, "feedback", FEEDBACK_SCHEMA, flush_seconds=0.02)
    with caplog.at_level(logging.WARNING, logger="refit.serve"):
        for i in range(5):
            assert writer.put([feedback_row(f"{i:032x}", "positive", "t")]) == 1  # accepted by the queue ...
            time.sleep(0.05)
        writer.close()
    assert writer.dropped == 5 and writer.written == 0  # ... and dropped by the writer, counted
    assert sum("feedback rows are being dropped" in r.getMessage() for r in caplog.records) == 1


def test_put_after_close_is_dropped_not_raised(tmp_path):
    writer = RotatingParquetWriter(tmp_path, "capture", CAPTURE_SCHEMA)
    writer.close()
    assert writer.put(rows(3)) == 0 and writer.dropped == 3


@pytest.mark.parametrize("prefix,schema", [("capture", CAPTURE_SCHEMA), ("feedback", FEEDBACK_SCHEMA)])
def test_empty_writer_leaves_no_file(tmp_path, prefix, schema):
    RotatingParquetWriter(tmp_path / "inbox", prefix, schema).close()
    assert not (tmp_path / "inbox").exists() or not list(Path(tmp_path / "inbox").iterdir())


@pytest.mark.parametrize("prefix,schema", [("capture", CAPTURE_SCHEMA), ("feedback", FEEDBACK_SCHEMA)])
def test_capture_and_feedback_files_are_owner_only_whatever_the_umask(tmp_path, prefix, schema):
    """Captured inputs and late labels are user data: files 0o600 and a new folder 0o700, even under umask 0."""
    import os
    import stat

    folder = tmp_path / "new" / "inbox"
    old = os.umask(0)
    try:
        writer = RotatingParquetWriter(folder, prefix, schema, flush_seconds=0.05)
        feedback = [feedback_row(f"{i:032x}", "positive", "t") for i in range(3)]
        data = rows(3) if prefix == "capture" else feedback
        writer.put(data)
        wait_for(lambda: writer.in_open_file == 3)
        (open_file,) = list(folder.iterdir())
        assert stat.S_IMODE(open_file.stat().st_mode) == 0o600  # while being written
        writer.close()
    finally:
        os.umask(old)
    (final,) = list(folder.iterdir())
    assert final.name.startswith(f"{prefix}-") and pq.read_metadata(final).num_rows == 3
    assert stat.S_IMODE(final.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_capture_folder_swapped_for_a_link_while_serving_is_refused(tmp_path, caplog):
    """Before: the writer re-resolved the folder's path for every new file, so an inbox replaced by a
    symbolic link mid-run sent captured user text wherever the link pointed. Now the folder is opened
    without following links: rows are dropped, counted and the log names the link; nothing lands there."""
    import os

    inbox, elsewhere = tmp_path / "inbox", tmp_path / "elsewhere"
    elsewhere.mkdir()
    writer = RotatingParquetWriter(inbox, "capture", CAPTURE_SCHEMA, rotate_rows=3, flush_seconds=0.02)
    writer.put(rows(3))
    wait_for(lambda: len(writer.finished) == 1)
    os.rename(inbox, tmp_path / "inbox-moved")
    os.symlink(elsewhere, inbox)
    with caplog.at_level(logging.WARNING, logger="refit.serve"):
        writer.put(rows(3))
        wait_for(lambda: writer.dropped == 3)
        writer.close()
    assert list(elsewhere.iterdir()) == [] and writer.written == 3
    assert any("became a symbolic link" in r.getMessage() for r in caplog.records)


def test_a_link_configured_as_the_capture_folder_at_start_is_followed(tmp_path):
    """An admin may point the inbox at another disk with a link before starting: that is honoured."""
    import os

    real = tmp_path / "bigdisk"
    real.mkdir()
    os.symlink(real, tmp_path / "inbox")
    writer = RotatingParquetWriter(tmp_path / "inbox", "capture", CAPTURE_SCHEMA, flush_seconds=0.02)
    writer.put(rows(2))
    writer.close()
    (final,) = list(real.iterdir())
    assert FINAL.match(final.name) and pq.read_metadata(final).num_rows == 2


def test_finalised_files_are_fsynced_before_and_after_the_rename(tmp_path, monkeypatch):
    """A power cut after the rename must not leave a named but empty file: the data is fsynced before the
    rename and the folder after it. (Power loss cannot be staged here; the calls are observed instead.)"""
    import os
    import stat

    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd):
        mode = os.fstat(fd).st_mode
        synced.append("folder" if stat.S_ISDIR(mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    writer = RotatingParquetWriter(tmp_path, "feedback", FEEDBACK_SCHEMA, flush_seconds=0.02)
    writer.put([feedback_row(f"{i:032x}", "positive", "t") for i in range(2)])
    writer.close()
    assert synced == ["file", "folder"] and len(writer.finished) == 1


def test_a_failure_mid_file_never_counts_its_rows_as_both_written_and_dropped(tmp_path):
    """Disk full staged for real: a subprocess with a file-size limit (RLIMIT_FSIZE; SIGXFSZ ignored, so
    writes fail with EFBIG like ENOSPC). Before: rows were counted written at each flush and again dropped
    when their file failed later, so written + dropped (746) exceeded the rows put (400) and /metrics
    claimed rows that exist nowhere. Now: written == the rows in finalised files, written + dropped ==
    put, and nothing half-written is left behind."""
    import json
    import subprocess
    import sys

    script = """
import json, resource, signal, sys, time
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (8000, 8000))
from refit.serve.capture import FEEDBACK_SCHEMA, RotatingParquetWriter, feedback_row
w = RotatingParquetWriter(sys.argv[1], "feedback", FEEDBACK_SCHEMA, rotate_rows=1000, flush_rows=10,
                          flush_seconds=0.01)
for i in range(400):
    w.put([feedback_row(f"{i:032x}", "positive" * (1 + i // 100), "2026-01-01T00:00:00.000+00:00")])
    time.sleep(0.001)
w.close()
print(json.dumps({"written": w.written, "dropped": w.dropped}))
"""
    folder = tmp_path / "inbox"
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    on_disk = sum(pq.read_metadata(p).num_rows for p in folder.glob("feedback-*.parquet"))
    assert counts["dropped"] > 0, "the size limit never bit: this test tests nothing"
    assert counts["written"] == on_disk and counts["written"] + counts["dropped"] == 400
    assert not list(folder.glob(".*")) and "File too large" in done.stderr


def test_cleaning_spares_the_open_file_of_a_live_writer_in_this_process(tmp_path):
    """clean_abandoned at a second server's start-up in the same process (same pid) must not delete the
    first server's open file; once that writer is gone without finalising, the file is deleted."""
    from refit.serve.capture import clean_abandoned

    writer = RotatingParquetWriter(tmp_path, "capture", CAPTURE_SCHEMA, flush_seconds=0.05)
    writer.put(rows(2))
    wait_for(lambda: writer.in_open_file == 2)
    (open_file,) = [p.name for p in tmp_path.iterdir()]
    assert clean_abandoned(tmp_path) == [] and (tmp_path / open_file).exists()
    writer.close()
    assert clean_abandoned(tmp_path) == [] and not (tmp_path / open_file).exists()  # finalised, not deleted
    (tmp_path / open_file).write_bytes(b"left by an earlier process with this pid")
    assert clean_abandoned(tmp_path) == [(open_file, 40)] and not (tmp_path / open_file).exists()


def test_feedback_stamps_never_tie_within_a_process():
    """Two labels posted for one request in one call were stamped alike (to the millisecond), and the cycle
    drops a request whose latest labels tie: the correction was lost. Each stamp is now later than the one
    before it, at the precision written and compared (microseconds), and stays with the clock."""
    from datetime import datetime, timezone

    from refit.serve.capture import FeedbackClock

    clock = FeedbackClock()
    stamps = [clock() for _ in range(2000)]  # faster than the clock's milliseconds move
    times = [datetime.fromisoformat(s) for s in stamps]
    assert all(a < b for a, b in zip(times, times[1:]))
    assert all(s == t.isoformat(timespec="microseconds") for s, t in zip(stamps, times))
    assert abs((times[-1] - datetime.now(timezone.utc)).total_seconds()) < 1  # no drift ahead


def test_close_says_when_the_writer_could_not_finish_in_time(tmp_path):
    """Before: close() returned None whether or not the writer had finished, so a server on a hung disk
    logged "shut down cleanly" while its queued rows died with the process. Row makers that take 50 ms
    each stand in for the slow disk (they run on the writer thread, as the server's do)."""

    def slow(i: int):
        def make() -> dict:
            time.sleep(0.05)
            return rows(i + 1)[i]

        return make

    w = RotatingParquetWriter(tmp_path, "capture", CAPTURE_SCHEMA)
    w.put([slow(i) for i in range(40)])  # 2 s of work
    assert w.close(timeout=0.2) is False and w.backlog > 0
    assert w.close(timeout=30) is True  # it goes on and finishes: every row in one finalised file
    assert w.written == 40 and len(list(tmp_path.glob("capture-*.parquet"))) == 1
