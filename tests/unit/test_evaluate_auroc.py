"""AUROC is undefined on labels of one class: reported as missing (None / "n/a (one class)"), never as 0.0.

Before: a labelled window of one class scored AUROC 0.0, with two torchmetrics warnings per call, and a
table showed 0.0000: a model that ranks every case backwards.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from refit.evaluate import (
    AccuracyGateError,
    ParentMismatchError,
    check_gate,
    check_parent_reproduces,
    score,
    score_probs,
)
from refit.report import print_metrics

NO_AUROC = "n/a (one class)"  # spelt out, not imported: the test states the promise


def _probs(n: int, k: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).dirichlet(np.ones(k), size=n)).float()


def test_one_class_labels_give_no_auroc_and_no_warnings():
    probs = _probs(40, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = score_probs(probs, [1] * 40)
    assert values["auroc"] is None, values
    assert [str(w.message) for w in caught] == []
    assert values["accuracy"] == pytest.approx(float((probs.argmax(1) == 1).float().mean()))


@pytest.mark.parametrize("k", [2, 3, 5])
def test_auroc_with_every_class_present_is_sklearns_macro_one_vs_rest(k):
    probs = _probs(300, k, seed=k)
    labels = np.random.default_rng(k + 10).integers(0, k, 300)
    labels[:k] = np.arange(k)  # every class occurs
    expected = roc_auc_score(labels, probs.numpy(), multi_class="ovr") if k > 2 else None
    if k == 2:
        expected = roc_auc_score(labels, probs.numpy()[:, 1])  # binary: both one-vs-rest scores are equal
    assert score_probs(probs, labels.tolist())["auroc"] == pytest.approx(expected, abs=1e-5)


def test_a_class_absent_from_the_labels_is_left_out_of_the_average():
    """3 classes, labels of two: the mean of the two present classes' one-vs-rest AUROC (before: a 0.0 for
    the absent class pulled the macro average down by a third, with a warning)."""
    probs = _probs(200, 3, seed=1)
    labels = np.random.default_rng(2).integers(0, 2, 200)
    expected = np.mean([roc_auc_score(labels == c, probs.numpy()[:, c]) for c in (0, 1)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = score_probs(probs, labels.tolist())["auroc"]
    assert got == pytest.approx(expected, abs=1e-5) and not caught


def test_tables_show_a_missing_auroc_as_na_not_zero(capsys):
    one_class = score(np.random.default_rng(0).normal(size=(20, 2)), [0] * 20, 2)
    print_metrics({"window": one_class}, title="t")
    out = capsys.readouterr().out
    assert NO_AUROC in " ".join(out.split()), out  # the cell may fold onto two lines in a narrow terminal
    assert "0.0000" not in out, out


def test_the_gate_reads_accuracy_only_and_prints_a_missing_auroc():
    base = {"accuracy": 0.9, "auroc": None, "ece": 0.1}
    ok = check_gate("x", base, {"accuracy": 0.89, "auroc": None, "ece": 0.1}, max_drop=2.0)
    assert ok["passed"] and ok["candidate"]["auroc"] is None  # JSON null, not 0
    with pytest.raises(AccuracyGateError) as e:
        check_gate("x", base, {"accuracy": 0.5, "auroc": None, "ece": 0.1}, max_drop=2.0)
    assert f"auroc            {NO_AUROC} -> {NO_AUROC}" in str(e.value)


def test_auroc_is_no_parent_mismatch_where_its_two_definitions_differ():
    """A fine-tune records Lightning's AUROC: 0.0 on a one-class split, and an absent class counted as 0 in a
    macro average; refit.evaluate now gives None or the present classes' mean. Neither is damage."""
    for recorded, now in ((0.0, None), (0.6, 0.9), (None, 0.7)):
        meta = {"metrics": {"validation": {"accuracy": 0.8, "auroc": recorded}}}
        report = check_parent_reproduces(
            meta, {"accuracy": 0.8, "auroc": now}, tolerance=0.5, recipe="export"
        )
        assert report["reproduced"]
    meta = {"metrics": {"validation": {"accuracy": 0.8, "auroc": 0.9}}}
    with pytest.raises(ParentMismatchError, match="accuracy"):  # the other metrics still catch damage
        check_parent_reproduces(meta, {"accuracy": 0.7, "auroc": 0.9}, tolerance=0.5, recipe="export")


def test_per_class_scores_name_the_class_the_macro_average_hides():
    """Three classes, the rare one never predicted: accuracy 0.8 and a mild macro F1, while its own recall
    is 0 and its precision undefined (None, never 0/0); the weakest line leads with it."""
    from refit.evaluate import per_class_scores, weakest_classes

    labels = [0] * 5 + [1] * 4 + [2]
    predicted = [0] * 5 + [1, 1, 1, 0] + [1]
    logits = np.eye(3)[predicted]
    scores = per_class_scores(logits, labels, ["a", "b", "rare"])
    assert scores["rare"] == {"n": 1, "precision": None, "recall": 0.0, "f1": 0.0}
    assert scores["a"]["precision"] == pytest.approx(5 / 6) and scores["a"]["recall"] == 1.0
    assert scores["b"] == {"n": 4, "precision": 0.75, "recall": 0.75, "f1": 0.75}
    assert weakest_classes(scores, 2) == "rare 0.00 (1 rows), b 0.75 (4 rows)"
    absent = per_class_scores(np.eye(3)[[0, 1]], [0, 1], ["a", "b", "c"])["c"]
    assert absent == {"n": 0, "precision": None, "recall": None, "f1": None}
