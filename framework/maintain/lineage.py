"""Which registered versions learned from forgotten texts, and the newest clean one to roll back to.

A forget removes texts from the loop's run folders (refit.maintain.scrub), but a model trained on them keeps
what it learned, and so does every version warm-started from it. The user should not have to work out which
versions those are: each version's refit.json records the run files it was trained and validated on (the
data fingerprints: path and sha256) and its parent, so:

- a version whose own recorded training/validation file is a file this forget rewrote (`Scrub.path`, i.e.
  that run file held one of the texts) LEARNED from them;
- a version whose recorded file is a run file that cannot be judged is UNKNOWN, never called clean (fail
  closed): the file is gone (run folder deleted), unreadable, no longer the file it was trained on, or was
  already rewritten by an earlier forget (the texts that one removed are not recorded, so these may have
  been among them), or its run file belongs to another registry's loop; likewise every version trained on
  run files (or descended from one) when the forget could not look for all its texts (a damaged index);
- a version whose files are not run files (trained outside the loop on your own data) is judged by its
  ancestors only: what is in your own data is yours to know;
- every descendant (the `parent` chain) of a version that learned learned too; of one unknown, is unknown;
  a parent that is not registered (removed by gc, or never registered) is unknown.

Only version ids go into the forget's record, never texts or request ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from refit.errors import RefitError
from refit.io import sha256_file
from refit.models import read_version
from refit.registry import RegisteredVersion

__all__ = ["LEARNED", "UNKNOWN", "CLEAN", "Lineage", "judge_versions"]

LEARNED, UNKNOWN, CLEAN = "learned", "unknown", "clean"
_SPLITS = ("train", "validation")
_RUN_FILE = re.compile(r"/maintain/run-[^/]+/data/[^/]+\.jsonl$")  # where cycles write a version's data


@dataclass
class Lineage:
    """The verdict on each registered version (id -> LEARNED / UNKNOWN / CLEAN, with why for the first two)."""

    status: dict[str, str] = field(default_factory=dict)  # in registration order
    why: dict[str, str] = field(default_factory=dict)
    parents: dict[str, str | None] = field(default_factory=dict)

    def ids(self, status: str) -> list[str]:
        return [v for v, s in self.status.items() if s == status]

    def chain(self, version: str) -> list[str]:
        """`version` and its ancestors, newest first."""
        return _chain(version, self.parents)

    def clean_ancestor(self, version: str) -> str | None:
        """The newest clean version on `version`'s parent chain (itself excluded), or None."""
        return next((a for a in _chain(version, self.parents)[1:] if self.status.get(a) == CLEAN), None)

    def record(self, champion: str | None) -> dict:
        """What the forget's registry run keeps: version ids only."""
        tainted = champion is not None and self.status.get(champion) in (LEARNED, UNKNOWN)
        return {
            "learned": self.ids(LEARNED),
            "unknown": self.ids(UNKNOWN),
            "champion": champion,
            "clean_ancestor": self.clean_ancestor(champion) if tainted else None,
        }


def judge_versions(
    versions: Iterable[RegisteredVersion],
    maintain_dir: Path,
    rewritten: Iterable[Path],
    unreadable: Iterable[str],
    redactions: dict[str, tuple[str, int]],
    incomplete: str | None = None,
) -> Lineage:
    """Judge every registered version against this forget: `rewritten` are the run files its scrubs rewrite
    (still in their state before it), `unreadable` the "path: why" lines plan_scrubs could not read,
    `redactions` what earlier forgets recorded (refit.maintain.scrub.redactions), `incomplete` why the
    forget could not look for all its texts (then no version trained on run files is called clean)."""
    versions = list(versions)
    rewritten = {Path(p).resolve() for p in rewritten}
    unreadable = list(unreadable)
    maintain_dir = maintain_dir.resolve()
    out = Lineage(parents={v.id: v.parent for v in versions})
    own = {v.id: _own(v, maintain_dir, rewritten, unreadable, redactions) for v in versions}
    for v in versions:
        out.status[v.id], why = _inherited(v.id, own, out.parents)
        if out.status[v.id] == CLEAN and incomplete and _loop_trained(v.id, own, out.parents):
            out.status[v.id], why = UNKNOWN, incomplete
        if why:
            out.why[v.id] = why
    return out


def _chain(vid: str, parents: dict) -> list[str]:
    """`vid` and its ancestors, newest first (a parent loop, which only a hand edit makes, ends it)."""
    chain: list[str] = []
    while vid is not None and vid not in chain:
        chain.append(vid)
        vid = parents.get(vid)
    return chain


def _loop_trained(vid: str, own: dict, parents: dict) -> bool:
    """Whether `vid` or an ancestor was trained on the loop's run files (what a forget looks in)."""
    return any(own[a][2] for a in _chain(vid, parents) if a in own)


def _inherited(vid: str, own: dict, parents: dict) -> tuple[str, str]:
    """The worst verdict on `vid`'s parent chain: learned over unknown over clean."""
    verdict, why = CLEAN, ""
    for at in _chain(vid, parents):
        if at not in own:
            if verdict == CLEAN:
                verdict, why = (
                    UNKNOWN,
                    f"its ancestor {at} is not in the registry: what it learned is unknown",
                )
            break
        status, reason, _ = own[at]
        if status == LEARNED:
            return LEARNED, reason if at == vid else f"warm-started from {at}, which {reason}"
        if status == UNKNOWN and verdict == CLEAN:
            verdict, why = UNKNOWN, reason if at == vid else f"descends from {at}: {reason}"
    return verdict, why


def _own(
    v: RegisteredVersion,
    maintain_dir: Path,
    rewritten: set[Path],
    unreadable: list[str],
    redactions: dict[str, tuple[str, int]],
) -> tuple[str, str, bool]:
    """The verdict on a version's own recorded training/validation files, ignoring its ancestors, and
    whether any of them is one of the loop's run files."""
    try:
        meta = read_version(v.path, verify=False)  # its lineage record only; the weights are not read here
    except (RefitError, OSError) as e:
        return UNKNOWN, f"its refit.json cannot be read ({e})", True
    verdict, loop = (CLEAN, ""), False
    for split, fingerprint, path in _recorded_files(meta):
        if not _RUN_FILE.search(path.as_posix()):
            continue  # your own data, not the loop's: judged by ancestors only
        loop = True
        if path in rewritten:
            did = "trained" if split == "train" else "validated"
            return LEARNED, f"was {did} on them (its {split} file {path} held them)", True
        if verdict[0] != CLEAN:
            continue  # the first reason it cannot be judged is said; a later file may still show it learned
        if not path.is_relative_to(maintain_dir):
            verdict = (UNKNOWN, f"its {split} file {path} is another registry's run file: not checked")
        elif any(line.startswith(f"{path}: ") for line in unreadable):
            verdict = (UNKNOWN, f"its {split} file {path} cannot be read")
        elif not path.is_file():
            verdict = (UNKNOWN, f"its {split} file {path} is gone: what it was trained on cannot be checked")
        elif state := _state(path, fingerprint.get("sha256"), redactions):
            verdict = (UNKNOWN, f"its {split} file {path} {state}")
    return (*verdict, loop)


def _recorded_files(meta: dict) -> list[tuple[str, dict, Path]]:
    """(split, fingerprint, absolute path) of the training/validation files refit.json records."""
    data = (meta.get("config") or {}).get("data") or {}
    prints = meta.get("data") or {}
    out = []
    for split in _SPLITS:
        fingerprint = prints.get(split) if isinstance(prints.get(split), dict) else {}
        path = fingerprint.get("path") or data.get(split)
        if isinstance(path, str) and Path(path).is_absolute():
            out.append((split, fingerprint, Path(path).resolve()))
    return out


def _state(path: Path, expected: str | None, redactions: dict[str, tuple[str, int]]) -> str:
    """'' when `path` is still the file the version was trained on, else why it cannot be judged."""
    if not expected:
        return "has no fingerprint in refit.json: cannot tell it is the file it was trained on"
    actual, at, runs = sha256_file(path), expected, []
    while actual != at and at in redactions and len(runs) <= len(redactions):
        at, run_id = redactions[at]
        runs.append(run_id)
    if actual == expected:
        return ""
    if actual == at:
        return (
            f"was already rewritten by forget run {runs[-1]}: the texts it removed are not recorded, so these "
            "may have been among them"
        )
    return "changed since training: cannot tell what it was trained on"
