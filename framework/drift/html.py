"""A self-contained HTML drift report (inline SVG, no scripts, no network), from drift.json's content.

Hand-written SVG because the report must open anywhere offline and the plots are three simple charts;
a plotting library would add a heavy dependency for that. tests/recipes/test_reports_browser.py opens it
in headless Chromium and checks that no text of a chart falls outside it.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

from refit.estimate import PRIMARY

__all__ = ["render_report"]

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"]
W, PAD, TOP, PLOT_H = 640, 56, 24, 190
H = TOP + PLOT_H + PAD  # charts without window labels (the scatter)
_CHAR_W = 6.6  # px per character of 11 px sans-serif, on the generous side so labels are never cut
_ANGLE = 40  # window labels are drawn rotated: long names ("prod-2026-11[1000:1100]") do not overlap
_MAX_LABEL = 32  # longer names lose their middle on the axis (in full in the tooltip and the table)
_DODGE = 5  # px between the markers of different series at one window, so equal values stay visible
_P_FLOOR = 1e-4  # p-values below are drawn at the floor, still told apart by marker and offset


def _short(name: str) -> str:
    """The name, or its start and end around an ellipsis: the end ("[1000:2000]") tells windows apart."""
    if len(name) <= _MAX_LABEL:
        return name
    head = (_MAX_LABEL - 1) // 2
    return name[:head] + "\u2026" + name[-(_MAX_LABEL - 1 - head) :]


@dataclass(frozen=True)
class _Frame:
    """The plot area of a chart over windows: its left edge and height leave room for rotated labels."""

    names: list[str]
    left: float
    every: int  # label every n-th window when there are too many to fit
    label_h: float  # vertical room the rotated labels take below the axis
    key_w: float  # width of one legend entry; entries wrap onto more rows (many classes)
    key_rows: int

    @classmethod
    def over(cls, names: list[str], series: list[str]) -> _Frame:
        cos, sin = math.cos(math.radians(_ANGLE)), math.sin(math.radians(_ANGLE))
        widths = [len(_short(n)) * _CHAR_W for n in names]
        left = float(PAD)
        for _ in range(3):  # a wider left margin narrows the steps: settle in a few rounds
            step = (W - left - 20) / max(len(names), 1)
            need = max((w * cos - (i + 0.5) * step + 8 for i, w in enumerate(widths)), default=0.0)
            left = max(float(PAD), need)
        step = (W - left - 20) / max(len(names), 1)
        every = max(1, math.ceil(14 / (step * sin)))  # rotated labels stay 14 px apart
        label_h = max((w * sin + 11 * cos for w in widths), default=0.0) + 8
        key_w = max((len(_short(k)) * _CHAR_W for k in series), default=0.0) + 24
        per_row = max(1, int((W - 16) // key_w))
        return cls(names, left, every, label_h, key_w, max(1, math.ceil(len(series) / per_row)))

    @property
    def axis_y(self) -> float:
        return TOP + PLOT_H

    @property
    def height(self) -> float:
        return self.axis_y + self.label_h + 16 * self.key_rows + 8  # labels, then the legend

    def x(self, i: int, series: int = 0, n_series: int = 1) -> float:
        step = (W - self.left - 20) / max(len(self.names), 1)
        dodge = min(_DODGE, 0.8 * step / max(n_series, 1))  # the series of one window stay within its step
        return self.left + step * (i + 0.5) + dodge * (series - (n_series - 1) / 2)

    def open(self, title: str, y_label: str) -> list[str]:
        mid = TOP + PLOT_H / 2
        return [
            f'<svg width="{W}" height="{self.height:.0f}" xmlns="http://www.w3.org/2000/svg" '
            f'font-family="sans-serif" font-size="11">',
            f'<text x="{W / 2}" y="14" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
            f'<line x1="{self.left}" y1="{self.axis_y}" x2="{W - 10}" y2="{self.axis_y}" stroke="#333"/>',
            f'<line x1="{self.left}" y1="{TOP}" x2="{self.left}" y2="{self.axis_y}" stroke="#333"/>',
            f'<text x="12" y="{mid}" transform="rotate(-90 12 {mid})" text-anchor="middle">'
            f"{html.escape(y_label)}</text>",
        ]

    def labels(self) -> list[str]:
        out = []
        for i, name in enumerate(self.names):
            if i % self.every:
                continue
            x, y = self.x(i), self.axis_y + 12
            out.append(
                f'<text class="xlabel" x="{x:.1f}" y="{y:.1f}" text-anchor="end" '
                f'transform="rotate(-{_ANGLE} {x:.1f} {y:.1f})"><title>{html.escape(name)}</title>'
                f"{html.escape(_short(name))}</text>"
            )
        return out

    def legend(self, slot: int, color: str, shape: str, label: str) -> str:
        per_row = max(1, int((W - 16) // self.key_w))
        x = 8 + self.key_w * (slot % per_row)
        y = self.axis_y + self.label_h + 16 * (slot // per_row) + 12
        return (
            f'{_marker(shape, x + 4, y - 4, color, "", "key")}<text x="{x + 12}" y="{y}" fill="{color}">'
            f"{html.escape(_short(label))}</text>"
        )


_SHAPES = ["circle", "square", "triangle", "diamond"]


def _style(series: int) -> tuple[str, str]:
    """(colour, shape) of a series, distinct for up to len(_COLORS) * len(_SHAPES) = 32 series.

    Colour and shape by `series % len` each repeated the pair every 8 series: a 20-topic model's classes
    0, 8 and 16 (alt.atheism, rec.motorcycles, talk.politics.guns) were the same blue circle in the chart and
    its legend. Each round of 8 colours now shifts the shapes by one; the first 8 series look as before.
    """
    return _COLORS[series % len(_COLORS)], _SHAPES[(series + series // len(_COLORS)) % len(_SHAPES)]


def _marker(shape: str, x: float, y: float, color: str, tip: str, cls: str = "pt") -> str:
    """One point; a different shape per series, so points drawn at the same place are still told apart."""
    title = f"<title>{html.escape(tip)}</title>" if tip else ""
    common = f'fill="{color}" fill-opacity="0.8" stroke="#fff" stroke-width="0.8"'
    if shape == "square":
        return f'<rect class="{cls}" x="{x - 3.2:.1f}" y="{y - 3.2:.1f}" width="6.4" height="6.4" {common}>{title}</rect>'
    if shape == "triangle":
        pts = f"{x:.1f},{y - 4:.1f} {x - 4:.1f},{y + 3:.1f} {x + 4:.1f},{y + 3:.1f}"
        return f'<polygon class="{cls}" points="{pts}" {common}>{title}</polygon>'
    if shape == "diamond":
        pts = f"{x:.1f},{y - 4.2:.1f} {x - 4.2:.1f},{y:.1f} {x:.1f},{y + 4.2:.1f} {x + 4.2:.1f},{y:.1f}"
        return f'<polygon class="{cls}" points="{pts}" {common}>{title}</polygon>'
    return f'<circle class="{cls}" cx="{x:.1f}" cy="{y:.1f}" r="3.5" {common}>{title}</circle>'


def _polyline(pts: list[tuple[float, float]], color: str) -> list[str]:
    if len(pts) < 2:
        return []
    return [
        f'<polyline fill="none" stroke="{color}" stroke-opacity="0.6" points="'
        + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)
        + '"/>'
    ]


def _pvalue_chart(windows: list[dict], tests: list[str], alpha: float) -> str:
    """p-value per window and test on a log scale, each test with its own decision threshold."""

    def y(p: float) -> float:
        frac = (math.log10(max(p, _P_FLOOR)) - math.log10(_P_FLOOR)) / -math.log10(_P_FLOOR)
        return TOP + PLOT_H - frac * PLOT_H

    frame = _Frame.over([w["name"] for w in windows], tests)
    parts = frame.open(
        "p-value per window (log scale; below a test's dashed line, its share of alpha, = drift)", "p-value"
    )
    for p in (1e-4, 1e-3, 1e-2, 1e-1, 1.0):
        tick = f"\u2264{p:g}" if p == _P_FLOOR else f"{p:g}"
        parts.append(f'<text x="{frame.left - 4}" y="{y(p) + 4:.1f}" text-anchor="end">{tick}</text>')
    # each test's own decision threshold (Bonferroni: alpha split across the tests), not alpha itself;
    # tests judged at the same threshold share one line and one label, so labels never stack on the data
    at: dict[float, list[int]] = {}
    for t, test in enumerate(tests):
        for thr in {
            w["results"][test].get("threshold", alpha) for w in windows if test in w.get("results", {})
        }:
            at.setdefault(thr, []).append(t)
    for k, (thr, who) in enumerate(sorted(at.items())):
        color = _COLORS[who[0] % len(_COLORS)] if len(who) == 1 else "#555"
        names = ", ".join(tests[t] for t in who)
        parts.append(
            f'<line x1="{frame.left}" y1="{y(thr):.1f}" x2="{W - 10}" y2="{y(thr):.1f}" stroke="{color}" '
            f'stroke-dasharray="5,4"/><text x="{W - 12}" y="{y(thr) - 4 - 11 * k:.1f}" '
            f'text-anchor="end" fill="{color}">{html.escape(names)} threshold {thr:.3g}</text>'
        )
    for t, test in enumerate(tests):
        color, shape = _style(t)
        pts = [
            (
                frame.x(i, t, len(tests)),
                y(w["results"][test]["p_value"]),
                w["name"],
                w["results"][test]["p_value"],
            )
            for i, w in enumerate(windows)
            if test in w.get("results", {})
        ]
        parts += _polyline([(a, b) for a, b, _, _ in pts], color)
        parts += [_marker(shape, a, b, color, f"{name}: {test} p = {p:.3g}") for a, b, name, p in pts]
        parts.append(frame.legend(t, color, shape, test))
    return "\n".join(parts + frame.labels() + ["</svg>"])


def _scatter(reference: list[list[float]], current: list[list[float]], title: str) -> str:
    """Reference vs one window in the reference's first two principal components."""
    pts = reference + current
    if not pts:
        return ""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)

    def sx(v: float) -> float:
        return PAD + (W - PAD - 20) * (v - x0) / ((x1 - x0) or 1)

    def sy(v: float) -> float:
        return H - PAD - (H - PAD - TOP) * (v - y0) / ((y1 - y0) or 1)

    parts = [
        f'<svg class="scatter" width="{W}" height="{H}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="11">',
        f'<text x="{W / 2}" y="14" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 10}" y2="{H - PAD}" stroke="#333"/>',
        f'<line x1="{PAD}" y1="{TOP}" x2="{PAD}" y2="{H - PAD}" stroke="#333"/>',
        f'<text x="12" y="{H / 2}" transform="rotate(-90 12 {H / 2})" text-anchor="middle">PC 2</text>',
    ]
    parts += [
        f'<circle cx="{sx(a):.1f}" cy="{sy(b):.1f}" r="2.5" fill="#1f77b4" fill-opacity="0.45"/>'
        for a, b in reference
    ]
    parts += [
        f'<circle cx="{sx(a):.1f}" cy="{sy(b):.1f}" r="2.5" fill="#d62728" fill-opacity="0.55"/>'
        for a, b in current
    ]
    parts.append(
        f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle"><tspan fill="#1f77b4">&#9679; reference'
        f'</tspan>  <tspan fill="#d62728">&#9679; window</tspan>  (PC 1 across: principal components of the reference)</text>'
    )
    return "\n".join(parts + ["</svg>"])


def _shares_chart(windows: list[dict], reference_shares: list[float], labels: list[str]) -> str:
    """Predicted class shares per window, against the reference's shares (dashed)."""
    frame = _Frame.over([w["name"] for w in windows], labels)
    parts = frame.open("predicted class shares per window (dashed: reference)", "share")

    def y(v: float) -> float:
        return TOP + PLOT_H - v * PLOT_H

    for v in (0, 0.5, 1):
        parts.append(f'<text x="{frame.left - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    for c, label in enumerate(labels):
        color, shape = _style(c)
        if c < len(reference_shares):
            parts.append(
                f'<line x1="{frame.left}" y1="{y(reference_shares[c]):.1f}" x2="{W - 10}" '
                f'y2="{y(reference_shares[c]):.1f}" stroke="{color}" stroke-dasharray="4,4"/>'
            )
        pts = [
            (frame.x(i, c, len(labels)), y(w["class_shares"][c]), w["name"], w["class_shares"][c])
            for i, w in enumerate(windows)
            if len(w.get("class_shares") or []) > c
        ]
        parts += _polyline([(a, b) for a, b, _, _ in pts], color)
        parts += [_marker(shape, a, b, color, f"{name}: {label} {s:.1%}") for a, b, name, s in pts]
        parts.append(frame.legend(c, color, shape, label))
    return "\n".join(parts + frame.labels() + ["</svg>"])


def _table(windows: list[dict], tests: list[str]) -> str:
    head = "".join(f"<th>{html.escape(t)} p</th>" for t in tests)
    rows = []
    for w in windows:
        if w.get("skipped"):
            rows.append(
                f'<tr class="skip"><td>{html.escape(w["name"])}</td><td>{w["size"]}</td>'
                f'<td colspan="{len(tests) + 3}">skipped: {html.escape(w["skipped"])}</td></tr>'
            )
            continue
        cells = "".join(
            f'<td class="{"drift" if w["results"][t]["drift"] else ""}">{w["results"][t]["p_value"]:.4g}</td>'
            if t in w["results"]
            else "<td>-</td>"
            for t in tests
        )
        acc = w.get("accuracy")
        est = (w.get("estimate") or {}).get(PRIMARY)
        est_cell = "-" if est is None else f"{est['value']:.3f} [{est['low']:.3f}, {est['high']:.3f}]"
        rows.append(
            f"<tr><td>{html.escape(w['name'])}</td><td>{w['size']}</td>{cells}"
            f"<td>{'<b>DRIFT</b>' if w['drift'] else 'no drift'}</td>"
            f"<td>{est_cell}</td><td>{'-' if acc is None else f'{acc:.3f}'}</td></tr>"
        )
    return (
        f"<table><tr><th>window</th><th>n</th>{head}<th>decision</th>"
        f"<th>estimated accuracy ({PRIMARY}, 95% interval)</th><th>accuracy (if labelled)</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _shown(item: dict) -> str:
    """An input as the report shows it: its text, or only its row in the window when texts are not stored
    (reports of older versions named it by sha256)."""
    if "text" in item:
        return html.escape(item["text"][:300])
    if "row" in item:
        return f"<i>row {int(item['row'])} of the window (text not stored)</i>"
    return f"<code>sha256:{html.escape(str(item.get('sha256', '?')))}</code>"


def _what_moved(window: dict, reference_projection: list[list[float]], with_scatter: bool) -> str:
    """One window's explanations: each test's words, its inputs least like the reference, and (where asked)
    the scatter. Drifted windows are open; the others are folded, one click away."""
    name = html.escape(window["name"])
    verdict = "DRIFT" if window["drift"] else "no drift"
    out = [
        f'<details class="moved"{" open" if window["drift"] else ""}><summary>What moved in {name} '
        f"({verdict})</summary><ul>"
    ]
    for test, result in window.get("results", {}).items():
        text = result.get("explanation")
        if text:
            out.append(
                f"<li><b>{html.escape(test)}</b> (p {result['p_value']:.3g}): {html.escape(str(text))}</li>"
            )
    out.append("</ul>")
    unlike = window.get("most_unlike") or []
    if unlike:
        hashed = any("text" not in u for u in unlike)
        out.append(
            "<p>Inputs most unlike the reference"
            + (" (sha256 of each: texts are not stored, privacy.store_texts is false)" if hashed else "")
            + ":</p><ol>"
        )
        out += [f"<li>{_shown(u)} <small>(distance {u['score']:.3f})</small></li>" for u in unlike]
        out.append("</ol>")
    if with_scatter:
        out.append(
            _scatter(
                reference_projection,
                window.get("projection", []),
                f"reference vs {_short(window['name'])}",
            )
        )
    out.append("</details>")
    return "\n".join(out)


def render_report(report: dict) -> str:
    """The whole report as one HTML string."""
    windows, tests = report["windows"], report["tests"]
    tested = [w for w in windows if not w.get("skipped")]
    # the window with the most tests flagging it gets a scatter even when none drifted
    focus = max(tested, key=lambda w: sum(r["drift"] for r in w["results"].values()), default=None)
    projection = report.get("reference_projection", [])
    body = [
        f"<h1>refit drift report</h1><p>Version <code>{html.escape(report['version']['id'])}</code>, "
        f"reference of {report['reference']['size']} inputs, alpha {report['alpha']:g}, tests: "
        f"{', '.join(tests)}. {sum(w['drift'] for w in tested)} of {len(tested)} tested windows drifted"
        f"{f'; {len(windows) - len(tested)} skipped' if len(windows) > len(tested) else ''}.</p>",
        _table(windows, tests),
        *(
            f"<p class='note'>Estimate {html.escape(name)} not available: {html.escape(why)}.</p>"
            for name, why in report.get("unavailable_estimates", {}).items()
        ),
        _pvalue_chart(tested, tests, report["alpha"]) if tested else "",
        _shares_chart(tested, report["reference"].get("class_shares", []), report.get("labels", []))
        if tested
        else "",
    ]
    if tested:
        body.append("<h2>What moved, window by window</h2>")
        body += [_what_moved(w, projection, w["drift"] or w is focus) for w in tested]
    style = (
        "body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:13px}td.drift{background:#fdd}tr.skip td{color:#888}svg{display:block;margin:1em 0}"
        "details.moved{margin:.4em 0}details.moved summary{cursor:pointer;font-weight:bold}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>refit drift report</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )
