"""A self-contained HTML drift report (inline SVG, no scripts, no network), from drift.json's content.

Hand-written SVG because the report must open anywhere offline and the plots are three simple charts;
a plotting library would add a heavy dependency for that.
"""

from __future__ import annotations

import html
import math

from refit.estimate import PRIMARY

__all__ = ["render_report"]

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f"]
W, H, PAD = 640, 260, 44


def _axes(title: str, y_label: str) -> list[str]:
    return [
        f'<svg width="{W}" height="{H}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="11">',
        f'<text x="{W / 2}" y="14" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 10}" y2="{H - PAD}" stroke="#333"/>',
        f'<line x1="{PAD}" y1="24" x2="{PAD}" y2="{H - PAD}" stroke="#333"/>',
        f'<text x="12" y="{H / 2}" transform="rotate(-90 12 {H / 2})" text-anchor="middle">{html.escape(y_label)}</text>',
    ]


def _x(i: int, n: int) -> float:
    return PAD + (W - PAD - 20) * (i + 0.5) / max(n, 1)


def _pvalue_chart(windows: list[dict], tests: list[str], alpha: float) -> str:
    """p-value per window and test on a log scale, with the alpha line."""
    lo = 1e-4

    def y(p: float) -> float:
        frac = (math.log10(max(p, lo)) - math.log10(lo)) / -math.log10(lo)
        return H - PAD - frac * (H - PAD - 24)

    parts = _axes(
        "p-value per window (log scale; below a test's dashed line, its share of alpha, = drift)", "p-value"
    )
    for p in (1e-4, 1e-3, 1e-2, 1e-1, 1.0):
        parts.append(f'<text x="{PAD - 4}" y="{y(p) + 4:.1f}" text-anchor="end">{p:g}</text>')
    n = len(windows)
    for t, test in enumerate(tests):
        color = _COLORS[t % len(_COLORS)]
        # each test's own decision threshold (Bonferroni: alpha split across the tests), not alpha itself
        for thr in sorted(
            {w["results"][test].get("threshold", alpha) for w in windows if test in w.get("results", {})}
        ):
            parts.append(
                f'<line x1="{PAD}" y1="{y(thr):.1f}" x2="{W - 10}" y2="{y(thr):.1f}" stroke="{color}" '
                f'stroke-dasharray="5,4"/><text x="{W - 12}" y="{y(thr) - 4 - 11 * t:.1f}" '
                f'text-anchor="end" fill="{color}">{html.escape(test)} threshold {thr:.3g}</text>'
            )
        pts = [
            (_x(i, n), y(w["results"][test]["p_value"]))
            for i, w in enumerate(windows)
            if test in w.get("results", {})
        ]
        if len(pts) > 1:
            parts.append(
                f'<polyline fill="none" stroke="{color}" points="'
                + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)
                + '"/>'
            )
        parts += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{color}"/>' for a, b in pts]
        parts.append(
            f'<text x="{PAD + 8 + 90 * t}" y="{H - 8}" fill="{color}">&#9679; {html.escape(test)}</text>'
        )
    for i, w in enumerate(windows):
        if n <= 16:
            parts.append(
                f'<text x="{_x(i, n):.1f}" y="{H - PAD + 14}" text-anchor="middle">'
                f"{html.escape(w['name'][:14])}</text>"
            )
    return "\n".join(parts + ["</svg>"])


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
        return H - PAD - (H - PAD - 24) * (v - y0) / ((y1 - y0) or 1)

    parts = _axes(title, "PC 2")
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
        f'</tspan>  <tspan fill="#d62728">&#9679; window</tspan>  (PC 1 across)</text>'
    )
    return "\n".join(parts + ["</svg>"])


def _shares_chart(windows: list[dict], reference_shares: list[float], labels: list[str]) -> str:
    """Predicted class shares per window, against the reference's shares (dashed)."""
    parts = _axes("predicted class shares per window (dashed: reference)", "share")
    n = len(windows)

    def y(v: float) -> float:
        return H - PAD - v * (H - PAD - 24)

    for v in (0, 0.5, 1):
        parts.append(f'<text x="{PAD - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    for c, label in enumerate(labels):
        color = _COLORS[c % len(_COLORS)]
        if c < len(reference_shares):
            parts.append(
                f'<line x1="{PAD}" y1="{y(reference_shares[c]):.1f}" x2="{W - 10}" '
                f'y2="{y(reference_shares[c]):.1f}" stroke="{color}" stroke-dasharray="4,4"/>'
            )
        pts = [(_x(i, n), y(w["class_shares"][c])) for i, w in enumerate(windows) if w.get("class_shares")]
        if len(pts) > 1:
            parts.append(
                f'<polyline fill="none" stroke="{color}" points="'
                + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)
                + '"/>'
            )
        parts += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{color}"/>' for a, b in pts]
        parts.append(
            f'<text x="{PAD + 8 + 110 * c}" y="{H - 8}" fill="{color}">&#9679; {html.escape(label)}</text>'
        )
    return "\n".join(parts + ["</svg>"])


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
    """An input as the report shows it: its text, or only its hash when texts are not stored."""
    if "text" in item:
        return html.escape(item["text"][:300])
    return f"<code>sha256:{html.escape(str(item.get('sha256', '?')))}</code>"


def _explanations(window: dict) -> str:
    out = [f"<h3>What moved in {html.escape(window['name'])}</h3><ul>"]
    for test, result in window.get("results", {}).items():
        text = result.get("explanation")
        if text:
            out.append(f"<li><b>{html.escape(test)}</b>: {html.escape(str(text))}</li>")
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
    return "\n".join(out)


def render_report(report: dict) -> str:
    """The whole report as one HTML string."""
    windows, tests = report["windows"], report["tests"]
    tested = [w for w in windows if not w.get("skipped")]
    focus = max(tested, key=lambda w: sum(r["drift"] for r in w["results"].values()), default=None)
    body = [
        f"<h1>refit drift report</h1><p>Version <code>{html.escape(report['version']['id'])}</code>, "
        f"reference of {report['reference']['size']} inputs, alpha {report['alpha']:g}, tests: "
        f"{', '.join(tests)}. {sum(w['drift'] for w in tested)} of {len(tested)} tested windows drifted"
        f"{f'; {len(windows) - len(tested)} skipped' if len(windows) > len(tested) else ''}.</p>",
        _table(windows, tests),
        _pvalue_chart(tested, tests, report["alpha"]) if tested else "",
        _shares_chart(tested, report["reference"].get("class_shares", []), report.get("labels", []))
        if tested
        else "",
    ]
    if focus is not None:
        body.append(
            _scatter(
                report.get("reference_projection", []),
                focus.get("projection", []),
                f"reference vs {focus['name']} (first two principal components of the reference)",
            )
        )
        body.append(_explanations(focus))
    style = (
        "body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:13px}td.drift{background:#fdd}tr.skip td{color:#888}svg{display:block;margin:1em 0}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>refit drift report</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )
