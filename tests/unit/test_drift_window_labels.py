"""Drift windows read labels by refit.data's one rule, and check them against the version's label set.

Before, a window file mixing 1 and "negative" was read as it came, and a label the version does not know
("neutral", id 5 of two classes) made the window's accuracy silently missing.
"""

from __future__ import annotations

import pytest

from refit.drift.windows import check_window_labels, read_windows
from refit.errors import DataError
from tests.conftest import write_jsonl

NAMES = ["negative", "positive"]


def _rows(labels: list) -> list[dict]:
    return [{"text": f"input {i}", "label": lab} for i, lab in enumerate(labels)]


def test_a_window_file_mixing_ids_and_names_is_refused_naming_file_and_lines(tmp_path):
    path = write_jsonl(tmp_path / "prod.jsonl", _rows([1, 1, "negative", 0]))
    with pytest.raises(DataError) as e:
        read_windows(path, min_size=1)
    msg = str(e.value)
    assert str(path) in msg and "integers (line 1: 1)" in msg and 'strings (line 3: "negative")' in msg, msg
    assert "--label_column" in msg, msg  # the way to check the window without its labels


def test_a_csv_window_with_labels_differing_by_whitespace_is_refused(tmp_path):
    path = tmp_path / "prod.csv"
    path.write_text("text,label\na,positive\nb, positive\nc,negative\n")
    with pytest.raises(DataError, match=r"differ only by surrounding whitespace") as e:
        read_windows(path, min_size=1)
    assert "(line 2)" in str(e.value) and "(line 3)" in str(e.value), e.value  # CSV lines count the header


def test_one_kind_per_file_is_read_and_unlabelled_files_are_untouched(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", _rows([0, 1, 1]))
    write_jsonl(tmp_path / "b.jsonl", _rows(["negative", "positive", "positive"]))
    write_jsonl(tmp_path / "c.jsonl", [{"text": "no label yet"}, {"text": "nor here"}])
    windows = {w.name: w for w in read_windows(tmp_path, min_size=1)}
    assert windows["a"].labels == [0, 1, 1] and windows["b"].labels == ["negative", "positive", "positive"]
    assert windows["c"].labels is None
    check_window_labels(list(windows.values()), NAMES)  # ids and names of the version: accepted


@pytest.mark.parametrize(
    ("labels", "shown"),
    [
        (["positive", "negative", "neutral", "positive"], "'neutral'"),
        ([1, 0, 5, 1], "5"),  # an id out of range for two classes
        (["positive", "negative", "Positive"], "'Positive'"),
    ],
    ids=["unknown name", "id out of range", "name in another case"],
)
def test_a_label_outside_the_versions_set_is_refused_naming_window_row_and_allowed(tmp_path, labels, shown):
    path = write_jsonl(tmp_path / "day-2.jsonl", _rows(labels))
    windows = read_windows(path, min_size=1)
    with pytest.raises(DataError) as e:
        check_window_labels(windows, NAMES)
    msg = str(e.value)
    assert "day-2" in msg and str(path) in msg and f"label {shown}" in msg and "row 3" in msg, msg
    assert "negative, positive" in msg and "0-1" in msg and "--label_column" in msg, msg


def test_a_window_file_with_an_unusable_label_value_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "prod.jsonl", _rows(["positive", {"id": 1}]))
    with pytest.raises(DataError, match=r"line 2: the label is a dict"):
        read_windows(path, min_size=1)


def test_a_serve_capture_file_is_read_unlabelled_its_label_is_the_served_prediction(tmp_path):
    """`refit drift --data REGISTRY/inbox` scored the served predictions as true labels: "accuracy" was the
    agreement with the model that served them (0.88 where the model's true accuracy was 0.83)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from refit.serve import CAPTURE_SCHEMA

    n = 4
    table = pa.table(
        {
            "request_id": [f"{i:032x}" for i in range(n)],
            "at": ["2026-12-02T10:00:00Z"] * n,
            "version_id": ["v1"] * n,
            "text": [f"served input {i}" for i in range(n)],
            "text_sha256": [None] * n,
            "prediction": [1] * n,
            "label": ["positive"] * n,
            "probs": [[0.2, 0.8]] * n,
        },
        schema=CAPTURE_SCHEMA,
    )
    pq.write_table(table, tmp_path / "capture-20261202T100000Z-abcdef.parquet")
    write_jsonl(tmp_path / "labelled.jsonl", _rows([0, 1, 1, 0]))  # a plain file keeps its labels
    by_name = {w.name: w for w in read_windows(tmp_path, min_size=1)}
    served = by_name["capture-20261202T100000Z-abcdef"]
    assert served.texts == [f"served input {i}" for i in range(n)] and served.labels is None
    assert by_name["labelled"].labels == [0, 1, 1, 0]
