"""`refit compress` surprises a new user met (issue #13.5): a second run into the same folder silently replaced
the first child version; head pruning printed `X MB -> X MB` with no word on why the size did not change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refit.cli import main
from tests.conftest import trained_version


@pytest.fixture(scope="module")
def version(tmp_path_factory, tiny_model_dir) -> Path:
    return trained_version(tmp_path_factory.mktemp("compress-surprises"), tiny_model_dir)


def test_second_compress_into_the_same_folder_is_refused(version, tmp_path, capsys):
    out = tmp_path / "child"
    args = [
        "compress",
        "--version",
        str(version),
        "--output_dir",
        str(out),
        "--max_accuracy_drop",
        "100",
        "--tracking.wandb",
        "false",
    ]
    assert main([*args, "--method", "magnitude", "--amount", "0.1"]) == 0
    first = (out / "version" / "refit.json").read_text()
    capsys.readouterr()
    assert main([*args, "--method", "magnitude", "--amount", "0.3"]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--output_dir" in err and "Traceback" not in err, err
    assert (out / "version" / "refit.json").read_text() == first  # the earlier child is untouched


def test_head_pruning_says_heads_are_zeroed_until_export(version, tmp_path, capsys):
    out = tmp_path / "heads"
    assert (
        main(
            [
                "compress",
                "--version",
                str(version),
                "--method",
                "heads",
                "--amount",
                "0.25",
                "--output_dir",
                str(out),
                "--max_accuracy_drop",
                "100",
                "--tracking.wandb",
                "false",
            ]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    compression = json.loads((out / "version" / "refit.json").read_text())["compression"]
    assert compression["before"]["size_mb"] == compression["after"]["size_mb"]  # what the note explains
    assert "heads are zeroed" in stdout and "size is unchanged" in stdout and "refit export" in stdout, stdout
