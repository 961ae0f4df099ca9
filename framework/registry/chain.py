"""The audit log as a hash chain, and the replay that checks the aliases against it.

Each audit row stores `hash = sha256(prev_hash + canonical JSON of its content)`, so deleting, editing or
reordering a row breaks every hash after it. This detects tampering with the database file by hand (the
append-only triggers already refuse it through SQL); someone who rewrites the whole chain consistently is
not detected: there is no secret or external anchor.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["GENESIS", "CONTENT", "row_hash", "ChainProblem", "check_chain", "replay_aliases"]

GENESIS = "0" * 64
CONTENT = ("at", "alias", "from_version", "to_version", "actor", "action", "reason", "metrics")


def row_hash(prev_hash: str, row: Mapping) -> str:
    """sha256 of the previous row's hash and this row's content (seq excluded: SQLite assigns it)."""
    content = json.dumps({k: row[k] for k in CONTENT}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((prev_hash + content).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChainProblem:
    seq: int
    message: str


def check_chain(rows: Iterable[Mapping], after: str | None = None) -> tuple[list[ChainProblem], int]:
    """(problems, rows written before the chain existed) for audit rows in seq order.

    Rows with no hash at the start of the log predate the chain (an older refit) and are counted, not
    failed; a row without a hash after a chained one is a problem. `after` is the hash of the last row
    already checked, when `rows` are only the ones after it (None: from the start, or after unhashed rows
    only): a reader that polls the log checks each row once, not the whole log every time.
    """
    problems: list[ChainProblem] = []
    prev, legacy, chained = after or GENESIS, 0, after is not None
    for row in rows:
        if row["hash"] is None:
            if chained:
                problems.append(
                    ChainProblem(row["seq"], f"audit row {row['seq']} has no hash inside the chain")
                )
            else:
                legacy += 1
            continue
        chained = True
        if row["prev_hash"] != prev:
            problems.append(
                ChainProblem(
                    row["seq"],
                    f"audit row {row['seq']} does not follow the row before it "
                    "(a row was removed, inserted or reordered)",
                )
            )
        if row_hash(row["prev_hash"] or "", row) != row["hash"]:
            problems.append(
                ChainProblem(
                    row["seq"], f"audit row {row['seq']} was altered (its hash does not match its content)"
                )
            )
        prev = row["hash"]
    return problems, legacy


def replay_aliases(rows: Iterable[Mapping], start: Mapping[str, str] | None = None) -> dict[str, str]:
    """The aliases the audit log says should exist now: each move sets its alias to its target.

    `start`: the aliases replayed from the rows before `rows` (not changed; a new dict is returned)."""
    out: dict[str, str] = dict(start or {})
    for row in rows:
        if row["to_version"] is None:
            out.pop(row["alias"], None)
        else:
            out[row["alias"]] = row["to_version"]
    return out
