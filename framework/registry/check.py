"""`refit registry verify`: every version against its manifest, the audit hash chain, the aliases vs the log.

Reads only. Each finding is one row (what, name, ok, detail), so the CLI prints a table and exits non-zero
when any row is not ok.
"""

from __future__ import annotations

from dataclasses import dataclass

from refit.errors import VersionError
from refit.registry.audit import alias_states
from refit.registry.chain import check_chain
from refit.registry.db import RegistryError
from refit.registry.layout import is_staging
from refit.registry.store import Registry

__all__ = ["Finding", "verify_registry"]


@dataclass(frozen=True)
class Finding:
    what: str  # "version", "audit", "alias", "folder", "database"
    name: str
    ok: bool
    detail: str


def verify_registry(registry: Registry) -> list[Finding]:
    try:
        versions: list | None = registry.list_versions()
    except (RegistryError, VersionError) as e:  # a hand-edited row (bad id, metrics not JSON): reported
        versions, findings = None, [Finding("database", "versions table", False, str(e))]
    else:
        findings = [_version(registry, v.id) for v in versions]
    if versions is not None and registry.versions_dir.is_dir():  # which folders are registered, if readable
        known = {v.id for v in versions}
        for path in sorted(registry.versions_dir.iterdir()):
            if is_staging(path.name):
                findings.append(
                    Finding("folder", path.name, True, "staging of an unfinished write (`gc` removes it)")
                )
            elif path.name not in known:
                findings.append(Finding("folder", path.name, False, "in versions/ but not registered"))
    rows = registry.audit_rows()
    problems, legacy = check_chain(rows)
    for p in problems:
        findings.append(Finding("audit", f"#{p.seq}", False, p.message))
    if not problems:
        note = f"; {legacy} older row(s) predate the chain" if legacy else ""
        findings.append(Finding("audit", f"{len(rows)} rows", True, "hash chain intact" + note))
    for name, want, have in alias_states(rows, registry.aliases()):
        if want == have:
            findings.append(Finding("alias", name, True, f"{have} (matches the audit log)"))
        else:
            findings.append(
                Finding(
                    "alias",
                    name,
                    False,
                    f"points at {have or 'nothing'} but the audit log says {want or 'nothing'}",
                )
            )
    return findings


def _version(registry: Registry, version_id: str) -> Finding:
    try:
        registry.verify(version_id)
    except VersionError as e:
        return Finding("version", version_id, False, str(e))
    return Finding("version", version_id, True, "all files match the manifest")
