"""Cutting production inputs into windows: one per file of a folder, every N rows, or per time period."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from refit.data import DEMO_NAME, SUFFIXES, demo_dir, read_rows, to_label_ids
from refit.data.labels import check_label_kinds
from refit.errors import DataError

__all__ = ["Window", "check_window_labels", "read_windows", "Period"]

Period = Literal["hour", "day", "week", "month"]
# a window's labels only score its accuracy: the drift tests need none
_WITHOUT_LABELS = "to check the windows without their labels, pass --label_column null"
_FORMATS = {"hour": "%Y-%m-%dT%H:00", "day": "%Y-%m-%d", "week": "%G-W%V", "month": "%Y-%m"}
# Every window is held in memory (as Python strings: several times the file's bytes) before any is tested:
# more than this in one check is refused up front rather than left to exhaust the machine's memory.
MAX_DATA_BYTES = 1024**3


@dataclass
class Window:
    """A batch of production texts checked together; labels where they have already arrived."""

    name: str
    texts: list[str]
    labels: list | None = None
    source: str = ""
    skipped: str | None = None  # why this window was not tested (too small, ...)
    meta: dict = field(default_factory=dict)


def _parse_time(value, where: str) -> datetime:
    """A row's time. Numbers are Unix seconds; a bool, NaN or a number beyond the platform's dates is refused
    like any unreadable time (they ended in OverflowError/OSError/ValueError tracebacks, and True was 1970)."""
    if isinstance(value, datetime):
        return value
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return datetime.fromtimestamp(value)
        if not isinstance(value, (bool, int, float)):  # a string, or a Parquet date
            return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        pass
    raise DataError(
        f"{where}: cannot read time {value!r}; use ISO 8601 (2026-11-22T10:00:00) or Unix seconds."
    )


def _files(path: Path) -> list[Path]:
    if str(path) == DEMO_NAME:  # the bundled demo: in-style test reviews, then the shifted chat messages
        return [demo_dir() / "test.jsonl", demo_dir() / "shifted.jsonl"]
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
        if not any(p.is_file() for p in files):
            raise DataError(f"{path} holds no data files ({', '.join(SUFFIXES)}).")
        return files  # a FIFO or device among them is a skipped window (read_windows), never opened
    if path.exists():  # a FIFO or device would block or never end: named as what it is, not "not found"
        raise DataError(f"--data {path} is not a regular file or folder (a FIFO, socket or device).")
    raise DataError(
        f"Data not found: --data {path} (looked for {path.absolute()}); give a .jsonl, .csv or .parquet file, "
        f"a folder of them (one window per file) or '{DEMO_NAME}'."
    )


def _from_rows(
    rows: list[dict], source: Path, text_column: str, label_column: str | None
) -> tuple[list, list]:
    texts, labels = [], []
    for i, row in enumerate(rows, 1):
        text = row.get(text_column)
        if not isinstance(text, str):
            raise DataError(
                f"{source}, row {i}: no text in column '{text_column}' (columns: {', '.join(row)})."
            )
        texts.append(text)
        labels.append(row.get(label_column) if label_column else None)
    return texts, labels


def _served(rows: list[dict]) -> bool:
    """A capture file of `refit serve` (request_id, prediction, label, ...): its `label` is the label the
    model served, not a true one, so the window is read unlabelled; scoring it would report agreement
    with the served model as accuracy. True labels of served requests arrive later as feedback, which
    `refit maintain` joins to their captures."""
    return bool(rows) and {"request_id", "prediction", "label"} <= rows[0].keys()


def _check_kinds(labels: list, lines: list[int], file: Path) -> None:
    """refit.data's one rule for a file's labels (one kind of value, no whitespace twins): refused for the
    whole run, not as a skipped window, since the texts are fine and only the labels need fixing."""
    try:
        check_label_kinds(labels, lines or range(1, len(labels) + 1), str(file))  # Parquet: rows
    except DataError as e:
        raise DataError(f"{e} Or, {_WITHOUT_LABELS}.") from None


def check_window_labels(windows: list[Window], label_names: list[str]) -> None:
    """Refuse a labelled window holding a label outside the version's `label_names` (an unknown name, an id
    out of range), read as refit.data.to_label_ids reads evaluation files. Before, such a window's accuracy
    was silently left out of the report. Skipped windows and a version without label names are not checked."""
    if not label_names:
        return
    for w in windows:
        if w.labels is None or w.skipped:
            continue
        for row, value in enumerate(w.labels, 1):
            try:
                to_label_ids([value], label_names)
            except DataError:
                raise DataError(
                    f"window '{w.name}' ({w.source}), its row {row}: label {value!r} is not one of the "
                    f"version's labels: {', '.join(label_names)} (or their integer ids "
                    f"0-{len(label_names) - 1}). Fix the label or, {_WITHOUT_LABELS}."
                ) from None


def read_windows(
    path: str | Path,
    text_column: str = "text",
    label_column: str | None = "label",
    window: int = 0,
    by_time: Period | None = None,
    time_column: str = "timestamp",
    min_size: int = 20,
) -> list[Window]:
    """Windows in order. A folder gives one window per file unless `window`/`by_time` regroup the rows;
    'refit-demo' gives the bundled demo's test reviews and its shifted chat messages.

    Windows under `min_size`, and files that cannot be read, are kept but marked skipped with the reason,
    so a report shows them and one bad file does not stop the check of the rest.
    Labels are kept only for windows where every row has one, and never from a serve capture file (its
    `label` is the served prediction). A file whose labels break refit.data's label
    rule (1 beside "negative") is refused (DataError); check_window_labels checks them against a version.
    """
    path = Path(path)
    groups: dict[str, list[tuple[str, object]]] = {}
    broken: list[Window] = []
    files = _files(path)
    for odd in [f for f in files if not f.is_file()]:  # opening a FIFO would block, a device never end
        files.remove(odd)
        broken.append(
            Window(
                odd.stem,
                [],
                None,
                str(odd),
                skipped=f"{odd} is not a regular file (a FIFO, socket, device or folder): not read",
            )
        )
    total = sum(f.stat().st_size for f in files)
    if total > MAX_DATA_BYTES:
        raise DataError(
            f"--data {path} holds {total / 1024**2:.0f} MiB, over the {MAX_DATA_BYTES / 1024**2:.0f} MiB one drift "
            "check reads (every window is held in memory): check a period at a time, or a sample."
        )
    for file in files:
        lines: list[int] = []
        try:
            rows = read_rows(file, lines=lines)
            labelled = label_column if not _served(rows) else None
            texts, labels = _from_rows(rows, file, text_column, labelled)
        except DataError as e:  # one bad file must not stop the check of all the others
            broken.append(Window(file.stem, [], None, str(file), skipped=str(e)))
            continue
        if labelled:  # readable, but labels that are read some way would score a wrong accuracy
            _check_kinds(labels, lines, file)
        if by_time:
            for i, (row, text, label) in enumerate(zip(rows, texts, labels), 1):
                if time_column not in row:
                    raise DataError(f"{file}, row {i}: no time column '{time_column}' for --by_time.")
                key = _parse_time(row[time_column], f"{file}, row {i}").strftime(_FORMATS[by_time])
                groups.setdefault(key, []).append((text, label))
        elif window:
            pairs = list(zip(texts, labels))
            for start in range(0, len(pairs), window):
                groups[f"{file.stem}[{start}:{start + len(pairs[start : start + window])}]"] = pairs[
                    start : start + window
                ]
        else:
            groups[file.stem] = list(zip(texts, labels))
    windows = []
    for name in sorted(groups) if by_time else groups:
        pairs = groups[name]
        labels = [lab for _, lab in pairs]
        w = Window(
            name, [t for t, _ in pairs], labels if all(lab is not None for lab in labels) else None, str(path)
        )
        if len(w.texts) < min_size:
            w.skipped = f"{len(w.texts)} inputs, fewer than the minimum of {min_size}"
        windows.append(w)
    return windows + broken
