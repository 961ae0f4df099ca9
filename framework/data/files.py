"""Reading labelled text from JSONL, CSV and Parquet files, with errors that name the file and line.

Every data file a recipe reads (training and evaluation splits, drift windows, golden sets, calibration
text) is someone's input, perhaps crafted, so decoding never escapes as anything but a DataError naming
the file, the line or row, and the limit: before, a deeply nested JSON line raised RecursionError, a CSV
field over 128 KiB raised csv.Error, and a Parquet file of a few KB could decode to gigabytes. Parsing
works on bytes (`parse_rows`), so the maintenance inbox, which reads each file once and hashes what it
parsed, shares this one decoder and adds only its own rules (schema, times, tighter limits).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from refit.data.labels import check_label_kinds
from refit.errors import DataError

__all__ = [
    "read_rows",
    "read_table",
    "parse_rows",
    "ReadLimits",
    "DEFAULT_LIMITS",
    "file_fingerprint",
    "SUFFIXES",
]

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


@dataclass(frozen=True)
class ReadLimits:
    """How much one file may hold before it is refused rather than decoded. The defaults are far above
    any classifier's data (the longest line of the 17 shared datasets is 21 KB) and far below what
    exhausts a machine's memory; a caller reading untrusted drops (the inbox) passes tighter ones."""

    line_bytes: int = 1024**2  # one JSONL/CSV line; a classifier's input is a few hundred tokens
    field_bytes: int = 1024**2  # one CSV field (the csv module's own default is 128 KiB)
    rows: int = 10_000_000  # rows of one Parquet file, from its footer
    values: int = 50_000_000  # leaf values of one Parquet file, from its footer
    decoded_bytes: int = 2 * 1024**3  # a Parquet file decoded (dictionary and RLE encodings expand)


DEFAULT_LIMITS = ReadLimits()


def _lines(stream: BinaryIO, limit: int) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, the line's bytes without its line end, whether it had one) for each line of `stream`.

    Read a line at a time so a file is never held whole (the rows read are the only copy), and never more
    than `limit` + 1 bytes of one line: a line past the limit is measured in 1 MiB steps, then refused.
    A newline byte never occurs inside a multi-byte UTF-8 character, so each line decodes on its own.
    """
    lineno = 0
    while raw := stream.readline(limit + 1):
        lineno += 1
        ended = raw.endswith(b"\n")
        if ended:
            raw = raw[:-1]
        elif len(raw) > limit:
            size = len(raw)
            while more := stream.readline(1 << 20):
                if more.endswith(b"\n"):
                    size += len(more) - 1
                    break
                size += len(more)
            raise DataError(f"line {lineno}: {size} bytes, over the limit of {limit} bytes per line.")
        yield lineno, raw, ended


def _decode(raw: bytes, lineno: int) -> str:
    try:  # utf-8-sig: a byte-order mark (Windows editors write one) is not part of the first row
        return raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"line {lineno}: not valid UTF-8 ({e.reason} at byte {e.start}).") from None


def _parse_jsonl(stream: BinaryIO, line_bytes: int, lines: list[int] | None = None) -> list[dict]:
    """`lines`, when given, receives the line number of each row (blank lines hold no row)."""
    rows = []
    for lineno, raw, ended in _lines(stream, line_bytes):
        line = _decode(raw, lineno)
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            torn = (
                ""
                if ended
                else "; it is the last line and has no line end: the file was cut off, or is still being "
                "written (give a window file only once its writer has closed it)"
            )
            raise DataError(f"line {lineno}: not valid JSON ({e.msg}){torn}.") from None
        except RecursionError:
            raise DataError(
                f"line {lineno}: a JSON value is nested too deeply to read (deeper than Python's recursion "
                f"limit of {sys.getrecursionlimit()}); a row is one flat object."
            ) from None
        if not isinstance(row, dict):
            raise DataError(f"line {lineno}: expected a JSON object, got {type(row).__name__}.")
        rows.append(row)
        if lines is not None:
            lines.append(lineno)
    return rows


def _parse_csv(
    stream: BinaryIO, line_bytes: int, field_bytes: int, lines: list[int] | None = None
) -> list[dict]:
    # lines keep their '\n' (a quoted field may hold one); a decoding error raised inside this generator
    # passes through the csv reader unchanged, naming its line
    text = (_decode(raw, n) + ("\n" if ended else "") for n, raw, ended in _lines(stream, line_bytes))
    reader = csv.DictReader(text)
    rows: list[dict] = []
    # the limit is the csv module's global; it is set for this read and put back (no lasting state)
    saved = csv.field_size_limit(field_bytes)
    start = 1
    try:
        reader.fieldnames  # noqa: B018 - reads the header row first, so `start` counts from the data rows
        while True:
            start = reader.reader.line_num + 1  # a quoted field may span lines: name where its row starts
            try:
                rows.append(next(reader))
                if lines is not None:
                    lines.append(start)
            except StopIteration:
                return rows
    except csv.Error as e:
        why = f"a field is over the limit of {field_bytes} bytes" if "field limit" in str(e) else e
        raise DataError(f"line {start}: not readable as CSV ({why}).") from None
    finally:
        csv.field_size_limit(saved)


def _parquet_table(data: bytes, limits: ReadLimits = DEFAULT_LIMITS):
    """A Parquet file's Arrow table, refused before anything expands past `limits`: a file of a few KB can
    decode to gigabytes (one long string dictionary-encoded, or a page of repeats compressed with zstd:
    a 49 KB file held 2.2 GB of text). Its footer gives the rows, leaf values and uncompressed page
    bytes; string columns are read dictionary-encoded and their expanded size summed before decoding."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(pa.BufferReader(data)).metadata
        if meta.num_rows > limits.rows:
            raise DataError(f"holds {meta.num_rows} rows, over the limit of {limits.rows} per file.")
        chunks = [
            meta.row_group(g).column(c) for g in range(meta.num_row_groups) for c in range(meta.num_columns)
        ]
        pages = sum(c.total_uncompressed_size for c in chunks)
        values = sum(c.num_values for c in chunks)
        if pages > limits.decoded_bytes or values > limits.values:
            raise DataError(
                f"decompresses to {pages} bytes in {values} values, over the limits of "
                f"{limits.decoded_bytes} bytes and {limits.values} values."
            )
        # plain types: a column stored as a dictionary (its Arrow schema says so) is read as its values
        plain = pa.schema(
            [
                f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f
                for f in pq.ParquetFile(pa.BufferReader(data)).schema_arrow
            ]
        )
        strings = [f.name for f in plain if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
        table = pq.ParquetFile(pa.BufferReader(data), read_dictionary=strings).read()
        expanded = 0
        for name in strings:
            for chunk in table.column(name).chunks:
                if pa.types.is_dictionary(chunk.type):
                    expanded += pc.sum(pc.binary_length(chunk.dictionary).take(chunk.indices)).as_py() or 0
        if expanded > limits.decoded_bytes:
            raise DataError(
                f"its text decodes to {expanded} bytes, over the limit of {limits.decoded_bytes}."
            )
        return table.cast(plain)
    except DataError:
        raise
    except Exception as e:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"cannot read as Parquet ({e}).") from None


def _table_rows(table) -> list[dict]:
    try:
        return table.to_pylist()
    except UnicodeDecodeError as e:  # Arrow does not check a string column's bytes on read
        raise DataError(
            f"a text value is not valid UTF-8 ({e.reason} at byte {e.start} of the value)."
        ) from None


def parse_rows(
    data: bytes,
    suffix: str,
    limits: ReadLimits = DEFAULT_LIMITS,
    check_parquet: Callable | None = None,
) -> list[dict]:
    """The rows of one file's bytes, `suffix` ('.jsonl', '.csv', ...) naming its format. A DataError's
    message starts with 'line N' or 'row N' where it has one and names no file (the caller does).
    `check_parquet(schema)` may refuse a Parquet file's Arrow schema before its rows are decoded."""
    suffix = suffix.lower()
    if suffix == ".parquet":
        table = _parquet_table(data, limits)
        if check_parquet is not None:
            check_parquet(table.schema)
        return _table_rows(table)
    if suffix not in SUFFIXES:
        raise DataError(f"unsupported file type '{suffix}'; use one of {', '.join(SUFFIXES)}.")
    return _parse_text(io.BytesIO(data), suffix, limits)  # BytesIO shares `data`'s buffer: no copy


def _parse_text(
    stream: BinaryIO, suffix: str, limits: ReadLimits, lines: list[int] | None = None
) -> list[dict]:
    if suffix == ".csv":
        return _parse_csv(stream, limits.line_bytes, limits.field_bytes, lines)
    return _parse_jsonl(stream, limits.line_bytes, lines)


def _located(where: str | Path, e: DataError) -> DataError:
    """`e` with the file named in front: 'FILE, line 3: ...' or 'FILE: ...'."""
    msg = str(e)
    sep = ", " if msg.startswith(("line ", "row ")) else ": "
    return DataError(f"{where}{sep}{msg}")


def read_rows(
    path: str | Path, limits: ReadLimits = DEFAULT_LIMITS, lines: list[int] | None = None
) -> list[dict]:
    """All rows of a JSONL, CSV or Parquet file as dicts; errors name the file (and line). `lines`, when
    given, receives each JSONL/CSV row's line number (left empty for Parquet), for messages about a row."""
    return _read(Path(path), limits, lines)


def _read(path: Path, limits: ReadLimits, lines: list[int] | None) -> list[dict]:
    """read_rows; `lines` receives each JSONL/CSV row's line number (left empty for Parquet)."""
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a data file: give a .jsonl, .csv or .parquet file in it.")
    if not path.is_file():
        if path.exists():  # opening a FIFO would block, a device never end: named as what it is
            raise DataError(f"{path} is not a regular file (a FIFO, socket or device): give a data file.")
        raise DataError(f"Data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: unsupported file type '{suffix}'; use one of {', '.join(SUFFIXES)}.")
    try:
        if suffix == ".parquet":  # Parquet is read from its footer first: random access to the whole file
            return parse_rows(path.read_bytes(), suffix, limits)
        with path.open("rb") as stream:  # JSONL and CSV stream: the file is never held whole
            return _parse_text(stream, suffix, limits, lines)
    except DataError as e:
        raise _located(path, e) from None


def _headerless_hint(path: Path, columns: list[str]) -> str:
    """A CSV without a header line has its first row read as the column names ("great film, 1"): say so,
    since 'Set data.text_column' cannot help there."""
    if path.suffix.lower() != ".csv" or not any(_is_number(c) or not c.strip() for c in columns):
        return ""
    return (
        " A CSV's first line is its header, and this one looks like a row of data: add a header line "
        "(e.g. text,label) at the top of the file."
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_table(path: str | Path, text_column: str, label_column: str | None) -> tuple[list[str], list]:
    """Texts and raw labels of one file (labels are None when `label_column` is None). A label column
    that mixes kinds of value (1 beside "negative") is refused here, where the file and lines are known."""
    path = Path(path)
    lines: list[int] = []
    rows = _read(path, DEFAULT_LIMITS, lines)
    if not rows:
        raise DataError(f"{path} holds no rows.")
    columns = list(rows[0])
    # Both missing columns in one message: a file with other column names lacks both, and naming
    # one at a time cost a new user a second failed run.
    missing = [] if text_column in rows[0] else [f"no text column '{text_column}'"]
    keys = [] if text_column in rows[0] else ["'data.text_column'"]
    if label_column is not None and label_column not in rows[0]:
        missing.append(f"no label column '{label_column}'")
        keys.append("'data.label_column'")
    if missing:
        raise DataError(
            f"{path}: {' and '.join(missing)}. Columns found: {', '.join(columns)}. Set {' and '.join(keys)}."
            + _headerless_hint(path, columns)
        )
    texts, labels = [], []
    for i, row in enumerate(rows, 1):
        text = row.get(text_column)
        if not isinstance(text, str):
            raise DataError(f"{path}, row {i}: '{text_column}' is {type(text).__name__}, expected text.")
        texts.append(text)
        labels.append(row.get(label_column) if label_column is not None else None)
    if label_column is not None:  # Parquet columns are typed: rows stand for lines there
        check_label_kinds(labels, lines or range(1, len(labels) + 1), str(path))
    return texts, labels


def file_fingerprint(path: str | Path, rows: int) -> dict:
    """sha256 and row count of a data file, for a version's lineage."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(Path(path).resolve()), "sha256": digest.hexdigest(), "rows": rows}
