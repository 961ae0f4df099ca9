"""One kind of label per file, and feedback labels read against a version's label names (refit.data.labels).

Before: a JSONL mixing 1 and "negative" trained as the label set ['1', 'negative'] with no warning, and a
served version took "1", true and 1.0 as feedback for label id 1.
"""

from __future__ import annotations

import json

import pytest

from refit.cli import main
from refit.data import load_splits
from refit.data.labels import feedback_label
from refit.errors import DataError


def _jsonl(path, labels, blank_after: int | None = None):
    lines = [json.dumps({"text": f"text {i}", "label": v}) for i, v in enumerate(labels)]
    if blank_after is not None:
        lines.insert(blank_after, "")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize(
    "labels,kinds",
    [
        ([0, 1, "negative", 0], ("integers (line 1: 0)", 'strings (line 4: "negative")')),
        ([1, 0, "1", "0"], ("integers (line 1: 1)", 'strings (line 4: "1")')),
        ([True, "positive", False], ("true/false (line 1: true)", 'strings (line 3: "positive")')),
        ([True, 1, 0], ("true/false (line 1: true)", "integers (line 3: 1)")),
    ],
    ids=["int-and-name", "int-and-digit-string", "bool-and-name", "bool-and-int"],
)
def test_a_label_column_of_mixed_kinds_is_refused_naming_lines_and_labels(tmp_path, labels, kinds):
    # a blank line after the first row: the numbers named are the file's lines, not row counts
    path = _jsonl(tmp_path / "train.jsonl", labels, blank_after=1)
    with pytest.raises(DataError) as e:
        load_splits(path, None, None)
    msg = str(e.value)
    assert msg.startswith(f"{path}: the label column mixes ")
    for kind in kinds:
        assert kind in msg, msg
    assert "labels found: " in msg and "labels.json" in msg


def test_one_and_quoted_one_say_why_they_are_not_merged(tmp_path):
    path = _jsonl(tmp_path / "train.jsonl", [1, 2, "1"])
    with pytest.raises(DataError, match=r'1 and "1"\) are not taken as one class'):
        load_splits(path, None, None)


def test_a_mix_in_a_held_out_split_names_that_file(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", ["negative", "positive"])
    val = _jsonl(tmp_path / "val.jsonl", ["negative", 1])
    with pytest.raises(DataError, match=rf"^{val}: the label column mixes"):
        load_splits(train, val, None)


def test_labels_equal_but_for_whitespace_are_refused_in_csv(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('text,label\na,1\nb,0\nc," 1"\n')  # CSV has only strings: this is the mix it can hold
    with pytest.raises(
        DataError, match=r'labels "1" \(line 2\) and " 1" \(line 4\) differ only by surrounding'
    ):
        load_splits(str(path), None, None)


@pytest.mark.parametrize(
    "labels,names",
    [([0, 1, 1.0], ["0", "1"]), (["neg", "pos"], ["neg", "pos"]), ([False, True], ["False", "True"])],
)
def test_one_kind_of_label_still_trains(tmp_path, labels, names):
    assert load_splits(_jsonl(tmp_path / "train.jsonl", labels), None, None).label_names == names


def test_int_training_labels_with_a_csv_validation_split_still_match(tmp_path):
    """The rule is per file: CSV gives every label as text, and integer ids in the training JSONL match it."""
    train = _jsonl(tmp_path / "train.jsonl", [0, 1])
    val = tmp_path / "val.csv"
    val.write_text("text,label\nx,1\ny,0\n")
    assert load_splits(train, str(val), None).labels["validation"] == [1, 0]


def test_the_cli_exits_2_without_a_traceback(tmp_path, capsys):
    path = _jsonl(tmp_path / "train.jsonl", [1, "negative", 0])
    code = main(
        ["finetune", "--data.train", path, "--output_dir", str(tmp_path / "run"), "--tracking.wandb", "false"]
    )
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in out + err
    assert "mixes integers (line 1: 1)" in err and not (tmp_path / "run" / "version").exists()


# --- feedback labels against a version's label names ---------------------------------------------------
@pytest.mark.parametrize(
    "value,names,expected",
    [
        ("positive", ["negative", "positive"], "positive"),
        (1, ["negative", "positive"], "positive"),  # an id is stored as its name
        (1, ["0", "1"], "1"),  # ids and names coincide: both forms are the same class
        ("1", ["0", "1"], "1"),
        ("2", ["1", "2"], "2"),  # digit names given as strings are names
    ],
)
def test_feedback_label_is_stored_as_the_name(value, names, expected):
    assert feedback_label(value, names) == expected


@pytest.mark.parametrize(
    "value,names,fragment",
    [
        ("1", ["negative", "positive"], "an id is sent as a JSON integer"),
        (True, ["negative", "positive"], "label true is a boolean"),
        (1.0, ["negative", "positive"], "label 1.0 is a number with a fraction"),
        (None, ["negative", "positive"], "label null is JSON null"),
        (2, ["negative", "positive"], "Unknown label id 2"),
        (-1, ["negative", "positive"], "Unknown label id -1"),
        ("positive ", ["negative", "positive"], "only by surrounding whitespace"),
        (1, ["1", "2"], "ambiguous"),  # name "1" (id 0) or id 1 (name "2")?
    ],
)
def test_feedback_label_of_the_wrong_kind_is_refused_naming_the_labels(value, names, fragment):
    with pytest.raises(DataError) as e:
        feedback_label(value, names)
    assert fragment in str(e.value) and f"allowed labels: {', '.join(names)} " in str(e.value), str(e.value)
