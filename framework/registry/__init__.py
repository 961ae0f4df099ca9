"""Versions, aliases (champion, challenger, your own) and a hash-chained, append-only audit log in SQLite."""

from refit.registry.check import Finding, verify_registry
from refit.registry.gc import GcPlan, apply_gc, plan_gc
from refit.registry.store import (
    CHALLENGER,
    CHAMPION,
    AliasMove,
    NoRegistry,
    RegisteredVersion,
    Registry,
    RegistryError,
    Superseded,
    registry_holding,
)

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "AliasMove",
    "Finding",
    "GcPlan",
    "NoRegistry",
    "RegisteredVersion",
    "Registry",
    "RegistryError",
    "Superseded",
    "apply_gc",
    "plan_gc",
    "registry_holding",
    "verify_registry",
]
