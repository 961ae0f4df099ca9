"""Reading labelled text from JSONL, CSV and Parquet files, with errors that name the file and line."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

from refit.errors import DataError

__all__ = ["read_rows", "read_table", "file_fingerprint", "SUFFIXES"]

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:  # utf-8-sig: a byte-order mark (Windows editors write one) is not part of the first row
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}, line {lineno}: not valid UTF-8 ({e.reason}).") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                torn = (
                    "; it is the last line and has no line end: the file was cut off, or is still being "
                    "written (give a window file only once its writer has closed it)"
                    if not raw.endswith(b"\n")
                    else ""
                )
                raise DataError(f"{path}, line {lineno}: not valid JSON ({e.msg}){torn}.") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {lineno}: expected a JSON object, got {type(row).__name__}.")
            rows.append(row)
    return rows


def _read_csv(path: Path) -> list[dict]:
    try:
        # utf-8-sig: with a byte-order mark, plain utf-8 reads the first column as '\ufefftext', which then
        # "is not found" among columns that print as 'text'
        with path.open(newline="", encoding="utf-8-sig") as f:
            return list(csv.DictReader(f))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e.reason}).") from None


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{path}: cannot read as Parquet ({e}).") from None


def read_rows(path: str | Path) -> list[dict]:
    """All rows of a JSONL, CSV or Parquet file as dicts; errors name the file (and line)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a data file: give a .jsonl, .csv or .parquet file in it.")
    if not path.is_file():
        raise DataError(f"Data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return _read_jsonl(path)
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".parquet":
        return _read_parquet(path)
    raise DataError(f"{path}: unsupported file type '{suffix}'; use one of {', '.join(SUFFIXES)}.")


def read_table(path: str | Path, text_column: str, label_column: str | None) -> tuple[list[str], list]:
    """Texts and raw labels of one file (labels are None when `label_column` is None)."""
    path = Path(path)
    rows = read_rows(path)
    if not rows:
        raise DataError(f"{path} holds no rows.")
    columns = list(rows[0])
    if text_column not in rows[0]:
        raise DataError(
            f"{path}: no text column '{text_column}'. Columns found: {', '.join(columns)}. "
            "Set 'data.text_column'."
        )
    if label_column is not None and label_column not in rows[0]:
        raise DataError(
            f"{path}: no label column '{label_column}'. Columns found: {', '.join(columns)}. "
            "Set 'data.label_column'."
        )
    texts, labels = [], []
    for i, row in enumerate(rows, 1):
        text = row.get(text_column)
        if not isinstance(text, str):
            raise DataError(f"{path}, row {i}: '{text_column}' is {type(text).__name__}, expected text.")
        texts.append(text)
        labels.append(row.get(label_column) if label_column is not None else None)
    return texts, labels


def file_fingerprint(path: str | Path, rows: int) -> dict:
    """sha256 and row count of a data file, for a version's lineage."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(Path(path).resolve()), "sha256": digest.hexdigest(), "rows": rows}
