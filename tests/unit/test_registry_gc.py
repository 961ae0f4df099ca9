"""Stale staging is cleaned on open and `refit registry gc` removes only what nothing needs (issue #9 item 13)."""

from __future__ import annotations

import os
import time

import pytest

from refit.cli import main
from refit.registry import CHALLENGER, CHAMPION, Registry, apply_gc, plan_gc
from tests.conftest import backdate_registrations


@pytest.fixture(scope="module")
def versions(tiny_versions):
    return tiny_versions[:6]


def _age(path, seconds: float = 3600) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def _staging(reg, name: str, old: bool):
    path = reg.versions_dir / name
    path.mkdir()
    (path / "model.safetensors").write_bytes(b"half-copied")
    if old:
        _age(path)
    return path


def test_stale_staging_is_removed_on_open_and_fresh_staging_kept(tmp_path, versions):
    reg = Registry(tmp_path / "reg")
    reg.register(versions[0])
    stale_tmp = _staging(reg, ".v9.tmp-deadbeef", old=True)
    stale_old = _staging(reg, ".v0.old-cafef00d", old=True)
    fresh = _staging(reg, ".v8.tmp-12345678", old=False)  # maybe another process registering right now
    outside = tmp_path / ".v7.tmp-00000000"  # not inside the registry: never touched
    outside.mkdir()
    _age(outside)
    Registry(tmp_path / "reg", create=False)  # read-only opens change nothing
    assert stale_tmp.exists()
    Registry(tmp_path / "reg")
    assert not stale_tmp.exists() and not stale_old.exists()
    assert fresh.exists() and outside.exists()
    reg.get("v0")


@pytest.fixture
def reg(tmp_path, versions):
    """Champion history v0 -> v1 -> v2 -> v3, challenger v4, v5 never used, one user alias on v0."""
    reg = Registry(tmp_path / "reg")
    for v in versions:
        reg.register(v)
    for vid in ("v0", "v1", "v2", "v3"):
        reg.promote(vid, f"promote {vid}")
    reg.set_alias(CHALLENGER, "v4", "trained")
    backdate_registrations(reg)
    return reg


def test_gc_plan_protects_aliases_and_the_last_champions(reg):
    assert plan_gc(reg, keep=2).versions == ["v0", "v1", "v5"]  # v3 champion, v2 in the last 2, v4 challenger
    assert plan_gc(reg, keep=3).versions == ["v0", "v5"]
    assert plan_gc(reg, keep=0).versions == ["v0", "v1", "v2", "v5"]
    reg.set_alias("audit-hold", "v0", "kept for the auditors")
    assert plan_gc(reg, keep=0).versions == ["v1", "v2", "v5"]


def test_gc_is_a_dry_run_unless_yes(reg, capsys):
    stale = _staging(reg, ".v9.tmp-deadbeef", old=True)
    orphan = reg.versions_dir / "leftover"
    orphan.mkdir()
    _age(orphan)
    before = sorted(p.name for p in reg.versions_dir.iterdir())
    assert main(["registry", "gc", "--root", str(reg.root), "--keep", "1"]) == 0
    out = capsys.readouterr().out
    assert "Dry run" in out and "v0" in out and "v5" in out and "leftover" in out
    assert sorted(p.name for p in reg.versions_dir.iterdir()) == before
    assert main(["registry", "gc", "--root", str(reg.root), "--keep", "1", "--yes"]) == 0
    left = sorted(p.name for p in reg.versions_dir.iterdir())
    assert left == ["v3", "v4"] and not stale.exists() and not orphan.exists()
    assert sorted(v.id for v in reg.list_versions()) == ["v3", "v4"]
    assert reg.aliases() == {CHAMPION: "v3", CHALLENGER: "v4"}
    reg.get(CHAMPION)
    reg.get(CHALLENGER)
    assert main(["registry", "verify", "--root", str(reg.root)]) == 0


def test_gc_rechecks_before_removing(reg):
    """A version promoted between the plan and its application is not removed."""
    plan = plan_gc(reg, keep=1)
    assert "v5" in plan.versions
    reg.promote("v5", "promoted meanwhile")
    removed = apply_gc(reg, plan)
    assert "v5" not in removed and (reg.versions_dir / "v5").is_dir()
    reg.get("v5")


def test_gc_never_touches_anything_outside_versions(tmp_path, reg):
    precious = tmp_path / "precious"
    precious.mkdir()
    (reg.versions_dir / "link").symlink_to(precious)
    _age(reg.versions_dir / "link")
    plan = plan_gc(reg, keep=0)
    apply_gc(reg, plan)
    assert precious.is_dir()
