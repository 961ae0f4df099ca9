"""Every HTML report refit writes, opened in headless Chromium (issue #13.4): the page renders (a non-empty
screenshot), makes no request beyond its own file, logs no console error, and no text of a chart falls
outside the chart (cut axis labels) nor do two points of a chart sit on the same spot (hidden points).

The reports come from real runs on the tiny model: `refit maintain init` + one cycle (the maintenance
report), and `refit drift` on that champion with all four tests and small windows (the drift report), plus
one drift report rendered from a stress case (many windows, long names, every p-value at the floor).
Needs Debian's `chromium` (.ci/run installs it) and the `playwright` package (the dev extra), which drives
that browser; playwright never downloads a browser of its own here.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from refit.cli import main
from refit.drift.html import render_report
from refit.registry import CHAMPION, Registry

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TINY = ["--lr", "2e-3", "--max_epochs", "3", "--max_length", "48"]

# In the page: every <text> of an <svg> must lie inside it; no two markers (circle, rect, polygon) of one
# chart may share a centre (the scatter of many inputs excepted). Returns what is wrong, empty when all is well.
_LAYOUT_JS = """() => {
  const bad = [];
  document.querySelectorAll('svg').forEach((svg, s) => {
    const box = svg.getBoundingClientRect();
    svg.querySelectorAll('text').forEach(t => {
      const r = t.getBoundingClientRect();
      if (r.width === 0) return;  // inside a folded <details>
      if (r.left < box.left - 0.5 || r.right > box.right + 0.5 || r.top < box.top - 0.5 ||
          r.bottom > box.bottom + 0.5)
        bad.push(`svg ${s}: text "${t.textContent.slice(0, 40)}" is cut (${Math.round(r.left - box.left)},` +
                 `${Math.round(r.top - box.top)} .. ${Math.round(r.right - box.left)},` +
                 `${Math.round(r.bottom - box.top)} in ${Math.round(box.width)}x${Math.round(box.height)})`);
    });
    const seen = new Map();
    if (svg.classList.contains('scatter')) return;
    svg.querySelectorAll('circle, rect, polygon').forEach(p => {
      const r = p.getBoundingClientRect();
      if (r.width === 0) return;
      const key = `${Math.round(r.left + r.width / 2)},${Math.round(r.top + r.height / 2)}`;
      if (seen.has(key)) bad.push(`svg ${s}: two points at ${key} hide each other`);
      seen.set(key, true);
    });
  });
  return bad;
}"""


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip(
            "headless Chromium is not installed (apt-get install chromium): the report checks need it"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright (the dev extra) drives Chromium for the report checks"
    )
    with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=ARGS
        )
        yield context
        context.close()


def _open(browser, page_file: Path, shot: Path) -> dict:
    """Load one report; what it requested, logged and looked like."""
    page = browser.new_page()
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_file.resolve().as_uri(), wait_until="load")
    page.evaluate("() => document.querySelectorAll('details').forEach(d => d.open = true)")
    page.screenshot(path=str(shot), full_page=True)
    layout = page.evaluate(_LAYOUT_JS)
    svgs = page.evaluate("() => document.querySelectorAll('svg').length")
    xlabels = page.evaluate(  # per chart over windows, the label as drawn (its last node: not the tooltip)
        "() => [...document.querySelectorAll('svg')].map(s => [...s.querySelectorAll('text.xlabel')]"
        ".map(t => t.lastChild.textContent)).filter(labels => labels.length)"
    )
    page.close()
    return {"requests": requests, "errors": errors, "layout": layout, "svgs": svgs, "xlabels": xlabels}


def _check(browser, report: Path, tmp_path: Path, min_svgs: int) -> dict:
    shot = tmp_path / f"{report.parent.name}-{report.stem}.png"
    seen = _open(browser, report, shot)
    assert shot.stat().st_size > 10_000, "the screenshot is (nearly) blank"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    outside = [u for u in seen["requests"] if not u.startswith(("file://", "data:"))]
    assert not outside, f"{report} requested {outside}"
    assert not seen["errors"], f"{report} logged console errors: {seen['errors']}"
    assert seen["svgs"] >= min_svgs, seen
    assert not seen["layout"], "\n".join(seen["layout"])
    return seen


@pytest.fixture(scope="module")
def loop(tmp_path_factory, tiny_model_dir) -> Path:
    """A maintenance loop after one real cycle (retrain on the shifted demo window)."""
    loop = tmp_path_factory.mktemp("reports") / "loop"
    assert main(["maintain", "init", "--dir", str(loop), "--model", str(tiny_model_dir), *TINY]) == 0
    assert main(["maintain", "--config", str(loop / "maintain.yaml"), "--once"]) == 0
    return loop


@pytest.mark.slow  # a fine-tune and a maintenance cycle on the tiny model, about 30 s on 2 cores
def test_maintenance_report_in_a_browser(browser, loop, tmp_path):
    run = Registry(loop / "registry").runs("maintain")[-1]
    _check(browser, Path(run["details"]["work_dir"]) / "report.html", tmp_path, min_svgs=2)


@pytest.mark.slow
def test_drift_report_in_a_browser(browser, loop, tmp_path):
    champion = Registry(loop / "registry").get(CHAMPION).path
    out = tmp_path / "drift"
    args = ["drift", "--version", str(champion), "--data", "refit-demo", "--output_dir", str(out)]
    args += ["--tests", "[mmd,ks,classifier,bbsd]", "--window", "25", "--permutations", "100"]
    assert main([*args, "--tracking.wandb", "false"]) in (0, 3)  # 3: drift found (the shifted windows)
    windows = json.loads((out / "drift.json").read_text())["windows"]
    assert len(windows) == 12  # the demo's test (4 x 25) and shifted (8 x 25) rows
    html = (out / "report.html").read_text()
    assert all(f"What moved in {w['name']}" in html for w in windows)  # every window explained, not one
    seen = _check(browser, out / "report.html", tmp_path, min_svgs=3)
    assert len(seen["xlabels"]) == 2  # the p-value and the class-share charts
    assert all(labels == [w["name"] for w in windows] for labels in seen["xlabels"])  # named in full


def test_stress_drift_report_in_a_browser(browser, tmp_path):
    """40 windows with long names, every test's p-value at the plot's floor, 5 classes with long names
    (the legend wraps onto more rows): labels and legends fit, no point hides."""
    tests = ["mmd", "ks", "classifier", "bbsd"]
    labels = [f"comp.sys.category-{i:02d}.hardware.and.more" for i in range(5)]
    windows = [
        {
            "name": f"production-2026-11-{i:02d}T00:00:00[{1000 * i}:{1000 * i + 1000}]",
            "size": 1000,
            "drift": True,
            "results": {
                t: {"p_value": 1e-12, "drift": True, "threshold": 0.0125, "explanation": f"{t} moved"}
                for t in tests
            },
            "class_shares": [(1 + c + i % 3) / sum(1 + k + i % 3 for k in range(5)) for c in range(5)],
            "projection": [[0.1 * i, 0.2]],
            "most_unlike": [{"text": "a new kind of input", "score": 0.5}],
        }
        for i in range(40)
    ]
    report = {
        "version": {"id": "v1"},
        "reference": {"size": 500, "class_shares": [0.2] * 5},
        "reference_projection": [[0.0, 0.0], [1.0, 1.0]],
        "alpha": 0.05,
        "tests": tests,
        "labels": labels,
        "windows": windows,
    }
    page = tmp_path / "stress" / "report.html"
    page.parent.mkdir()
    page.write_text(render_report(report))
    _check(browser, page, tmp_path, min_svgs=3)
