"""The maintenance report shows the gate's paired evidence (rows, b, c, McNemar's p per set), not only the
two accuracies: "+3.33 points" reads as a win until the page says it was 3 rows against 1, p = 0.62."""

from __future__ import annotations

from html.parser import HTMLParser

from refit.maintain.policy import paired
from refit.maintain.report import render_cycle


class _Tables(HTMLParser):
    """Every table of the page as a list of rows of cell texts (what a reader sees, entities decoded)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _tables(page: str) -> list[list[list[str]]]:
    parser = _Tables()
    parser.feed(page)
    return parser.tables


def _details(paired_record: dict) -> dict:
    return {
        "status": "promoted",
        "champion": "v1",
        "challenger": "v2",
        "ab": {"champion": {"golden": 0.9, "recent": 0.8}, "challenger": {"golden": 0.9, "recent": 0.8333}},
        "paired": paired_record,
    }


def test_the_report_draws_rows_b_c_and_p_for_recent_and_golden():
    # recent: 60 rows, the challenger alone right on 3, the champion alone on 1 (p = 0.62); golden: 400 rows, 2 vs 2
    recent = paired(
        [True] * 50 + [True] + [False] * 3 + [False] * 6, [True] * 50 + [False] + [True] * 3 + [False] * 6
    )
    golden = paired([True] * 396 + [True, True, False, False], [True] * 396 + [False, False, True, True])
    page = render_cycle(_details({"golden": golden.to_dict(), "recent": recent.to_dict()}))
    table = next(t for t in _tables(page) if t and "rows" in t[0])
    header, rows = table[0], {r[0]: dict(zip(table[0], r)) for r in table[1:]}
    assert set(rows) == {"golden", "recent"}
    assert any("(b)" in h for h in header) and any("(c)" in h for h in header)
    r = rows["recent"]
    assert r["rows"] == "60"
    assert r["challenger right, champion wrong (c)"] == "3"
    assert r["champion right, challenger wrong (b)"] == "1"
    assert r["McNemar p (two-sided)"] == "0.62"
    assert r["p (challenger better, one-sided)"] == f"{recent.p_better:.2g}"
    assert rows["golden"]["rows"] == "400" and rows["golden"]["McNemar p (two-sided)"] == "1"
    # next to the accuracies: the paired table follows the A/B table inside the same section
    section = page.split("<h2>Offline A/B")[1].split("<h2>")[0]
    assert "McNemar p" in section and "0.8333" in section


def test_paired_values_are_escaped_like_the_rest_of_the_page():
    record = {"<script>x</script>": {"n": "<b>9</b>", "b": 1, "c": 2, "p_two_sided": "<i>", "p_better": None}}
    page = render_cycle(_details(record))
    assert "<script>x</script>" not in page and "<b>9</b>" not in page and "<i>" not in page
    rows = next(t for t in _tables(page) if t and "rows" in t[0])[1:]
    assert rows == [["<script>x</script>", "<b>9</b>", "2", "1", "<i>", "-"]]  # shown as text, decoded


def test_a_cycle_without_a_paired_record_has_no_paired_table():
    page = render_cycle({"status": "no_action", "champion": "v1"})
    assert "McNemar" not in page


def test_the_report_draws_recall_per_class_with_the_largest_fall_first():
    per_class = {
        "golden": {
            "World": {"n": 10, "champion": 0.7, "challenger": 0.8},
            "Business": {"n": 10, "champion": 0.7, "challenger": 0.4},
            "Sports": {"n": 10, "champion": 0.9, "challenger": 0.9},
        }
    }
    page = render_cycle({**_details({}), "per_class": per_class})
    table = next(t for t in _tables(page) if t[0][0] == "class")
    assert table[1] == ["Business", "10", "0.700", "0.400", "-30.0"]
    assert [row[0] for row in table[1:]] == ["Business", "Sports", "World"]
    assert "Recall per class" not in render_cycle(_details({}))  # older cycle.json: no such table
