"""The promotion gate knows its own noise: champion and challenger are scored on the same rows, so each gate
reason carries the paired evidence (rows, discordant counts b and c, McNemar's exact p), and the opt-in
`gate.recent_alpha` refuses a recent-window win that is within noise."""

from __future__ import annotations

import subprocess
import sys

import pytest

from refit.maintain.policy import gate, mcnemar_p, paired
from refit.settings import GateConfig


def _rows(both_right: int, champion_only: int, challenger_only: int, both_wrong: int = 0):
    """Per-row correctness vectors (champion, challenger) with the given joint counts."""
    champion = [True] * both_right + [True] * champion_only + [False] * challenger_only + [False] * both_wrong
    challenger = (
        [True] * both_right + [False] * champion_only + [True] * challenger_only + [False] * both_wrong
    )
    return champion, challenger


def test_mcnemar_exact_p_matches_known_values():
    assert mcnemar_p(3, 1) == pytest.approx(0.625)  # 2 * (1 + 4) / 16
    assert mcnemar_p(1, 3) == pytest.approx(0.625)  # symmetric
    assert mcnemar_p(0, 0) == 1.0  # no discordant rows: no evidence either way
    assert mcnemar_p(0, 10) == pytest.approx(2 / 1024)
    assert mcnemar_p(0, 10, "greater") == pytest.approx(1 / 1024)  # one-sided: challenger better
    assert mcnemar_p(10, 0, "greater") == 1.0  # the challenger is worse: no evidence it is better
    assert mcnemar_p(1, 3, "greater") == pytest.approx(5 / 16)


def test_paired_counts_only_the_discordant_rows():
    p = paired(*_rows(both_right=50, champion_only=1, challenger_only=3, both_wrong=6))
    assert (p.n, p.b, p.c) == (60, 1, 3)
    assert p.gain_points == pytest.approx(200 / 60)
    assert p.p_two_sided == pytest.approx(0.625)
    with pytest.raises(ValueError, match="same rows"):
        paired([True, False], [True])


def test_each_reason_says_rows_discordant_counts_and_p():
    golden = paired(*_rows(90, 2, 1, 7))
    recent = paired(*_rows(50, 1, 3, 6))
    result = gate(golden, recent, golden_tolerance=5.0, recent_margin=0.0)
    assert result.passed
    g, r = result.reasons
    assert "-1.00 points vs the champion on 100 rows" in g
    assert "challenger right where the champion was wrong: 1, the reverse: 2" in g and "McNemar p = 1" in g
    assert r == (
        "recent window: +3.33 points vs the champion on 60 rows (challenger right where the champion was "
        "wrong: 3, the reverse: 1; McNemar p = 0.62, within noise) (needs >= +0)"
    )
    assert set(result.paired) == {"golden", "recent"}


def test_a_golden_regression_beyond_tolerance_fails_and_says_so():
    result = gate(paired(*_rows(80, 12, 0, 8)), None, golden_tolerance=1.0, recent_margin=0.0)
    assert not result.passed
    assert "12.00 points worse than the champion on 100 rows" in result.reasons[0]
    assert "significant at 0.05" in result.reasons[0] and "(tolerance 1)" in result.reasons[0]
    assert len(result.reasons) == 1  # no recent window: no recent reason


def test_no_golden_rows_fails_closed():
    result = gate(paired([], []), paired(*_rows(40, 0, 12, 8)), 100.0, -100.0)
    assert not result.passed and "no rows compared" in result.reasons[0]


def test_the_default_gate_refuses_a_noise_level_win_and_promotes_a_clear_one():
    """GateConfig's defaults as a cycle passes them: "+3.33 points on 60 rows, 3 vs 1" (one-sided p = 0.31) is
    kept out; 12 vs 0 on 60 rows is promoted (scripts/results/gate.md chose the default)."""
    cfg = GateConfig()
    golden = paired(*_rows(100, 0, 0))
    args = (cfg.golden_tolerance, cfg.recent_margin, cfg.recent_alpha)
    noise = gate(golden, paired(*_rows(50, 1, 3, 6)), *args)
    assert not noise.passed and "not significant" in noise.reasons[1], noise.reasons
    assert gate(golden, paired(*_rows(40, 0, 12, 8)), *args).passed
    assert not gate(golden, paired(*_rows(50, 0, 0, 10)), *args).passed  # equal: no evidence, no churn


def test_recent_alpha_null_decides_by_the_margin_alone():
    """recent_alpha null: a noise-level win passes, a loss below the margin fails, exactly as before."""
    golden = paired(*_rows(100, 0, 0))
    assert gate(golden, paired(*_rows(50, 1, 3, 6)), 1.0, 0.0).passed
    assert gate(golden, paired(*_rows(50, 0, 0, 10)), 1.0, 0.0).passed  # equal: >= +0
    assert not gate(golden, paired(*_rows(50, 2, 1, 7)), 1.0, 0.0).passed
    assert not gate(golden, paired(*_rows(50, 1, 3, 6)), 1.0, 5.0).passed  # +3.33 < +5


def test_recent_alpha_refuses_a_noise_level_win_and_passes_a_clear_one():
    golden = paired(*_rows(100, 0, 0))
    noise = gate(golden, paired(*_rows(50, 1, 3, 6)), 1.0, 0.0, recent_alpha=0.05)
    assert not noise.passed
    assert "one-sided McNemar p < 0.05: p = 0.31, not significant" in noise.reasons[1]
    clear = gate(golden, paired(*_rows(40, 0, 12, 8)), 1.0, 0.0, recent_alpha=0.05)
    assert clear.passed, clear.reasons
    assert "p = 0.00024" in clear.reasons[1] and "not significant" not in clear.reasons[1]
    # a significant win still needs the margin
    assert not gate(golden, paired(*_rows(40, 0, 12, 8)), 1.0, 30.0, recent_alpha=0.05).passed
    # the golden rule is unchanged by recent_alpha: a drop within tolerance passes
    small_drop = paired(*_rows(99, 1, 0))
    assert gate(small_drop, paired(*_rows(40, 0, 12, 8)), 1.0, 0.0, recent_alpha=0.05).passed


@pytest.mark.parametrize("value", ["0", "1", "1.5"])
def test_recent_alpha_outside_the_open_unit_interval_is_refused_naming_the_key(value, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "refit", "maintain", "--once", "--gate.recent_alpha", value],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "gate.recent_alpha" in proc.stderr and "(0, 1)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_per_class_recall_names_the_class_a_challenger_forgot():
    """Four topics, 10 golden rows each: the challenger gains 4 rows on three classes and loses 3 of
    'Business', so overall it is 1 row better and the accuracy gate passes; the per-class line names it."""
    from refit.maintain.policy import largest_class_fall, per_class_recall

    names = ["World", "Sports", "Business", "Sci/Tech"]
    labels = [k for k in range(4) for _ in range(10)]
    champion = [i % 10 < 7 for i in range(40)]  # 7 of 10 right in every class
    challenger = list(champion)
    for k, row in ((0, 7), (1, 7), (3, 7), (3, 8)):  # 4 rows gained outside Business
        challenger[10 * k + row] = True
    for row in (0, 1, 2):  # 3 Business rows lost
        challenger[20 + row] = False
    recall = per_class_recall(labels, champion, challenger, names)
    assert recall["Business"] == {"n": 10, "champion": 0.7, "challenger": 0.4}
    assert recall["Sci/Tech"]["challenger"] == 0.9
    assert gate(paired(champion, challenger), None, 1.0, 0.0).passed
    line = largest_class_fall(recall)
    assert "Business 0.700 -> 0.400" in line and "-30.0 points on 10 rows" in line
    assert "no class" in largest_class_fall(per_class_recall(labels, champion, champion, names))


def test_per_class_recall_leaves_out_absent_classes_and_one_class_says_nothing():
    from refit.maintain.policy import largest_class_fall, per_class_recall

    recall = per_class_recall([2, 2, 0], [True, False, True], [True, True, False], ["a", "b", "c"])
    assert set(recall) == {"a", "c"}  # "b" has no rows: no recall, not 0
    assert largest_class_fall(per_class_recall([1, 1], [True, True], [False, False], ["a", "b"])) is None
