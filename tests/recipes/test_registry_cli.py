"""`refit registry ACTION`: real subcommands with their own required options and --help, JSON output,
untruncated tables (issue #11 item 7, issue #9 items 1/2/6 through the CLI)."""

from __future__ import annotations

import json

import pytest

from refit.cli import main
from refit.models import write_version
from refit.registry import Registry

LONG_ID = "v20260101-120000-" + "a" * 100  # 117 characters: longer than any terminal column


@pytest.fixture(scope="module")
def versions(tmp_path_factory, tiny_model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    root = tmp_path_factory.mktemp("cli-versions")
    return [
        write_version(
            root / vid,
            model,
            tok,
            {"version_id": vid, "recipe": "test", "metrics": {"validation": {"accuracy": 0.75}}},
        )
        for vid in ("v0", LONG_ID)
    ]


@pytest.fixture
def root(tmp_path, versions):
    root = str(tmp_path / "reg")
    off = ["--tracking.wandb", "false"]
    for v in versions:
        assert main(["registry", "register", "--root", root, "--version", str(v)]) == 0
    assert main(["registry", "promote", "--root", root, "--version", "v0", "--reason", "first", *off]) == 0
    assert (
        main(["registry", "promote", "--root", root, "--version", LONG_ID, "--reason", "second", *off]) == 0
    )
    return root


@pytest.mark.parametrize(
    "action",
    ["register", "list", "show", "promote", "rollback", "alias", "history", "verify", "gc", "remove"],
)
def test_every_action_has_its_own_help(action, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["registry", action, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    usage = out.splitlines()[0]
    assert usage.startswith("usage: refit registry") and f" {action} " in usage and "--root" in out


def test_top_level_help_lists_the_actions(capsys):
    with pytest.raises(SystemExit):
        main(["registry", "--help"])
    out = capsys.readouterr().out
    for action in ("register", "promote", "verify", "gc"):
        assert action in out


@pytest.mark.parametrize(
    ("argv", "missing"),
    [
        (["register"], "version"),
        (["promote"], "version"),
        (["alias", "--version", "v0"], "alias"),
        (["alias", "--alias", "staging"], "version"),
    ],
)
def test_required_options_are_enforced_by_the_parser(tmp_path, argv, missing, capsys):
    root = tmp_path / "reg"
    assert main(["registry", *argv, "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"required: {missing}" in err and f"refit registry {argv[0]}" in err and "Traceback" not in err
    assert not root.exists()  # refused before anything was opened or created


def test_misspelt_action_and_option(tmp_path, capsys):
    assert main(["registry", "promot", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "'action'" in err and "Did you mean 'promote'" in err
    assert main(["registry", "list", "--rot", str(tmp_path)]) == 2
    assert "root" in capsys.readouterr().err


def test_json_output(root, capsys):
    assert main(["registry", "list", "--root", root, "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(v["id"], v["aliases"]) for v in listed] == [("v0", []), (LONG_ID, ["champion"])]
    assert listed[0]["metrics"]["validation"]["accuracy"] == 0.75
    assert main(["registry", "history", "--root", root, "--format", "json"]) == 0
    moves = json.loads(capsys.readouterr().out)
    assert [(m["from_version"], m["to_version"], m["reason"]) for m in moves] == [
        (None, "v0", "first"),
        ("v0", LONG_ID, "second"),
    ]
    assert main(["registry", "show", "--root", root, "--version", "v0", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["version_id"] == "v0"


def test_tables_never_truncate_ids_when_piped(root, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    for action in ("list", "history"):
        assert main(["registry", action, "--root", root]) == 0
        out = capsys.readouterr().out
        assert LONG_ID in out, out
        assert "…" not in out


def test_promote_with_expected_champion_from_the_cli(root, capsys):
    off = ["--tracking.wandb", "false"]
    assert main(["registry", "promote", "--root", root, "--version", "v0", "--expected", "v0", *off]) == 2
    err = capsys.readouterr().err
    assert f"now points at {LONG_ID}, not v0" in err
    assert Registry(root).aliases()["champion"] == LONG_ID
    assert main(["registry", "promote", "--root", root, "--version", "v0", "--expected", LONG_ID, *off]) == 0
    assert Registry(root).aliases()["champion"] == "v0"


def test_verify_ok_then_damaged(root, capsys):
    assert main(["registry", "verify", "--root", root]) == 0
    assert "All checks passed" in capsys.readouterr().out
    config = Registry(root).get("v0").path / "model" / "config.json"
    data = json.loads(config.read_text())
    data["id2label"] = {"0": "LABEL_1", "1": "LABEL_0"}  # swapped label names: the model now lies
    config.write_text(json.dumps(data))
    assert main(["registry", "verify", "--root", root]) == 1
    assert "config.json" in capsys.readouterr().out
    assert main(["registry", "show", "--root", root, "--version", "v0"]) == 2
    assert "corrupt or was altered" in capsys.readouterr().err


def test_a_long_reason_folds_in_history_instead_of_widening_every_row(tmp_path, versions, capsys):
    """Before: a cycle's reason (the whole gate text, hundreds of characters) made every piped row of
    `registry history` as wide as itself (about 250 columns, up to the pipe width of 400). Now it folds
    onto lines of at most REASON_WIDTH; ids are still never cut."""
    from refit.recipes.registry import REASON_WIDTH

    root, off = str(tmp_path / "reg"), ["--tracking.wandb", "false"]
    words = " ".join(f"word{i:03d}" for i in range(60))  # 479 characters
    assert main(["registry", "register", "--root", root, "--version", str(versions[0])]) == 0
    assert main(["registry", "promote", "--root", root, "--version", "v0", "--reason", words, *off]) == 0
    capsys.readouterr()
    assert main(["registry", "history", "--root", root]) == 0
    out = capsys.readouterr().out
    assert all(f"word{i:03d}" in out for i in range(60)) and "…" not in out  # folded, nothing cut
    assert max(len(line.rstrip()) for line in out.splitlines()) < 90 + REASON_WIDTH, out


def test_remove_deletes_one_former_champion_that_gc_would_keep(root, capsys):
    """A forget names versions whose drift reference holds forgotten texts; gc keeps the last champions, so
    there was no way to delete one. `remove` is a dry run without --yes, refuses an aliased version (by id
    or alias), and records the removal; rollback then says the version is gone instead of stepping to it."""
    reg = Registry(root)
    path = reg.get("v0").path
    assert main(["registry", "remove", "--root", root, "--version", LONG_ID, "--yes"]) == 2
    assert f"Version {LONG_ID} is pointed at by champion: not removing it" in capsys.readouterr().err
    assert main(["registry", "remove", "--root", root, "--version", "champion", "--yes"]) == 2
    assert "pointed at by champion" in capsys.readouterr().err
    assert main(["registry", "remove", "--root", root, "--version", "v9"]) == 2
    assert "No version or alias 'v9'" in capsys.readouterr().err
    assert main(["registry", "remove", "--root", root, "--version", "v0"]) == 0  # dry run
    out = capsys.readouterr().out
    assert "Would remove v0" in out and "a former champion" in out and path.is_dir()
    assert {v.id for v in reg.list_versions()} == {"v0", LONG_ID}
    assert (
        main(["registry", "remove", "--root", root, "--version", "v0", "--reason", "forget 3", "--yes"]) == 0
    )
    assert "Removed v0" in capsys.readouterr().out
    assert not path.exists() and {v.id for v in reg.list_versions()} == {LONG_ID}
    assert reg.runs("remove")[-1]["details"] == {"version": "v0", "reason": "forget 3"}
    assert main(["registry", "verify", "--root", root]) == 0  # the audit chain still holds
    capsys.readouterr()
    assert main(["registry", "rollback", "--root", root, "--tracking.wandb", "false"]) == 2
    assert "no longer in the registry" in capsys.readouterr().err
    assert reg.aliases()["champion"] == LONG_ID
