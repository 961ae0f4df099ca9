"""Reading JSONL/CSV/Parquet, label handling, clear data errors, length-grouped batching."""

from __future__ import annotations

import csv

import pytest

from refit.data import LengthGroupedSampler, PadCollator, demo_dir, load_splits, to_label_ids
from refit.errors import DataError
from tests.conftest import write_jsonl


def test_string_labels_from_csv_keep_their_names(tmp_path):
    path = tmp_path / "train.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, ["sentence", "sentiment"])
        w.writeheader()
        w.writerows([{"sentence": "good", "sentiment": "pos"}, {"sentence": "bad", "sentiment": "neg"}])
    splits = load_splits(str(path), str(path), None, text_column="sentence", label_column="sentiment")
    assert splits.label_names == ["neg", "pos"]
    assert splits.labels["train"] == [1, 0]
    assert splits.fingerprints["train"]["rows"] == 2 and len(splits.fingerprints["train"]["sha256"]) == 64


def test_parquet_and_labels_json_names(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a", "b", "c"], "label": [0, 1, 2]}), tmp_path / "train.parquet")
    (tmp_path / "labels.json").write_text('{"0": "neg", "1": "neu", "2": "pos"}')
    splits = load_splits(str(tmp_path / "train.parquet"), None, None)
    assert splits.label_names == ["neg", "neu", "pos"] and splits.labels["train"] == [0, 1, 2]


@pytest.mark.parametrize(
    "setup,fragment",
    [
        (lambda p: (None, "missing.jsonl"), "Data file not found"),
        (
            lambda p: (write_jsonl(p / "t.jsonl", [{"sentence": "x", "label": 0}]), None),
            "no text column 'text'",
        ),
        (lambda p: (write_jsonl(p / "t.jsonl", [{"text": "x", "y": 0}]), None), "no label column 'label'"),
    ],
)
def test_missing_file_and_columns(tmp_path, setup, fragment):
    train, _ = setup(tmp_path)
    with pytest.raises(DataError, match=fragment):
        load_splits(str(train or tmp_path / "missing.jsonl"), None, None)


def test_unseen_validation_label_and_empty_split(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    val = write_jsonl(tmp_path / "val.jsonl", [{"text": "c", "label": "z"}])
    with pytest.raises(DataError, match=r"label 'z' does not occur in the training data"):
        load_splits(str(train), str(val), None)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="no rows"):
        load_splits(str(train), str(empty), None)


def test_bad_json_names_file_and_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "ok", "label": 0}\n{"text": broken\n')
    with pytest.raises(DataError, match=r"t.jsonl, line 2"):
        load_splits(str(path), None, None)


def test_bundled_demo_data_loads():
    splits = load_splits(None, None, None, dataset="refit-demo")
    assert set(splits.texts) == {"train", "validation", "test"}
    assert splits.label_names == ["negative", "positive"]
    assert len(splits.texts["train"]) >= 200 and (demo_dir() / "README.md").is_file()


def test_length_grouped_sampler_is_a_permutation_with_homogeneous_batches():
    import random

    lengths = [random.Random(i).randint(1, 200) for i in range(1000)]
    sampler = LengthGroupedSampler(lengths, batch_size=16, seed=0)
    order = list(sampler)
    assert sorted(order) == list(range(1000))
    spread = lambda idx: max(lengths[i] for i in idx) - min(lengths[i] for i in idx)  # noqa: E731
    grouped = sum(spread(order[i : i + 16]) for i in range(0, 1000, 16))
    shuffled = list(range(1000))
    random.Random(0).shuffle(shuffled)
    plain = sum(spread(shuffled[i : i + 16]) for i in range(0, 1000, 16))
    assert grouped < plain / 5
    sampler.set_epoch(1)
    assert list(sampler) != order


def test_collator_pads_to_longest_in_batch():
    batch = PadCollator(pad_token_id=0)(
        [{"input_ids": [5, 6, 7], "labels": 1}, {"input_ids": [8], "labels": 0}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [1, 0]


@pytest.mark.parametrize("label", ["²", "١", "-1", "2", " 1"])
def test_label_ids_are_ascii_digits_in_range_or_names(label):
    """A golden set or drift labels file with '²' crashed on int() (a traceback, not exit 2), and Arabic-Indic
    '١' was silently read as label 1: only ASCII digits naming a label, or a label's name, are taken."""
    assert to_label_ids(["negative", "1", 0], ["negative", "positive"]) == [0, 1, 0]
    with pytest.raises(DataError, match="is not one of the model's labels"):
        to_label_ids([label], ["negative", "positive"])


def test_rows_cut_at_max_length_are_counted_and_said(minilm_dir, caplog):
    """A long input is truncated silently by the tokenizer: the data module counts the cut rows per split
    (exactly, from the fast tokenizer's overflow) and warns with the counts, so a 20newsgroups run at
    max_length 128 says that most of its posts were cut."""
    import logging

    from transformers import AutoTokenizer

    from refit.data import TextDataModule
    from refit.data.splits import Splits

    long, short = "word " * 40, "a short one"
    splits = Splits(
        texts={"train": [long, short, long, short], "validation": [short, short]},
        labels={"train": [0, 1, 2, 0], "validation": [1, 2]},
        label_names=["a", "b", "c"],
    )
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    exact = len(tokenizer("word " * 40)["input_ids"])  # 42: fits at 42, is cut at 41
    with caplog.at_level(logging.WARNING, logger="refit.data"):
        dm = TextDataModule(splits, tokenizer, max_length=exact - 1)
    assert dm.truncated == {"train": 2, "validation": 0}
    assert max(dm.datasets["train"].lengths) == exact - 1
    assert "train 2 of 4 rows" in caplog.text and "validation" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="refit.data"):
        assert TextDataModule(splits, tokenizer, max_length=exact).truncated == {"train": 0, "validation": 0}
    assert "cut" not in caplog.text
