"""The registry on a real SQLite file: registration with hashes, audited alias moves, rollback, corruption."""

from __future__ import annotations

import sqlite3

import pytest

from refit.cli import main
from refit.errors import VersionError
from refit.models import weights_file, write_version
from refit.registry import CHAMPION, Registry


@pytest.fixture(scope="module")
def versions(tmp_path_factory, tiny_model_dir):
    """Three tiny versions (same weights, distinct ids) written by the real version writer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    root = tmp_path_factory.mktemp("versions")
    return [
        write_version(
            root / f"v{i}",
            model,
            tok,
            {"version_id": f"v{i}", "recipe": "test", "metrics": {"validation": {"accuracy": 0.5 + i / 10}}},
        )
        for i in range(3)
    ]


def test_alias_moves_are_audited_and_rollback_steps_back(tmp_path, versions):
    reg = Registry(tmp_path / "reg")
    for v in versions:
        reg.register(v)
    assert [v.id for v in reg.list_versions()] == ["v0", "v1", "v2"]
    reg.promote("v0", "first")
    reg.promote("v1", "better", {"accuracy": 0.6})
    reg.promote("v2", "best")
    assert reg.aliases()[CHAMPION] == "v2"
    back = reg.rollback("regression")
    assert (back.from_version, back.to_version, back.action) == ("v2", "v1", "rollback")
    reg.rollback("again")
    assert reg.aliases()[CHAMPION] == "v0"
    with pytest.raises(VersionError, match="no earlier version"):
        reg.rollback()
    log = reg.history(CHAMPION)
    assert [m.action for m in log] == ["promote", "promote", "promote", "rollback", "rollback"]
    assert (
        log[1].metrics == {"accuracy": 0.6} and log[0].from_version is None and log[3].reason == "regression"
    )
    assert reg.get("champion").path.parent == reg.versions_dir


def test_audit_log_is_append_only(tmp_path, versions):
    reg = Registry(tmp_path / "reg")
    reg.register(versions[0])
    reg.promote("v0", "x")
    db = sqlite3.connect(reg.db_path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM audit")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE audit SET reason = 'rewritten'")


def test_corrupt_version_is_refused_and_alias_stays(tmp_path, versions):
    reg = Registry(tmp_path / "reg")
    for v in versions[:2]:
        reg.register(v)
    reg.promote("v0", "first")
    stored = weights_file(reg.get("v1").path)
    data = bytearray(stored.read_bytes())
    data[100] ^= 0xFF
    stored.write_bytes(bytes(data))
    with pytest.raises(VersionError, match="corrupt or was altered"):
        reg.promote("v1", "should fail")
    assert reg.aliases()[CHAMPION] == "v0"
    assert len(reg.history()) == 1


def test_failed_transaction_leaves_no_trace(tmp_path, versions):
    reg = Registry(tmp_path / "reg")
    reg.register(versions[0])
    with pytest.raises(sqlite3.IntegrityError), reg._tx() as db:
        db.execute("INSERT INTO aliases VALUES ('champion', 'v0', 'now')")
        db.execute("INSERT INTO aliases VALUES ('champion', 'v0', 'now')")  # duplicate key: whole tx undone
    assert reg.aliases() == {}


def test_registry_cli(tmp_path, versions, capsys):
    root = str(tmp_path / "reg")
    assert main(["registry", "register", "--root", root, "--version", str(versions[0])]) == 0
    assert main(["registry", "register", "--root", root, "--version", str(versions[1])]) == 0
    assert main(["registry", "promote", "--root", root, "--version", "v0", "--reason", "initial"]) == 0
    runs = list((tmp_path / "reg" / "wandb").glob("offline-run-*"))  # tracking on: the move is mirrored
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    off = ["--tracking.wandb", "false"]
    assert main(["registry", "promote", "--root", root, "--version", "v1", *off]) == 0
    assert main(["registry", "rollback", "--root", root, "--reason", "bad latency", *off]) == 0
    assert main(["registry", "history", "--root", root]) == 0
    out = capsys.readouterr().out
    assert "bad latency" in out and "rollback" in out
    assert main(["registry", "show", "--root", root]) == 0
    assert '"version_id": "v0"' in capsys.readouterr().out
    assert main(["registry", "promote", "--root", root, "--version", "nope", *off]) == 2
    assert "No version or alias 'nope'" in capsys.readouterr().err
    assert main(["registry", "promot", "--root", root]) == 2
    err = capsys.readouterr().err
    assert "'action'" in err and "'promote'" in err


@pytest.mark.parametrize("damage", ["weights", "extra file", "manifest", "re-sealed", "link"])
def test_a_refused_version_says_so_once(tmp_path, versions, damage):
    """Before: 'Refusing to use it. Refusing to use it; the aliases are unchanged.' (the version's own
    message and the registry's around it both said it)."""
    from refit.models import write_manifest

    reg = Registry(tmp_path / "reg")
    reg.register(versions[0])
    folder = reg.versions_dir / "v0"
    if damage == "weights":
        data = bytearray(weights_file(folder).read_bytes())
        data[100] ^= 0xFF
        weights_file(folder).write_bytes(bytes(data))
    elif damage == "extra file":
        (folder / "notes.txt").write_text("added later")
    elif damage == "manifest":
        (folder / "manifest.json").write_text("{")
    elif damage == "link":
        (folder / "model" / "tokenizer.json").unlink()
        (folder / "model" / "tokenizer.json").symlink_to(tmp_path)
    else:
        (folder / "notes.txt").write_text("added later")
        write_manifest(folder)
    with pytest.raises(VersionError) as e:
        reg.get("v0")
    msg = str(e.value)
    assert msg.lower().count("refusing to use") == 1 and msg.endswith("are unchanged."), msg
