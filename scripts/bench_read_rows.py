"""refit.data.read_rows: streamed a line at a time vs the whole file read first, on real data.

    python scripts/bench_read_rows.py [--repeats 5] [--against REV] [--out scripts/results/read_rows]

The three largest JSONL files of the shared datasets, and one CSV written from sst2's train split into a
temporary folder (never kept): for each, `read_rows` (JSONL and CSV stream from the file) against the plain
alternative `parse_rows(path.read_bytes(), ...)` (the whole file in memory first, as the inbox reads the
bytes it hashes), and, with --against REV, `read_rows` as it was at git revision REV (loaded from `git show
REV:framework/data/files.py`). Wall time: interleaved rounds, medians. Peak memory: tracemalloc's peak of
Python allocations during one read (the rows themselves included: they are what the caller keeps), in a
separate pass so tracing does not slow the timed one. Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _baseline import module_at  # noqa: E402
from _datasets import DATASETS, ROOT  # noqa: E402
from _results import write_keeping_notes  # noqa: E402

from refit.data import parse_rows, read_rows  # noqa: E402

MARKER = "<!-- written by hand below this line; bench_read_rows.py keeps it -->"


def _files(tmp: Path) -> list[Path]:
    found = sorted(DATASETS.glob("*/*.jsonl"), key=lambda p: p.stat().st_size, reverse=True)[:3]
    sst2 = DATASETS / "sst2_glue" / "train.jsonl"
    if sst2.is_file():
        out = tmp / "sst2_train.csv"
        with sst2.open() as src, out.open("w", newline="") as dst:
            writer = csv.DictWriter(dst, fieldnames=["text", "label"])
            writer.writeheader()
            for line in src:
                row = json.loads(line)
                writer.writerow({"text": row["text"], "label": row["label"]})
        found.append(out)
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--against", default=None, help="a git revision whose read_rows is timed too")
    ap.add_argument("--out", default=str(ROOT / "scripts" / "results" / "read_rows"))
    args = ap.parse_args()
    if not DATASETS.is_dir():
        sys.exit(f"skipped: the shared datasets are not at {DATASETS} (set REFIT_DATASETS)")
    readers = {
        "read_rows (streamed)": read_rows,
        "whole file, then parse_rows": lambda p: parse_rows(p.read_bytes(), p.suffix),
    }
    if args.against:
        readers[f"read_rows at {args.against}"] = module_at(
            args.against, "framework/data/files.py", "files_before"
        ).read_rows
    load = [os.getloadavg()[0]]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in _files(Path(tmp)):
            rows = {name: read(path) for name, read in readers.items()}
            same = all(r == rows["read_rows (streamed)"] for r in rows.values())
            times: dict[str, list[float]] = {name: [] for name in readers}
            for _ in range(args.repeats):
                for name, read in readers.items():
                    t = time.perf_counter()
                    read(path)
                    times[name].append(time.perf_counter() - t)
            peaks = {}
            for name, read in readers.items():
                tracemalloc.start()
                read(path)
                peaks[name] = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            load.append(os.getloadavg()[0])
            label = path.name if path.parent == Path(tmp) else f"{path.parent.name}/{path.name}"
            results.append(
                {
                    "file": label,
                    "mb": round(path.stat().st_size / 1e6, 2),
                    "rows": len(rows["read_rows (streamed)"]),
                    "same_rows": same,
                    "seconds": {n: round(statistics.median(v), 4) for n, v in times.items()},
                    "peak_mb": {n: round(v / 1e6, 1) for n, v in peaks.items()},
                }
            )
            print(json.dumps(results[-1]), flush=True)
    machine = f"{platform.machine()} CPU, {os.cpu_count()} cores (shared with other jobs), no GPU"
    out = {"machine": machine, "repeats": args.repeats, "load_avg": load, "results": results}
    Path(args.out + ".json").write_text(json.dumps(out, indent=2) + "\n")
    names = list(readers)
    lines = [
        f"# refit.data.read_rows: streamed vs whole file ({machine})",
        "",
        f"Median of {args.repeats} interleaved rounds; peak = tracemalloc's peak of Python allocations during "
        "one read, the rows returned included. 1-minute load average at each file boundary: "
        + ", ".join(f"{x:.2f}" for x in load)
        + ".",
        "",
        "| file | MB | rows | same rows | "
        + " | ".join(f"{n} s" for n in names)
        + " | "
        + " | ".join(f"{n} peak MB" for n in names)
        + " |",
        "|---" * (4 + 2 * len(names)) + "|",
    ]
    for r in results:
        lines.append(
            f"| {r['file']} | {r['mb']} | {r['rows']} | {'yes' if r['same_rows'] else 'NO'} | "
            + " | ".join(str(r["seconds"][n]) for n in names)
            + " | "
            + " | ".join(str(r["peak_mb"][n]) for n in names)
            + " |"
        )
    write_keeping_notes(Path(args.out + ".md"), "\n".join(lines) + "\n", MARKER)


if __name__ == "__main__":
    main()
