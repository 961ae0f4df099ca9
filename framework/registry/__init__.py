"""Versions, aliases (champion, challenger, your own) and an append-only audit log in SQLite."""

from refit.registry.store import (
    CHALLENGER,
    CHAMPION,
    AliasMove,
    RegisteredVersion,
    Registry,
    RegistryError,
    Superseded,
)

__all__ = ["CHALLENGER", "CHAMPION", "AliasMove", "RegisteredVersion", "Registry", "RegistryError", "Superseded"]
