"""The maintenance cycle's HTML report: decision, reasons, drift, and the offline A/B of champion vs challenger."""

from __future__ import annotations

import html

__all__ = ["render_cycle"]


def render_cycle(details: dict) -> str:
    """One self-contained page from a cycle's details (the same dict as cycle.json)."""
    e = html.escape
    drift = details.get("drift", {})
    drift_rows = "".join(f"<tr><td>{e(t)}</td><td>{r['p_value']:.4g}</td><td>{'yes' if r['drift'] else 'no'}</td></tr>"
                         for t, r in drift.items() if isinstance(r, dict))
    ab = details.get("ab", {})
    sets = sorted({s for scores in ab.values() for s in scores})
    ab_rows = "".join(
        f"<tr><td>{e(model)}</td>" + "".join(
            f"<td>{'-' if scores.get(s) is None else f'{scores[s]:.4f}'}</td>" for s in sets) + "</tr>"
        for model, scores in ab.items())
    exports = details.get("exports", {})
    export_rows = "".join(
        f"<tr><td>{e(name)}</td><td>{r['parity']['argmax_agreement']:.4f}</td><td>{r['parity']['max_abs_diff']:.3g}</td>"
        f"<td>{r['accuracy_drop_points']:.2f}</td><td>{r['bytes'] / 1e6:.1f} MB</td><td>{'yes' if r['passed'] else 'NO'}</td></tr>"
        for name, r in exports.items())
    est = details.get("estimate") or {}
    est_rows = "".join(f"<tr><td>{e(m)}</td><td>{r['value']:.4f}</td><td>[{r['low']:.4f}, {r['high']:.4f}]</td>"
                       f"<td>{r['n']}</td></tr>" for m, r in est.items() if m != "realised")
    realised = est.get("realised")
    realised_line = (f"<p>Realised accuracy on {realised['n']} labelled rows: {realised['accuracy']:.4f} "
                     f"({e(realised['method'])} was off by {realised['error_points']:+.2f} points).</p>"
                     if realised else "")
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
<table><tr><th>test</th><th>p-value</th><th>drift</th></tr>{drift_rows}</table>
<h2>Estimated accuracy of the champion on the new inputs (no labels)</h2>
<table><tr><th>estimator</th><th>estimate</th><th>95% interval</th><th>inputs</th></tr>{est_rows or
'<tr><td colspan="4">not estimated</td></tr>'}</table>{realised_line}
<h2>Offline A/B (accuracy on the same rows)</h2>
<table><tr><th>model</th>{"".join(f"<th>{e(s)}</th>" for s in sets)}</tr>{ab_rows}</table>
<h2>Exported artefacts (parity vs the PyTorch challenger)</h2>
<table><tr><th>artefact</th><th>argmax agreement</th><th>max abs logit diff</th><th>accuracy drop (points)</th>
<th>size</th><th>passed</th></tr>{export_rows or '<tr><td colspan="6">none built</td></tr>'}</table>
<h2>Quarantined files</h2><ul>{items(quarantined) or "<li>none</li>"}</ul>
<h2>Notes</h2><ul>{items(details.get("notes", [])) or "<li>none</li>"}</ul>
<h2>Gate</h2><ul>{items(details.get("gate", [])) or "<li>not reached</li>"}</ul>
{f"<h2>Error</h2><pre>{e(details['error'])}</pre>" if details.get("error") else ""}
</body></html>
"""
