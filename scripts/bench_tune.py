"""`refit tune` on real data: per-trial overhead against `refit finetune`, and ASHA against FIFO wall time.

    python scripts/bench_tune.py --part search      # 8-trial FIFO vs ASHA, same search, same run
    python scripts/bench_tune.py --part overhead    # refit finetune vs a one-trial refit tune, interleaved
    python scripts/bench_tune.py --part final       # a finished run's final validation + calibration, 1 vs 2 passes
    python scripts/bench_tune.py --part replay      # untimed: the last FIFO search's curves through scheduler rules

MiniLM on subsets of ../shared/datasets/sst2 (read there, never copied into the repo; the subsets are written
under runs/bench-tune/, which git ignores). Wall-clock of whole commands, interpreter start and Ray start
included. The machine is shared: every comparison is made in the same run, the overhead one interleaved and
repeated. Each part merges its figures into scripts/results/tune.json and rewrites scripts/results/tune.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# ../shared/datasets beside the checkout, as the other benchmarks; REFIT_DATASETS points elsewhere
from _datasets import DATASETS  # noqa: E402
from _results import write_keeping_notes  # noqa: E402

REPORTED, TIMINGS = "objective", "timings.json"  # refit.tune.trial's names (not imported: no Ray needed)

SST2 = DATASETS / "sst2"
RESULTS = ROOT / "scripts" / "results"
WORK = ROOT / "runs" / "bench-tune"
NOTES_MARKER = "<!-- written by hand below this line; bench_tune.py keeps it -->"
MACHINE = f"{os.cpu_count()}-core {platform.machine()} CPU, no GPU, shared with other engineers' jobs"


def _subset(name: str, train_rows: int, validation_rows: int) -> dict[str, str]:
    if not (SST2 / "train.jsonl").is_file():
        sys.exit(
            f"needs the real dataset at {SST2} (../shared/datasets beside the checkout, or $REFIT_DATASETS)"
        )
    folder = WORK / name
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", train_rows), ("validation", validation_rows)):
        lines = (SST2 / f"{split}.jsonl").read_text().splitlines()[:n]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
        out[split] = str(folder / f"{split}.jsonl")
    return out


def _load() -> float:
    return round(os.getloadavg()[0], 1)


def _refit(args: list[str]) -> tuple[float, float]:
    """(wall seconds, epoch start) of one whole command."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
    started_at, started = time.time(), time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "refit", *args],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started, started_at


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _phases(search_dir: Path, started_at: float, wall: float) -> dict:
    """Where one search's wall time went, from the recipe's own clock (results.json) and each trial
    attempt's timings.json: the fixed cost a scheduler cannot shrink, and the per-trial costs."""
    timings = json.loads((search_dir / "results.json").read_text())["timings"]
    trials = [json.loads(f.read_text()) for f in search_dir.glob("trials/*/run-*/timings.json")]
    marks = [t["marks"] for t in trials]
    first_per_worker: dict[int, dict] = {}
    for t in sorted(trials, key=lambda t: t["marks"]["trial_start"]):
        first_per_worker.setdefault(t["worker"]["pid"], t)
    firsts = [id(t) for t in first_per_worker.values()]
    setup = [t["marks"]["fit_setup"] - t["marks"]["trial_start"] for t in trials if "fit_setup" in t["marks"]]
    first_setup = [t["marks"]["fit_setup"] - t["marks"]["trial_start"] for t in first_per_worker.values()]
    later_setup = [
        t["marks"]["fit_setup"] - t["marks"]["trial_start"]
        for t in trials
        if id(t) not in firsts and "fit_setup" in t["marks"]
    ]
    final = [m["trial_end"] - m["train_end"] for m in marks if "train_end" in m]
    first_start = min(m["trial_start"] for m in marks)
    first_fit = min(m["fit_setup"] for m in marks if "fit_setup" in m)
    last_end = max(m["trial_end"] for m in marks)
    ray_ready = timings["started_at"] + timings["checks_s"] + timings["ray_init_s"]
    mean = lambda xs: round(statistics.mean(xs), 1) if xs else None  # noqa: E731
    return {
        "command_start_to_recipe_s": round(timings["started_at"] - started_at, 1),
        "recipe_checks_s": timings["checks_s"],
        "ray_init_s": timings["ray_init_s"],
        "ray_ready_to_first_trial_s": round(first_start - ray_ready, 1),
        "first_trial_setup_s": mean(first_setup),  # data, tokeniser, model: and the worker's imports
        "later_trial_setup_s": mean(later_setup),  # the same in a reused worker
        "trial_setup_s_all": round(sum(setup), 1),
        "final_eval_and_version_s": mean(final),  # per finished trial: evaluate best, reference, write
        "finished_trials": len(final),
        "command_start_to_first_fit_s": round(first_fit - started_at, 1),
        "last_trial_end_to_command_end_s": round(started_at + wall - last_end, 1),
        "ray_shutdown_s": timings["ray_shutdown_s"],
        "workers": len(first_per_worker),
    }


def search(
    trials: int,
    train_rows: int,
    validation_rows: int,
    schedulers: tuple[str, ...] = ("fifo", "asha"),
    reduction_factor: float | None = None,
) -> dict:
    """The same 8-trial search (same seed, same sampled configs) under FIFO and ASHA, 2 trials at a time,
    8 validations per trial (4 an epoch, 2 epochs); ASHA with `refit tune`'s own default grace period and
    reduction factor (what a user gets who sets neither)."""
    from refit.recipes.tune import Config

    grace, reduction = Config().grace_period, reduction_factor or Config().reduction_factor
    data = _subset("search", train_rows, validation_rows)
    batch = 8
    every = max(1, train_rows // batch // 4)
    base = {
        "model": "minilm",
        "data": {**data, "max_length": 32, "batch_size": batch, "reference_size": 16},
        "trainer": {
            "max_epochs": 2,
            "val_check_interval": every,
            "early_stopping_patience": 0,
            "monitor": "val/loss",
            "mode": "min",
        },
        "tracking": {"wandb": False},
    }
    space = {"optim.lr": {"loguniform": [5e-6, 5e-4]}, "optim.warmup_ratio": {"uniform": [0.0, 0.2]}}
    validations = 2 * ((train_rows // batch) // every)
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "setup": {
            "train_rows": train_rows,
            "validation_rows": validation_rows,
            "max_length": 32,
            "batch_size": batch,
            "epochs": 2,
            "validations_per_trial": validations,
            "trials": trials,
            "concurrent": 2,
            "cpus_per_trial": 1,
            "asha": {"grace_period": grace, "reduction_factor": reduction, "max_t": validations},
            "space": space,
        },
    }
    for scheduler in schedulers:
        name = f"search-{scheduler}"
        shutil.rmtree(WORK / "tune" / name, ignore_errors=True)
        cfg = {
            "finetune": base,
            "space": space,
            "scheduler": scheduler,
            "num_samples": trials,
            "max_concurrent_trials": 2,
            "cpus_per_trial": 1,
            "ray_num_cpus": 2,
            "max_t": validations,
            "grace_period": grace,
            "reduction_factor": reduction,
            "storage_path": str(WORK / "tune"),
            "name": name,
            "seed": 0,
        }
        load = _load()
        wall, started_at = _refit(["tune", "--config", str(_write(WORK / f"{name}.yaml", cfg))])
        rows = json.loads((WORK / "tune" / name / "results.json").read_text())["trials"]
        full = [r["seconds"] for r in rows if r["iterations"] == validations]
        out[scheduler] = {
            "wall_s": round(wall, 1),
            "trial_seconds": round(sum(r["seconds"] for r in rows), 1),
            "full_trial_s": round(statistics.median(full), 1) if full else None,
            "validations": sum(r["iterations"] for r in rows),
            "best_val_loss": min(r["best"] for r in rows if r["best"] is not None),
            "stopped_early": sum(r["status"] == "stopped early" for r in rows),
            "errors": sum(r["status"] == "error" for r in rows),
            "load_before": load,
            "load_after": _load(),
            "phases": _phases(WORK / "tune" / name, started_at, wall),
        }
        print(scheduler, out[scheduler], flush=True)
    for scheduler in schedulers:
        if scheduler != "fifo" and "fifo" in out:
            out[f"{scheduler}_over_fifo_wall"] = round(out[scheduler]["wall_s"] / out["fifo"]["wall_s"], 3)
    return out


def overhead(repeats: int, train_rows: int) -> dict:
    """`refit finetune` and the same config as a one-trial `refit tune` (same 2 CPUs), interleaved."""
    data = _subset("overhead", train_rows, 64)
    base = {
        "model": "minilm",
        "data": {**data, "max_length": 48, "batch_size": 16, "reference_size": 32},
        "optim": {"lr": 5e-5},
        "trainer": {"max_epochs": 1, "val_check_interval": 0.5, "early_stopping_patience": 0},
        "tracking": {"wandb": False},
    }
    runs = []
    for i in range(repeats):
        plain_dir = WORK / f"plain-{i}"
        shutil.rmtree(plain_dir, ignore_errors=True)
        plain = _write(WORK / f"plain-{i}.yaml", {**base, "output_dir": str(plain_dir)})
        name = f"one-{i}"
        shutil.rmtree(WORK / "tune" / name, ignore_errors=True)
        one = {
            "finetune": base,
            "space": {"optim.lr": {"choice": [5e-5]}},
            "num_samples": 1,
            "scheduler": "fifo",
            "cpus_per_trial": 2,
            "ray_num_cpus": 2,
            "storage_path": str(WORK / "tune"),
            "name": name,
        }
        load = _load()
        t_plain, _ = _refit(["finetune", "--config", str(plain)])
        t_tune, _ = _refit(["tune", "--config", str(_write(WORK / f"{name}.yaml", one))])
        row = json.loads((WORK / "tune" / name / "results.json").read_text())["trials"][0]
        trial_fit = json.loads((Path(row["version"]) / "refit.json").read_text())["training"]["seconds"]
        plain_fit = json.loads((plain_dir / "version" / "refit.json").read_text())["training"]["seconds"]
        ckpt = next(Path(row["version"]).parent.glob("checkpoints/best.ckpt"))
        runs.append(
            {
                "finetune_s": round(t_plain, 1),
                "tune_one_trial_s": round(t_tune, 1),
                "ratio": round(t_tune / t_plain, 3),
                "trial_s_inside_tune": round(row["seconds"], 1),
                "fit_s_finetune": plain_fit,
                "fit_s_trial": trial_fit,
                "best_ckpt_mb_finetune": round(
                    (plain_dir / "checkpoints" / "best.ckpt").stat().st_size / 1e6, 1
                ),
                "best_ckpt_mb_trial": round(ckpt.stat().st_size / 1e6, 1),
                "load_before": load,
            }
        )
        print(runs[-1], flush=True)
    return {
        "setup": {"train_rows": train_rows, "validation_rows": 64, "max_length": 48, "epochs": 1, "cpus": 2},
        "runs": runs,
        "median_ratio": round(statistics.median(r["ratio"] for r in runs), 3),
    }


def final_pass(repeats: int) -> dict:
    """What a finished run (and so each finished trial) saves now that the calibrator reuses the final
    validation's logits: the end of refit.train.job timed both ways on one trained setup, interleaved.
    Old path: final validation, then a second pass over validation for the calibrator; new: one pass.
    Private job functions on purpose: they are the two code paths being compared, nothing rebuilt here."""
    import torch

    from refit.models.tiny import save_tiny_bert
    from refit.settings import DataConfig, OptimConfig, TrackingConfig, TrainerConfig
    from refit.train import job

    tiny = WORK / "tiny-bert"
    if not (tiny / "config.json").is_file():
        save_tiny_bert(tiny)
    cases = (
        ("tiny BERT (2 layers, hidden 32)", str(tiny), 64, 32),
        ("MiniLM, the search's trial", "minilm", 64, 32),
        ("MiniLM, all of sst2 validation", "minilm", 872, 64),
    )
    rows = []
    for label, model, n_val, seq in cases:
        data = _subset(f"final-{n_val}", 64, n_val)
        d = DataConfig(**data, max_length=seq, batch_size=8, reference_size=0)
        t = TrainerConfig(max_steps=1, early_stopping_patience=0, val_check_interval=1.0)
        out = WORK / f"final-{n_val}-{Path(model).name}"
        shutil.rmtree(out, ignore_errors=True)
        s = job._setup(
            model, d, OptimConfig(), t, TrackingConfig(wandb=False), out, None, {}, None, None, False
        )
        job._fit(s)
        times: dict[str, list[float]] = {"two_passes": [], "one_pass": []}
        for _ in range(repeats):
            for way in times:
                started = time.perf_counter()
                _, _, logits = job._evaluate(s)
                job._calibrate(s, d, 0, None if way == "two_passes" else logits)
                times[way].append(time.perf_counter() - started)
        two, one = statistics.median(times["two_passes"]), statistics.median(times["one_pass"])
        rows.append(
            {
                "case": label,
                "validation_rows": n_val,
                "max_length": seq,
                "two_passes_s": round(two, 3),
                "one_pass_s": round(one, 3),
                "saved_s": round(two - one, 3),
                "runs_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
            }
        )
        print(rows[-1], flush=True)
    return {
        "setup": {"repeats": repeats, "eval_batch_size": 64, "threads": torch.get_num_threads()},
        "rows": rows,
    }


def _curves(search_dir: Path) -> list[dict]:
    """Each trial of a recorded search in the order Tune created them: its reported values and the
    seconds of each report interval (the first includes the trial's setup), plus its end-of-trial seconds."""
    trials = []
    for result in search_dir.glob("*/result.json"):
        reports = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if not reports:
            continue
        timings = json.loads(
            next((search_dir / "trials" / reports[0]["trial_id"]).glob(f"run-*/{TIMINGS}")).read_text()
        )
        marks = timings["marks"]
        trials.append(
            {
                "trial": reports[0]["trial_id"],
                "values": [r[REPORTED] for r in reports],
                "seconds": [r["time_this_iter_s"] for r in reports],
                "end_s": max(0.0, marks["trial_end"] - marks["trial_start"] - reports[-1]["time_total_s"]),
            }
        )
    return sorted(trials, key=lambda t: int(t["trial"].rsplit("_", 1)[1]))


def _simulate(curves: list[dict], slots: int, decide, finish_at: int) -> dict:
    """Replays recorded trials through a scheduler rule on `slots` workers, in Tune's order: `decide(trial,
    iteration, value, state)` says whether a trial goes on after a report. Returns the makespan, the
    validations run, the trials that finished and the best value seen / of a finished trial."""
    import heapq

    clock, free, queue, events = 0.0, slots, list(range(len(curves))), []
    state: dict = {}
    out = {"validations": 0, "finished": [], "seen": []}

    def start(i: int, at: float) -> None:
        heapq.heappush(events, (at + curves[i]["seconds"][0], i, 1))

    while queue and free:
        start(queue.pop(0), 0.0)
        free -= 1
    while events:
        clock, i, it = heapq.heappop(events)
        value = curves[i]["values"][it - 1]
        out["validations"] += 1
        out["seen"].append(value)
        if it < finish_at and decide(i, it, value, state):
            heapq.heappush(events, (clock + curves[i]["seconds"][it], i, it + 1))
            continue
        if it == finish_at:
            out["finished"].append(i)
            clock += curves[i]["end_s"]
        if queue:
            start(queue.pop(0), clock)
        else:
            out.setdefault("ends", []).append(clock)
    out["makespan_s"] = round(max(out["ends"]), 1)
    return out


def _simulate_promotions(
    curves: list[dict], slots: int, rungs: list[int], rf: int, finish_at: int, pause_s: float
):
    """Replays recorded trials through ASHA as its paper states it (Li et al. 2020, algorithm 2), which Ray's
    stopping variant is not: a trial pauses at each rung, and a free worker resumes the best paused trial that
    is in the top floor(n/rf) of the n trials recorded at its rung (highest rung first), else starts a new one.
    The first trial at a rung is never waved through. `pause_s`: what one pause + resume costs (a full
    checkpoint written, then restored in a worker)."""
    import heapq

    bounds = [*rungs, finish_at]
    recorded: dict[int, dict[int, float]] = {r: {} for r in rungs}
    promoted: dict[int, set] = {r: set() for r in rungs}
    new, events, busy = list(range(len(curves))), [], 0
    out = {"validations": 0, "finished": [], "seen": [], "pauses": 0}
    clock = 0.0

    def job(at: float) -> bool:
        for r in reversed(rungs):
            ranked = sorted(recorded[r], key=recorded[r].get)[: len(recorded[r]) // rf]
            for i in ranked:
                if i not in promoted[r]:
                    promoted[r].add(i)
                    out["pauses"] += 1
                    stop = bounds[bounds.index(r) + 1]
                    seconds = pause_s + sum(curves[i]["seconds"][r:stop])
                    heapq.heappush(events, (at + seconds, i, r, stop))
                    return True
        if new:
            i = new.pop(0)
            heapq.heappush(events, (at + sum(curves[i]["seconds"][: bounds[0]]), i, 0, bounds[0]))
            return True
        return False

    while busy < slots and job(clock):
        busy += 1
    while events:
        clock, i, start, stop = heapq.heappop(events)
        busy -= 1
        out["validations"] += stop - start
        out["seen"] += curves[i]["values"][start:stop]
        if stop == finish_at:
            out["finished"].append(i)
            clock += curves[i]["end_s"]
        else:
            recorded[stop][i] = curves[i]["values"][stop - 1]
        while busy < slots and job(clock):
            busy += 1
    out["makespan_s"] = round(clock, 1)
    return out


def _asha_rule(rungs: list[int], rf: float):
    """Ray's asynchronous rule (AsyncHyperBandScheduler._Bracket.on_result), loss minimised: at a rung, a
    trial stops if its value is worse than the (1 - 1/rf) quantile of the values recorded there before it."""
    import numpy as np

    def decide(i, it, value, state) -> bool:
        if it not in rungs:
            return True
        recorded = state.setdefault(it, [])
        cutoff = np.nanpercentile([-v for v in recorded], (1 - 1 / rf) * 100) if recorded else None
        recorded.append(value)
        return cutoff is None or -value >= cutoff

    return decide


def replay(search_dir: Path, asha_dir: Path | None) -> dict:
    """Untimed: FIFO's recorded learning curves replayed through scheduler rules, to see what a rule would
    save and which configs it keeps before building it. Checked against the real ASHA run of the same
    search (same seeded configs) where there is one."""
    curves = _curves(search_dir)
    n_val = max(len(c["values"]) for c in curves)
    rows = {}
    for name, rungs, rf in (
        ("fifo", [], 2),
        ("asha rf 2 (rungs 1, 2, 4)", [1, 2, 4], 2),
        ("asha rf 3 (rungs 1, 3)", [1, 3], 3),
        ("asha rf 4 (rungs 1, 4)", [1, 4], 4),
        ("asha rf 2, grace 2 (rungs 2, 4)", [2, 4], 2),
        ("asha rf 2, grace 4 (rung 4)", [4], 2),
    ):
        sim = _simulate(curves, 2, _asha_rule(rungs, rf), n_val)
        best_finished = min(min(curves[i]["values"]) for i in sim["finished"])
        rows[name] = {
            "makespan_s": sim["makespan_s"],
            "validations": sim["validations"],
            "finished": sim["finished"],
            "best_seen": round(min(sim["seen"]), 4),
            "best_finished": round(best_finished, 4),
        }
    for pause_s in (0.0, 3.0, 6.0):
        sim = _simulate_promotions(curves, 2, [1, 2, 4], 2, n_val, pause_s)
        rows[f"promotion asha rf 2 (rungs 1, 2, 4), {pause_s:g} s a pause"] = {
            "makespan_s": sim["makespan_s"],
            "validations": sim["validations"],
            "finished": sim["finished"],
            "pauses": sim["pauses"],
            "best_seen": round(min(sim["seen"]), 4),
            "best_finished": round(min(min(curves[i]["values"]) for i in sim["finished"]), 4),
        }
    fifo = rows["fifo"]["makespan_s"]
    for r in rows.values():
        r["over_fifo"] = round(r["makespan_s"] / fifo, 3)
    out = {
        "setup": {"from": str(search_dir), "trials": len(curves), "validations_per_trial": n_val},
        "rows": rows,
        "curves": [{"trial": c["trial"], "values": [round(v, 4) for v in c["values"]]} for c in curves],
    }
    if asha_dir is not None and (asha_dir / "results.json").is_file():
        real = json.loads((asha_dir / "results.json").read_text())["trials"]
        out["real_asha"] = {
            "validations": sum(r["iterations"] for r in real),
            "finished": sum(r["status"] == "finished" for r in real),
        }
    return out


# what a search run's history row keeps (the phases table is the latest run's only)
_RUN_KEYS = (
    "note",
    "date",
    "setup",
    "fifo",
    "asha",
    "asha_over_fifo_wall",
)
_LABELS = {"fifo": "FIFO (random)", "asha": "ASHA"}

_PHASES = (
    ("command_start_to_recipe_s", "interpreter, imports, config (driver)"),
    ("ray_init_s", "ray.init"),
    ("ray_ready_to_first_trial_s", "Tune start to the first trial's entry"),
    ("first_trial_setup_s", "a worker's first trial: imports + data + model (mean)"),
    ("later_trial_setup_s", "a reused worker's trial: data + tokenise + model (mean)"),
    ("command_start_to_first_fit_s", "command start to the first fit (critical path)"),
    ("final_eval_and_version_s", "per finished trial: evaluate best, reference, version (mean)"),
    ("finished_trials", "finished trials (each pays the line above)"),
    ("last_trial_end_to_command_end_s", "last trial end to command end (Tune end, shutdown, outputs)"),
    ("ray_shutdown_s", "of which ray.shutdown"),
)


def _markdown(result: dict) -> str:
    lines = [f"# refit tune on sst2 ({result['machine']})", ""]
    if "search" in result:
        s = result["search"]
        st = s["setup"]
        a = st["asha"]
        lines += [
            f"## ASHA vs FIFO, the same {st['trials']}-trial search, same run",
            "",
            f"MiniLM, {st['train_rows']} training rows, {st['validation_rows']} validation rows, seq "
            f"{st['max_length']}, batch {st['batch_size']}, {st['epochs']} epochs with "
            f"{st['validations_per_trial']} validations per trial, {st['concurrent']} trials at a time, "
            f"{st['cpus_per_trial']} CPU each; ASHA grace {a['grace_period']}, reduction factor "
            f"{a['reduction_factor']} (the recipe's defaults); monitor val/loss.",
            "",
            "| search | wall s | trial-seconds | full trial s | validations run | best val/loss | stopped early "
            "| load avg before / after |",
            "|---|---|---|---|---|---|---|---|",
        ]
        ran = [key for key in _LABELS if key in s]
        for key in ran:
            r, label = s[key], _LABELS[key]
            lines.append(
                f"| {label} | {r['wall_s']} | {r['trial_seconds']} | {r['full_trial_s']} | {r['validations']} | "
                f"{r['best_val_loss']:.4f} | {r['stopped_early']} | {r['load_before']} / {r['load_after']} |"
            )
        lines.append("")
        for key in ran[1:]:
            lines.append(
                f"{_LABELS[key]} wall time / FIFO wall time: **{s[f'{key}_over_fifo_wall']}** (goal <= 0.5)."
            )
        lines.append("")
        f_full, a_full = s["fifo"]["full_trial_s"], s["asha"]["full_trial_s"]
        if f_full and a_full and abs(f_full / a_full - 1) > 0.1:  # the machine's speed changed in between
            lines += [
                f"Not a same-speed figure: the same full trial took {f_full} s under FIFO and {a_full} s under "
                "ASHA (the machine's load changed between the two); the replay below compares them at one speed.",
                "",
            ]
        if s.get("history"):
            lines += [
                "Earlier runs of this comparison (newest first; when, and what differed):",
                "",
                "| run | train rows | reduction factor | FIFO wall s | ASHA wall s | validations FIFO / ASHA "
                "| best val/loss FIFO / ASHA | ratio | load avg |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for h in s["history"]:
                hst, hf, ha = h["setup"], h["fifo"], h["asha"]
                lines.append(
                    f"| {h.get('note', '')} | {hst['train_rows']} | {hst['asha']['reduction_factor']} | "
                    f"{hf['wall_s']} | {ha['wall_s']} | {hf['validations']} / {ha['validations']} | "
                    f"{hf['best_val_loss']:.4f} / {ha['best_val_loss']:.4f} | {h['asha_over_fifo_wall']} | "
                    f"{hf['load_before']}-{ha.get('load_after', ha['load_before'])} |"
                )
            lines.append("")
        lines += [
            "### Where each search's time went (seconds; from the recipe's clock and each trial's timings.json)",
            "",
            "| phase | " + " | ".join(_LABELS[k] for k in ran) + " |",
            "|---|" + "---|" * len(ran),
        ]
        for key, label in _PHASES:
            lines.append(f"| {label} | " + " | ".join(str(s[k]["phases"].get(key)) for k in ran) + " |")
        lines.append("")
    if "overhead" in result:
        o = result["overhead"]
        st = o["setup"]
        lines += [
            "## Per-trial overhead: `refit finetune` vs the same config as a one-trial `refit tune`",
            "",
            f"MiniLM, {st['train_rows']} training rows, {st['validation_rows']} validation rows, seq "
            f"{st['max_length']}, {st['epochs']} epoch, both with {st['cpus']} CPUs; whole commands, "
            "interleaved; the tune figure includes Ray's start and the worker's imports.",
            "",
            "| finetune s | one-trial tune s | ratio | fit s (finetune / trial) | best.ckpt MB (finetune / trial) "
            "| load avg |",
            "|---|---|---|---|---|---|",
        ]
        for r in o["runs"]:
            lines.append(
                f"| {r['finetune_s']} | {r['tune_one_trial_s']} | {r['ratio']} | {r['fit_s_finetune']} / "
                f"{r['fit_s_trial']} | {r['best_ckpt_mb_finetune']} / {r['best_ckpt_mb_trial']} | "
                f"{r['load_before']} |"
            )
        lines += ["", f"Median ratio: **{o['median_ratio']}** (goal <= 1.10).", ""]
    if "final" in result:
        f = result["final"]
        lines += [
            "## The end of a finished run: final validation + calibration, two passes (before) vs one (now)",
            "",
            f"refit.train.job's `_evaluate` + `_calibrate` on one trained setup, both ways interleaved, "
            f"{f['setup']['repeats']} repeats, medians; eval batch {f['setup']['eval_batch_size']}, "
            f"{f['setup']['threads']} threads; load avg {f['load_before']} / {f['load_after']} before / after.",
            "",
            "| model | validation rows | seq | two passes s | one pass s | saved s per finished run |",
            "|---|---|---|---|---|---|",
        ]
        for r in f["rows"]:
            lines.append(
                f"| {r['case']} | {r['validation_rows']} | {r['max_length']} | {r['two_passes_s']} | "
                f"{r['one_pass_s']} | {r['saved_s']} |"
            )
        lines.append("")
    if "replay" in result:
        r = result["replay"]
        lines += [
            "## Replay: FIFO's recorded curves through scheduler rules (untimed, simulated)",
            "",
            f"The {r['setup']['trials']} trials of the FIFO search above, each validation interval taking the "
            "seconds it took there, replayed on 2 workers through each rule; the makespan leaves out the "
            "search's fixed cost (Ray's start, shutdown). Ray's ASHA replayed gives the real ASHA run's "
            f"validations ({r.get('real_asha', {}).get('validations')}) and finished trials "
            f"({r.get('real_asha', {}).get('finished')}).",
            "",
            "| rule | makespan s | / FIFO | validations | finished trials | best val/loss seen / of a finished trial |",
            "|---|---|---|---|---|---|",
        ]
        for name, row in r["rows"].items():
            lines.append(
                f"| {name} | {row['makespan_s']} | {row['over_fifo']} | {row['validations']} | "
                f"{len(row['finished'])} | {row['best_seen']:.4f} / {row['best_finished']:.4f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("search", "overhead", "final", "replay"), required=True)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--train-rows", type=int, default=None)
    parser.add_argument("--validation-rows", type=int, default=64)
    parser.add_argument(
        "--extra",
        metavar="NAME",
        help="a side measurement (e.g. ASHA alone at another reduction factor): written to "
        "runs/bench-tune/NAME.json only, the results files are left alone",
    )
    parser.add_argument("--schedulers", default="fifo,asha")
    parser.add_argument("--reduction-factor", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--note", default="", help="--part search: what changed since the previous run")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "tune.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    # figures of this script's current method only (older files held another layout)
    result = {
        k: v for k, v in result.items() if k in ("search", "overhead", "final", "replay") and "setup" in v
    } | {
        k: v
        for k, v in result.items()
        if k == "side_runs"  # hand-recorded measurements, kept as they are
    }
    if args.extra:
        extra = search(
            args.trials,
            args.train_rows or 320,
            args.validation_rows,
            tuple(args.schedulers.split(",")),
            args.reduction_factor,
        )
        (WORK / f"{args.extra}.json").write_text(json.dumps(extra, indent=2) + "\n")
        print(json.dumps(extra, indent=2))
        return
    if args.part == "replay":
        result["replay"] = replay(WORK / "tune" / "search-fifo", WORK / "tune" / "search-asha")
    elif args.part == "search":
        earlier = result.get("search", {})
        history = earlier.pop("history", [])
        if "fifo" in earlier:  # the run this one replaces heads the history
            history = [{k: v for k, v in earlier.items() if k in _RUN_KEYS}, *history]
        result["search"] = {
            **search(
                args.trials, args.train_rows or 320, args.validation_rows, tuple(args.schedulers.split(","))
            ),
            "note": args.note,
            "history": history,
        }
    elif args.part == "final":
        result["final"] = {"load_before": _load(), **final_pass(args.repeats), "load_after": _load()}
    else:
        result["overhead"] = overhead(args.repeats, args.train_rows or 256)
    result = {"machine": MACHINE, **result}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    # the hand-written reading below the marker survives a rerun of any part
    write_keeping_notes(RESULTS / "tune.md", _markdown(result), NOTES_MARKER)
    print(_markdown(result))


if __name__ == "__main__":
    main()
