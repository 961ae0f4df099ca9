"""HTML reports a user reads (issue #13.4): the maintenance report draws the cycles (drift p-values with each
test's threshold, accuracy, champion history) and says plainly when nothing happened; the drift report draws
each test's own Bonferroni threshold, not alpha."""

from __future__ import annotations

import re

from refit.drift.html import render_report
from refit.maintain.policy import gate, paired
from refit.maintain.report import render_cycle


def _drift(mmd_p: float, ks_p: float) -> dict:
    return {
        "mmd": {"p_value": mmd_p, "drift": mmd_p <= 0.025, "threshold": 0.025},
        "ks": {"p_value": ks_p, "drift": ks_p <= 0.025, "threshold": 0.025},
        "drift": mmd_p <= 0.025 or ks_p <= 0.025,
    }


def test_a_cycle_where_nothing_happened_has_no_empty_ab_table_and_no_minus_zero():
    html = render_cycle(
        {
            "status": "no_action",
            "champion": "v1",
            "drift": _drift(0.4, 0.6),
            "ab": {},
            "gate": [],
            "reasons": [],
        }
    )
    assert "No challenger this cycle" in html
    assert "<th>model</th>" not in html  # the A/B table is not drawn empty
    assert "0.025" in html  # the drift table shows the threshold each test was judged at
    # the gate's wording when champion and challenger score the same: +0.00, never -0.00
    same = paired([True] * 9 + [False], [True] * 9 + [False])
    reasons = gate(same, same, 1.0, 0.0).reasons
    assert all("-0.00" not in r for r in reasons) and "+0.00" in reasons[0], reasons


def test_maintenance_report_plots_the_cycles():
    history = [
        {
            "id": 1,
            "status": "no_action",
            "details": {"status": "no_action", "champion": "v1", "drift": _drift(0.3, 0.5), "ab": {}},
        },
        {
            "id": 2,
            "status": "promoted",
            "details": {
                "status": "promoted",
                "champion": "v1",
                "challenger": "v2",
                "drift": _drift(0.001, 1e-9),
                "ab": {
                    "champion": {"golden": 0.91, "recent": 0.62},
                    "challenger": {"golden": 0.92, "recent": 0.88},
                },
            },
        },
        {"id": 3, "status": "running", "details": {"champion": "v2"}},  # this cycle, still open in the db
    ]
    current = {"status": "no_action", "champion": "v2", "drift": _drift(0.2, 0.4), "ab": {}}
    html = render_cycle(current, history)
    svgs = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    assert len(svgs) == 2, "a p-value chart and an accuracy chart"
    pvalues, accuracy = svgs
    assert pvalues.count("<circle") == 6  # 2 tests x 3 cycles (the running row replaced by this cycle)
    assert "mmd threshold 0.025" in pvalues and "ks threshold 0.025" in pvalues
    assert accuracy.count("<circle") == 4  # only cycle #2 retrained: champion/challenger x golden/recent
    assert "challenger recent" in accuracy
    # champion history: v1 until cycle #2 promoted v2
    assert re.search(r"#2</td><td>promoted</td><td><code>v1</code></td><td><code>v2</code>", html)


def test_drift_report_draws_each_tests_own_threshold_not_alpha():
    results = {
        "mmd": {"p_value": 0.2, "drift": False, "threshold": 0.05 / 3},
        "ks": {"p_value": 0.3, "drift": False, "threshold": 0.05 / 3},
        "classifier": {"p_value": 0.0185, "drift": False, "threshold": 0.05 / 3},
    }
    report = {
        "version": {"id": "v1"},
        "reference": {"size": 100, "class_shares": [0.5, 0.5]},
        "alpha": 0.05,
        "tests": list(results),
        "labels": ["neg", "pos"],
        "windows": [
            {
                "name": "w1",
                "size": 100,
                "drift": False,
                "results": results,
                "class_shares": [0.5, 0.5],
                "projection": [],
            }
        ],
    }
    html = render_report(report)
    assert "mmd, ks, classifier threshold 0.0167" in html  # one line for the tests that share a threshold
    assert "alpha 0.05</text>" not in html  # the old single line at alpha, above a p-value that is no drift


def _windows_report(names: list[str], p_value: float) -> dict:
    tests = ["mmd", "ks", "classifier"]
    return {
        "version": {"id": "v1"},
        "reference": {"size": 100, "class_shares": [0.5, 0.5]},
        "alpha": 0.05,
        "tests": tests,
        "labels": ["neg", "pos"],
        "windows": [
            {
                "name": name,
                "size": 25,
                "drift": p_value < 0.05 / 3,
                "results": {
                    t: {
                        "p_value": p_value,
                        "drift": p_value < 0.05 / 3,
                        "threshold": 0.05 / 3,
                        "explanation": f"{t} on {name}",
                    }
                    for t in tests
                },
                "class_shares": [0.5, 0.5],
                "projection": [[0.0, 0.0]],
                "most_unlike": [{"text": f"odd input of {name}", "score": 0.4}],
            }
            for name in names
        ],
    }


def _marker_centres(svg: str) -> list[tuple[float, float]]:
    circles = [
        (float(x), float(y)) for x, y in re.findall(r'<circle class="pt" cx="([\d.]+)" cy="([\d.]+)"', svg)
    ]
    rects = [
        (float(x) + 3.2, float(y) + 3.2)
        for x, y in re.findall(r'<rect class="pt" x="([\d.]+)" y="([\d.]+)"', svg)
    ]
    polys = [
        tuple(map(float, p.split()[0].split(",")))
        for p in re.findall(r'<polygon class="pt" points="([^"]+)"', svg)
    ]
    return (
        circles + rects + [(x, y + 4) for x, y in polys]
    )  # a polygon's first vertex is 4 px above its centre


def test_points_at_the_floor_do_not_hide_each_other():
    """Every test's p-value far below the plot's floor: the points are offset and differ in shape."""
    html = render_report(_windows_report(["w1", "w2"], 1e-12))
    pvalues = re.findall(r"<svg.*?</svg>", html, flags=re.S)[0]
    markers = re.findall(r'class="pt" ', pvalues)
    assert len(markers) == 6  # 3 tests x 2 windows
    assert (
        len({m for m in re.findall(r'<(circle|rect|polygon) class="pt"', pvalues)}) == 3
    )  # a shape per test
    xs = sorted(x for x, _ in _marker_centres(pvalues))
    assert len(set(xs)) == 6 and min(b - a for a, b in zip(xs, xs[1:])) >= 4, xs


def test_every_window_says_what_moved_and_keeps_its_full_name_on_the_axis():
    names = [f"shifted[{25 * i}:{25 * i + 25}]" for i in range(8)]
    html = render_report(_windows_report(names, 0.4))
    for name in names:
        assert f"What moved in {name} (no drift)" in html and f"ks on {name}" in html
        assert f"odd input of {name}" in html
        assert re.search(
            rf'class="xlabel"[^>]*><title>{re.escape(name)}</title>{re.escape(name)}</text>', html
        )
    long = "production-2026-11-22T14:00:00[1000:2000]"
    label = re.search(
        r'class="xlabel"[^>]*><title>[^<]*</title>([^<]*)</text>', render_report(_windows_report([long], 0.4))
    )
    assert label.group(1).endswith("[1000:2000]") and len(label.group(1)) < len(long)  # the end tells apart


def test_twenty_classes_each_get_their_own_colour_and_shape_in_the_shares_legend():
    """A 20-topic model: colour and shape each cycled alone repeated the pair every 8 classes, so classes 0,
    8 and 16 were one blue circle in the chart and the legend."""
    labels = [f"topic-{k}" for k in range(20)]
    report = _windows_report(["w1", "w2"], 0.4)
    report["labels"] = labels
    report["reference"]["class_shares"] = [1 / 20] * 20
    for w in report["windows"]:
        w["class_shares"] = [1 / 20] * 20
    shares = re.findall(r"<svg.*?</svg>", render_report(report), flags=re.S)[1]
    assert "topic-19" in shares
    keys = re.findall(r'<(circle|rect|polygon) class="key" (?:points="([^"]+)" )?[^>]*?fill="(#\w+)"', shares)
    styles = [(tag, len(points.split()), color) for tag, points, color in keys]
    assert len(styles) == 20 and len(set(styles)) == 20, styles
