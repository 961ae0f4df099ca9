"""Every alias read for use agrees with the audit log's latest move of it, or is refused (fail closed).

Before: a hand-edited `aliases` row (champion -> a version never promoted, or one rolled away from) was what
`Registry.resolve` / `get("champion")` returned, so `refit serve`, `refit maintain` and `registry promote
--version challenger` used it; only `verify`, rollback and gc compared the aliases with the log. The edits
here are what someone with the database file can do: the sqlite3 module on registry.db.
"""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from refit.cli import main
from refit.registry import CHALLENGER, CHAMPION, Registry, RegistryError
from refit.registry.chain import GENESIS, row_hash


@pytest.fixture
def reg(tmp_path, tiny_versions) -> Registry:
    """v0 -> v1 -> rollback: champion v0 (v1 was rolled away from); v2 registered, never promoted."""
    reg = Registry(tmp_path / "reg")
    for v in tiny_versions[:3]:
        reg.register(v)
    reg.promote("v0", "first")
    reg.promote("v1", "second")
    reg.rollback("v1 regressed")
    return reg


def _sql(reg: Registry, *statements: str, params: tuple = ()) -> None:
    db = sqlite3.connect(reg.db_path)
    for s in statements:
        db.execute(s, params)
    db.commit()
    db.close()


def _append_audit(reg: Registry, alias: str, to_version: str, *, rehash: bool = True) -> None:
    """An audit row appended by hand; with `rehash`, with a correct hash (there is no secret to stop it)."""
    db = sqlite3.connect(reg.db_path)
    prev = db.execute("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()[0] or GENESIS
    content = {
        "at": "2026-12-02T10:00:00+00:00",
        "alias": alias,
        "from_version": None,
        "to_version": to_version,
        "actor": "mallory",
        "action": "promote",
        "reason": "by hand",
        "metrics": None,
    }
    digest = row_hash(prev, content) if rehash else "f" * 64
    db.execute(
        "INSERT INTO audit (at, alias, from_version, to_version, actor, action, reason, metrics, prev_hash, hash) "
        "VALUES (:at, :alias, :from_version, :to_version, :actor, :action, :reason, :metrics, :p, :h)",
        {**content, "p": prev, "h": digest},
    )
    db.commit()
    db.close()


def _refused(reg: Registry, ref: str, says: str) -> None:
    for read in (
        lambda: reg.resolve(ref),
        lambda: reg.get(ref),
        lambda: Registry(reg.root, create=False).get(ref),
    ):
        with pytest.raises(RegistryError) as e:
            read()
        msg = str(e.value)
        assert str(reg.db_path) in msg and says in msg, msg
        assert f"refit registry verify --root {reg.root}" in msg, msg


@pytest.mark.parametrize(
    "target, says",
    [
        ("v2", "alias 'champion' points at 'v2' but the audit log says 'v0'"),  # never promoted
        ("v1", "alias 'champion' points at 'v1' but the audit log says 'v0'"),  # rolled away from
    ],
    ids=["never-promoted", "rolled-away-from"],
)
def test_a_hand_edited_alias_row_is_refused_wherever_it_is_resolved(reg, target, says):
    assert reg.get(CHAMPION).id == "v0"  # warm: this instance has checked the log once already
    _sql(reg, "UPDATE aliases SET version_id = ? WHERE name = 'champion'", params=(target,))
    _refused(reg, CHAMPION, says)
    assert reg.get("v2").id == "v2"  # a version by its id does not go through any alias


def test_a_deleted_alias_row_the_log_still_moves_is_refused_not_not_found(reg):
    _sql(reg, "DELETE FROM aliases WHERE name = 'champion'")
    _refused(reg, CHAMPION, "alias 'champion' has no row in the aliases table but the audit log says 'v0'")


def test_an_alias_row_added_by_hand_is_refused(reg):
    _sql(reg, "INSERT INTO aliases VALUES ('challenger', 'v2', 'now')")
    _refused(reg, CHALLENGER, "the audit log says nothing (it never moved 'challenger')")


@pytest.mark.parametrize("rehash", [True, False], ids=["with-a-valid-hash", "with-a-bad-hash"])
def test_an_audit_row_appended_by_hand_without_its_alias_move_is_refused(reg, rehash):
    """The reverse edit: the log says champion moved to v2, the aliases table still says v0."""
    assert reg.resolve(CHAMPION) == "v0"
    _append_audit(reg, CHAMPION, "v2", rehash=rehash)
    says = "points at 'v0' but the audit log says 'v2'" if rehash else "audit row 4 was altered"
    _refused(reg, CHAMPION, says)


def test_an_edited_latest_move_is_refused_by_a_warm_reader_and_a_fresh_one(reg):
    """Both the row and the alias edited to agree (not re-hashed): a fresh reader sees the broken chain; a
    reader that checked the log before keeps what it checked and sees the alias disagree with it."""
    warm = Registry(reg.root, create=False)
    assert warm.resolve(CHAMPION) == "v0"
    _sql(
        reg,
        "DROP TRIGGER audit_append_only_u",
        "UPDATE audit SET to_version = 'v2' WHERE seq = 3",
        "UPDATE aliases SET version_id = 'v2' WHERE name = 'champion'",
    )
    with pytest.raises(RegistryError, match="points at 'v2' but the audit log says 'v0'"):
        warm.resolve(CHAMPION)
    with pytest.raises(RegistryError, match="audit row 3 was altered"):
        Registry(reg.root, create=False).resolve(CHAMPION)


def test_a_warm_reader_follows_real_moves_and_a_database_restored_from_a_backup(reg, tmp_path):
    """Only new rows are checked after the first read: real moves by another process are followed, and a
    restored backup (the row this reader checked last is gone) is checked whole again, not refused."""
    backup = tmp_path / "backup.db"
    shutil.copy(reg.db_path, backup)
    reader = Registry(reg.root, create=False)
    assert reader.resolve(CHAMPION) == "v0"
    other = Registry(reg.root)
    other.promote("v2", "third")
    other.set_alias(CHALLENGER, "v1", "try again")
    assert (reader.resolve(CHAMPION), reader.resolve(CHALLENGER)) == ("v2", "v1")
    assert reader.with_lock_timeout(1).resolve(CHAMPION) == "v2"
    shutil.copy(backup, reg.db_path)
    assert reader.resolve(CHAMPION) == "v0"
    with pytest.raises(Exception, match="No version or alias 'challenger'"):
        reader.resolve(CHALLENGER)


def test_cli_show_and_promote_from_an_edited_alias_exit_2_and_change_nothing(reg, capsys):
    reg.set_alias(CHALLENGER, "v1", "candidate")
    _sql(reg, "UPDATE aliases SET version_id = 'v2' WHERE name = 'challenger'")
    root = ["--root", str(reg.root)]
    assert main(["registry", "show", "--version", "challenger", *root]) == 2
    assert main(["registry", "promote", "--version", "challenger", "--reason", "x", *root]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("alias 'challenger' points at 'v2'") == 2, err
    assert reg.aliases()[CHAMPION] == "v0" and len(reg.history()) == 4
    assert main(["registry", "verify", *root]) != 0  # verify names the same problem
    assert "points at v2 but the audit log says v1" in capsys.readouterr().out


def test_maintain_refuses_an_edited_champion_before_any_work(reg, tmp_path, capsys):
    """`refit maintain` read the champion through the aliases table alone and retrained and gated against it."""
    _sql(reg, "UPDATE aliases SET version_id = 'v2' WHERE name = 'champion'")
    inbox, golden = tmp_path / "inbox", tmp_path / "golden.jsonl"
    inbox.mkdir()
    golden.write_text('{"text": "fine", "label": 1}\n')
    argv = ["maintain", "--registry.root", str(reg.root), "--once"]
    assert main([*argv, "--inbox.windows", str(inbox), "--inbox.golden", str(golden)]) == 2
    err = capsys.readouterr().err
    assert "alias 'champion' points at 'v2' but the audit log says 'v0'" in err and "Traceback" not in err, (
        err
    )
    assert Registry(reg.root, create=False).runs("maintain") == [] and len(reg.history()) == 3
