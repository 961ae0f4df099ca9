"""Crafted data files are refused with a DataError naming the file, the line or row and the limit, never
a traceback. Each case crashed (or blew up memory) before refit.data parsed with limits: the same files
the maintenance inbox already quarantined, now refused by every recipe that reads data."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refit.cli import main
from refit.data import DEFAULT_LIMITS, ReadLimits, read_rows
from refit.errors import DataError
from tests.conftest import finetune_args

GOOD = '{"text": "fine", "label": 0}\n'


def _nested(tmp_path):
    p = tmp_path / "nested.jsonl"
    p.write_text(GOOD + '{"text": ' + "[" * 100_000 + "\n")
    return p


def test_deeply_nested_json_is_refused_naming_the_line(tmp_path):
    """Before: json.loads raised RecursionError out of read_rows."""
    with pytest.raises(DataError, match=r"nested\.jsonl, line 2: a JSON value is nested too deeply"):
        read_rows(_nested(tmp_path))


def test_a_jsonl_line_over_the_limit_is_refused_before_parsing(tmp_path):
    """Before: a line of any length was decoded and parsed."""
    p = tmp_path / "long.jsonl"
    p.write_text(GOOD + json.dumps({"text": "x" * DEFAULT_LIMITS.line_bytes}) + "\n")
    with pytest.raises(DataError, match=r"long\.jsonl, line 2: \d+ bytes, over the limit of 1048576"):
        read_rows(p)


def test_a_csv_field_over_128_kib_loads_and_one_over_the_limit_is_refused(tmp_path):
    """Before: any field over the csv module's default 128 KiB raised csv.Error (a traceback); now up to
    1 MiB loads, and a longer field (here a quoted one spanning many short lines) names its line."""
    ok = tmp_path / "ok.csv"
    ok.write_text("text,label\n" + "x" * 200_000 + ",1\n")
    assert read_rows(ok) == [{"text": "x" * 200_000, "label": "1"}]
    bad = tmp_path / "bad.csv"
    bad.write_text('text,label\n"' + ("y" * 999 + "\n") * 1100 + '",1\n')
    with pytest.raises(
        DataError, match=r"bad\.csv, line 2: not readable as CSV \(a field is over the limit of 1048576"
    ):
        read_rows(bad)
    assert read_rows(ok)  # the csv module's global limit is restored after each read, not left lowered


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        ("latin1.csv", "text,label\nfine,0\ncaf\u00e9,1\n".encode("latin-1"), 3),
        ("latin1.jsonl", (GOOD + '{"text": "caf\u00e9"}\n').encode("latin-1"), 2),
    ],
)
def test_non_utf8_bytes_are_refused_naming_the_line(tmp_path, name, content, line):
    """Before: a CSV's bad byte was reported without a line."""
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(DataError, match=rf"{name}, line {line}: not valid UTF-8"):
        read_rows(p)


def test_invalid_utf8_inside_a_parquet_string_is_a_data_error(tmp_path):
    """Before: Arrow does not check a string column's bytes on read, and to_pylist raised
    UnicodeDecodeError out of read_rows."""
    bad = b"\xff\xfe not utf-8"
    offsets = pa.array([0, len(bad)], pa.int32()).buffers()[1]
    text = pa.Array.from_buffers(pa.string(), 1, [None, offsets, pa.py_buffer(bad)])
    pq.write_table(pa.table({"text": text}), tmp_path / "bytes.parquet")
    with pytest.raises(DataError, match=r"bytes\.parquet: a text value is not valid UTF-8"):
        read_rows(tmp_path / "bytes.parquet")


def test_parquet_rows_over_the_limit_are_refused_from_the_footer(tmp_path):
    p = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"text": ["a"] * 11, "label": [0] * 11}), p)
    assert len(read_rows(p, ReadLimits(rows=11))) == 11
    with pytest.raises(DataError, match=r"rows\.parquet: holds 11 rows, over the limit of 10"):
        read_rows(p, ReadLimits(rows=10))


def test_a_parquet_decompression_bomb_is_refused_before_it_expands(tmp_path):
    """Before: a 49 KB file holding one 1 MiB string dictionary-encoded 2,100 times was decoded whole by
    read_rows (2.2 GB of text, then as many Python strings); now its expanded size is summed from the
    dictionary and it is refused under the default limit of 2 GiB."""
    big = pa.DictionaryArray.from_arrays(pa.array([0] * 2100, pa.int32()), pa.array(["x" * (1 << 20)]))
    pq.write_table(pa.table({"text": big}), tmp_path / "bomb.parquet")
    assert (tmp_path / "bomb.parquet").stat().st_size < 100_000
    with pytest.raises(DataError, match=r"bomb\.parquet: its text decodes to 2202009600 bytes, over the"):
        read_rows(tmp_path / "bomb.parquet")


def test_the_cli_exits_2_naming_the_crafted_file(tmp_path, tiny_model_dir, toy_data, capsys):
    """Through `refit finetune --data.train FILE`: exit 2, the file and line named, no traceback."""
    argv = finetune_args(tiny_model_dir, {**toy_data, "train": _nested(tmp_path)}, tmp_path / "run")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "nested.jsonl, line 2" in err and "nested too deeply" in err and "Traceback" not in err


EDGE_FILES = {
    "crlf.csv": b'text,label\r\nfine,0\r\n"two\r\nlines",1\r\n',
    "bom.csv": b'\xef\xbb\xbftext,label\n"a, quoted",0\nlast,1',
    "bom.jsonl": b'\xef\xbb\xbf{"text": "a", "label": 0}\n\n  \n{"text": "b", "label": 1}',
    "exact.jsonl": b'{"text": "' + b"x" * 28 + b'"}\n',  # 40 bytes: exactly the limit below
}


@pytest.mark.parametrize("name", sorted(EDGE_FILES))
def test_a_file_streamed_from_disk_reads_as_its_bytes_do(tmp_path, name):
    """read_rows streams JSONL and CSV a line at a time (the file is never held whole); the inbox parses
    the bytes it hashed. Both must give the same rows: line ends, a quoted CSV field spanning lines, a
    byte-order mark, blank lines, a last line without a line end, a line of exactly the limit."""
    from refit.data import parse_rows

    p = tmp_path / name
    p.write_bytes(EDGE_FILES[name])
    limits = ReadLimits(line_bytes=40)
    rows = read_rows(p, limits)
    assert rows == parse_rows(EDGE_FILES[name], p.suffix, limits)
    assert len(rows) == (1 if name == "exact.jsonl" else 2)
    assert rows[0]["text"] in {"fine", "a, quoted", "a", "x" * 28}


def test_a_line_one_byte_over_the_limit_is_refused_with_its_whole_length(tmp_path):
    """Streaming reads at most limit + 1 bytes of a line, then measures the rest without keeping it: the
    message gives the line's real length, on disk as from bytes."""
    from refit.data import parse_rows

    data = GOOD.encode() + b'{"text": "' + b"x" * 29 + b'"}\n' + GOOD.encode()
    p = tmp_path / "over.jsonl"
    p.write_bytes(data)
    limits = ReadLimits(line_bytes=40)
    with pytest.raises(DataError, match=r"over\.jsonl, line 2: 41 bytes, over the limit of 40"):
        read_rows(p, limits)
    with pytest.raises(DataError, match=r"^line 2: 41 bytes"):
        parse_rows(data, ".jsonl", limits)
    long = tmp_path / "long.csv"
    long.write_bytes(b"text\n" + b"y" * (3 << 20))  # no line end: measured in 1 MiB steps to the end
    with pytest.raises(DataError, match=rf"long\.csv, line 2: {3 << 20} bytes, over the limit of 40"):
        read_rows(long, limits)


def test_a_torn_last_line_is_named_as_such_and_an_earlier_bad_line_is_not(tmp_path):
    p = tmp_path / "torn.jsonl"
    p.write_text(GOOD + '{"text": "cut')
    with pytest.raises(
        DataError, match=r"torn\.jsonl, line 2: not valid JSON .*the last line and has no line"
    ):
        read_rows(p)
    p.write_text(GOOD + '{"text": "cut\n' + GOOD)
    with pytest.raises(DataError, match=r"line 2: not valid JSON \([^)]*\)\.$"):
        read_rows(p)


def test_fifos_are_named_as_such_and_never_opened(tmp_path):
    """A FIFO given as a data file, or lying in a folder of windows, would block a reader for ever. Before:
    read_rows and `refit benchmark --validation` said 'not found' of one that exists, and a drift folder
    skipped one silently (the report showed nothing of it)."""
    import os

    from refit.drift.windows import read_windows
    from refit.evaluate import evaluation_texts

    fifo = tmp_path / "win" / "stuck.jsonl"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    (tmp_path / "win" / "ok.jsonl").write_text(GOOD * 25)
    with pytest.raises(DataError, match=r"stuck\.jsonl is not a regular file \(a FIFO"):
        read_rows(fifo)
    with pytest.raises(DataError, match=r"--validation .*stuck\.jsonl is not a regular file"):
        evaluation_texts({"config": {"data": {}}}, override=str(fifo))
    windows = read_windows(tmp_path / "win")
    assert [(w.name, w.skipped is None) for w in windows] == [("ok", True), ("stuck", False)]
    assert "not a regular file" in windows[1].skipped
