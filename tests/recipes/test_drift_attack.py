"""An attack pass on `refit drift`'s inputs: NaNs in a (re-sealed) reference or from damaged weights, FIFOs,
texts carrying HTML/JS. Before the fixes, NaNs ended in a traceback after every test had already run on them
(or, from the weights, in an SVD failure), and a FIFO was reported "not found"."""

from __future__ import annotations

import html
import json
import os
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from refit.cli import main
from refit.models import editing_version
from tests.conftest import demo_finetune_args

EVIL = [
    "<script>alert(1)</script> \"quoted\" & 'single'",
    "</td></table><img src=x onerror=alert(2)>",
    "]]></svg><svg onload=alert(3)> <!--",
]


@pytest.fixture(scope="module")
def version(tmp_path_factory, tiny_model_dir) -> Path:
    out = tmp_path_factory.mktemp("drift-attack") / "run"
    extra = ["--trainer.max_epochs", "1", "--data.batch_size", "16", "--data.max_length", "32"]
    assert main(demo_finetune_args(tiny_model_dir, out, *extra, "--data.reference_size", "60")) == 0
    return out / "version"


@pytest.fixture(scope="module")
def evil_window(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("evil") / "window.jsonl"
    path.write_text("".join(json.dumps({"text": f"{EVIL[i % 3]} {i}"}) + "\n" for i in range(30)))
    return path


def _drift(version, data, out, *extra: str) -> int:
    argv = ["drift", "--version", str(version), "--data", str(data), "--output_dir", str(out)]
    return main([*argv, "--permutations", "20", "--tracking.wandb", "false", *extra])


def _edit(version: Path, copy: Path, file: str, key_part: str) -> Path:
    """A copy of the version with NaNs written into one tensor and re-sealed (its manifest agrees)."""
    shutil.copytree(version, copy)
    with editing_version(copy) as tmp:
        tensors = load_file(tmp / file)
        key = next(k for k in tensors if key_part in k)
        tensors[key][:3] = float("nan")
        save_file(tensors, tmp / file, metadata={"format": "pt"})
    return copy


def test_texts_with_html_and_script_are_escaped_in_the_report(version, evil_window, tmp_path):
    assert _drift(version, evil_window, tmp_path / "out") in (0, 3)
    page = (tmp_path / "out" / "report.html").read_text()
    for raw in ("<script>alert", "<img src=x", "<svg onload"):
        assert raw not in page
    shown = json.loads((tmp_path / "out" / "drift.json").read_text())["windows"][0]["most_unlike"]
    assert shown and all(html.escape(item["text"][:300]) in page for item in shown)  # shown, escaped


def test_a_reference_with_nans_is_refused_and_refresh_repairs_it(version, evil_window, tmp_path, capsys):
    bad = _edit(version, tmp_path / "v", "reference/embeddings.safetensors", "embeddings")
    assert _drift(bad, evil_window, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "embeddings.safetensors" in err and "not all finite" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert main(["drift", "--version", str(bad), "--refresh_reference", "--tracking.wandb", "false"]) == 0
    assert _drift(bad, evil_window, tmp_path / "out") in (0, 3)


def test_weights_giving_nans_stop_the_check(version, evil_window, tmp_path, capsys):
    bad = _edit(version, tmp_path / "v", "model/model.safetensors", "classifier.weight")
    assert _drift(bad, evil_window, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "non-finite probabilities" in err and "Traceback" not in err


def test_a_fifo_is_named_for_what_it_is(version, tmp_path, capsys):
    fifo = tmp_path / "window.jsonl"
    os.mkfifo(fifo)
    assert _drift(version, fifo, tmp_path / "out") == 2
    assert "not a regular file or folder" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["in-version", "in-registry-versions"])
def test_output_inside_a_version_or_a_registry_is_refused(version, evil_window, tmp_path, capsys, where):
    """Before: the report's files landed in the version (every later load refused it: an extra file) or in a
    registry's versions/ (an unregistered folder that gc deletes)."""
    from refit.registry import Registry

    reg = Registry(tmp_path / "reg")
    registered = reg.register(version)
    out = registered.path / "drift" if where == "in-version" else reg.versions_dir / "drift-out"
    assert _drift(registered.path, evil_window, out) == 2
    assert "is inside" in capsys.readouterr().err and not out.exists()
    reg.get(registered.id)  # still whole and as registered


def test_refreshing_a_registered_version_in_place_is_refused(version, tmp_path, capsys):
    """Before: the refresh re-sealed the registered folder, and the registry then refused that version
    (the champion) everywhere: its manifest was no longer the one recorded at registration."""
    from refit.registry import Registry

    reg = Registry(tmp_path / "reg")
    registered = reg.register(version)
    reg.promote(registered.id, "first")
    argv = ["drift", "--version", str(registered.path), "--refresh_reference", "--tracking.wandb", "false"]
    assert main(argv) == 2
    assert "is registered in the registry" in capsys.readouterr().err
    reg.get("champion")


@pytest.mark.parametrize("stamp", [1e20, -1e18, True, float("nan")])
def test_times_beyond_the_platform_or_not_times_are_refused_by_row(version, tmp_path, capsys, stamp):
    """Before: OverflowError, OSError or ValueError tracebacks; True was read as 1970-01-01."""
    data = tmp_path / "w.jsonl"
    data.write_text("".join(json.dumps({"text": f"t {i}", "timestamp": stamp}) + "\n" for i in range(25)))
    assert _drift(version, data, tmp_path / "out", "--by_time", "day") == 2
    err = capsys.readouterr().err
    assert f"{data}, row 1: cannot read time" in err and "Traceback" not in err


def test_data_over_the_size_limit_is_refused_before_it_is_read(
    version, evil_window, tmp_path, monkeypatch, capsys
):
    """Before: any size was read whole into memory (then held as Python strings) before the first test."""
    from refit.drift import windows

    monkeypatch.setattr(windows, "MAX_DATA_BYTES", evil_window.stat().st_size - 1)
    assert _drift(version, evil_window, tmp_path / "out") == 2
    assert "MiB one drift check reads" in capsys.readouterr().err
