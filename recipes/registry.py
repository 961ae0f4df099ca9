"""refit registry: register, inspect, move and audit model versions; verify and clean the registry.

    refit registry register --version runs/demo/version      # copy a verified version in
    refit registry list [--format json]                      # versions with their aliases and metrics
    refit registry show --version champion [--format json]   # one version's refit.json summary
    refit registry promote --version v2026... --reason "beats v1 on the golden set" [--expected v2025...]
    refit registry rollback --reason "latency regression"    # champion back to the one before
    refit registry alias --alias staging --version v2026...  # any alias of your own
    refit registry history [--alias champion] [--format json]  # the audit log of alias moves
    refit registry verify                                    # every version, the audit hash chain, the aliases
    refit registry gc [--keep 3] [--yes]                     # dry run unless --yes
    refit registry remove --version v2026... --reason "..." [--yes]  # one version no alias points at
    refit registry ACTION --help                             # the options of one action

list, show, history and verify, and gc or remove without --yes, only read: they never create or change
anything (a misspelt --root is an error).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from jsonargparse.typing import NonNegativeInt
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from refit.config import build_parser, parse_config
from refit.errors import ConfigError, RefitError
from refit.models import read_version
from refit.registry import CHAMPION, NoRegistry, Registry, apply_gc, plan_gc, verify_registry
from refit.registry.layout import STALE_AFTER_S
from refit.registry.mirror import mirror_alias
from refit.report import console as _console
from refit.report import table as _plain_table
from refit.settings import TrackingConfig
from refit.tracking import resolve_wandb_mode

Format = Literal["table", "json"]


@dataclass(kw_only=True)
class Where:
    """Where the registry is.

    Args:
        root: Registry folder (versions/ and registry.db).
        db: SQLite database path (default ROOT/registry.db).
    """

    root: str = "registry"
    db: str | None = None


@dataclass(kw_only=True)
class Register(Where):
    """Copy a finished version folder into the registry (verified file by file) and record it.

    Args:
        version: The version folder to register (e.g. runs/demo/version).
    """

    version: str


@dataclass(kw_only=True)
class List(Where):
    """List registered versions with their aliases and validation accuracy.

    Args:
        format: table, or json (every field, for scripts).
    """

    format: Format = "table"


@dataclass(kw_only=True)
class Show(Where):
    """Show one version's refit.json summary.

    Args:
        version: A version id or an alias.
        format: json (default) or table.
    """

    version: str = CHAMPION
    format: Format = "json"


@dataclass(kw_only=True)
class Promote(Where):
    """Make a version the champion (audited; compare-and-swap with --expected).

    Args:
        version: The version id or alias to promote.
        reason: Why: kept in the audit log.
        expected: Promote only if the champion is still this version id (else nothing changes, exit 2).
        tracking: W&B mirror of the move (versions as artifacts, aliases as artifact aliases).
    """

    version: str
    reason: str = "manual promotion"
    expected: str | None = None
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


@dataclass(kw_only=True)
class Rollback(Where):
    """Point an alias (the champion by default) back at the version it held before.

    Args:
        alias: The alias to roll back.
        reason: Why: kept in the audit log.
        tracking: W&B mirror of the move.
    """

    alias: str = CHAMPION
    reason: str = "manual rollback"
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


@dataclass(kw_only=True)
class Alias(Where):
    """Point an alias of your own at a version.

    Args:
        alias: The alias to set.
        version: The version id or alias it should point at.
        reason: Why: kept in the audit log.
        expected: Move only if the alias still points at this version id.
        tracking: W&B mirror of the move.
    """

    alias: str
    version: str
    reason: str | None = None
    expected: str | None = None
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


@dataclass(kw_only=True)
class History(Where):
    """The audit log of alias moves.

    Args:
        alias: Only this alias's moves.
        format: table, or json.
    """

    alias: str | None = None
    format: Format = "table"


@dataclass(kw_only=True)
class Verify(Where):
    """Check every version against its manifest, the audit log's hash chain, and the aliases against the log."""


@dataclass(kw_only=True)
class Gc(Where):
    """Remove stale staging and versions nothing needs; a dry run unless --yes.

    Kept: versions an alias points at, the last KEEP champions, and versions registered in the last 10
    minutes (a maintenance cycle points `challenger` at its new version just after registering it).

    Args:
        keep: Also keep the last KEEP champions in the audit log (what rollback steps back to).
        yes: Really delete (without it, only list what would go).
    """

    keep: NonNegativeInt = 3
    yes: bool = False


@dataclass(kw_only=True)
class Remove(Where):
    """Delete one version no alias points at: one a forget names as holding forgotten texts in its drift
    reference, say, which gc would keep as a recent champion. A dry run unless --yes; recorded as a
    registry run of kind 'remove' (the id and the reason). Rollback can then no longer step back to it.

    Args:
        version: The version id to delete (an id, not an alias: an aliased version is refused).
        reason: Why: kept in the registry's run record.
        yes: Really delete (without it, only say what would go).
    """

    version: str
    reason: str = "manual removal"
    yes: bool = False


ACTIONS: dict[str, type] = {
    "register": Register,
    "list": List,
    "show": Show,
    "promote": Promote,
    "rollback": Rollback,
    "alias": Alias,
    "history": History,
    "verify": Verify,
    "gc": Gc,
    "remove": Remove,
}
READ_ONLY = (List, Show, History, Verify)


def build_registry_parser():
    """`refit registry` with one jsonargparse subcommand per action: (parser, {action: its parser})."""
    import argparse

    from jsonargparse import ArgumentParser, DefaultHelpFormatter

    class Formatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
        """Keeps the example commands on their own lines."""

    parser = ArgumentParser(
        prog="refit registry", description=__doc__, exit_on_error=False, formatter_class=Formatter
    )
    subcommands = parser.add_subcommands(dest="action", required=True)
    subs = {}
    for name, cls in ACTIONS.items():
        subs[name] = build_parser(cls, prog=f"refit registry {name}", description=cls.__doc__)
        subcommands.add_subcommand(name, subs[name], help=(cls.__doc__ or "").splitlines()[0])
    return parser, subs


def parse_args(argv: list[str]):
    """The action's config from `ACTION [--key value ...]` (no action: list). Mistakes are ConfigErrors."""
    if argv and argv[0] in ("-h", "--help"):
        build_registry_parser()[0].print_help()
        raise SystemExit(0)
    action = argv[0] if argv and not argv[0].startswith("-") else "list"
    rest = argv[1:] if argv and not argv[0].startswith("-") else argv
    if action not in ACTIONS:
        close = difflib.get_close_matches(action, ACTIONS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"Unknown registry action '{action}' (the 'action' word after `refit registry`).{hint} "
            f"Allowed: {', '.join(repr(a) for a in ACTIONS)}."
        )
    cls = ACTIONS[action]
    try:
        return parse_config(build_registry_parser()[1][action], cls, rest)
    except ConfigError as e:
        raise ConfigError(f"`refit registry {action}`: {e} (see `refit registry {action} --help`)") from None


def _mirror(cfg, registry: Registry, move) -> None:
    """The W&B mirror of a committed move. Its failure (no API key, no network, no wandb) is a warning: the
    move is done and stays done, and before this a traceback with exit 1 told scripts it had failed."""
    try:
        version = registry.get(move.to_version)
        mirror_alias(
            registry.root,
            version.path,
            version.id,
            move.alias,
            move.reason or "",
            resolve_wandb_mode(cfg.tracking.wandb, cfg.tracking.mode),
            cfg.tracking.project,
        )
    except Exception as e:
        if not isinstance(e, (RefitError, OSError)) and type(e).__module__.split(".")[0] != "wandb":
            raise  # a bug keeps its traceback
        print(
            f"refit registry: warning: {move.alias} is now {move.to_version} (committed), but mirroring the move "
            f"to W&B failed: {type(e).__name__}: {e} The registry is the source of truth; nothing to undo. "
            "Fix tracking and move the alias again to mirror it, or pass --tracking.wandb false.",
            file=sys.stderr,
        )


def _moved(cfg, registry: Registry, move, console: Console) -> None:
    """Say what a promote or alias move did, and mirror it; one that found the alias already there wrote
    nothing (no audit row, no mirror): before, it appended a "v -> v" row to the log."""
    if not move.moved:
        console.print(
            f"{move.to_version} is already the {move.alias} (since audit row #{move.seq}); nothing was written.",
            markup=False,
        )
        return
    console.print(f"{move.alias}: {move.from_version or '-'} -> {move.to_version}", markup=False)
    _mirror(cfg, registry, move)


REASON_WIDTH = 72


def _table(title: str, columns: tuple[str, ...]) -> Table:
    return _plain_table(escape(title), columns)  # a --root path holding '[' is shown as it is


def _row(table: Table, *cells) -> None:
    """Cells as plain Text, never parsed as rich markup: a reason, recipe or folder name holding '[/bold]'
    made `history` (and list, show, gc) raise MarkupError, for good, since the audit log keeps the row.
    Control characters (an ANSI escape in a --reason) are shown as \\xNN, so a reason cannot rewrite the
    terminal of whoever reads the log."""
    table.add_row(*(Text(_visible(c if isinstance(c, str) else str(c))) for c in cells))


def _visible(text: str) -> str:
    return "".join(ch if ch.isprintable() or ch == " " else f"\\x{ord(ch):02x}" for ch in text)


def run(cfg) -> int:
    dry_run = isinstance(cfg, (Gc, Remove)) and not cfg.yes
    try:
        registry = Registry(cfg.root, cfg.db, create=not isinstance(cfg, READ_ONLY) and not dry_run)
    except NoRegistry as e:
        raise NoRegistry(f"{e} Check --root (and --db).") from None
    console = _console()
    if isinstance(cfg, Register):
        v = registry.register(Path(cfg.version))
        console.print(f"Registered {v.id} at {v.path}", markup=False)
    elif isinstance(cfg, List):
        _list(registry, cfg.format, console)
    elif isinstance(cfg, Show):
        v = registry.get(cfg.version)
        meta = read_version(v.path)
        summary = {
            "path": str(v.path),
            **{
                k: meta.get(k)
                for k in (
                    "version_id",
                    "parent",
                    "recipe",
                    "base_model",
                    "created_at",
                    "labels",
                    "metrics",
                    "data",
                    "training",
                )
            },
        }
        if cfg.format == "json":
            print(json.dumps(summary, indent=2, default=str))
        else:
            table = _table(f"version {v.id}", ("key", "value"))
            for k, value in summary.items():
                _row(table, k, value if isinstance(value, str) else json.dumps(value, default=str))
            console.print(table)
    elif isinstance(cfg, Promote):
        target = registry.get(cfg.version)
        move = registry.promote(target.id, cfg.reason, target.metrics, expected_champion=cfg.expected)
        _moved(cfg, registry, move, console)
    elif isinstance(cfg, Rollback):
        move = registry.rollback(cfg.reason, alias=cfg.alias)
        console.print(f"{move.alias}: {move.from_version} -> {move.to_version} (rollback)", markup=False)
        _mirror(cfg, registry, move)
    elif isinstance(cfg, Alias):
        move = registry.set_alias(cfg.alias, cfg.version, cfg.reason, expected=cfg.expected)
        _moved(cfg, registry, move, console)
    elif isinstance(cfg, History):
        _history(registry, cfg.alias, cfg.format, console)
    elif isinstance(cfg, Verify):
        return _verify(registry, console)
    elif isinstance(cfg, Gc):
        return _gc(registry, cfg.keep, cfg.yes, console)
    elif isinstance(cfg, Remove):
        _remove(registry, cfg.version, cfg.reason, cfg.yes, console)
    return 0


def _list(registry: Registry, fmt: str, console: Console) -> None:
    by_version: dict[str, list[str]] = {}
    for name, vid in registry.aliases().items():
        by_version.setdefault(vid, []).append(name)
    versions = registry.list_versions()
    if fmt == "json":
        print(
            json.dumps(
                [
                    {
                        **dataclasses.asdict(v),
                        "path": str(v.path),
                        "aliases": sorted(by_version.get(v.id, [])),
                    }
                    for v in versions
                ],
                indent=2,
                default=str,
            )
        )
        return
    table = _table(
        f"model versions in {registry.root}",
        ("version", "aliases", "parent", "recipe", "val accuracy", "registered"),
    )
    for v in versions:
        acc = v.metrics.get("validation", {}).get("accuracy")
        _row(
            table,
            v.id,
            ", ".join(
                [*sorted(by_version.get(v.id, [])), *([f"withdrawn ({v.withdrawn})"] if v.withdrawn else [])]
            ),
            v.parent or "-",
            v.recipe or "-",
            f"{acc:.4f}" if acc is not None else "-",
            v.registered_at,
        )
    console.print(table)


def _history(registry: Registry, alias: str | None, fmt: str, console: Console) -> None:
    moves = registry.history(alias)
    if fmt == "json":
        rows = [{k: v for k, v in dataclasses.asdict(m).items() if k != "moved"} for m in moves]  # each a row
        print(json.dumps(rows, indent=2, default=str))
        return
    table = _table("alias moves (audit log)", ("#", "at", "alias", "from", "to", "action", "by", "reason"))
    # a cycle's reason holds the whole gate text (hundreds of characters): it folds onto lines of at most
    # REASON_WIDTH instead of making every row as wide (ids and times are never cut: refit.report)
    table.columns[-1].max_width = REASON_WIDTH
    for m in moves:
        _row(
            table,
            str(m.seq),
            m.at,
            m.alias,
            m.from_version or "-",
            m.to_version or "-",
            m.action,
            m.actor,
            m.reason or "",
        )
    console.print(table)


def _verify(registry: Registry, console: Console) -> int:
    findings = verify_registry(registry)
    table = _table(f"registry verify {registry.root}", ("check", "name", "status", "detail"))
    for f in findings:
        _row(table, f.what, f.name, "ok" if f.ok else "PROBLEM", f.detail)
    console.print(table)
    bad = [f for f in findings if not f.ok]
    console.print(
        f"{len(bad)} problem(s) in {len(findings)} check(s)." if bad else "All checks passed.", markup=False
    )
    return 1 if bad else 0


def _gc(registry: Registry, keep: int, yes: bool, console: Console) -> int:
    plan = plan_gc(registry, keep)
    table = _table(
        f"registry gc {registry.root} (keep the last {keep} champions)", ("what", "name", "action")
    )
    verb = "remove" if yes else "would remove"
    for path in plan.staging:
        _row(table, "stale staging", path.name, verb)
    for path in plan.orphans:
        _row(table, "unregistered folder", path.name, verb)
    for vid in plan.versions:
        _row(table, "unreferenced version", vid, verb)
    for vid in plan.recent:
        _row(
            table,
            "unreferenced version",
            vid,
            f"keep (registered under {STALE_AFTER_S / 60:g} min ago: may get an alias)",
        )
    for path in plan.in_progress:
        _row(table, "staging in progress", path.name, "keep (younger than the stale limit)")
    console.print(table)
    if plan.empty:
        console.print("Nothing to remove.", markup=False)
    elif yes:
        removed = apply_gc(registry, plan)
        console.print(f"Removed {len(removed)}: {', '.join(removed)}", markup=False)
    else:
        console.print("Dry run: nothing was removed. Add --yes to remove the above.", markup=False)
    return 0


def _remove(registry: Registry, ref: str, reason: str, yes: bool, console: Console) -> None:
    """One named version out of the registry (Registry.remove_version refuses an aliased one again, in the
    transaction that deletes its row)."""
    vid = registry.resolve(ref)  # an unknown id or a bad name is refused here, naming it
    holders = sorted(a for a, v in registry.aliases().items() if v == vid)
    if holders:
        raise ConfigError(
            f"Version {vid} is pointed at by {', '.join(holders)}: not removing it. Point "
            f"{'that alias' if len(holders) == 1 else 'those aliases'} at another version first (`refit "
            "registry promote` / `refit registry alias`), then remove it."
        )
    path = registry.get(vid, verify=False).path
    # the audit log keeps its moves; rollback refuses to step back to a version that is gone, saying so
    was_champion = any(m.to_version == vid for m in registry.history(CHAMPION))
    note = (
        " (a former champion: `refit registry rollback` can no longer step back to it)"
        if was_champion
        else ""
    )
    if not yes:
        console.print(f"Would remove {vid} at {path}{note}. Dry run: add --yes to remove it.", markup=False)
        return
    # recorded in the transaction that deletes the row: a kill after it never leaves a run 'running'
    run_id = registry.remove_version(vid, run=("remove", {"version": vid, "reason": reason}))
    console.print(f"Removed {vid} ({path}){note}; recorded as registry run {run_id}.", markup=False)
