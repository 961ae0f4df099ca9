"""The maintenance cycle's HTML report: decision, reasons, drift, and the offline A/B of champion vs challenger,
with inline SVG charts over the registry's cycles (drift p-values, accuracy, champion history): no scripts,
no network, like the drift report."""

from __future__ import annotations

import html
import math

__all__ = ["render_cycle"]

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
W, H, PAD = 640, 230, 48
_FLOOR = 1e-6  # p-values below are drawn at the floor


def _svg(title: str, y_label: str) -> list[str]:
    return [
        f'<svg width="{W}" height="{H}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" '
        f'font-size="11"><text x="{W / 2}" y="14" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 10}" y2="{H - PAD}" stroke="#333"/>',
        f'<line x1="{PAD}" y1="24" x2="{PAD}" y2="{H - PAD}" stroke="#333"/>',
        f'<text x="12" y="{(H - PAD + 24) / 2}" transform="rotate(-90 12 {(H - PAD + 24) / 2})" '
        f'text-anchor="middle">{html.escape(y_label)}</text>',
    ]


def _x(i: int, n: int) -> float:
    return PAD + (W - PAD - 20) * (i + 0.5) / max(n, 1)


def _x_labels(labels: list[str]) -> list[str]:
    step = max(1, math.ceil(len(labels) / 16))  # at most 16 labels, so they never overlap
    return [
        f'<text x="{_x(i, len(labels)):.1f}" y="{H - PAD + 14}" text-anchor="middle">{html.escape(t)}</text>'
        for i, t in enumerate(labels)
        if i % step == 0 or i == len(labels) - 1
    ]


def _series(parts: list[str], points: list[tuple[float, float]], color: str, label: str, slot: int) -> None:
    if len(points) > 1:
        parts.append(
            f'<polyline fill="none" stroke="{color}" points="'
            + " ".join(f"{a:.1f},{b:.1f}" for a, b in points)
            + '"/>'
        )
    parts += [
        f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3.5" fill="{color}" fill-opacity="0.75"/>' for a, b in points
    ]
    parts.append(
        f'<text x="{PAD + 4 + 150 * slot}" y="{H - 10}" fill="{color}">&#9679; {html.escape(label)}</text>'
    )


def _pvalue_chart(cycles: list[tuple[str, dict]]) -> str:
    """Drift p-value of each test per cycle (log scale), each with its own dashed decision threshold."""
    tests = sorted({t for _, d in cycles for t, r in d.get("drift", {}).items() if isinstance(r, dict)})
    if not tests:
        return "<p>No cycle has tested drift yet (no new inputs with text).</p>"

    def y(p: float) -> float:
        return 24 + math.log10(max(p, _FLOOR)) / math.log10(_FLOOR) * (H - PAD - 24)  # p = 1 at the top

    parts = _svg("drift p-value per cycle (log scale; below a test's dashed line = drift)", "p-value")
    for p in (1e-6, 1e-4, 1e-2, 1.0):
        parts.append(f'<text x="{PAD - 4}" y="{y(p) + 4:.1f}" text-anchor="end">{p:g}</text>')
    n = len(cycles)
    for k, test in enumerate(tests):
        color = _COLORS[k % len(_COLORS)]
        results = [
            (i, d["drift"][test])
            for i, (_, d) in enumerate(cycles)
            if isinstance(d.get("drift", {}).get(test), dict)
        ]
        thresholds = {r["threshold"] for _, r in results if r.get("threshold") is not None}
        for t in thresholds:
            parts.append(
                f'<line x1="{PAD}" y1="{y(t):.1f}" x2="{W - 10}" y2="{y(t):.1f}" stroke="{color}" '
                f'stroke-dasharray="5,4"/><text x="{W - 12}" y="{y(t) - 3 - 11 * k:.1f}" text-anchor="end" '
                f'fill="{color}">{html.escape(test)} threshold {t:.3g}</text>'
            )
        _series(parts, [(_x(i, n) + 3 * k, y(r["p_value"])) for i, r in results], color, test, k)
    return "\n".join(parts + _x_labels([name for name, _ in cycles]) + ["</svg>"])


def _accuracy_chart(cycles: list[tuple[str, dict]]) -> str:
    """Champion and challenger accuracy on the golden set and the held-out recent rows, per cycle that retrained."""
    series = [(m, s) for m in ("champion", "challenger") for s in ("golden", "recent")]
    values = {
        key: [
            (i, d["ab"][key[0]][key[1]])
            for i, (_, d) in enumerate(cycles)
            if d.get("ab", {}).get(key[0], {}).get(key[1]) is not None
        ]
        for key in series
    }
    if not any(values.values()):
        return "<p>No cycle has retrained yet: no accuracy to compare.</p>"
    lo = min(v for pts in values.values() for _, v in pts)
    lo = max(0.0, math.floor(lo * 10) / 10 - 0.05)

    def y(v: float) -> float:
        return H - PAD - (v - lo) / (1.0 - lo + 1e-9) * (H - PAD - 24)

    parts = _svg("accuracy per cycle (offline A/B on the same rows)", "accuracy")
    for v in (lo, (lo + 1) / 2, 1.0):
        parts.append(f'<text x="{PAD - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    n = len(cycles)
    for k, key in enumerate(series):
        _series(
            parts, [(_x(i, n) + 2 * k, y(v)) for i, v in values[key]], _COLORS[k], f"{key[0]} {key[1]}", k
        )
    return "\n".join(parts + _x_labels([name for name, _ in cycles]) + ["</svg>"])


def _champion_rows(cycles: list[tuple[str, dict]]) -> str:
    rows = []
    for name, d in cycles:
        after = d.get("challenger") if d.get("status") == "promoted" else d.get("champion")
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{html.escape(str(d.get('status')))}</td>"
            f"<td><code>{html.escape(str(d.get('champion')))}</code></td>"
            f"<td><code>{html.escape(str(after))}</code></td></tr>"
        )
    return (
        "<table><tr><th>cycle</th><th>status</th><th>champion before</th><th>champion after</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _paired_table(paired: dict) -> str:
    """The gate's paired evidence per set (cycle.json's `paired`): only the rows where the two models disagree
    carry evidence, so the reader sees b and c and McNemar's p beside the accuracies, not the accuracies alone."""
    if not paired:
        return ""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(str(name))}</td><td>{e(str(p.get('n')))}</td><td>{e(str(p.get('c')))}</td>"
        f"<td>{e(str(p.get('b')))}</td><td>{_p(p.get('p_two_sided'))}</td><td>{_p(p.get('p_better'))}</td></tr>"
        for name, p in sorted(paired.items())
        if isinstance(p, dict)
    )
    return (
        "<table><tr><th>set</th><th>rows</th><th>challenger right, champion wrong (c)</th>"
        "<th>champion right, challenger wrong (b)</th><th>McNemar p (two-sided)</th>"
        f"<th>p (challenger better, one-sided)</th></tr>{rows}</table>"
    )


def _per_class_table(per_class: dict) -> str:
    """Recall per class of the golden set, champion vs challenger (cycle.json's `per_class`), the class whose
    recall fell most first: a multi-class challenger can gain overall while forgetting one class."""
    rows = (per_class or {}).get("golden") or {}
    if not isinstance(rows, dict) or len(rows) < 2:
        return ""
    e = html.escape
    order = sorted(rows.items(), key=lambda kv: (kv[1]["challenger"] - kv[1]["champion"], kv[0]))
    body = "".join(
        f"<tr><td>{e(str(name))}</td><td>{r['n']}</td><td>{r['champion']:.3f}</td><td>{r['challenger']:.3f}</td>"
        f"<td>{100 * (r['challenger'] - r['champion']):+.1f}</td></tr>"
        for name, r in order
    )
    return (
        "<h3>Recall per class on the golden set (said, not gated)</h3><table><tr><th>class</th><th>rows</th>"
        f"<th>champion</th><th>challenger</th><th>change (points)</th></tr>{body}</table>"
    )


def _p(value: object) -> str:
    """A p-value to 2 significant digits (as the gate's reasons write it), anything else escaped as text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.2g}"
    return "-" if value is None else html.escape(str(value))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def render_cycle(details: dict, history: list[dict] | None = None) -> str:
    """One self-contained page from a cycle's details (the same dict as cycle.json).

    `history` is the registry's other maintenance runs (Registry.runs("maintain") without this cycle's own,
    which `details` draws); finished ones are drawn before this cycle, a row still 'running' (a killed
    cycle's) is not."""
    e = html.escape
    earlier = [(f"#{r['id']}", r["details"]) for r in (history or []) if r.get("status") != "running"]
    cycles = [*earlier, ("this", details)]
    drift = details.get("drift", {})
    drift_rows = "".join(
        f"<tr><td>{e(t)}</td><td>{r['p_value']:.4g}</td><td>{_fmt(r.get('threshold'))}</td>"
        f"<td>{'yes' if r['drift'] else 'no'}</td></tr>"
        for t, r in drift.items()
        if isinstance(r, dict)
    )
    ab = details.get("ab", {})
    sets = sorted({s for scores in ab.values() for s in scores})
    ab_rows = "".join(
        f"<tr><td>{e(model)}</td>"
        + "".join(f"<td>{'-' if scores.get(s) is None else f'{scores[s]:.4f}'}</td>" for s in sets)
        + "</tr>"
        for model, scores in ab.items()
    )
    ab_table = (
        f"<table><tr><th>model</th>{''.join(f'<th>{e(s)}</th>' for s in sets)}</tr>{ab_rows}</table>"
        if ab
        else "<p>No challenger this cycle: nothing to compare.</p>"
    )
    paired_table = _paired_table(details.get("paired") or {}) + _per_class_table(
        details.get("per_class") or {}
    )
    drift_table = (
        f"<table><tr><th>test</th><th>p-value</th><th>threshold</th><th>drift</th></tr>{drift_rows}</table>"
        if drift_rows
        else "<p>Not tested this cycle (no new inputs with text).</p>"
    )
    exports = details.get("exports", {})
    export_rows = "".join(
        f"<tr><td>{e(name)}</td><td>{r['parity']['argmax_agreement']:.4f}</td><td>{r['parity']['max_abs_diff']:.3g}</td>"
        f"<td>{r['accuracy_drop_points']:.2f}</td><td>{r['bytes'] / 1e6:.1f} MB</td><td>{'yes' if r['passed'] else 'NO'}</td></tr>"
        for name, r in exports.items()
    )
    est = details.get("estimate") or {}
    est_rows = "".join(
        f"<tr><td>{e(m)}</td><td>{r['value']:.4f}</td><td>[{r['low']:.4f}, {r['high']:.4f}]</td>"
        f"<td>{r['n']}</td></tr>"
        for m, r in est.items()
        if m != "realised"
    )
    realised = est.get("realised")
    realised_line = (
        f"<p>Realised accuracy on {realised['n']} labelled rows: {realised['accuracy']:.4f} "
        f"({e(realised['method'])} was off by {realised['error_points']:+.2f} points).</p>"
        if realised
        else ""
    )
    quarantined = [f"{q['file']}: {q['reason']}" for q in details.get("quarantined", [])]
    items = lambda lines: "".join(f"<li>{e(str(x))}</li>" for x in lines)  # noqa: E731
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>refit maintenance cycle</title>
<style>body{{font-family:sans-serif;max-width:900px;margin:2em auto}}td,th{{border:1px solid #ccc;padding:3px 8px}}
table{{border-collapse:collapse;margin:.5em 0}}</style></head><body>
<h1>Maintenance cycle: {e(details.get("status", ""))}</h1>
<p>Champion at the start: <code>{e(str(details.get("champion")))}</code>; challenger:
<code>{e(str(details.get("challenger") or "-"))}</code>. Files read: {len(details.get("files", []))}.</p>
<h2>Why</h2><ul>{items(details.get("reasons", [])) or "<li>no reason to retrain</li>"}</ul>
<h2>Drift of the new inputs against the champion's reference</h2>
{drift_table}
<h2>Estimated accuracy of the champion on the new inputs (no labels)</h2>
<table><tr><th>estimator</th><th>estimate</th><th>95% interval</th><th>inputs</th></tr>{
        est_rows or '<tr><td colspan="4">not estimated</td></tr>'
    }</table>{realised_line}
<h2>Offline A/B (accuracy on the same rows)</h2>
{ab_table}
{paired_table}
<h2>Over the cycles</h2>
{_pvalue_chart(cycles)}
{_accuracy_chart(cycles)}
<h3>Champion history</h3>
{_champion_rows(cycles)}
<h2>Exported artefacts (parity vs the PyTorch challenger)</h2>
<table><tr><th>artefact</th><th>argmax agreement</th><th>max abs logit diff</th><th>accuracy drop (points)</th>
<th>size</th><th>passed</th></tr>{export_rows or '<tr><td colspan="6">none built</td></tr>'}</table>
<h2>Quarantined files</h2><ul>{items(quarantined) or "<li>none</li>"}</ul>
<h2>Notes</h2><ul>{items(details.get("notes", [])) or "<li>none</li>"}</ul>
<h2>Gate</h2><ul>{items(details.get("gate", [])) or "<li>not reached</li>"}</ul>
{f"<h2>Error</h2><pre>{e(details['error'])}</pre>" if details.get("error") else ""}
</body></html>
"""
