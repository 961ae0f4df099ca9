"""How a maintenance cycle's inbox read grows with history: before (re-parse every old file) vs after (index).

An inbox holds N old capture files and N old feedback files (500 rows each, tiny synthetic texts written
here), all read by finished cycles, plus one new capture file and one new feedback file (late labels for
old requests and labels for the new ones). Timed, interleaved, `--repeats` times per N:
- before: the inbox reader of `--baseline` (default: e66cdf3, the last one without the index), loaded
  from `git show`, given every old path as `seen`: it re-parses every capture and
  feedback file to join late labels;
- after: this tree's cycle step, the way `refit maintain` runs it: open the inbox index (checked against
  the registry's done runs), read the inbox against it, open the run, stage what was read, end the run.
Last, once, a cycle after a failed one (the slow path: the failed run's rows purged, every row checked).
Each repeat is one more real cycle with its own new files (so 'before' also re-reads the earlier repeats'
files, as main would). Both must return the same new inputs and labelled rows (checked). Run it under the machine-wide lock:

    flock /work/notes/s8/bench.lock .venv/bin/python scripts/bench_inbox.py --sizes 10,100,1000

Inboxes and indexes are cached under runs/bench_inbox/. Results: scripts/results/inbox.{json,md}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from _baseline import module_at  # noqa: E402
from _results import write_keeping_notes  # noqa: E402

from refit.io import atomic_write_text  # noqa: E402
from refit.maintain.cycle import DONE_STATUSES, _read_and_open_run  # noqa: E402
from refit.maintain.inbox import read_inbox  # noqa: E402
from refit.maintain.index import INDEX_FILE, INDEX_KEY  # noqa: E402
from refit.registry import Registry  # noqa: E402
from refit.serve.capture import CAPTURE_SCHEMA, FEEDBACK_SCHEMA  # noqa: E402

WORK = ROOT / "runs" / "bench_inbox"
RESULTS = ROOT / "scripts" / "results"
LABELS = ["negative", "positive"]
ROWS = 500
LATE = 250  # late labels a cycle, for old requests
MARKER = "<!-- scripts/bench_inbox.py writes above this line; notes below are kept -->"


def _capture(rid: str, text: str, at: str) -> dict:
    return {
        "request_id": rid,
        "at": at,
        "version_id": "v1",
        "text": text,
        "text_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "prediction": 1,
        "label": "positive",
        "probs": [0.4, 0.6],
    }


def _write(path: Path, rows: list[dict], schema) -> None:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def build(n: int) -> Path:
    """n old capture + n old feedback files, read by one finished cycle of the previous format, then
    migrated into the index by one cycle of this tree. Cached under runs/bench_inbox/n<N>/."""
    base = WORK / f"n{n}"
    if (base / "done").is_file():
        return base
    shutil.rmtree(base, ignore_errors=True)
    inbox = base / "inbox"
    inbox.mkdir(parents=True)
    at = "2026-11-20T10:00:00+00:00"
    for f in range(n):
        rids = [f"f{f}-r{i}" for i in range(ROWS)]
        _write(
            inbox / f"capture-{f:05d}.parquet",
            [_capture(r, f"synthetic request {r} about item {i % 97}", at) for i, r in enumerate(rids)],
            CAPTURE_SCHEMA,
        )
        # labels for the first half of each file's requests; the rest may arrive late
        _write(
            inbox / f"feedback-{f:05d}.parquet",
            [{"request_id": r, "label": LABELS[i % 2], "at": at} for i, r in enumerate(rids[: ROWS // 2])],
            FEEDBACK_SCHEMA,
        )
    old = sorted(str(p.resolve()) for p in inbox.iterdir())
    reg = Registry(base / "registry")
    run_id = reg.start_run("maintain", {"files": old})
    reg.finish_run(run_id, "no_action", {"files": old, "quarantined": []})  # the previous format
    _, notes = _cycle_after(inbox, reg)  # this tree's first cycle builds the index from those files
    assert any("predate the inbox index" in x for x in notes), notes
    (base / "done").write_text("ok\n")
    return base


def _new_files(inbox: Path, n: int, k: int) -> None:
    """Cycle k's new files: 500 new captures, labels for 100 of them and 250 late labels for old requests
    spread over the old capture files: the same new work whatever the history's size."""
    rids = [f"new{k}-r{i}" for i in range(ROWS)]
    _write(
        inbox / f"capture-new{k:03d}.parquet",
        [_capture(r, f"synthetic new request {r}", "2026-11-21T10:00:00+00:00") for r in rids],
        CAPTURE_SCHEMA,
    )
    late = [f"f{g % n}-r{ROWS // 2 + g // n}" for g in range(LATE * k, LATE * (k + 1))]
    _write(
        inbox / f"feedback-new{k:03d}.parquet",
        [
            {"request_id": r, "label": "positive", "at": "2026-11-21T11:00:00+00:00"}
            for r in late + rids[:100]
        ],
        FEEDBACK_SCHEMA,
    )


def _read_args() -> dict:
    return {"quarantined": set(), "text_column": "text", "label_column": "label", "label_names": LABELS}


def _cycle_before(baseline, inbox: Path, reg: Registry):
    """The baseline's inbox step: every file a done run read is `seen`, and every capture and feedback
    file is parsed again to join late labels."""
    runs = reg.runs("maintain")
    seen = {f for r in runs if r["status"] in DONE_STATUSES for f in r["details"].get("files", [])}
    return baseline.read_inbox(inbox, seen=seen, **_read_args())


def _cycle_after(inbox: Path, reg: Registry, status: str = "no_action"):
    """This tree's inbox step, as `refit maintain` runs it: read against the index, open the run, stage,
    and end the run done (the registry's transaction that commits the staged rows)."""
    runs = reg.runs("maintain")
    batch, run_id, record, notes = _read_and_open_run(
        reg, runs, partial(read_inbox, inbox, **_read_args()), "v"
    )
    reg.finish_run(run_id, status, {"files": batch.files, "quarantined": [], INDEX_KEY: record})
    return batch, notes


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10,100,1000", help="old capture (and feedback) file counts")
    p.add_argument("--repeats", type=int, default=3, help="cycles timed per size (at most 9)")
    # the last inbox reader that re-parsed every old file (the fork point was the default on its branch; on
    # main that is HEAD itself, whose reader takes no `seen`)
    p.add_argument("--baseline", default="e66cdf3", help="git ref of the 'before' inbox reader")
    args = p.parse_args()
    ref = args.baseline
    baseline = module_at(ref, "framework/maintain/inbox.py", "baseline_inbox")
    load_before = _uptime()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    for n in sizes:
        t0 = time.perf_counter()
        snapshot = build(n)
        work = WORK / f"work-n{n}"  # a fresh copy each invocation: the cached snapshot is never changed
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(snapshot, work)
        inbox, reg = work / "inbox", Registry(work / "registry")
        _new_files(inbox, n, 0)  # a warm-up cycle after the copy (which changed the index file's stamp)
        _cycle_after(inbox, reg)
        setup_s = time.perf_counter() - t0
        before_t, after_t, same, checks = [], [], True, []
        for k in range(1, args.repeats + 1):  # interleaved: before, after, before, after, ...
            _new_files(inbox, n, k)
            t = time.perf_counter()
            old = _cycle_before(baseline, inbox, reg)
            before_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            new, notes = _cycle_after(inbox, reg)
            after_t.append(time.perf_counter() - t)
            ok = (
                sorted(old.labelled) == sorted(new.labelled)
                and sorted(old.texts) == sorted(new.texts)
                and sorted(old.files) == sorted(new.files)
                and len(new.labelled) == LATE + 100
                and not notes
            )
            same &= ok
            checks.append({"labelled": len(new.labelled), "inputs": len(new.texts), "same": ok})
        # after a failed cycle (its staged rows purged, then every row checked: the slow path), once
        _new_files(inbox, n, args.repeats + 1)
        _cycle_after(inbox, reg, status="failed")
        t = time.perf_counter()
        recheck, notes = _cycle_after(inbox, reg)
        after_failed_s = time.perf_counter() - t
        same &= len(recheck.labelled) == LATE + 100 and not notes
        index_file = work / "registry" / "maintain" / INDEX_FILE
        results.append(
            {
                "old_files": 2 * n,
                "old_rows": 2 * n * ROWS - n * ROWS // 2,
                "cycles": checks,
                "same_result": same,
                "before_s": [round(x, 4) for x in before_t],
                "after_s": [round(x, 4) for x in after_t],
                "before_median_s": round(statistics.median(before_t), 4),
                "after_median_s": round(statistics.median(after_t), 4),
                "speedup": round(statistics.median(before_t) / statistics.median(after_t), 1),
                "after_a_failed_cycle_s": round(after_failed_s, 4),
                "index_bytes": index_file.stat().st_size,
                "setup_s": round(setup_s, 1),
            }
        )
        print(json.dumps(results[-1]), flush=True)
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "issue": "maintain inbox: exactly once by content; a cycle whose cost does not grow with history",
        "baseline": ref,
        "machine": {
            "cpus": os.cpu_count(),
            "processor": _cpu(),
            "python": platform.python_version(),
            "note": "2-core shared dev machine (3 other engineers at work), no GPU",
        },
        "load_before": load_before,
        "load_after": _uptime(),
        "settings": {"rows_per_file": ROWS, "repeats": args.repeats, "sizes": sizes},
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / "inbox.json", json.dumps(result, indent=2) + "\n")
    write_keeping_notes(RESULTS / "inbox.md", _markdown(result), MARKER)


def _markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Inbox read of one maintenance cycle: before (re-parse all old files) vs after (inbox index)",
        "",
        f"`scripts/bench_inbox.py`, {m['cpus']} CPU cores ({m['processor']}), {m['note']}; baseline "
        f"`{r['baseline'][:12]}`; {r['settings']['rows_per_file']} rows a file; before/after interleaved, "
        f"{r['settings']['repeats']} repeats, medians. Load before: `{r['load_before']}`; after: "
        f"`{r['load_after']}`.",
        "",
        "| old files | old rows | before (s) | after (s) | speed-up | same result | after a failed cycle (s) "
        "| index size |",
        "|---:|---:|---:|---:|---:|:---:|---:|---:|",
    ]
    for x in r["results"]:
        lines.append(
            f"| {x['old_files']} | {x['old_rows']} | {x['before_median_s']:.3f} | {x['after_median_s']:.3f} | "
            f"{x['speedup']}x | {'yes' if x['same_result'] else 'NO'} | {x['after_a_failed_cycle_s']:.3f} | "
            f"{x['index_bytes'] / 1e6:.1f} MB |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
