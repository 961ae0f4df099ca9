"""refit registry: list, inspect and move the aliases of registered model versions.

    refit registry register --version runs/demo/version      # copy a version in, record its hash
    refit registry list                                      # versions with their aliases and metrics
    refit registry show --version champion                   # one version's refit.json summary
    refit registry promote --version v2026... --reason "beats v1 on the golden set"
    refit registry rollback --reason "latency regression"    # champion back to the one before
    refit registry alias --alias staging --version v2026...  # any alias of your own
    refit registry history                                   # the audit log of alias moves
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.table import Table

from refit.errors import ConfigError
from refit.models import read_version
from refit.registry import CHAMPION, Registry
from refit.registry.mirror import mirror_alias
from refit.settings import TrackingConfig
from refit.tracking import resolve_wandb_mode

POSITIONAL = ("action",)


@dataclass
class Config:
    """Registry commands.

    Args:
        action: register, list, show, promote, rollback, alias or history.
        root: Registry folder (versions/ and registry.db).
        db: SQLite database path (default ROOT/registry.db).
        version: A version id, an alias, or (for register) a version folder.
        alias: Alias to set (alias) or to show the history of (history).
        reason: Why: kept in the audit log.
        tracking: W&B mirror of alias moves (versions as artifacts, aliases as artifact aliases).
    """

    action: Literal["register", "list", "show", "promote", "rollback", "alias", "history"] = "list"
    root: str = "registry"
    db: str | None = None
    version: str | None = None
    alias: str | None = None
    reason: str | None = None
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        if self.alias is not None and not _ALIAS.match(self.alias):
            raise ValueError(f"Invalid value for 'alias': {self.alias!r}; an alias is 1-64 letters, digits, '-', '_' "
                             "or '.', starting with a letter or digit.")


# An alias is a name, never a path: the same strict pattern as version ids (letters, digits, -_.).
_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _need(value: str | None, key: str, action: str) -> str:
    if not value:
        raise ConfigError(f"`refit registry {action}` needs --{key}.")
    return value


def _mirror(cfg: Config, registry: Registry, move) -> None:
    version = registry.get(move.to_version)
    mirror_alias(registry.root, version.path, version.id, move.alias, move.reason or "",
                 resolve_wandb_mode(cfg.tracking.wandb, cfg.tracking.mode), cfg.tracking.project)


def run(cfg: Config) -> int:
    registry = Registry(cfg.root, cfg.db)
    console = Console()
    if cfg.action == "register":
        v = registry.register(Path(_need(cfg.version, "version", "register")))
        console.print(f"Registered {v.id} at {v.path}")
    elif cfg.action == "list":
        by_version: dict[str, list[str]] = {}
        for name, vid in registry.aliases().items():
            by_version.setdefault(vid, []).append(name)
        table = Table(title=f"registry {registry.root}")
        for col in ("version", "aliases", "parent", "recipe", "val accuracy", "registered"):
            table.add_column(col)
        for v in registry.list_versions():
            acc = v.metrics.get("validation", {}).get("accuracy")
            table.add_row(v.id, ", ".join(sorted(by_version.get(v.id, []))), v.parent or "-", v.recipe or "-",
                          f"{acc:.4f}" if acc is not None else "-", v.registered_at)
        console.print(table)
    elif cfg.action == "show":
        v = registry.get(cfg.version or CHAMPION)
        meta = read_version(v.path)
        summary = {k: meta.get(k) for k in ("version_id", "parent", "recipe", "base_model", "created_at",
                                             "labels", "metrics", "data", "training")}
        console.print_json(json.dumps({"path": str(v.path), **summary}, default=str))
    elif cfg.action == "promote":
        target = registry.get(_need(cfg.version, "version", "promote"))
        move = registry.promote(target.id, cfg.reason or "manual promotion", target.metrics)
        console.print(f"champion: {move.from_version or '-'} -> {move.to_version}")
        _mirror(cfg, registry, move)
    elif cfg.action == "rollback":
        move = registry.rollback(cfg.reason or "manual rollback", alias=cfg.alias or CHAMPION)
        console.print(f"{move.alias}: {move.from_version} -> {move.to_version} (rollback)")
        _mirror(cfg, registry, move)
    elif cfg.action == "alias":
        alias = _need(cfg.alias, "alias", "alias")
        move = registry.set_alias(alias, _need(cfg.version, "version", "alias"), cfg.reason)
        console.print(f"{alias}: {move.from_version or '-'} -> {move.to_version}")
        _mirror(cfg, registry, move)
    else:
        table = Table(title="alias moves (audit log)")
        for col in ("#", "at", "alias", "from", "to", "action", "by", "reason"):
            table.add_column(col)
        for m in registry.history(cfg.alias):
            table.add_row(str(m.seq), m.at, m.alias, m.from_version or "-", m.to_version or "-", m.action,
                          m.actor, m.reason or "")
        console.print(table)
    return 0
