"""What a cycle reads from the inbox: dropped files, served captures and late feedback labels.

Three kinds of file live in the inbox folder (names starting with '.' are partial writes and are skipped):
- dropped files (`*.jsonl`, `*.csv`, `*.parquet`, ...): one input per row in `text_column`, with an optional
  label in `label_column`;
- captures (`capture-*.parquet`, written by `refit serve`): request_id, text (null when texts are not
  stored), prediction, probabilities, ...;
- feedback (`feedback-*.parquet`): request_id -> label (a label name or an integer id as a string).

A feedback row labels the captured row with the same request_id, whichever file either sits in, so a
label that arrives days after its request still becomes training data. A (capture, feedback) pair is used
by the first cycle that has read both files: exactly once.

A file that cannot be used (unreadable, no text column, a label outside the model's label set, no rows)
is quarantined: recorded with the reason, skipped by every later cycle (until its content changes), and
never blocks the valid files beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from refit.data import SUFFIXES, read_rows, to_label_ids
from refit.errors import DataError
from refit.io import sha256_file

__all__ = ["InboxBatch", "read_inbox", "inbox_files"]

CAPTURE_PREFIX, FEEDBACK_PREFIX = "capture-", "feedback-"


@dataclass
class InboxBatch:
    """The new data of one cycle."""

    files: list[str] = field(
        default_factory=list
    )  # new files read (resolved paths); marked read by a done cycle
    quarantined: list[dict] = field(default_factory=list)  # {"file", "sha256", "reason"}
    texts: list[str] = field(default_factory=list)  # every new input with a stored text (drift, reference)
    labelled: list[tuple[str, int]] = field(default_factory=list)  # new labelled rows as (text, label id)
    notes: list[str] = field(default_factory=list)


def inbox_files(folder: Path) -> list[Path]:
    """Complete data files of the inbox, in name order (dot-files are partial writes)."""
    return [
        p
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SUFFIXES
    ]


def _kind(path: Path) -> str:
    if path.suffix.lower() == ".parquet" and path.name.startswith(CAPTURE_PREFIX):
        return "capture"
    if path.suffix.lower() == ".parquet" and path.name.startswith(FEEDBACK_PREFIX):
        return "feedback"
    return "dropped"


def _rows(path: Path, required: tuple[str, ...]) -> list[dict]:
    rows = read_rows(path)
    if not rows:
        raise DataError(f"{path} holds no rows.")
    missing = [c for c in required if c not in rows[0]]
    if missing:
        raise DataError(
            f"{path}: no column {', '.join(repr(c) for c in missing)}; columns found: {', '.join(rows[0])}."
        )
    return rows


def _read_dropped(path: Path, text_column: str, label_column: str, names: list[str]):
    texts, labelled = [], []
    for i, row in enumerate(_rows(path, (text_column,)), 1):
        text = row.get(text_column)
        if not isinstance(text, str):
            raise DataError(f"{path}, row {i}: no text in column '{text_column}'.")
        texts.append(text)
        label = row.get(label_column)
        if label is None or label == "":
            continue
        try:
            labelled.append((text, to_label_ids([label], names)[0]))
        except DataError as e:
            raise DataError(f"{path}, row {i}: {e}") from None
    return texts, labelled


def _read_capture(path: Path) -> dict[str, str | None]:
    out = {}
    for i, row in enumerate(_rows(path, ("request_id", "text")), 1):
        if not isinstance(row["request_id"], str) or not row["request_id"]:
            raise DataError(f"{path}, row {i}: no request_id.")
        if row["text"] is not None and not isinstance(row["text"], str):
            raise DataError(
                f"{path}, row {i}: 'text' is {type(row['text']).__name__}, expected text or null."
            )
        out[row["request_id"]] = row["text"]
    return out


def _read_feedback(path: Path, names: list[str]) -> dict[str, int]:
    out = {}
    for i, row in enumerate(_rows(path, ("request_id", "label")), 1):
        try:
            out[str(row["request_id"])] = to_label_ids([row["label"]], names)[0]
        except DataError as e:
            raise DataError(f"{path}, row {i}: {e}") from None
    return out


def read_inbox(
    folder: Path,
    *,
    seen: set[str],
    quarantined: set[tuple[str, str]],
    text_column: str,
    label_column: str,
    label_names: list[str],
) -> InboxBatch:
    """The new data in `folder`: files not in `seen` (resolved paths read by finished cycles) and not
    quarantined with the same content ((path, sha256) pairs), plus the labels new feedback gives to old
    captures (and old feedback to new captures)."""
    batch = InboxBatch()
    captures: dict[str, tuple[str | None, bool]] = {}  # request_id -> (text, from a new file)
    feedback: dict[str, tuple[int, bool]] = {}
    for path in inbox_files(folder):
        key = str(path.resolve())
        is_new = key not in seen
        digest = sha256_file(path) if any(q[0] == key for q in quarantined) else None
        if digest is not None and (key, digest) in quarantined:
            continue
        kind = _kind(path)
        if not is_new and kind == "dropped":
            continue
        try:
            if kind == "capture":
                captures.update({rid: (text, is_new) for rid, text in _read_capture(path).items()})
            elif kind == "feedback":
                feedback.update(
                    {rid: (label, is_new) for rid, label in _read_feedback(path, label_names).items()}
                )
            else:
                texts, labelled = _read_dropped(path, text_column, label_column, label_names)
                batch.texts += texts
                batch.labelled += labelled
        except DataError as e:
            if is_new:
                batch.quarantined.append(
                    {"file": key, "sha256": digest or sha256_file(path), "reason": str(e)}
                )
            else:  # an old file that went bad since: its pairs are skipped, with a note
                batch.notes.append(f"an earlier file can no longer be read and was skipped: {e}")
            continue
        if is_new:
            batch.files.append(key)
    for text, new in captures.values():
        if new and text is not None:
            batch.texts.append(text)
    hidden = sum(1 for text, new in captures.values() if new and text is None)
    if hidden:
        batch.notes.append(f"{hidden} captured input(s) without a stored text (privacy) are not used")
    for rid, (label, fb_new) in feedback.items():
        text, cap_new = captures.get(rid, (None, False))
        if text is not None and (fb_new or cap_new):
            batch.labelled.append((text, label))
    unmatched = sum(1 for rid, (_, new) in feedback.items() if new and rid not in captures)
    if unmatched:
        batch.notes.append(
            f"{unmatched} feedback label(s) match no captured request yet; kept for later cycles"
        )
    return batch
