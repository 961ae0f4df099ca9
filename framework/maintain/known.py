"""What earlier cycles read from the inbox, in the compact form a cycle needs instead of re-reading files.

One `InboxEntries` is what one cycle read; the `Known` interface is how `read_inbox` asks about everything
finished cycles read before (an `InboxEntries` in memory, or refit.maintain.index's SQLite index):
- files: resolved path -> (size, mtime_ns, sha256, kind): a file whose path, size and mtime match a read
  one is not opened again; any file whose sha256 was read before (under any name) is a copy;
- dropped rows: the sha256 of each row's (text, label name or None) (`row_key`);
- captures: request_id -> the distinct texts captured for it (None = the text was not stored);
- feedback: request_id -> (latest `at`, the labels given at that `at`): enough to apply the latest-`at`
  rule across old and new rows, since no earlier row can ever win against a later one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import NamedTuple, Protocol

__all__ = ["FileStamp", "InboxEntries", "Known", "Overlay", "in_memory", "row_key", "utc_key"]


class FileStamp(NamedTuple):
    size: int
    mtime_ns: int
    sha256: str
    kind: str  # dropped | capture | feedback


def row_key(text: str, label: str | None) -> str:
    """The identity of a dropped row: its text and label name (a relabelled text is a new row)."""
    return hashlib.sha256(json.dumps([text, label], ensure_ascii=False).encode("utf-8")).hexdigest()


def utc_key(at: datetime) -> str:
    """A feedback time as a fixed-width UTC string: ordered as strings exactly as the times are."""
    return at.astimezone(timezone.utc).isoformat(timespec="microseconds")


class Known(Protocol):
    """Lookups over what finished cycles read (each takes only the keys this cycle met)."""

    def file(self, path: str) -> FileStamp | None: ...
    def has_content(self, sha256: str) -> bool: ...
    def rows(self, keys: Iterable[str]) -> set[str]: ...
    def captures(self, rids: Iterable[str]) -> dict[str, set[str | None]]: ...
    def feedback(self, rids: Iterable[str]) -> dict[str, tuple[str, frozenset[int]]]: ...


@dataclass
class InboxEntries:
    """What one cycle read (`in_memory` makes it a `Known`: tests, and the rebuild of a lost index)."""

    files: dict[str, FileStamp] = field(default_factory=dict)
    rows: set[str] = field(default_factory=set)
    captures: dict[str, set[str | None]] = field(default_factory=dict)
    feedback: dict[str, tuple[str, frozenset[int]]] = field(default_factory=dict)

    def add_feedback(self, rid: str, at: str, labels: Iterable[int]) -> None:
        """Keep the latest `at` of `rid` (a `utc_key`) and every label given at that time."""
        old = self.feedback.get(rid)
        labels = frozenset(labels)
        if old is None or at > old[0]:
            self.feedback[rid] = (at, labels)
        elif at == old[0]:
            self.feedback[rid] = (at, old[1] | labels)

    def update(self, other: InboxEntries) -> None:
        self.files.update(other.files)
        self.rows |= other.rows
        for rid, texts in other.captures.items():
            self.captures.setdefault(rid, set()).update(texts)
        for rid, (at, labels) in other.feedback.items():
            self.add_feedback(rid, at, labels)

    def rows_of(self, keys: Iterable[str]) -> set[str]:
        return {k for k in keys if k in self.rows}

    def captures_of(self, rids: Iterable[str]) -> dict[str, set[str | None]]:
        return {r: set(self.captures[r]) for r in rids if r in self.captures}

    def feedback_of(self, rids: Iterable[str]) -> dict[str, tuple[str, frozenset[int]]]:
        return {r: self.feedback[r] for r in rids if r in self.feedback}


class Overlay:
    """A `Known` made of an index plus entries not in it yet (a rebuild read in the same cycle)."""

    def __init__(self, base: Known, extra: InboxEntries) -> None:
        self.base, self.extra = base, extra

    def file(self, path: str) -> FileStamp | None:
        return self.extra.files.get(path) or self.base.file(path)

    def has_content(self, sha256: str) -> bool:
        return any(f.sha256 == sha256 for f in self.extra.files.values()) or self.base.has_content(sha256)

    def rows(self, keys: Iterable[str]) -> set[str]:
        keys = list(keys)
        return self.extra.rows_of(keys) | self.base.rows(keys)

    def captures(self, rids: Iterable[str]) -> dict[str, set[str | None]]:
        rids = list(rids)
        out = self.base.captures(rids)
        for rid, texts in self.extra.captures_of(rids).items():
            out.setdefault(rid, set()).update(texts)
        return out

    def feedback(self, rids: Iterable[str]) -> dict[str, tuple[str, frozenset[int]]]:
        rids = list(rids)
        merged = InboxEntries(feedback=dict(self.base.feedback(rids)))
        for rid, (at, labels) in self.extra.feedback_of(rids).items():
            merged.add_feedback(rid, at, labels)
        return merged.feedback


class _Nothing:
    """No earlier cycle: nothing is known."""

    def file(self, path: str) -> FileStamp | None:
        return None

    def has_content(self, sha256: str) -> bool:
        return False

    def rows(self, keys: Iterable[str]) -> set[str]:
        return set()

    def captures(self, rids: Iterable[str]) -> dict[str, set[str | None]]:
        return {}

    def feedback(self, rids: Iterable[str]) -> dict[str, tuple[str, frozenset[int]]]:
        return {}


def in_memory(entries: InboxEntries | None = None) -> Known:
    """A `Known` over entries held in memory (nothing, by default)."""
    return Overlay(_Nothing(), entries or InboxEntries())
