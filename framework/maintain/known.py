"""What earlier cycles read from the inbox, in the compact form a cycle needs instead of re-reading files.

One `InboxEntries` is what one cycle read; the `Known` interface is how `read_inbox` asks about everything
finished cycles read before (an `InboxEntries` in memory, or refit.maintain.index's SQLite index):
- files: resolved path -> (size, mtime_ns, sha256, kind): a file whose path, size and mtime match a read
  one is not opened again; any file whose sha256 was read before (under any name) is a copy;
- dropped rows: the keyed hash of each row's (text, label name or None) (`row_key`);
- captures: request_id -> where each capture of it lives (`CaptureRef`: the keyed hash of its text, or None
  when the server did not store it; the sha256 of the capture file; the row's position in that file). No
  text is kept: a text is read back from its capture file only when a label arrives for it
  (refit.maintain.inbox), so what the loop can still train on is exactly what is still in the files on
  disk;
- feedback: request_id -> (latest `at`, the labels given at that `at`): enough to apply the latest-`at`
  rule across old and new rows, since no earlier row can ever win against a later one.

Every hash of a text is an HMAC (`keyed`) under a key that belongs to the registry (refit.maintain.index
keeps it 0600 beside the index; `in_memory` uses one random key per process), so a short text cannot be
recovered from the index by hashing guesses. What such a hash still reveals, to whoever reads the index
without the key: which rows or captures hold the same text (equality), and nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import NamedTuple, Protocol

__all__ = [
    "CaptureRef",
    "FileStamp",
    "InboxEntries",
    "Known",
    "Overlay",
    "in_memory",
    "keyed",
    "row_key",
    "utc_key",
]


class FileStamp(NamedTuple):
    size: int
    mtime_ns: int
    sha256: str
    kind: str  # dropped | capture | feedback


class CaptureRef(NamedTuple):
    """Where one captured request's text lives, without the text."""

    digest: str | None  # keyed(text); None: the server did not store the text
    file: str  # sha256 of the capture file that holds the row
    row: int  # the row's position among that file's rows (0-based)


def keyed(key: bytes, text: str) -> str:
    """The HMAC-SHA256 of a text under the registry's key, 128 bits (hex): equality without the text."""
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def row_key(key: bytes, text: str, label: str | None) -> str:
    """The identity of a dropped row: its text and label name (a relabelled text is a new row)."""
    return keyed(key, json.dumps([text, label], ensure_ascii=False))


def utc_key(at: datetime) -> str:
    """A feedback time as a fixed-width UTC string: ordered as strings exactly as the times are."""
    return at.astimezone(timezone.utc).isoformat(timespec="microseconds")


class Known(Protocol):
    """Lookups over what finished cycles read (each takes only the keys this cycle met); `key` is the key
    of every hash of a text in it (new rows are hashed with it to be compared)."""

    key: bytes

    def file(self, path: str) -> FileStamp | None: ...
    def has_content(self, sha256: str) -> bool: ...
    def paths(self, sha256s: Iterable[str]) -> dict[str, list[str]]: ...
    def rows(self, keys: Iterable[str]) -> set[str]: ...
    def captures(self, rids: Iterable[str]) -> dict[str, set[CaptureRef]]: ...
    def feedback(self, rids: Iterable[str]) -> dict[str, tuple[str, frozenset[int]]]: ...


@dataclass
class InboxEntries:
    """What one cycle read (`in_memory` makes it a `Known`: tests, and the rebuild of a lost index)."""

    files: dict[str, FileStamp] = field(default_factory=dict)
    rows: set[str] = field(default_factory=set)
    captures: dict[str, set[CaptureRef]] = field(default_factory=dict)
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
        for rid, refs in other.captures.items():
            self.captures.setdefault(rid, set()).update(refs)
        for rid, (at, labels) in other.feedback.items():
            self.add_feedback(rid, at, labels)

    def rows_of(self, keys: Iterable[str]) -> set[str]:
        return {k for k in keys if k in self.rows}

    def captures_of(self, rids: Iterable[str]) -> dict[str, set[CaptureRef]]:
        return {r: set(self.captures[r]) for r in rids if r in self.captures}

    def paths_of(self, sha256s: Iterable[str]) -> dict[str, list[str]]:
        wanted, out = set(sha256s), {}
        for path, stamp in self.files.items():
            if stamp.sha256 in wanted:
                out.setdefault(stamp.sha256, []).append(path)
        return out

    def feedback_of(self, rids: Iterable[str]) -> dict[str, tuple[str, frozenset[int]]]:
        return {r: self.feedback[r] for r in rids if r in self.feedback}


class Overlay:
    """A `Known` made of an index plus entries not in it yet (a rebuild read in the same cycle)."""

    def __init__(self, base: Known, extra: InboxEntries) -> None:
        self.base, self.extra, self.key = base, extra, base.key

    def file(self, path: str) -> FileStamp | None:
        return self.extra.files.get(path) or self.base.file(path)

    def has_content(self, sha256: str) -> bool:
        return any(f.sha256 == sha256 for f in self.extra.files.values()) or self.base.has_content(sha256)

    def paths(self, sha256s: Iterable[str]) -> dict[str, list[str]]:
        sha256s = list(sha256s)
        out = self.base.paths(sha256s)
        for sha, found in self.extra.paths_of(sha256s).items():
            out[sha] = list(dict.fromkeys([*found, *out.get(sha, [])]))
        return out

    def rows(self, keys: Iterable[str]) -> set[str]:
        keys = list(keys)
        return self.extra.rows_of(keys) | self.base.rows(keys)

    def captures(self, rids: Iterable[str]) -> dict[str, set[CaptureRef]]:
        rids = list(rids)
        out = self.base.captures(rids)
        for rid, refs in self.extra.captures_of(rids).items():
            out.setdefault(rid, set()).update(refs)
        return out

    def feedback(self, rids: Iterable[str]) -> dict[str, tuple[str, frozenset[int]]]:
        rids = list(rids)
        merged = InboxEntries(feedback=dict(self.base.feedback(rids)))
        for rid, (at, labels) in self.extra.feedback_of(rids).items():
            merged.add_feedback(rid, at, labels)
        return merged.feedback


class _Nothing:
    """No earlier cycle: nothing is known."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def file(self, path: str) -> FileStamp | None:
        return None

    def has_content(self, sha256: str) -> bool:
        return False

    def paths(self, sha256s: Iterable[str]) -> dict[str, list[str]]:
        return {}

    def rows(self, keys: Iterable[str]) -> set[str]:
        return set()

    def captures(self, rids: Iterable[str]) -> dict[str, set[CaptureRef]]:
        return {}

    def feedback(self, rids: Iterable[str]) -> dict[str, tuple[str, frozenset[int]]]:
        return {}


_PROCESS_KEY: list[bytes] = []  # made on first use, never written anywhere


def in_memory(entries: InboxEntries | None = None, key: bytes | None = None) -> Known:
    """A `Known` over entries held in memory (nothing, by default), hashed under `key` (by default one
    random key per process, so entries read by one call compare with those of the next)."""
    if key is None:
        if not _PROCESS_KEY:
            _PROCESS_KEY.append(secrets.token_bytes(32))
        key = _PROCESS_KEY[0]
    return Overlay(_Nothing(key), entries or InboxEntries())
