"""Signed request ids (refit.serve.request_ids): servers sharing a capture folder accept each other's ids as
feedback and refuse made-up ones (before: any 32-hex id was stored, and kept by every cycle after)."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets

from refit.serve.request_ids import KEY_FILE, RequestIds


def test_workers_and_later_runs_on_one_folder_check_each_others_ids(tmp_path):
    first, second = RequestIds(tmp_path), RequestIds(tmp_path)  # two workers (or a restart) on one folder
    ids = [first.new() for _ in range(50)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids) and len(set(ids)) == 50
    assert all(second.issued(i) for i in ids) and all(first.issued(i) for i in ids)
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == 0o600


def test_made_up_altered_and_foreign_ids_are_not_issued(tmp_path):
    ids = RequestIds(tmp_path)
    good = ids.new()
    assert not any(ids.issued(secrets.token_hex(16)) for _ in range(1000))  # odds of a pass: 1000 * 2^-48
    flipped = good[:-1] + ("0" if good[-1] != "0" else "1")
    assert not ids.issued(flipped) and not ids.issued(good[:-1]) and not ids.issued(good + "0")
    (tmp_path / "other").mkdir()
    assert not RequestIds(tmp_path / "other").issued(good)  # another capture folder, another key


def _signed(key: bytes) -> str:
    nonce = "0" * 20
    return nonce + hmac.new(key, nonce.encode(), hashlib.sha256).hexdigest()[:12]


def test_a_key_others_can_read_is_not_used(tmp_path, caplog):
    key = tmp_path / KEY_FILE
    key.write_bytes(b"k" * 32)
    key.chmod(0o644)  # readable by others: anyone could sign ids with it
    assert not RequestIds(tmp_path).issued(_signed(b"k" * 32)) and "not a private" in caplog.text
    key.chmod(0o600)
    assert RequestIds(tmp_path).issued(_signed(b"k" * 32))  # the same key, kept private, is used


def test_a_link_in_place_of_the_key_gives_each_process_its_own_key(tmp_path, caplog):
    os.symlink(tmp_path / "elsewhere", tmp_path / KEY_FILE)
    a, b = RequestIds(tmp_path), RequestIds(tmp_path)
    rid = a.new()
    assert a.issued(rid) and not b.issued(rid) and "cannot" in caplog.text
    assert not (tmp_path / "elsewhere").exists()  # the link was not followed to create a file


def _captures(path, ids: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from refit.serve import CAPTURE_SCHEMA

    n = len(ids)
    columns = {
        "request_id": ids,
        "at": ["2026-12-01T10:00:00Z"] * n,
        "version_id": ["v1"] * n,
        "text": ["t"] * n,
        "text_sha256": [None] * n,
        "prediction": [0] * n,
        "label": ["negative"] * n,
        "probs": [[1.0, 0.0]] * n,
    }
    pq.write_table(pa.table(columns, schema=CAPTURE_SCHEMA), path)


def test_ids_served_before_the_upgrade_still_take_their_late_labels(tmp_path):
    """Before: every id served before signed ids existed was refused as feedback, so labels arriving weeks
    after the upgrade were lost. Unsigned ids found in capture files from before the key are accepted."""
    old = [secrets.token_hex(16) for _ in range(30)]
    _captures(tmp_path / "capture-20261201T100000Z-aaaaaa.parquet", old[:20])
    _captures(tmp_path / "capture-20261201T110000Z-bbbbbb.parquet", old[20:])
    ids = RequestIds(tmp_path)  # the first upgraded server: makes the key now
    assert all(ids.issued(i) for i in old) and all(RequestIds(tmp_path).issued(i) for i in old)
    assert not any(ids.issued(secrets.token_hex(16)) for _ in range(200))  # made-up ones still refused
    # a capture file written well after the key (no pre-upgrade server could have): its unsigned ids are not
    late = [secrets.token_hex(16) for _ in range(5)]
    path = tmp_path / "capture-20261203T100000Z-cccccc.parquet"
    _captures(path, late)
    stamp = (tmp_path / KEY_FILE).stat().st_mtime + 7200
    os.utime(path, (stamp, stamp))
    assert not any(RequestIds(tmp_path).issued(i) for i in late)


def test_a_worker_that_dies_making_the_key_leaves_no_empty_key_behind(tmp_path, monkeypatch):
    """Before: the key file was created empty and written after, so a worker that died in between (here:
    its write fails) left an empty key, and every later server checked feedback against its own ids only
    ("not a private 32-byte file"). Now the key is written whole aside and linked into place."""
    import refit.serve.request_ids as request_ids

    real_write = os.write

    def dies(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(request_ids.os, "write", dies)
    try:
        lone = RequestIds(tmp_path)  # it serves on, with a key of its own
    except OSError:
        lone = None  # (before: the failed write escaped, the empty file stayed)
    monkeypatch.setattr(request_ids.os, "write", real_write)
    assert not (tmp_path / KEY_FILE).exists() or (tmp_path / KEY_FILE).stat().st_size == 32
    first, second = RequestIds(tmp_path), RequestIds(tmp_path)
    issued = first.new()
    assert second.issued(issued) and (tmp_path / KEY_FILE).stat().st_size == 32
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]  # no temporary file left beside it
    assert lone is None or not second.issued(lone.new())
