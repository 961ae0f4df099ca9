"""Version ids and alias names match one strict pattern before they touch a path (issue #9 item 1)."""

from __future__ import annotations

import json

import pytest

from refit.cli import main
from refit.errors import VersionError
from refit.io import check_name
from refit.models import write_version
from refit.registry import CHAMPION, Registry
from refit.registry.mirror import mirror_alias


@pytest.fixture(scope="module")
def model_and_tok(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return (
        AutoModelForSequenceClassification.from_pretrained(tiny_model_dir),
        AutoTokenizer.from_pretrained(tiny_model_dir),
    )


def _version_with_id(folder, model_and_tok, version_id):
    """A real version whose refit.json claims `version_id` (as a hostile or broken file would)."""
    version = write_version(folder, *model_and_tok, {"version_id": "placeholder", "recipe": "test"})
    meta = json.loads((version / "refit.json").read_text())
    meta["version_id"] = version_id
    (version / "refit.json").write_text(json.dumps(meta))
    _reseal(version)
    return version


def _reseal(version):
    """Re-write the manifest after the edit, so only the id check can be what refuses the version."""
    try:
        from refit.models.version import write_manifest
    except ImportError:  # before manifests existed
        return
    write_manifest(version)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        ".",
        "..",
        "../../precious",
        "a/b",
        "a\\b",
        ".hidden",
        "a..b",
        "x" * 129,
        "white space",
        "nul\x00",
        "é",
    ],
)
def test_check_name_refuses(bad):
    with pytest.raises(VersionError, match="Invalid version id"):
        check_name(bad)


@pytest.mark.parametrize("good", ["v1", "v20260101-120000-abc123", "a.b", "A_b-c", "x" * 128, "1"])
def test_check_name_accepts(good):
    assert check_name(good) == good


def test_traversal_id_touches_nothing_outside_the_registry(tmp_path, model_and_tok):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("irreplaceable")
    reg = Registry(tmp_path / "reg")
    hostile = _version_with_id(tmp_path / "src" / "hostile", model_and_tok, "../../precious")
    with pytest.raises(VersionError, match=r"Invalid version id .*'\.\./\.\./precious'"):
        reg.register(hostile)
    assert [p.name for p in precious.iterdir()] == ["keep.txt"]
    assert (precious / "keep.txt").read_text() == "irreplaceable"
    assert reg.list_versions() == []


def test_empty_id_does_not_replace_the_versions_folder(tmp_path, model_and_tok):
    reg = Registry(tmp_path / "reg")
    good = write_version(tmp_path / "src" / "good", *model_and_tok, {"version_id": "good", "recipe": "test"})
    reg.register(good)
    empty = _version_with_id(tmp_path / "src" / "empty", model_and_tok, "")
    with pytest.raises(VersionError, match="Invalid version id ''"):
        reg.register(empty)
    assert [v.id for v in reg.list_versions()] == ["good"]
    assert (reg.versions_dir / "good" / "refit.json").is_file()
    reg.get("good")  # still whole


def test_write_version_refuses_a_bad_id(tmp_path, model_and_tok):
    with pytest.raises(VersionError, match="Invalid version id"):
        write_version(tmp_path / "v", *model_and_tok, {"version_id": "../escape"})
    assert not (tmp_path / "escape").exists() and not (tmp_path / "v").exists()


def test_every_entry_point_checks_names(tmp_path, model_and_tok):
    reg = Registry(tmp_path / "reg")
    reg.register(
        write_version(tmp_path / "src" / "v0", *model_and_tok, {"version_id": "v0", "recipe": "test"})
    )
    reg.promote("v0", "initial")
    with pytest.raises(VersionError, match="Invalid alias name 'a/b'"):
        reg.set_alias("a/b", "v0")
    with pytest.raises(VersionError, match="Invalid version id or alias '../v0'"):
        reg.promote("../v0", "x")
    with pytest.raises(VersionError, match="Invalid alias name '../champion'"):
        reg.rollback(alias="../champion")
    with pytest.raises(VersionError, match="Invalid version id or alias"):
        reg.get("../../etc")
    with pytest.raises(VersionError, match="Invalid version id or alias"):
        reg.resolve("")
    with pytest.raises(VersionError, match="Invalid alias name"):
        reg.history("a/b")
    with pytest.raises(VersionError, match="Invalid alias name"):
        mirror_alias(tmp_path, reg.get("v0").path, "v0", "a/b", "x", "disabled", "p")
    with pytest.raises(VersionError, match="Invalid version id"):
        mirror_alias(tmp_path, reg.get("v0").path, "../v0", "champion", "x", "disabled", "p")
    assert reg.aliases() == {CHAMPION: "v0"} and len(reg.history()) == 1


def test_cli_refuses_alias_with_slash(tmp_path, model_and_tok, capsys):
    reg = Registry(tmp_path / "reg")
    reg.register(
        write_version(tmp_path / "src" / "v0", *model_and_tok, {"version_id": "v0", "recipe": "test"})
    )
    root = str(tmp_path / "reg")
    code = main(
        [
            "registry",
            "alias",
            "--root",
            root,
            "--alias",
            "prod/eu",
            "--version",
            "v0",
            "--tracking.wandb",
            "false",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Invalid alias name 'prod/eu'" in err and "Traceback" not in err
    assert main(["registry", "show", "--root", root, "--version", "../../precious"]) == 2
    assert "Invalid version id or alias '../../precious'" in capsys.readouterr().err
    assert Registry(root).aliases() == {}
