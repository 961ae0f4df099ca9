"""An attack pass on gc, promote and rollback: hand-edited database rows, races between commands, SIGKILLs.

Each test here failed before its fix: a hand-edited audit row made rollback promote a version that had never
been champion; an alias row deleted by hand let gc remove the log's champion; gc deleted a folder registered
between its plan and its removal; a concurrent writer deleted the staging copy of a registration in progress;
an alias at a missing row, a bad JSON column and a promote racing gc ended in tracebacks.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

import refit.registry.store as store
from refit.cli import main
from refit.errors import VersionError
from refit.models.version import FAULT_ENV
from refit.registry import CHAMPION, Registry, apply_gc, plan_gc, verify_registry
from refit.registry.store import FAULT_PHASES
from tests.conftest import backdate_registrations, registry_with


@pytest.fixture(scope="module")
def versions(tiny_versions):
    return tiny_versions[:4]


@pytest.fixture
def reg(tmp_path, versions):
    """v0 -> v1 champion (v0 the rollback target), v2 and v3 registered and unreferenced."""
    reg = registry_with(tmp_path / "reg", versions, ("v0", "first"), ("v1", "second"))
    backdate_registrations(reg)
    return reg


def _sql(reg, *statements: str) -> None:
    """What someone with the database file can do (the append-only triggers dropped first)."""
    db = sqlite3.connect(reg.db_path)
    db.execute("DROP TRIGGER IF EXISTS audit_append_only_u")
    for s in statements:
        db.execute(s)
    db.commit()
    db.close()


def _age(path, seconds: float = 3600) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def _cli(reg, *argv: str) -> int:
    return main(["registry", *argv, "--root", str(reg.root)])


# --- hand-edited rows: refused naming the database, exit 2, the champion stays ----------------------------
def test_rollback_refuses_an_edited_audit_log(reg, capsys):
    _sql(reg, "UPDATE audit SET to_version = 'v3' WHERE seq = 1")  # v3 was never champion
    assert _cli(reg, "rollback", "--tracking.wandb", "false") == 2
    err = capsys.readouterr().err
    assert str(reg.db_path) in err and "audit row 1 was altered" in err and "Traceback" not in err
    assert reg.aliases()[CHAMPION] == "v1"


@pytest.mark.parametrize(
    "edit, says",
    [
        ("UPDATE audit SET to_version = 'v3' WHERE seq = 1", "audit row 1 was altered"),
        ("DELETE FROM aliases WHERE name = 'champion'", "alias 'champion' points at nothing"),
    ],
)
def test_gc_refuses_to_plan_from_an_edited_log(reg, capsys, edit, says):
    """Before: with the champion's alias row deleted, `gc --keep 0 --yes` removed the log's champion v1."""
    if "audit" not in edit:
        sqlite3.connect(reg.db_path).execute(edit).connection.commit()
    else:
        _sql(reg, edit)
    assert _cli(reg, "gc", "--keep", "0", "--yes") == 2
    err = capsys.readouterr().err
    assert str(reg.db_path) in err and says in err and "Traceback" not in err
    assert all((reg.versions_dir / f"v{i}").is_dir() for i in range(4))


def test_an_alias_at_a_missing_version_row_is_a_clear_error(reg, capsys):
    _sql(reg, "INSERT INTO aliases VALUES ('ghost', 'vX', 'now')")  # no foreign keys outside refit
    assert _cli(reg, "show", "--version", "ghost") == 2
    err = capsys.readouterr().err
    assert str(reg.db_path) in err and "'vX'" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "edit, action",
    [
        ("UPDATE versions SET metrics = '{bad' WHERE id = 'v1'", "list"),
        ("UPDATE versions SET metrics = '[1]' WHERE id = 'v1'", "show"),
        ("UPDATE audit SET metrics = '{bad' WHERE seq = 1", "history"),
        ("UPDATE versions SET id = '../x' WHERE id = 'v2'", "list"),
    ],
)
def test_bad_columns_are_refused_naming_the_database(reg, capsys, edit, action):
    _sql(reg, edit)
    assert _cli(reg, action) == 2
    err = capsys.readouterr().err
    assert str(reg.db_path) in err and "Traceback" not in err
    if "versions" in edit:  # verify reports the bad row and still checks the audit log and the aliases
        assert _cli(reg, "verify") == 1
        out = capsys.readouterr().out
        assert "versions table" in out and "hash chain intact" in out and "not registered" not in out


@pytest.mark.parametrize("where", ["root-file", "db-folder", "db-fifo"])
def test_a_root_or_database_that_is_not_a_file_of_its_kind_is_named(tmp_path, reg, capsys, where):
    """Before: a --root that is a file made promote die on mkdir (traceback); a --db folder or FIFO was
    reported 'missing'."""
    if where == "root-file":
        (tmp_path / "afile").write_text("")
        argv = ["--root", str(tmp_path / "afile")]
    else:
        odd = tmp_path / "odd.db"
        odd.mkdir() if where == "db-folder" else os.mkfifo(odd)
        argv = ["--root", str(reg.root), "--db", str(odd)]
    assert main(["registry", "promote", "--version", "v0", "--tracking.wandb", "false", *argv]) == 2
    err = capsys.readouterr().err
    assert ("is not a folder" if where == "root-file" else "is not a regular file") in err
    assert "Traceback" not in err and reg.aliases()[CHAMPION] == "v1"


def test_rollback_to_a_version_whose_files_were_edited_is_refused(reg, capsys):
    """Held before this pass; kept as a guard: the rollback target is verified like any move's target."""
    with (reg.versions_dir / "v0" / "model" / "config.json").open("a") as f:
        f.write(" ")
    assert _cli(reg, "rollback", "--tracking.wandb", "false") == 2
    err = capsys.readouterr().err
    assert "config.json" in err and "Traceback" not in err
    assert reg.aliases()[CHAMPION] == "v1"


def test_rollback_to_a_version_gc_removed_says_so(reg, capsys):
    reg.promote("v2", "third")
    apply_gc(reg, plan_gc(reg, keep=1))  # v1, the rollback target, goes
    assert _cli(reg, "rollback", "--tracking.wandb", "false") == 2
    assert "no longer in the registry" in capsys.readouterr().err
    assert reg.aliases()[CHAMPION] == "v2"


def test_reasons_with_markup_or_escapes_are_shown_as_typed(reg, capsys, monkeypatch):
    """Before: a --reason holding '[/bold]' made `history` raise rich's MarkupError for good (the audit log
    keeps the row), and an ANSI escape in it reached the reader's terminal."""
    reason = "[/bold] beats v1 \x1b[2J\x1b[31mred"
    assert _cli(reg, "promote", "--version", "v2", "--reason", reason, "--tracking.wandb", "false") == 0
    capsys.readouterr()
    assert _cli(reg, "history") == 0
    out = capsys.readouterr().out
    assert "[/bold] beats v1 \\x1b[2J\\x1b[31mred" in out and "\x1b" not in out


def test_a_failed_wandb_mirror_after_the_move_is_a_warning_not_a_failure(reg, tmp_path):
    """Before: W&B refusing (here: online with no API key, which fails at once) ended the committed promote
    in a traceback with exit 1, so a script took the new champion for a failed promotion."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), HF_HUB_OFFLINE="1")
    argv = ["registry", "promote", "--version", "v2", "--root", str(reg.root), "--tracking.mode", "online"]
    proc = subprocess.run(
        [sys.executable, "-m", "refit", *argv], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert "champion is now v2 (committed), but mirroring the move to W&B failed" in proc.stderr
    assert reg.aliases()[CHAMPION] == "v2"


# --- races ---------------------------------------------------------------------------------------------
def test_gc_keeps_a_version_registered_moments_ago_for_the_alias_about_to_point_at_it(
    tmp_path, reg, versions, capsys
):
    """A cycle registers its challenger, then points `challenger` at it. Before: a gc in between removed the
    new version (no alias yet), and the cycle's alias move failed."""
    fresh = Registry(tmp_path / "fresh")
    fresh.register(versions[2])  # registered now, no alias yet
    assert main(["registry", "gc", "--root", str(fresh.root), "--keep", "0", "--yes"]) == 0
    assert "registered under 10 min ago" in capsys.readouterr().out
    fresh.set_alias("challenger", "v2", "retrained")  # the cycle's next step
    assert plan_gc(fresh, keep=0, stale_after_s=0).versions == []  # aliased now


def test_gc_keeps_a_folder_registered_between_its_plan_and_its_removal(reg, versions):
    """An old unregistered folder (a killed registration of v3) is planned away; v3 is then registered over
    it. Before: gc deleted the registered v3's folder (only versions were re-checked, not folders)."""
    apply_gc(reg, plan_gc(reg, keep=0))  # v2, v3 removed
    leftover = reg.versions_dir / "v3"
    leftover.mkdir()
    (leftover / "half").write_bytes(b"x")
    _age(leftover)
    plan = plan_gc(reg, keep=0)
    assert plan.orphans == [leftover]
    reg.register(versions[3])
    assert "v3" not in apply_gc(reg, plan)
    reg.get("v3")  # whole and verified


def test_a_writer_opening_the_registry_keeps_a_registration_staging_of_an_old_version(tmp_path, reg):
    """copytree gave the staging copy its source's mtime, so a version written over ten minutes ago looked like
    a killed write's leftover at once: any writer opening the registry (promote, gc) deleted it mid-register."""
    import shutil

    source = tmp_path / "old-v9"
    shutil.copytree(reg.get("v3").path, source)
    for p in [source, *source.rglob("*")]:
        _age(p)
    staged = reg._stage(source, "v3")
    Registry(reg.root)  # another process's promote opens the registry: clean_staging
    assert staged.is_dir()
    assert staged not in plan_gc(reg, keep=0).staging


def _gc_v2_during(monkeypatch, owner, name: str, reg) -> None:
    """Wrap the real `owner.name` so that a real removal of v2 (what a concurrent gc does) runs right after it."""
    real = getattr(owner, name)

    def then_gc(*args, **kwargs):
        out = real(*args, **kwargs)
        if "v2" in map(str, args) or any(getattr(a, "name", None) == "v2" for a in args):
            Registry(reg.root).remove_version("v2")
        return out

    monkeypatch.setattr(owner, name, then_gc)


def test_promote_of_a_version_gc_removes_after_its_check_is_a_clear_error(reg, monkeypatch):
    """gc removes v2 after promote verified it and before its transaction: the foreign key then raised an
    IntegrityError (a traceback, not a RefitError). The check is real; a real removal runs at that moment."""
    _gc_v2_during(monkeypatch, store.Registry, "verify", reg)
    with pytest.raises(VersionError, match="v2 was removed from the registry"):
        reg.promote("v2", "racing gc")
    assert reg.aliases()[CHAMPION] == "v1" and len(reg.history(CHAMPION)) == 2


def test_a_version_removed_while_it_is_verified_is_a_clear_error(reg, monkeypatch, capsys):
    """gc removes v2 while promote reads its files: before, FileNotFoundError (traceback)."""
    _gc_v2_during(monkeypatch, store, "verify_version", reg)
    assert _cli(reg, "promote", "--version", "v2", "--tracking.wandb", "false") == 2
    err = capsys.readouterr().err
    assert "v2 in the registry could not be read whole" in err and "Traceback" not in err
    assert reg.aliases()[CHAMPION] == "v1"


# --- real SIGKILLs of real `refit` processes ------------------------------------------------------------
def _refit(reg, *argv: str, fault: str) -> subprocess.Popen:
    assert fault in FAULT_PHASES
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", FAULT_ENV: fault}
    cmd = [sys.executable, "-m", "refit", "registry", *argv, "--root", str(reg.root)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _sound(reg) -> None:
    """After any kill: verify finds nothing wrong but unregistered folders or staging (gc's to remove), every
    registered version loads verified, and the next gc finishes the job."""
    bad = [f for f in verify_registry(reg) if not f.ok and f.what != "folder"]
    assert not bad, bad
    for v in reg.list_versions():
        reg.get(v.id)
    apply_gc(reg, plan_gc(reg, keep=0, stale_after_s=0))
    assert all(f.ok for f in verify_registry(reg))


@pytest.mark.parametrize("phase", ["gc-row-removed", "gc-folder-moved"])
def test_gc_killed_while_removing_a_version_leaves_a_sound_registry(reg, phase):
    """SIGKILL after v0's row is deleted (the oldest unreferenced goes first), and after its folder is moved
    aside (files not yet deleted)."""
    proc = _refit(reg, "gc", "--keep", "0", "--yes", fault=phase)
    assert proc.wait(120) == -signal.SIGKILL, proc.stderr.read().decode()
    assert {v.id for v in reg.list_versions()} == {"v1", "v2", "v3"}  # killed after v0's commit
    _sound(reg)
    assert reg.aliases()[CHAMPION] == "v1" and {v.id for v in reg.list_versions()} == {"v1"}
    assert sorted(p.name for p in reg.versions_dir.iterdir()) == ["v1"]


@pytest.mark.parametrize("phase", ["alias-verified", "alias-moved"])
@pytest.mark.parametrize("action", ["promote", "rollback"])
def test_alias_moves_killed_before_and_after_the_commit(reg, phase, action):
    """A promote of v2 / a rollback to v0 killed before its transaction changes nothing; killed after it, the
    move is whole (alias and audit row together); either way the registry verifies."""
    argv = ["promote", "--version", "v2"] if action == "promote" else ["rollback"]
    proc = _refit(reg, *argv, "--tracking.wandb", "false", fault=phase)
    assert proc.wait(120) == -signal.SIGKILL, proc.stderr.read().decode()
    moved = {"promote": "v2", "rollback": "v0"}[action]
    assert reg.aliases()[CHAMPION] == (moved if phase == "alias-moved" else "v1")
    assert len(reg.history(CHAMPION)) == (3 if phase == "alias-moved" else 2)
    _sound(reg)
