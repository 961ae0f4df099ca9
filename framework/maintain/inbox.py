"""What a cycle reads from the inbox: dropped files, served captures and late feedback labels.

Three kinds of file live in the inbox folder (names starting with '.' are partial writes and are skipped):
- dropped files (`*.jsonl`, `*.csv`, `*.parquet`, ...): one input per row in `text_column`, with an optional
  label in `label_column`;
- captures (`capture-*.parquet`, written by `refit serve`): request_id, text (null when texts are not
  stored), prediction, probabilities, ...;
- feedback (`feedback-*.parquet`): request_id -> label (a label name or an integer id as a string).

A feedback row labels the captured row with the same request_id, whichever file either sits in, so a
label that arrives days after its request still becomes training data. A (capture, feedback) pair is used
by the first cycle that has read both files: exactly once. The text of a capture read by an earlier cycle
is not kept anywhere by the loop: it is read back from its capture file when its label arrives, and only
if that file still holds it unchanged. A capture file deleted (a deletion request, a retention policy) or
rewritten (rows removed or redacted: the rewritten file is read as a new file, and its remaining rows are
found there) is forgotten: its late labels are not trained on, and counted ("labelled requests whose
capture was deleted or changed").

Exactly once by content, not by name. What finished cycles read is kept compactly (refit.maintain.known;
the SQLite index of refit.maintain.index), so a cycle opens only new files and never re-parses old ones:
- a file whose resolved path, size and mtime match one a finished cycle read is not opened again; any
  other file is read and hashed, and one whose sha256 equals a file read before (a copy, a rename, a
  touched file) adds nothing: it is counted, noted and marked read;
- a dropped row is identified by the keyed hash of its (text, label name or none): a row a finished cycle
  read, or one met earlier in the same cycle, is not new again (a file that repeats or extends an earlier
  file, e.g. an exporter appending to one file saved under a new name each day, adds only its new rows;
  the same text with another label is a new row);
- captures and feedback are identified by request id as below, old ones looked up by the ids met in the
  new files only.

The inbox is writable by more than the server, so everything in it is treated as untrusted input:
- only regular files are read, each opened once without following links and without blocking (a symbolic
  link, a FIFO, a socket or a folder is skipped and counted), and parsed from the bytes read, so the sha256
  recorded is that of what was parsed even if the file changes meanwhile; a file listed after the scan is
  left to the next cycle;
- a file over MAX_FILE_BYTES, a JSONL/CSV line over MAX_LINE_BYTES, a Parquet file of more than MAX_ROWS
  rows, MAX_VALUES values or MAX_DECODED_BYTES decoded (checked before decoding), undecodable content (invalid
  UTF-8 anywhere, JSON nested too deeply, a CSV field over refit.data's 1 MiB limit: refit.data owns the
  decoding, the inbox adds its tighter limits and the rules below), a capture or feedback file whose
  columns are not the serve schema (another format version), a label outside the model's label set,
  an unparseable or naive `at`, no rows: the file is quarantined, i.e. recorded with the
  reason, skipped by every later cycle (until its content changes), never blocking the valid files beside it;
- a capture or feedback row stamped more than FUTURE_SLACK in the future is skipped and counted (its
  `at` would otherwise win every label conflict), and so is a capture row whose text does not match its
  text_sha256 (edited after the server wrote it);
- a request id captured twice with different texts (two files, or one) is dropped from the window and
  counted; captured twice with the same text it is one request. A request (or a feedback row) already in
  a file read by a finished cycle is never new again, so a copy of an old capture or feedback file adds
  nothing (even once the old file has left the inbox);
- conflicting feedback: the row with the latest `at` wins; when rows with that same latest `at` give
  different labels the request is dropped from the labelled window and counted (no order of files or
  names decides a label). Across cycles too, which is what `POST /feedback` promises: a label posted again
  for a request a finished cycle trained on with that label is not new (counted: a retry must not train on
  the pair twice); a newer, different label (a correction) is trained on by the next cycle, which says in a
  note that the earlier runs' data and the versions trained on it keep the old label; a label older than
  the one used is not used (counted).
Every skip is counted in `InboxBatch.skipped` and said in a note of the cycle's report.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from refit.data import SUFFIXES, ReadLimits, parse_rows, to_label_ids
from refit.errors import DataError
from refit.maintain.known import (
    CaptureRef,
    FileStamp,
    InboxEntries,
    Known,
    in_memory,
    keyed,
    row_key,
    utc_key,
)
from refit.maintain.safe_read import NotAFile, TooBig, read_entry
from refit.serve.capture import CAPTURE, CAPTURE_SCHEMA, FEEDBACK, FEEDBACK_SCHEMA, file_kind

__all__ = [
    "FUTURE_SLACK",
    "MAX_FILE_BYTES",
    "MAX_LINE_BYTES",
    "MAX_ROWS",
    "InboxBatch",
    "read_inbox",
]

MAX_FILE_BYTES = 256 * 1024**2  # read whole into memory: the bound keeps a crafted file from exhausting it
MAX_LINE_BYTES = 1024**2  # one JSONL/CSV row; a classifier's input is a few hundred tokens
MAX_ROWS = 1_000_000  # rows of one Parquet file (a server rotates its files at capture.rotate_rows)
MAX_DECODED_BYTES = 1024**3  # a Parquet file decoded (dictionary and RLE encodings expand)
MAX_VALUES = 20_000_000  # leaf values of one Parquet file (probabilities included)
FUTURE_SLACK = timedelta(minutes=5)  # clock skew between a server and the cycle's machine
_LIMITS = ReadLimits(
    line_bytes=MAX_LINE_BYTES, rows=MAX_ROWS, values=MAX_VALUES, decoded_bytes=MAX_DECODED_BYTES
)


@dataclass
class InboxBatch:
    """The new data of one cycle."""

    files: list[str] = field(default_factory=list)  # new files read (resolved paths), copies included
    quarantined: list[dict] = field(default_factory=list)  # {"file", "sha256", "reason"}
    texts: list[str] = field(default_factory=list)  # every new input with a stored text (drift, reference)
    labelled: list[tuple[str, int]] = field(default_factory=list)  # new labelled rows as (text, label id)
    notes: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # reason -> entries (files or rows) skipped
    entries: InboxEntries = field(default_factory=InboxEntries)  # what the index keeps once the cycle is done


def _data_name(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in SUFFIXES


def _kind(name: str) -> str:
    """CAPTURE, FEEDBACK (the server's files, named by refit.serve.capture) or "dropped"."""
    return file_kind(name) or "dropped"


def _parse(name: str, data: bytes, schema=None) -> list[dict]:
    """Rows of one file's bytes, decoded by refit.data under the inbox's limits (any decoding failure is
    a DataError: before, nested JSON and long CSV fields escaped as other exceptions and crashed every
    cycle); `schema` (capture/feedback) must be matched by name and string type before rows decode."""
    check = None if schema is None else (lambda found: _check_schema(found, schema))
    return parse_rows(data, Path(name).suffix, _LIMITS, check)


def _check_schema(found, expected) -> None:
    import pyarrow as pa

    names, want = list(found.names), list(expected.names)
    if sorted(names) != sorted(want):
        raise DataError(
            f"its columns {names} are not those `refit serve` writes ({want}): another format version "
            "or not a serve file."
        )
    for f in expected:
        if pa.types.is_string(f.type) and not (
            pa.types.is_string(found.field(f.name).type) or pa.types.is_large_string(found.field(f.name).type)
        ):
            raise DataError(f"column '{f.name}' is {found.field(f.name).type}, expected string.")


def _rows(name: str, data: bytes, required: tuple[str, ...], schema=None) -> list[dict]:
    rows = _parse(name, data, schema)
    if not rows:
        raise DataError("holds no rows.")
    missing = [c for c in required if c not in rows[0]]
    if missing:
        raise DataError(
            f"no column {', '.join(repr(c) for c in missing)}; columns found: {', '.join(rows[0])}."
        )
    return rows


def _at(value, i: int) -> datetime:
    try:
        at = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise DataError(f"row {i}: 'at' {str(value)[:40]!r} is not an ISO time with a UTC offset.")
    return at


def _label_id(value, names: list[str], i: int) -> int:
    """The label id of one row. to_label_ids takes any Unicode digit for an id and then fails in int()
    ('²' raised ValueError and crashed the cycle): only ASCII digits reach it here."""
    key = str(value)
    if key not in names and not key.isascii():
        raise DataError(f"row {i}: label {key[:40]!r} is not one of the model's labels {names}.")
    try:
        return to_label_ids([value], names)[0]
    except DataError as e:
        raise DataError(f"row {i}: {e}") from None


def _read_dropped(
    name: str, data: bytes, text_column: str, label_column: str, names: list[str]
) -> list[tuple[str, int | None]]:
    out = []
    for i, row in enumerate(_rows(name, data, (text_column,)), 1):
        text = row.get(text_column)
        if not isinstance(text, str):
            raise DataError(f"row {i}: no text in column '{text_column}'.")
        label = row.get(label_column)
        out.append((text, None if label is None or label == "" else _label_id(label, names, i)))
    return out


def _read_capture(
    name: str, data: bytes, now: datetime, skipped: Counter
) -> list[tuple[str, str | None, int]]:
    """(request_id, text or None, the row's position in the file) of each usable capture row."""
    out = []
    for i, row in enumerate(_rows(name, data, ("request_id", "text"), CAPTURE_SCHEMA), 1):
        if not isinstance(row["request_id"], str) or not row["request_id"]:
            raise DataError(f"row {i}: no request_id.")
        if row["text"] is not None and not isinstance(row["text"], str):
            raise DataError(f"row {i}: 'text' is {type(row['text']).__name__}, expected text or null.")
        if _at(row["at"], i) > now + FUTURE_SLACK:
            skipped["capture rows stamped in the future"] += 1
            continue
        text = row["text"]
        if text is not None and hashlib.sha256(text.encode("utf-8")).hexdigest() != row["text_sha256"]:
            skipped["capture rows whose text does not match its text_sha256 (edited)"] += 1
            continue
        out.append((row["request_id"], text, i - 1))
    return out


def _read_feedback(
    name: str, data: bytes, names: list[str], now: datetime, skipped: Counter
) -> list[tuple[str, datetime, int]]:
    out = []
    for i, row in enumerate(_rows(name, data, ("request_id", "label"), FEEDBACK_SCHEMA), 1):
        if not isinstance(row["request_id"], str) or not row["request_id"]:
            raise DataError(f"row {i}: no request_id.")
        label = _label_id(row["label"], names, i)
        at = _at(row["at"], i)
        if at > now + FUTURE_SLACK:
            skipped["feedback rows stamped in the future"] += 1
            continue
        out.append((row["request_id"], at, label))
    return out


def _refused(key: str, message: str, store_texts: bool) -> str:
    """A quarantine reason: it is kept in the run's record, cycle.json, the report and the W&B run. Its
    message quotes values of the file (a label, a time, column names), which are texts when a column is
    misplaced (a text in the label column, a CSV without its header line), so with store_texts False only
    where the file was refused is kept."""
    if not store_texts:
        where = re.match(r"(line|row) \d+", message)
        message = (f"{where.group(0)}: " if where else "") + (
            "refused; why is not kept (privacy.store_texts false: the reason may quote the file's values)"
        )
    return f"{key}, {message}" if message.startswith(("line ", "row ")) else f"{key}: {message}"


def read_inbox(
    folder: Path,
    *,
    known: Known | None = None,
    quarantined: set[tuple[str, str]],
    text_column: str,
    label_column: str,
    label_names: list[str],
    only: set[str] | None = None,
    store_texts: bool = True,
) -> InboxBatch:
    """The new data in `folder` against what finished cycles read (`known`; nothing when None): files not
    read before (by path, size and mtime, then by content) and not quarantined with the same content
    ((path, sha256) pairs), their rows not read before, and the labels new feedback gives to old captures
    (and old feedback to new captures). `only` limits the read to those resolved paths (an index rebuild).
    `store_texts` False (privacy): a quarantine reason keeps only where the file was refused (see _refused)."""
    known = known or in_memory()
    now = datetime.now(timezone.utc)  # rows stamped later than this (plus FUTURE_SLACK) are skipped
    batch = InboxBatch()
    captures: dict[str, list[tuple]] = {}  # request_id -> [(text, CaptureRef)] in new files
    feedback: dict[str, list[tuple[str, int]]] = {}  # request_id -> [(utc_key(at), label)] in new files
    dropped: list[tuple[str, str | None, int | None]] = []  # (row key, text, label id) in new files
    contents: set[str] = set()  # sha256 of the files read by this cycle
    rewritten: set[str] = set()  # sha256 of capture files at a path a finished cycle read with other bytes
    base = folder.resolve()
    dir_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with os.scandir(dir_fd) as it:
            names = sorted(e.name for e in it if _data_name(e.name))
        for name in names:
            key = str(base / name)
            if only is not None and key not in only:
                continue
            stamp = known.file(key)
            if stamp is not None and _unchanged(dir_fd, name, stamp):
                continue  # read by a finished cycle and not changed since: not opened again
            kind = _kind(name)
            try:
                data, st = read_entry(dir_fd, name, MAX_FILE_BYTES)
            except NotAFile as e:
                batch.skipped["entries that are not readable regular files (links, FIFOs, ...)"] += 1
                batch.notes.append(f"skipped {key}: {e}")
                continue
            except TooBig as e:
                if (key, e.sha256) not in quarantined:
                    batch.quarantined.append({"file": key, "sha256": e.sha256, "reason": f"{key} {e}"})
                continue
            digest = hashlib.sha256(data).hexdigest()
            if (key, digest) in quarantined:
                continue
            if digest in contents or known.has_content(digest):
                batch.skipped["files whose content was already read (copies; renamed or touched files)"] += 1
                batch.notes.append(f"{key} holds the same bytes as a file already read: adds nothing")
            else:
                try:
                    if kind == CAPTURE:
                        if stamp is not None:  # e.g. `refit maintain forget` removed rows from it
                            rewritten.add(digest)
                        for rid, text, i in _read_capture(name, data, now, batch.skipped):
                            mark = None if text is None else keyed(known.key, text)
                            captures.setdefault(rid, []).append((text, CaptureRef(mark, digest, i)))
                    elif kind == FEEDBACK:
                        for rid, at, label in _read_feedback(name, data, label_names, now, batch.skipped):
                            feedback.setdefault(rid, []).append((utc_key(at), label))
                    else:
                        for text, label in _read_dropped(name, data, text_column, label_column, label_names):
                            name_ = None if label is None else label_names[label]
                            dropped.append((row_key(known.key, text, name_), text, label))
                except DataError as e:
                    reason = _refused(key, str(e), store_texts)
                    batch.quarantined.append({"file": key, "sha256": digest, "reason": reason})
                    continue
            contents.add(digest)
            batch.files.append(key)
            batch.entries.files[key] = FileStamp(st.st_size, st.st_mtime_ns, digest, kind)
    finally:
        os.close(dir_fd)
    _take_dropped(batch, dropped, known)
    _join(batch, captures, feedback, known, rewritten)
    for reason, n in sorted(batch.skipped.items()):
        batch.notes.append(f"skipped {n} {reason}")
    return batch


def _unchanged(dir_fd: int, name: str, stamp: FileStamp) -> bool:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and (st.st_size, st.st_mtime_ns) == (stamp.size, stamp.mtime_ns)


def _take_dropped(batch: InboxBatch, dropped: list, known: Known) -> None:
    """New dropped rows, each (text, label) once: a row read by a finished cycle, or earlier in this one
    (a copy, a file that extends an earlier one, a repeated row), adds nothing."""
    old = known.rows(k for k, _, _ in dropped)
    for k, text, label in dropped:
        if k in old or k in batch.entries.rows:
            batch.skipped["dropped rows already read (same text and label: copies, supersets, repeats)"] += 1
            continue
        batch.entries.rows.add(k)
        batch.texts.append(text)
        if label is not None:
            batch.labelled.append((text, label))


def _join(batch: InboxBatch, captures: dict, feedback: dict, known: Known, rewritten: set[str]) -> None:
    """Texts of the new captures and (text, label) of each request with a decided label (module docstring),
    old captures and feedback coming from `known` (only the request ids met in the new files). An old
    capture's text is read back from its capture file (`_recall`) only when a new label needs it.
    A new row of a request a finished cycle read is counted apart from a duplicate within the new files:
    after a forget rewrote a file (`rewritten`: sha256 of files at a path read before with other bytes),
    its untouched rows are all such rows, and "duplicates" misled the operator."""
    met = set(captures) | set(feedback)
    old_caps, old_fb = known.captures(met), known.feedback(met)
    entries = batch.entries
    texts: dict[str, tuple[str | None, bool]] = {}  # request_id -> (its one text, captured only now)
    for rid in set(captures) | set(old_caps):
        new, old = captures.get(rid, []), old_caps.get(rid, set())
        if rid in captures:
            entries.captures[rid] = {ref for _, ref in new}
        if len({ref.digest for _, ref in new} | {ref.digest for ref in old}) > 1:
            batch.skipped["request ids captured with different texts (dropped)"] += 1
            continue
        if old:  # each new row of a request read before adds nothing: said by where it was found again
            for _, ref in new:
                batch.skipped[REREAD_REWRITTEN if ref.file in rewritten else REREAD] += 1
        elif len(new) > 1:  # two rows of one request in the new files
            batch.skipped[DUPLICATE] += len(new) - 1
        if new:
            texts[rid] = (new[0][0], not old)
        else:  # only in files read before: a text to read back if a label needs it
            texts[rid] = (_ELSEWHERE if next(iter(old)).digest is not None else None, False)
    for rid in captures:  # in file order
        text, new = texts.get(rid, (None, False))
        if new and text is not None:
            batch.texts.append(text)
    hidden = sum(1 for rid in captures if texts.get(rid, ("", False)) == (None, True))
    if hidden:
        batch.notes.append(f"{hidden} captured input(s) without a stored text (privacy) are not used")
    unmatched, labelled = 0, []  # labelled: (text or _ELSEWHERE, request_id, label id) in feedback order
    relabelled: set[str] = set()  # requests trained on with another label by a finished cycle
    for rid in [*feedback, *(r for r in captures if r in old_fb and r not in feedback)]:
        rows = [(at, y, True) for at, y in feedback.get(rid, [])]
        if rid in old_fb:
            at, labels = old_fb[rid]
            rows += [(at, y, False) for y in labels]
        if rid in feedback:
            latest_new = max(at for at, _ in feedback[rid])
            entries.add_feedback(rid, latest_new, (y for at, y in feedback[rid] if at == latest_new))
        latest = max(at for at, _, _ in rows)
        winners = [(y, new) for at, y, new in rows if at == latest]
        if len({y for y, _ in winners}) > 1:
            batch.skipped["requests whose latest feedback rows disagree (dropped)"] += 1
            continue
        fb_new = all(new for _, new in winners)  # the same row in a file read before: already used
        if rid not in captures and rid not in old_caps:
            unmatched += fb_new
            continue
        text, cap_new = texts.get(rid, (None, False))
        if text is None:
            continue
        used = _used_label(old_fb.get(rid)) if not cap_new else None  # what a finished cycle trained on
        if used is not None and fb_new and winners[0][0] == used:
            batch.skipped[REPEATED] += 1  # posted again (a retry): the pair was used once already
        elif used is not None and rid in feedback and all(at < latest for at, _ in feedback[rid]):
            batch.skipped[STALE] += 1  # every new row is older than the label used: that label stays
        elif fb_new or cap_new:
            labelled.append((text, rid, winners[0][0]))
            if used is not None:
                relabelled.add(rid)
    recalled = _recall({rid: old_caps[rid] for t, rid, _ in labelled if t is _ELSEWHERE}, known)
    for text, rid, label in labelled:
        text = recalled.get(rid) if text is _ELSEWHERE else text
        if text is None:
            batch.skipped[FORGOTTEN] += 1
            relabelled.discard(rid)
        else:
            batch.labelled.append((text, label))
    if relabelled:
        batch.notes.append(f"{len(relabelled)} {RELABELLED}")
    if unmatched:
        batch.notes.append(
            f"{unmatched} feedback label(s) match no captured request yet; kept for later cycles"
        )


def _used_label(old: tuple[str, frozenset[int]] | None) -> int | None:
    """The label finished cycles decided for a request from its old feedback (latest time, one label), i.e.
    the one they trained on when its capture was read too; None when none was decided (a tie, no feedback)."""
    return next(iter(old[1])) if old is not None and len(old[1]) == 1 else None


_ELSEWHERE = object()  # an old capture's text: in its capture file, read back only when a label needs it
REPEATED = "feedback labels posted again for a request already trained on with that label: not new"
STALE = "feedback labels older than the label a finished cycle trained on: not used (the newest wins)"
RELABELLED = (
    "request(s) relabelled after an earlier cycle trained on their old label: trained on the newest label "
    "now; the earlier runs' training data (which replay draws from) and the versions trained on it keep "
    "the old label"
)
FORGOTTEN = "labelled requests whose capture was deleted or changed: not used"
DUPLICATE = "duplicate capture rows of one request (kept once)"
REREAD_REWRITTEN = (
    "capture rows already read by earlier cycles, in capture files rewritten since "
    "(e.g. by `refit maintain forget`): not new"
)
REREAD = "capture rows already read by earlier cycles, found again in another file: not new"


def _recall(wanted: dict[str, set[CaptureRef]], known: Known) -> dict[str, str]:
    """The texts of old captures, read back from the capture files that finished cycles read: each file
    (any path a finished cycle read it under) is opened once, as untrusted as a new one, and used only if
    its bytes still hash to what was read then (so it passed the inbox's limits then), and a text only if
    its row still has the request id and the text's keyed hash. A request whose file is gone, changed or
    unreadable is left out (the caller counts it as forgotten): deleting or rewriting a capture file is how
    an operator makes the loop forget texts."""
    paths = known.paths({ref.file for refs in wanted.values() for ref in refs})
    tables: dict = {}  # file sha256 -> its (request_id, text) columns, or None
    out = {}
    for rid, refs in wanted.items():
        for ref in sorted(refs):
            if ref.file not in tables:
                tables[ref.file] = _capture_columns(paths.get(ref.file, []), ref.file)
            table = tables[ref.file]
            if table is None or not 0 <= ref.row < table.num_rows:
                continue
            found, text = (table.column(c)[ref.row].as_py() for c in ("request_id", "text"))
            if found == rid and isinstance(text, str) and keyed(known.key, text) == ref.digest:
                out[rid] = text
                break
    return out


def _capture_columns(paths: list[str], sha256: str):
    """The request_id and text columns (a pyarrow Table) of the first of `paths` whose bytes hash to
    `sha256`; None when none does."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in paths:
        p = Path(path)
        try:
            dir_fd = os.open(p.parent, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            data, _ = read_entry(dir_fd, p.name, MAX_FILE_BYTES)
        except (OSError, NotAFile, TooBig):
            continue
        finally:
            os.close(dir_fd)
        if hashlib.sha256(data).hexdigest() != sha256:
            continue
        try:  # the same bytes that passed the inbox's limits when a finished cycle read them
            return pq.ParquetFile(pa.BufferReader(data)).read(
                columns=["request_id", "text"], use_threads=False
            )
        except (pa.ArrowException, OSError, ValueError):
            continue
    return None
