"""The audit log of alias moves: appending a hash-chained row, reading moves back, and the aliases the log
vouches for.

Every alias move is one row (who, when, from, to, why, the metrics), chained by hash (chain.py). The log,
not the aliases table, is what an alias is trusted by: a reader replays it (checking only the rows added
since its last read) and refuses an alias row that disagrees. Rollback steps back through the log.
"""

from __future__ import annotations

import getpass
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from refit.errors import RefitError
from refit.registry.chain import GENESIS, check_chain, replay_aliases, row_hash
from refit.registry.db import parse_json

__all__ = [
    "CHAMPION",
    "CHALLENGER",
    "Superseded",
    "AliasMove",
    "Checked",
    "append_move",
    "to_move",
    "logged_aliases",
    "alias_states",
    "tampered",
    "previous_holder",
    "actor",
]

CHAMPION, CHALLENGER = "champion", "challenger"


class Superseded(RefitError):
    """A compare-and-swap alias move lost: the alias no longer points where the caller expected.

    Raised when someone else (a manual `registry promote`, another cycle) moved the alias after the caller
    read it; nothing was changed. The caller records the outcome as superseded instead of overwriting.
    """


@dataclass(frozen=True)
class AliasMove:
    seq: int
    at: str
    alias: str
    from_version: str | None
    to_version: str | None
    actor: str
    action: str
    reason: str | None
    metrics: dict | None
    moved: bool = True  # False: the alias already pointed there and the log agreed; nothing was written


@dataclass(frozen=True)
class Checked:
    """The last audit row whose chain this process has checked, and the aliases the log says up to it."""

    seq: int
    hash: str | None  # None: every row so far predates the chain
    aliases: dict[str, str]


def append_move(db: sqlite3.Connection, content: dict) -> int:
    """Append one audit row (content: the chain's CONTENT fields) chained to the last row; its seq."""
    last = db.execute("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    prev_hash = (last["hash"] if last else None) or GENESIS
    cur = db.execute(
        "INSERT INTO audit (at, alias, from_version, to_version, actor, action, reason, metrics, prev_hash, "
        "hash) VALUES (:at, :alias, :from_version, :to_version, :actor, :action, :reason, :metrics, :prev, "
        ":hash)",
        {**content, "prev": prev_hash, "hash": row_hash(prev_hash, content)},
    )
    return cur.lastrowid


def to_move(row: Mapping, db_path: Path) -> AliasMove:
    return AliasMove(
        row["seq"],
        row["at"],
        row["alias"],
        row["from_version"],
        row["to_version"],
        row["actor"],
        row["action"],
        row["reason"],
        parse_json(db_path, row["metrics"], f"the metrics of audit row {row['seq']}"),
    )


def logged_aliases(db: sqlite3.Connection, cache: dict[str, Checked]) -> tuple[dict[str, str], list[str]]:
    """(the aliases as the audit log says they are now, the problems of its hash chain).

    Every read of an alias for use goes through here (serve's watcher every watch_interval_s), so only
    the rows after the last one this process checked (`cache`, updated here) are read and checked: O(new
    rows), not O(log). Should that row no longer be there with its hash (rewritten, truncated, or the
    database restored from a backup), the whole log is checked again. The expected aliases come from rows
    as they were when checked, so editing an old row later cannot change them either."""
    known = cache.get("audit")
    if known is not None:
        anchor = db.execute("SELECT * FROM audit WHERE seq = ?", (known.seq,)).fetchone()
        if anchor is None or dict(anchor).get("hash") != known.hash:
            known = None
    rows = [
        {"prev_hash": None, "hash": None, **dict(r)}
        for r in db.execute("SELECT * FROM audit WHERE seq > ? ORDER BY seq", (known.seq if known else -1,))
    ]
    problems = check_chain(rows, known.hash if known else None)[0]
    if problems:
        return {}, [p.message for p in problems]
    aliases = replay_aliases(rows, known.aliases if known else None)
    if rows:
        cache["audit"] = Checked(rows[-1]["seq"], rows[-1]["hash"], aliases)
    return aliases, []


def alias_states(rows: list[Mapping], actual: Mapping[str, str]) -> list[tuple[str, str | None, str | None]]:
    """(name, where the log says, where the aliases table says) for every alias either knows, by name."""
    expected = replay_aliases(rows)
    return [(a, expected.get(a), actual.get(a)) for a in sorted(expected.keys() | actual.keys())]


def tampered(db_path: Path, root: Path, problems: list[str], doing: str) -> str:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    db = "" if db_path == root / "registry.db" else f" --db {db_path}"
    return (
        f"The registry database {db_path} was edited by hand or damaged: {problems[0]}{more}. Refusing to "
        f"{doing} from it; nothing was changed. `refit registry verify --root {root}{db}` lists every "
        "problem; restore the database from a backup."
    )


def previous_holder(moves: list[AliasMove], current: str | None) -> str | None:
    """Replay the alias's moves as a stack (a move pushes, a rollback pops): the holder below the top.

    So two rollbacks in a row step back two versions instead of undoing each other.
    """
    stack: list[str] = []
    for move in moves:
        if move.action == "rollback" and stack:
            stack.pop()
        if move.to_version and (not stack or stack[-1] != move.to_version):
            stack.append(move.to_version)
    return stack[-2] if len(stack) >= 2 and stack[-1] == current else None


def actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
