"""Scrub forgotten texts from what the maintenance loop wrote and reads again, with the record replay trusts.

What a cycle writes under `<registry>/maintain/run-N/`: `data/train.jsonl` and `data/validation.jsonl` (the
rows it trained and validated its challenger on: new labelled rows and replay rows), `data/labels.json`,
`cycle.json` and `report.html` (counts, p-values, file names: no text), `finetune/` (checkpoints, deleted once
the version is registered; metric logs; the unregistered version of a cycle that failed before registering).
The training file is read again by replay (the champion's, drawn into every later retrain), and a version's
training and validation files by a compress recovery fine-tune and the compress/export gates.

Which rows: every row of those files whose text is one of the forgotten requests' texts, read from their
capture rows before they are removed, or whose keyed hash (refit.maintain.known.keyed under the index's key)
is one the inbox index holds for those request ids, so a text whose capture file is already gone is still
found. Training rows carry no request id: a row with the same text from elsewhere (another request, a
replay row of the original training data) goes too. Removing too much, never too little.

Sealing: a trained version's refit.json (sealed: its manifest's hash is in the registry) records the sha256
of its training and validation files, and replay refuses a training file that no longer matches. The version
is not touched. The forget's own run in the registry (kind "forget") records each file it rewrote (path,
sha256 and rows before and after), written before the files are replaced; replay follows those records from
the fingerprint to the file's current state (`redactions`) and refuses the file in any other state, a
restored pre-forget copy (it holds the forgotten texts) included. What is sealed into a version and holds a
forgotten text, a drift reference that stored its texts, cannot be scrubbed without breaking its seal: it is
named (`sealed_copies`), never silently left. Model weights keep what they learned from a text.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from refit.maintain.known import keyed

__all__ = [
    "FORGET_KIND",
    "Match",
    "Scrub",
    "apply_scrubs",
    "discard",
    "plan_scrubs",
    "redactions",
    "sealed_copies",
    "trained_on",
]

FORGET_KIND = "forget"  # the registry run kind of `refit maintain forget`; its details["redacted"] list
_RUN_FILES = ("run-*/data/*.jsonl",)  # what cycles wrote that holds texts and is read again


@dataclass
class Match:
    """Which texts are forgotten: the texts themselves (from capture rows) or their keyed hashes."""

    texts: set[str] = field(default_factory=set, repr=False)
    key: bytes | None = field(default=None, repr=False)
    digests: set[str] = field(default_factory=set, repr=False)

    def __call__(self, text: object) -> bool:
        if not isinstance(text, str):
            return False
        return text in self.texts or (
            self.key is not None and bool(self.digests) and keyed(self.key, text) in self.digests
        )

    def __bool__(self) -> bool:
        return bool(self.texts or (self.key is not None and self.digests))


@dataclass
class Scrub:
    """One file to rewrite without the forgotten rows: its replacement is already written beside it."""

    path: Path
    temp: Path
    sha256_before: str
    sha256_after: str
    rows_before: int
    rows_after: int
    removed: set[str] = field(default_factory=set, repr=False)  # the texts removed, in memory only

    def record(self) -> dict:
        return {
            "path": str(self.path),
            "sha256_before": self.sha256_before,
            "sha256_after": self.sha256_after,
            "rows_before": self.rows_before,
            "rows_after": self.rows_after,
        }


def plan_scrubs(maintain_dir: Path, match: Match) -> tuple[list[Scrub], list[str]]:
    """Write, beside each run file holding a forgotten text, its replacement without those rows (an
    owner-only dot-file, fsynced); nothing is replaced yet. Returns the scrubs and the files it could not
    read ("path: why", left alone)."""
    scrubs, unreadable = [], []
    if not match:
        return scrubs, unreadable
    files = sorted({p for pattern in _RUN_FILES for p in maintain_dir.glob(pattern) if p.is_file()})
    for path in files:
        try:
            data = path.read_bytes()
            lines = data.splitlines(keepends=True)
            texts = [json.loads(line).get("text") if line.strip() else None for line in lines]
            kept = [line for line, text in zip(lines, texts, strict=True) if not match(text)]
        except (OSError, ValueError, AttributeError) as e:
            unreadable.append(f"{path}: {e}")
            continue
        if len(kept) == len(lines):
            continue
        new = b"".join(kept)
        temp = path.with_name(f".{path.name}.forget-{secrets.token_hex(4)}.tmp")
        fd = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(new)
            f.flush()
            os.fsync(f.fileno())
        rows = sum(1 for line in lines if line.strip())
        scrubs.append(
            Scrub(
                path,
                temp,
                hashlib.sha256(data).hexdigest(),
                hashlib.sha256(new).hexdigest(),
                rows,
                sum(1 for line in kept if line.strip()),
                {t for t in texts if match(t)},
            )
        )
    return scrubs, unreadable


def trained_on(
    scrubs: Iterable[Scrub], texts: dict[str, set[str]], key: bytes | None, digests: dict
) -> set[str]:
    """The request ids whose text was in a scrubbed run file, i.e. that a cycle trained or validated a
    challenger on: by the text of their capture rows (`texts`), or by the keyed hash the inbox index holds
    for them (`digests`, under `key`) when the capture is gone."""
    removed = set().union(*(s.removed for s in scrubs))
    hashed = {keyed(key, t) for t in removed} if key is not None else set()
    return {rid for rid, ts in texts.items() if ts & removed} | {
        rid for rid, ds in digests.items() if ds & hashed
    }


def apply_scrubs(scrubs: Iterable[Scrub]) -> None:
    """Replace each file by its scrubbed copy (a rename in its folder, the folder fsynced). Call only once
    the forget's record of these scrubs is committed in the registry."""
    for s in scrubs:
        os.replace(s.temp, s.path)
        fd = os.open(s.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def discard(scrubs: Iterable[Scrub]) -> None:
    """Remove the scrubbed copies of a forget that stopped before its record was committed."""
    for s in scrubs:
        s.temp.unlink(missing_ok=True)


def redactions(forget_runs: list[dict]) -> dict[str, tuple[str, int]]:
    """sha256 of a file before a forget -> (its sha256 after, the forget's run id), from the registry's
    forget runs in order (a later forget of the same state wins: a rerun after a crash)."""
    out: dict[str, tuple[str, int]] = {}
    for run in sorted(forget_runs, key=lambda r: r["id"]):
        for rec in (run.get("details") or {}).get("redacted", []):
            before, after = rec.get("sha256_before"), rec.get("sha256_after")
            if isinstance(before, str) and isinstance(after, str) and before != after:
                out[before] = (after, run["id"])
    return out


def sealed_copies(folders: Iterable[tuple[str, Path]], match: Match) -> list[str]:
    """'name: N forgotten text(s) in its drift reference' for each version folder ((name, path) pairs)
    whose stored reference texts hold a forgotten text: sealed into the version, so not scrubbed here."""
    if not match:
        return []
    from refit.drift.reference import load_reference
    from refit.errors import RefitError

    out = []
    for name, folder in folders:
        if not (folder / "reference").is_dir():
            continue
        try:
            texts = load_reference(folder, finite=False).texts
        except RefitError as e:
            out.append(f"{name}: its drift reference cannot be read to check ({e})")
            continue
        n = sum(1 for t in texts if match(t))
        if n:
            out.append(f"{name}: {n} forgotten text(s) in its drift reference ({folder / 'reference'})")
    return out
