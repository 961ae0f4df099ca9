"""Fail closed on a damaged or missing database; tamper-evident audit log; private files; absolute paths
(issue #9 item 6, and the relative --root part of item 9)."""

from __future__ import annotations

import json
import os
import sqlite3
import stat

import pytest

from refit.cli import main
from refit.registry import CHAMPION, NoRegistry, Registry, RegistryError, verify_registry
from tests.conftest import registry_with


@pytest.fixture(scope="module")
def versions(tiny_versions):
    return tiny_versions[:3]


@pytest.fixture
def reg(tmp_path, versions):
    reg = registry_with(tmp_path / "reg", versions, ("v0", "first"), ("v1", "second"))
    reg.set_alias("challenger", "v2", "trained")
    return reg


def _tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else None


def test_read_only_open_of_a_missing_root_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "registyr"
    with pytest.raises(RegistryError, match=f"No registry at {missing}"):
        Registry(missing, create=False)
    for action in ("list", "show", "history", "verify"):
        assert main(["registry", action, "--root", str(missing)]) == 2
        err = capsys.readouterr().err
        assert f"No registry at {missing}" in err and "Traceback" not in err
        assert "Check --root (and --db)" in err  # `refit registry`'s own flags
    assert not missing.exists()


def test_must_exist_refuses_a_missing_root_and_opens_an_existing_one_for_writing(tmp_path, reg):
    """maintain and serve open with must_exist: a misspelt root is refused, not created empty; an existing
    registry opened so is writable (a cycle records runs and moves aliases)."""
    missing = tmp_path / "regsitry"
    with pytest.raises(NoRegistry, match=f"No registry at {missing}"):
        Registry(missing, must_exist=True)
    assert not missing.exists()
    opened = Registry(reg.root, must_exist=True)
    assert opened.writable
    run_id = opened.start_run("maintain", {})
    assert [r["id"] for r in opened.runs("maintain")] == [run_id]


def test_read_only_commands_do_not_write(reg, capsys):
    before = {p: p.stat().st_mtime_ns for p in reg.root.rglob("*")}
    for action in ("list", "history", "verify"):
        assert main(["registry", action, "--root", str(reg.root)]) == 0
    assert main(["registry", "show", "--root", str(reg.root), "--version", "champion"]) == 0
    assert {p: p.stat().st_mtime_ns for p in reg.root.rglob("*")} == before
    with pytest.raises(RegistryError, match="read-only"):
        Registry(reg.root, create=False).promote("v2", "x")


def test_versions_without_a_database_is_an_error_with_advice(reg):
    reg.db_path.unlink()
    for create in (True, False):
        with pytest.raises(
            RegistryError, match=r"holds 3 version folder\(s\).*database .* is missing.*re-register"
        ):
            Registry(reg.root, create=create)
    assert not reg.db_path.exists()  # not silently rebuilt


def test_zero_byte_database_is_refused_not_rebuilt(reg, capsys):
    reg.db_path.write_bytes(b"")
    with pytest.raises(RegistryError, match=r"is empty \(zero bytes\).*Restore it from a backup"):
        Registry(reg.root)
    assert main(["registry", "list", "--root", str(reg.root)]) == 2
    assert "zero bytes" in capsys.readouterr().err
    assert main(["maintain", "--registry.root", str(reg.root), "--once"]) == 2
    err = capsys.readouterr().err
    assert "zero bytes" in err and "Traceback" not in err
    assert reg.db_path.stat().st_size == 0


def test_corrupt_database_is_a_clear_error(reg, capsys):
    data = bytearray(reg.db_path.read_bytes())
    data[:100] = os.urandom(100)  # the header: no longer a SQLite file
    reg.db_path.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="not a readable SQLite database"):
        Registry(reg.root)
    assert main(["registry", "history", "--root", str(reg.root)]) == 2
    err = capsys.readouterr().err
    assert "not a readable SQLite database" in err and "Traceback" not in err


def test_audit_rows_form_a_hash_chain(reg):
    rows = reg.audit_rows()
    assert len(rows) == 3 and rows[0]["prev_hash"] == "0" * 64
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(rows, rows[1:]))
    assert all(f.ok for f in verify_registry(reg))


def _tamper(reg, sql: str) -> None:
    """What someone with the database file can do: drop the append-only triggers and edit the log."""
    db = sqlite3.connect(reg.db_path)
    db.execute("DROP TRIGGER audit_append_only_u")
    db.execute("DROP TRIGGER audit_append_only_d")
    db.execute(sql)
    db.commit()
    db.close()


def test_verify_reports_an_edited_audit_row(reg, capsys):
    _tamper(reg, "UPDATE audit SET reason = 'nothing to see' WHERE seq = 1")
    bad = [f for f in verify_registry(reg) if not f.ok]
    assert [(f.what, f.name) for f in bad] == [("audit", "#1")] and "altered" in bad[0].detail
    assert main(["registry", "verify", "--root", str(reg.root)]) == 1
    assert "PROBLEM" in capsys.readouterr().out


def test_verify_reports_a_deleted_audit_row(reg):
    _tamper(reg, "DELETE FROM audit WHERE seq = 2")
    bad = [f for f in verify_registry(reg) if not f.ok]
    assert any(f.what == "audit" and "removed, inserted or reordered" in f.detail for f in bad)
    assert any(f.what == "alias" and f.name == CHAMPION for f in bad)  # the log now replays to v0


def test_verify_reports_an_alias_that_disagrees_with_the_log(reg, capsys):
    db = sqlite3.connect(reg.db_path)
    db.execute("UPDATE aliases SET version_id = 'v2' WHERE name = 'champion'")
    db.commit()
    db.close()
    bad = [f for f in verify_registry(reg) if not f.ok]
    assert [(f.what, f.name) for f in bad] == [("alias", CHAMPION)]
    assert "points at v2 but the audit log says v1" in bad[0].detail
    assert main(["registry", "verify", "--root", str(reg.root)]) == 1


def test_verify_reports_a_damaged_version(reg, capsys):
    (reg.get("v2").path / "model" / "tokenizer.json").unlink()
    assert main(["registry", "verify", "--root", str(reg.root)]) == 1
    out = capsys.readouterr().out
    assert "v2" in out and "tokenizer.json" in out and "PROBLEM" in out


def test_registry_files_are_owner_only_whatever_the_umask(tmp_path, versions):
    old = os.umask(0)
    try:
        reg = Registry(tmp_path / "reg")
        reg.register(versions[0])
    finally:
        os.umask(old)
    paths = [reg.root, reg.versions_dir, reg.db_path, *reg.versions_dir.rglob("*")]
    for p in paths:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))


def test_relative_root_works_from_another_working_directory(tmp_path, versions, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    assert main(["registry", "register", "--root", "reg", "--version", str(versions[0])]) == 0
    assert main(["registry", "promote", "--root", "reg", "--version", "v0", "--tracking.wandb", "false"]) == 0
    db = sqlite3.connect(tmp_path / "a" / "reg" / "registry.db")
    (stored,) = db.execute("SELECT path FROM versions").fetchone()
    db.close()
    assert os.path.isabs(stored) and stored == str((tmp_path / "a" / "reg" / "versions" / "v0").resolve())
    monkeypatch.chdir(tmp_path / "b")
    reg = Registry("../a/reg", create=False)
    champion = reg.get(CHAMPION)  # verified from here: not 'corrupt'
    assert (
        champion.path.is_absolute()
        and champion.path == (tmp_path / "a" / "reg" / "versions" / "v0").resolve()
    )
    assert main(["registry", "verify", "--root", "../a/reg"]) == 0
    assert not (tmp_path / "b" / "reg").exists()


def test_old_database_is_migrated_and_its_rows_counted_as_unchained(tmp_path, versions):
    """A registry.db from before the chain: columns added in place, old rows reported, new rows chained."""
    reg = Registry(tmp_path / "reg")
    reg.register(versions[0])
    reg.register(versions[1])
    db = sqlite3.connect(reg.db_path)
    db.executescript("""
        CREATE TABLE audit_old AS SELECT seq, at, alias, from_version, to_version, actor, action, reason, metrics
            FROM audit;
        DROP TABLE audit;
        CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, alias TEXT NOT NULL,
            from_version TEXT, to_version TEXT, actor TEXT NOT NULL, action TEXT NOT NULL, reason TEXT, metrics TEXT);
        INSERT INTO audit (at, alias, from_version, to_version, actor, action, reason, metrics)
            VALUES ('2025-01-01T00:00:00+00:00', 'champion', NULL, 'v0', 'me', 'promote', 'old', NULL);
        INSERT INTO aliases VALUES ('champion', 'v0', 'then');
    """)
    db.close()
    reg = Registry(tmp_path / "reg")
    reg.promote("v1", "new")
    findings = verify_registry(reg)
    assert all(f.ok for f in findings), findings
    assert any("1 older row(s) predate the chain" in f.detail for f in findings)
    assert json.loads(json.dumps([m.to_version for m in reg.history()])) == ["v0", "v1"]


def test_a_withdrawn_version_gets_no_alias_again_and_an_old_database_reads_without_the_column(
    tmp_path, versions
):
    """A forget withdraws the versions that learned forgotten texts, in the transaction that starts its run
    (Registry.start_run's `withdraw`): no alias may be moved to one again (before: one rollback served it),
    an alias already on it stays (a no-op promote is no move), and a reader of a registry from before the
    column still lists its versions."""
    from refit.errors import VersionError

    reg = Registry(tmp_path / "reg")
    v0, v1 = (reg.register(v).id for v in versions[:2])
    reg.promote(v0, "first")
    reg.promote(v1, "second")
    run = reg.start_run("forget", {"ids": 1}, withdraw=[v0, v1])
    assert reg.get(v0).withdrawn == f"forget run {run}" == reg.get(v1).withdrawn
    reg.promote(v1, "again")  # already the champion: nothing moves, so nothing is refused
    for move in (lambda: reg.rollback("back"), lambda: reg.promote(v0, "by hand")):
        with pytest.raises(VersionError, match=f"{v0} was withdrawn by forget run {run}"):
            move()
    with pytest.raises(VersionError, match="no alias can be moved to it again"):
        reg.set_alias("staging", v1)
    assert reg.aliases() == {CHAMPION: v1}
    assert (
        reg.start_run("forget", {}, withdraw=[v1]) and reg.get(v1).withdrawn == f"forget run {run}"
    )  # the first

    old = tmp_path / "old"
    Registry(old).register(versions[0])
    db = sqlite3.connect(old / "registry.db")
    db.execute("ALTER TABLE versions DROP COLUMN withdrawn")  # as a registry.db from before it
    db.commit()
    db.close()
    assert [v.withdrawn for v in Registry(old, create=False).list_versions()] == [None]
    assert [v.withdrawn for v in Registry(old).list_versions()] == [None]  # a writer adds the column
