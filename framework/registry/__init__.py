"""Versions, aliases (champion, challenger, your own) and a hash-chained, append-only audit log in SQLite."""

from refit.registry.audit import CHALLENGER, CHAMPION, AliasMove, Superseded
from refit.registry.check import Finding, verify_registry
from refit.registry.db import NoRegistry, RegistryError
from refit.registry.gc import GcPlan, apply_gc, plan_gc
from refit.registry.layout import registry_holding
from refit.registry.lookup import version_folder
from refit.registry.store import RegisteredVersion, Registry

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
    "version_folder",
]
