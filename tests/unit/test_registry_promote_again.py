"""Moving an alias to where it already is writes nothing: no "v -> v" audit row, exit 0, and says so.

Before: `refit registry promote --version <the champion>` appended a row moving the champion from v to v
(and `refit registry alias` the same for any alias). The operator's repair of an alias row edited by hand
is not such a no-op and is kept: a promote by version id over it writes its row and re-seals the log.
"""

from __future__ import annotations

import sqlite3

from refit.cli import main
from refit.registry import CHAMPION, Registry
from tests.conftest import registry_with

OFF = ["--tracking.wandb", "false"]


def _reg(tmp_path, tiny_versions) -> Registry:
    return registry_with(tmp_path / "reg", tiny_versions[:2], ("v0", "first"), ("v1", "second"))


def test_promoting_the_champion_again_writes_nothing(tmp_path, tiny_versions, capsys):
    reg = _reg(tmp_path, tiny_versions)
    rows = reg.audit_rows()
    move = reg.promote("v1", "again")
    assert (move.moved, move.to_version, move.seq) == (False, "v1", rows[-1]["seq"])
    root = ["--root", str(reg.root)]
    assert main(["registry", "promote", "--version", "v1", "--reason", "again", *root, *OFF]) == 0
    out = capsys.readouterr().out
    assert "v1 is already the champion" in out and "nothing was written" in out, out
    assert main(["registry", "promote", "--version", "champion", *root, *OFF]) == 0  # by its alias too
    assert "already the champion" in capsys.readouterr().out
    assert reg.audit_rows() == rows and reg.aliases()[CHAMPION] == "v1"
    assert main(["registry", "verify", *root]) == 0


def test_setting_an_alias_of_your_own_again_writes_nothing(tmp_path, tiny_versions, capsys):
    reg = _reg(tmp_path, tiny_versions)
    argv = ["registry", "alias", "--alias", "staging", "--version", "v0", "--root", str(reg.root), *OFF]
    assert main(argv) == 0
    rows = reg.audit_rows()
    assert main(argv) == 0
    assert "v0 is already the staging" in capsys.readouterr().out
    assert reg.audit_rows() == rows


def test_a_promote_again_still_finishes_its_run(tmp_path, tiny_versions):
    reg = _reg(tmp_path, tiny_versions)
    run_id = reg.start_run("maintain")
    move = reg.promote("v1", "gated", expected_champion="v1", run=(run_id, "promoted", {"challenger": "v1"}))
    assert not move.moved and reg.runs("maintain")[0]["status"] == "promoted"


def test_a_promote_by_id_over_an_edited_alias_is_the_repair_and_re_seals_the_log(
    tmp_path, tiny_versions, capsys
):
    """champion edited by hand to v0 (the log says v1): `promote --version v0` is not a no-op though the row
    already says v0; it writes the move, after which the alias and the log agree again."""
    reg = _reg(tmp_path, tiny_versions)
    db = sqlite3.connect(reg.db_path)
    db.execute("UPDATE aliases SET version_id = 'v0' WHERE name = 'champion'")
    db.commit()
    db.close()
    root = ["--root", str(reg.root)]
    assert main(["registry", "verify", *root]) != 0
    capsys.readouterr()
    assert main(["registry", "promote", "--version", "v0", "--reason", "repair", *root, *OFF]) == 0
    assert "champion: v0 -> v0" in capsys.readouterr().out
    last = reg.history(CHAMPION)[-1]
    assert (last.from_version, last.to_version, last.reason) == ("v0", "v0", "repair")
    assert main(["registry", "verify", *root]) == 0
    assert reg.get(CHAMPION).id == "v0"
