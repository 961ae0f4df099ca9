"""A registry whose database is elsewhere (`--db`) pins its versions just as one with ROOT/registry.db.

Before: `registry_holding` recognised a registry only by ROOT/registry.db beside ROOT/versions/, so with
`--db` elsewhere `refit export` added files to a registered version's exports/, `refit benchmark` wrote its
results there and `refit drift --refresh_reference` re-sealed it: the registry refused that version, the
champion included, from then on. Now every writer leaves ROOT/refit-registry.json naming the database.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refit.cli import main
from refit.registry import registry_holding
from tests.conftest import toy_rows, trained_version, write_jsonl

pytest.importorskip("onnxruntime", reason="needs the [export] extra")


@pytest.fixture(scope="module")
def registered(tmp_path_factory, tiny_model_dir) -> tuple[Path, list[str], Path]:
    """(the champion's folder in a registry whose database is outside its root, --root/--db args, tmp)."""
    tmp = tmp_path_factory.mktemp("db-elsewhere")
    version = trained_version(tmp, tiny_model_dir)
    where = ["--root", str(tmp / "reg"), "--db", str(tmp / "elsewhere" / "models.db")]
    assert main(["registry", "register", *where, "--version", str(version)]) == 0
    vid = json.loads((version / "refit.json").read_text())["version_id"]
    off = ["--tracking.wandb", "false"]
    assert main(["registry", "promote", *where, "--version", vid, "--reason", "first", *off]) == 0
    return tmp / "reg" / "versions" / vid, where, tmp


def _tree(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def _still_the_champion(where: list[str], capsys) -> None:
    assert main(["registry", "verify", *where]) == 0, capsys.readouterr().out
    assert main(["registry", "show", "--version", "champion", *where]) == 0
    capsys.readouterr()


def test_the_version_folder_is_recognised_whatever_the_database(registered):
    held, _, tmp = registered
    assert not (tmp / "reg" / "registry.db").exists()  # the database really is elsewhere
    assert registry_holding(held) == (tmp / "reg").resolve()
    marker = json.loads((tmp / "reg" / "refit-registry.json").read_text())
    assert marker["database"] == str((tmp / "elsewhere" / "models.db").resolve())


def test_export_into_it_is_refused(registered, capsys):
    held, where, tmp = registered
    before = _tree(held)
    assert main(["export", "--version", str(held), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert f"is a version of the registry {(tmp / 'reg').resolve()}" in err and "Traceback" not in err, err
    assert _tree(held) == before
    _still_the_champion(where, capsys)


def test_benchmark_writes_its_results_elsewhere(registered, tmp_path, capsys):
    held, where, _ = registered
    before = _tree(held)
    args = ["benchmark", "--version", str(held), "--formats", "[pytorch]", "--iters", "2"]
    out = tmp_path / "bench"
    assert (
        main([*args, "--throughput_batch", "2", "--tracking.wandb", "false", "--output_dir", str(out)]) == 0
    )
    assert f"Wrote {out / 'benchmark.json'}" in capsys.readouterr().out
    assert _tree(held) == before
    _still_the_champion(where, capsys)


def test_refreshing_its_reference_in_place_is_refused(registered, tmp_path, capsys):
    held, where, _ = registered
    before = _tree(held)
    holdout = write_jsonl(tmp_path / "holdout.jsonl", toy_rows(20, 3))
    args = ["drift", "--version", str(held), "--refresh_reference", "--reference_data", str(holdout)]
    assert main([*args, "--tracking.wandb", "false"]) == 2
    err = capsys.readouterr().err
    assert "is registered in the registry" in err and "Traceback" not in err, err
    assert _tree(held) == before
    _still_the_champion(where, capsys)


@pytest.mark.parametrize(
    "command",
    [
        ["registry", "list", "--root"],
        ["registry", "register", "--version", "x", "--root"],
        ["serve", "--registry.root"],
    ],
    ids=["list", "register", "serve"],
)
def test_the_root_without_its_db_is_told_where_the_database_is(registered, command, capsys):
    """Found driving the loop (s9): `refit serve --registry.root ROOT` without --registry.db said the
    database was missing and advised moving versions/ aside and re-registering every version, while
    ROOT/refit-registry.json named the database. Now the message names it and the flag; nothing is created."""
    _, where, tmp = registered
    assert main([*command, str(tmp / "reg")]) == 2
    err = capsys.readouterr().err
    db = (tmp / "elsewhere" / "models.db").resolve()
    assert f"says the database is {db}" in err and f"--db {db}" in err and "Traceback" not in err, err
    assert "re-register" not in err
    assert not (tmp / "reg" / "registry.db").exists()
    _still_the_champion(where, capsys)
