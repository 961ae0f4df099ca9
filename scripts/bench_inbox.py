"""A maintenance cycle's inbox step as history grows: before (`--baseline`) vs after (this tree).

s9-privacy compared bc3c90e (the index kept captured texts) with no text kept (an old capture's text read
back from its file when a label arrives); s9-forget compares d81750c (index format 2: each capture row holds
its file's 64-hex sha256) with format 3 (a capture row names its file by the `files` row).

An inbox holds N old capture files and N old feedback files (500 rows each, tiny synthetic texts written
here), all read by finished cycles, plus, each cycle, one new capture file and one new feedback file: 500
new captures, labels for 100 of them and 250 late labels for old requests spread over the old capture
files (at N = 1000, each of the 250 in another file: every late label opens a file). Each side runs the
cycle's own step, the way `refit maintain` runs it (open and check the index, read, open the run, stage,
end the run), with its own registry over the same inbox; timed interleaved, `--repeats` times per N:
- before: framework/maintain/{known,index,inbox}.py and cycle.py's step at `--baseline` (default d81750c,
  main before this change), loaded from `git show` beside today's modules;
- after: this tree's, with the time spent reading old captures' texts back (`_recall`) measured apart.
Last, once each, a cycle after a failed one (the slow path: the failed run's rows purged, every row
checked). Both sides must return the same new inputs and labelled rows (checked). Run it under the
machine-wide lock:

    flock /work/notes/s9/bench.lock .venv/bin/python scripts/bench_inbox.py --sizes 10,100,1000

Inboxes are cached under runs/bench_inbox/. Results: scripts/results/inbox.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
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

import refit.maintain.cycle as cycle_now  # noqa: E402
import refit.maintain.inbox as inbox_now  # noqa: E402
from refit.io import atomic_write_text  # noqa: E402
from refit.maintain.index import INDEX_FILE, INDEX_KEY  # noqa: E402
from refit.registry import Registry  # noqa: E402
from refit.serve.capture import CAPTURE, CAPTURE_SCHEMA, FEEDBACK, FEEDBACK_SCHEMA, SUFFIX  # noqa: E402

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
    """n old capture + n old feedback files, read by one finished cycle from before the index (each side
    builds its index from them in its first cycle). Cached under runs/bench_inbox/n<N>/."""
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
            inbox / f"{CAPTURE}-{f:05d}{SUFFIX}",
            [_capture(r, f"synthetic request {r} about item {i % 97}", at) for i, r in enumerate(rids)],
            CAPTURE_SCHEMA,
        )
        # labels for the first half of each file's requests; the rest may arrive late
        _write(
            inbox / f"{FEEDBACK}-{f:05d}{SUFFIX}",
            [{"request_id": r, "label": LABELS[i % 2], "at": at} for i, r in enumerate(rids[: ROWS // 2])],
            FEEDBACK_SCHEMA,
        )
    old = sorted(str(p.resolve()) for p in inbox.iterdir())
    reg = Registry(base / "registry")
    run_id = reg.start_run("maintain", {"files": old})
    reg.finish_run(run_id, "no_action", {"files": old, "quarantined": []})  # from before the index
    (base / "done").write_text("ok\n")
    return base


def _new_files(inbox: Path, n: int, k: int) -> None:
    """Cycle k's new files: 500 new captures, labels for 100 of them and 250 late labels for old requests
    spread over the old capture files: the same new work whatever the history's size."""
    rids = [f"new{k}-r{i}" for i in range(ROWS)]
    _write(
        inbox / f"{CAPTURE}-new{k:03d}{SUFFIX}",
        [_capture(r, f"synthetic new request {r}", "2026-11-21T10:00:00+00:00") for r in rids],
        CAPTURE_SCHEMA,
    )
    late = [f"f{g % n}-r{ROWS // 2 + g // n}" for g in range(LATE * k, LATE * (k + 1))]
    _write(
        inbox / f"{FEEDBACK}-new{k:03d}{SUFFIX}",
        [
            {"request_id": r, "label": "positive", "at": "2026-11-21T11:00:00+00:00"}
            for r in late + rids[:100]
        ],
        FEEDBACK_SCHEMA,
    )


@contextlib.contextmanager
def _as(modules: dict):
    """Let `import refit.maintain.X` inside modules loaded now resolve to the given ones, then restore."""
    saved = {name: sys.modules[name] for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        sys.modules.update(saved)


def baseline_step(ref: str):
    """known, index, inbox and cycle.py at `ref`, each importing the others of `ref` (the rest: today's)."""
    mods = {}
    for name in ("known", "index", "inbox", "cycle"):
        with _as(mods):
            mods[f"refit.maintain.{name}"] = module_at(
                ref, f"framework/maintain/{name}.py", f"baseline_{name}"
            )
    return mods["refit.maintain.cycle"], mods["refit.maintain.inbox"]


def _read_args() -> dict:
    return {"quarantined": set(), "text_column": "text", "label_column": "label", "label_names": LABELS}


def _step(cycle, inbox_mod, inbox: Path, reg: Registry, status: str = "no_action"):
    """One side's inbox step, as `refit maintain` runs it: read against the index, open the run, stage,
    and end the run done (the registry's transaction that commits the staged rows)."""
    runs = reg.runs("maintain")
    read = partial(inbox_mod.read_inbox, inbox, **_read_args())
    batch, run_id, record, notes = cycle._read_and_open_run(reg, runs, read, "v")
    reg.finish_run(run_id, status, {"files": batch.files, "quarantined": [], INDEX_KEY: record})
    return batch, notes


class _Timed:
    """Wraps this tree's `_recall` (reading old captures' texts back from their files) to time it."""

    def __init__(self, fn) -> None:
        self.fn, self.seconds, self.requests = fn, 0.0, 0

    def __call__(self, wanted, known):
        t = time.perf_counter()
        out = self.fn(wanted, known)
        self.seconds += time.perf_counter() - t
        self.requests += len(wanted)
        return out


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _same(a, b) -> bool:
    return (
        sorted(a.labelled) == sorted(b.labelled)
        and sorted(a.texts) == sorted(b.texts)
        and sorted(a.files) == sorted(b.files)
    )


def conversion(n: int, before: tuple) -> dict:
    """Once: this tree's next cycle step on an index the baseline built (format 2 at d81750c: converted in
    place, then checked in full) vs on one this tree built (format 3: the usual cycle), N old files each."""
    out = {}
    for side, mods in (("baseline_index", before), ("own_index", (cycle_now, inbox_now))):
        work = WORK / f"convert-n{n}-{side}"
        shutil.rmtree(work, ignore_errors=True)
        snapshot = build(n)
        shutil.copytree(snapshot / "inbox", work / "inbox")
        shutil.copytree(snapshot / "registry", work / "registry")
        reg, index = Registry(work / "registry"), work / "registry" / "maintain" / INDEX_FILE
        _step(*mods, work / "inbox", reg)  # that side builds its index
        _new_files(work / "inbox", n, 0)
        size = index.stat().st_size
        t = time.perf_counter()
        batch, notes = _step(cycle_now, inbox_now, work / "inbox", reg)
        out[side] = {
            "next_cycle_s": round(time.perf_counter() - t, 3),
            "index_bytes": [size, index.stat().st_size],
            "notes": notes,
            "labelled": len(batch.labelled),
        }
        shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10,100,1000", help="old capture (and feedback) file counts")
    p.add_argument("--repeats", type=int, default=5, help="cycles timed per size (at most 9)")
    p.add_argument("--baseline", default="d81750c", help="git ref of the 'before' inbox step")
    p.add_argument(
        "--issue",
        default="inbox index format 3: a capture row names its capture file by its files row, not its sha256",
        help="what the comparison is about (the results' title)",
    )
    p.add_argument("--convert", type=int, default=0, help="also time a baseline index's first cycle here (N)")
    args = p.parse_args()
    ref = args.baseline
    before_cycle, before_inbox = baseline_step(ref)
    recall = inbox_now._recall = _Timed(inbox_now._recall)
    sides = {"before": (before_cycle, before_inbox), "after": (cycle_now, inbox_now)}
    load_before = _uptime()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    for n in sizes:
        t0 = time.perf_counter()
        snapshot = build(n)
        work = WORK / f"work-n{n}"  # a fresh copy each invocation: the cached snapshot is never changed
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(snapshot / "inbox", work / "inbox")
        inbox = work / "inbox"
        regs = {}
        for side in sides:  # each side builds its index from the pre-index run, then one warm-up cycle
            shutil.copytree(snapshot / "registry", work / f"registry-{side}")
            regs[side] = Registry(work / f"registry-{side}")
            _, notes = _step(*sides[side], inbox, regs[side])
            assert any("predate the inbox index" in x for x in notes), notes
        _new_files(inbox, n, 0)
        for side in sides:
            _step(*sides[side], inbox, regs[side])
        setup_s = time.perf_counter() - t0
        times = {side: [] for side in sides}
        same, checks, recall_s, recalled = True, [], [], []
        for k in range(1, args.repeats + 1):  # interleaved: before, after, before, after, ...
            _new_files(inbox, n, k)
            got = {}
            for side in sides:
                r0 = recall.seconds, recall.requests
                t = time.perf_counter()
                got[side] = _step(*sides[side], inbox, regs[side])
                times[side].append(time.perf_counter() - t)
            recall_s.append(recall.seconds - r0[0])
            recalled.append(recall.requests - r0[1])
            ok = _same(got["before"][0], got["after"][0]) and len(got["after"][0].labelled) == LATE + 100
            ok &= not got["after"][1] and not got["before"][1]
            same &= ok
            checks.append({"labelled": len(got["after"][0].labelled), "inputs": len(got["after"][0].texts)})
            checks[-1]["same"] = ok
        # after a failed cycle (its staged rows purged, then every row checked: the slow path), once each
        _new_files(inbox, n, args.repeats + 1)
        failed_s = {}
        for side in sides:
            _step(*sides[side], inbox, regs[side], status="failed")
            t = time.perf_counter()
            recheck, notes = _step(*sides[side], inbox, regs[side])
            failed_s[side] = time.perf_counter() - t
            same &= len(recheck.labelled) == LATE + 100 and not notes
        size = {s: (work / f"registry-{s}" / "maintain" / INDEX_FILE).stat().st_size for s in sides}
        med = {s: statistics.median(times[s]) for s in sides}
        results.append(
            {
                "old_files": 2 * n,
                "old_rows": 2 * n * ROWS - n * ROWS // 2,
                "cycles": checks,
                "same_result": same,
                "before_s": [round(x, 4) for x in times["before"]],
                "after_s": [round(x, 4) for x in times["after"]],
                "before_median_s": round(med["before"], 4),
                "after_median_s": round(med["after"], 4),
                "ratio_after_over_before": round(med["after"] / med["before"], 2),
                "recall_s": [round(x, 4) for x in recall_s],
                "recall_median_s": round(statistics.median(recall_s), 4),
                "late_labels_read_back": recalled[-1],
                "recall_ms_per_request": round(1000 * statistics.median(recall_s) / max(1, recalled[-1]), 3),
                "after_a_failed_cycle_s": {s: round(x, 4) for s, x in failed_s.items()},
                "index_bytes": size,
                "setup_s": round(setup_s, 1),
            }
        )
        print(json.dumps(results[-1]), flush=True)
        shutil.rmtree(work, ignore_errors=True)
    converted = conversion(args.convert, sides["before"]) if args.convert else None
    result = {
        "issue": args.issue,
        "baseline": ref,
        "machine": {
            "cpus": os.cpu_count(),
            "processor": _cpu(),
            "python": platform.python_version(),
            "note": "2-core shared dev machine (3 other engineers at work), no GPU",
        },
        "load_before": load_before,
        "load_after": _uptime(),
        "settings": {"rows_per_file": ROWS, "late_labels": LATE, "repeats": args.repeats, "sizes": sizes},
        "results": results,
        **({"conversion": {"old_files": 2 * args.convert, **converted}} if converted else {}),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / "inbox.json", json.dumps(result, indent=2) + "\n")
    write_keeping_notes(RESULTS / "inbox.md", _markdown(result), MARKER)


def _markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        f"# Inbox step of one maintenance cycle, before vs after: {r['issue']}",
        "",
        f"`scripts/bench_inbox.py`, {m['cpus']} CPU cores ({m['processor']}), {m['note']}; baseline "
        f"`{r['baseline'][:12]}`; {r['settings']['rows_per_file']} rows a file, "
        f"{r['settings']['late_labels']} late labels a cycle; before/after interleaved, "
        f"{r['settings']['repeats']} repeats, medians. Load before: `{r['load_before']}`; after: "
        f"`{r['load_after']}`.",
        "",
        "| old files | old rows | before (s) | after (s) | after/before | of which read-back (s) "
        "| per late label (ms) | same result | after a failed cycle, before/after (s) | index size, before/after |",
        "|---:|---:|---:|---:|---:|---:|---:|:---:|---:|---:|",
    ]
    for x in r["results"]:
        f, b = x["after_a_failed_cycle_s"], x["index_bytes"]
        lines.append(
            f"| {x['old_files']} | {x['old_rows']} | {x['before_median_s']:.3f} | {x['after_median_s']:.3f} | "
            f"{x['ratio_after_over_before']}x | {x['recall_median_s']:.3f} | {x['recall_ms_per_request']} | "
            f"{'yes' if x['same_result'] else 'NO'} | {f['before']:.3f} / {f['after']:.3f} | "
            f"{b['before'] / 1e6:.1f} / {b['after'] / 1e6:.1f} MB |"
        )
    c = r.get("conversion")
    if c:
        b, o = c["baseline_index"], c["own_index"]
        lines += [
            "",
            f"First cycle of this tree on an index the baseline built ({c['old_files']} old files): "
            f"{b['next_cycle_s']:.3f} s, index {b['index_bytes'][0] / 1e6:.1f} -> "
            f"{b['index_bytes'][1] / 1e6:.1f} MB, {b['labelled']} labelled, notes: {b['notes']}; "
            f"the same cycle on its own index: {o['next_cycle_s']:.3f} s, notes: {o['notes']}.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
