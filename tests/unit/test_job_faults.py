"""Fault tests of the job commands' inputs (issue s7): hostile or careless YAML configs and data files.

Each test failed (the input was accepted, or refused with a misleading message) before its fix."""

from __future__ import annotations

import csv
import logging
import re

import pytest

from refit.cli import main
from refit.config import load_yaml_file
from refit.data import load_splits
from refit.errors import ConfigError, DataError
from tests.conftest import write_jsonl


def _run(tmp_path, text: str, capsys) -> tuple[int, str]:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    code = main(["finetune", "--config", str(path), "--print_config"])
    return code, capsys.readouterr().err


def test_duplicated_yaml_key_is_refused_with_both_lines(tmp_path, capsys):
    """PyYAML keeps the last of two equal keys: `max_epochs: 1` then `max_epochs: 5` trained 5 epochs."""
    code, err = _run(tmp_path, "trainer:\n  max_epochs: 1\n  max_epochs: 5\n", capsys)
    assert code == 2
    assert "'max_epochs' is given twice (first on line 2)" in err and "c.yaml" in err and "line 3" in err
    assert "Traceback" not in err


def test_yaml_merge_key_may_still_override():
    """`<<: *base` followed by one of its keys is an override, not a duplicate."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.yaml"
        path.write_text("base: &b {max_epochs: 1, seed: 3}\ntrainer:\n  <<: *b\n  max_epochs: 2\n")
        assert load_yaml_file(path)["trainer"] == {"max_epochs": 2, "seed": 3}


def test_alias_bomb_is_refused_before_it_expands(tmp_path, capsys):
    """Nine levels of nine aliases (9**9 values). At the top level the unknown key `l0` happened to stop it;
    nothing bounded it inside a valid key (a free-form mapping such as tune's search space): it is now
    refused from its node count, before anything walks it."""
    lines = ['l0: &l0 ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="alias bomb"):
        load_yaml_file(path)
    code, err = _run(tmp_path, path.read_text(), capsys)
    assert code == 2 and "alias bomb" in err


def test_small_aliases_still_load(tmp_path):
    from refit.config import build_parser, parse_config
    from refit.settings import FinetuneConfig

    path = tmp_path / "c.yaml"
    path.write_text("data:\n  batch_size: &bs 8\n  eval_batch_size: *bs\n")
    cfg = parse_config(build_parser(FinetuneConfig, "t", ""), FinetuneConfig, ["--config", str(path)])
    assert cfg.data.batch_size == 8 and cfg.data.eval_batch_size == 8


def test_python_tags_are_refused_and_never_run(tmp_path, capsys):
    marker = tmp_path / "ran"
    code, err = _run(tmp_path, f'model: !!python/object/apply:os.system ["touch {marker}"]\n', capsys)
    assert code == 2 and "python/object/apply" in err and not marker.exists()


def test_config_path_that_is_a_folder(tmp_path, capsys):
    """It was reported as "Config file not found", which it is not."""
    assert main(["finetune", "--config", str(tmp_path), "--print_config"]) == 2
    assert "is a folder: give a YAML file" in capsys.readouterr().err


def test_config_file_that_is_not_utf8(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"model: caf\xe9\n")
    assert main(["finetune", "--config", str(path), "--print_config"]) == 2
    err = capsys.readouterr().err
    assert "not UTF-8" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("trainer:\n  max_epochs: many\n", "'trainer.max_epochs': expected an integer > 0"),
        ("trainer:\n  max_epoch: 2\n", "Did you mean 'trainer.max_epochs'"),
        ("method: prune\n", "Unknown config key 'method'"),  # a key of `refit compress`
    ],
)
def test_wrong_type_unknown_and_other_recipes_keys(tmp_path, capsys, text, fragment):
    code, err = _run(tmp_path, text, capsys)
    assert code == 2 and fragment in err


def _csv(path, rows, bom=False):
    with path.open("w", newline="", encoding="utf-8-sig" if bom else "utf-8") as f:
        w = csv.DictWriter(f, ["text", "label"], lineterminator="\r\n")
        w.writeheader()
        w.writerows(rows)
    return path


def test_csv_with_byte_order_mark_and_crlf(tmp_path):
    """Excel's 'CSV UTF-8' starts with a BOM: the first column was read as '\\ufefftext' and refused as
    "no text column 'text'. Columns found: text, label"."""
    path = _csv(tmp_path / "t.csv", [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}], True)
    splits = load_splits(str(path), None, None)
    assert splits.texts["train"] == ["good", "bad"] and splits.label_names == ["neg", "pos"]


def test_jsonl_with_byte_order_mark(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "a", "label": 0}\r\n{"text": "b", "label": 1}\r\n')
    assert load_splits(str(path), None, None).texts["train"] == ["a", "b"]


def test_torn_last_line_is_refused_with_its_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n{"text": "c", "la')
    with pytest.raises(
        DataError, match=r"t.jsonl, line 3: not valid JSON .* no line end: the file was cut off"
    ):
        load_splits(str(path), None, None)


def test_a_drift_window_still_being_written_is_skipped_with_the_reason(tmp_path):
    """A window file whose writer has not finished (torn last line) is reported, not tested, and does not
    stop the check of the other windows."""
    from refit.drift.windows import read_windows

    write_jsonl(tmp_path / "a.jsonl", [{"text": f"row {i}"} for i in range(30)])
    (tmp_path / "b.jsonl").write_text('{"text": "x"}\n{"text": "half')
    windows = read_windows(tmp_path, label_column=None)
    assert [w.name for w in windows] == ["a", "b"] and not windows[0].skipped
    assert "still being written" in windows[1].skipped


@pytest.mark.parametrize(
    "labels,names,ids",
    [([0, 1, 1.0, 0.0], ["0", "1"], [0, 1, 1, 0]), ([True, False], ["False", "True"], [1, 0])],
)
def test_whole_floats_are_their_integers(tmp_path, labels, names, ids):
    """pandas writes an integer column with a gap as floats: 1 and 1.0 were two classes (4 in all)."""
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": f"t{i}", "label": v} for i, v in enumerate(labels)])
    splits = load_splits(str(path), None, None)
    assert splits.label_names == names and splits.labels["train"] == ids


@pytest.mark.parametrize(
    "labels,fragment",
    [([0, 1, float("nan"), 1], "row 3: the label is NaN"), ([True, 0, 1], "mixes true/false (line 1: true)")],
)
def test_nan_and_true_false_among_other_labels_are_refused(tmp_path, labels, fragment):
    """They became classes of their own ('nan'; 'True' beside 1) without a word."""
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": f"t{i}", "label": v} for i, v in enumerate(labels)])
    with pytest.raises(DataError, match=re.escape(fragment)):
        load_splits(str(path), None, None)


def test_integer_labels_in_training_and_the_same_ids_as_text_in_validation(tmp_path):
    """Training JSONL with 0/1 and validation CSV with "0"/"1" were refused: label '1' "does not occur in
    the training data (known labels: 0, 1)"."""
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 1}])
    val = _csv(tmp_path / "val.csv", [{"text": "c", "label": "1"}, {"text": "d", "label": "0"}])
    splits = load_splits(str(train), str(val), None)
    assert splits.labels["validation"] == [1, 0]
    bad = _csv(tmp_path / "bad.csv", [{"text": "c", "label": "2"}])
    with pytest.raises(DataError, match=r"label '2' does not occur in the training data"):
        load_splits(str(train), str(bad), None)


def test_mixed_label_types_within_training_are_refused(tmp_path):
    """1 and "1" in one file were merged into one label; they are now refused (refit.data.labels says why:
    an integer is an id and a string a name, and the readings part once ids skip 0)."""
    train = write_jsonl(
        tmp_path / "train.jsonl",
        [{"text": "a", "label": 1}, {"text": "b", "label": "1"}, {"text": "c", "label": 0}],
    )
    with pytest.raises(DataError, match=r'mixes integers \(line 1: 1\) and strings \(line 2: "1"\)'):
        load_splits(str(train), None, None)


def test_data_path_that_is_a_folder(tmp_path):
    """A folder was reported as "Data file not found", which it is not."""
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 1}])
    with pytest.raises(DataError, match=r"'data.validation' is .*, a folder, not a data file"):
        load_splits(str(train), str(tmp_path), None)


def test_texts_shared_by_training_and_validation_are_counted_in_a_warning(tmp_path, caplog):
    rows = [{"text": f"row {i}", "label": i % 2} for i in range(10)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    val = write_jsonl(tmp_path / "val.jsonl", rows[:3] + [{"text": "new", "label": 0}])
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "other", "label": 1}])
    with caplog.at_level(logging.WARNING, logger="refit.data"):
        load_splits(str(train), str(val), str(test))
    warnings = [r.getMessage() for r in caplog.records if r.name == "refit.data"]
    assert len(warnings) == 1 and warnings[0].startswith("3 of 4 validation rows")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="refit.data"):
        load_splits(str(train), str(test), None)
    assert not [r for r in caplog.records if r.name == "refit.data"]


def _resealed(tmp_path, tiny_versions, edit) -> str:
    """A copy of a real version whose refit.json was edited and then re-sealed: the manifest matches, so
    only the record's own check can catch it (as for a record written by other code)."""
    import json
    import shutil

    from refit.models.version import write_manifest

    version = tmp_path / "edited"
    shutil.copytree(tiny_versions[0], version)
    meta = json.loads((version / "refit.json").read_text())
    edit(meta)
    (version / "refit.json").write_text(json.dumps(meta))
    write_manifest(version)
    return str(version)


@pytest.mark.parametrize(
    "edit,fragment",
    [
        (
            lambda m: m.update(labels=["neg", "pos"], config={"data": {"max_length": "32"}}),
            "'config.data.max_length' must be an integer > 0, not str '32'",
        ),
        (
            lambda m: m.update(labels=["neg", "pos"], config={"data": {"validation": ["a.jsonl"]}}),
            "'config.data.validation' must be a string",
        ),
        (lambda m: m.update(labels="neg,pos"), "'labels' must be a non-empty list of label names"),
        (lambda m: m.update(labels=["neg", "pos"], metrics="good"), "'metrics' must be a mapping"),
        (lambda m: m.pop("labels", None), "records no 'labels'"),
    ],
)
def test_hand_edited_refit_json_is_refused_by_name(tmp_path, tiny_versions, capsys, edit, fragment):
    """Each of these crashed `refit export` and `refit compress` with a TypeError/KeyError traceback."""
    version = _resealed(tmp_path, tiny_versions, edit)
    for cmd in (
        ["export", "--version", version],
        ["compress", "--version", version, "--output_dir", f"{version}-c"],
    ):
        assert main(cmd) == 2
        err = capsys.readouterr().err
        assert fragment in err and "Traceback" not in err
