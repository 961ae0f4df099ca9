"""`refit tune` on real data: ASHA against FIFO random search, and the per-trial overhead of tune.

    python scripts/bench_tune.py [--trials 4] [--train-rows 400]

MiniLM on a subset of ../shared/datasets/sst2. Both searches sample the same learning rates and warm-ups
(same seed, same trial count, one trial at a time so they do not compete for the 2 cores); reported: best
validation accuracy and the total trial-seconds each spent. Overhead: one `refit finetune` run against a
one-trial `refit tune` of the same config (wall-clock of the whole command, Ray start included).
Writes scripts/results/tune.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "datasets" / "sst2"
RESULTS = ROOT / "scripts" / "results"


def _write_subset(folder: Path, rows: int) -> dict[str, str]:
    out = {}
    for split, n in (("train", rows), ("validation", 200)):
        lines = (SST2 / f"{split}.jsonl").read_text().splitlines()[:n]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
        out[split] = str(folder / f"{split}.jsonl")
    return out


def _finetune_cfg(data: dict) -> dict:
    return {
        "model": "minilm",
        "data": {**data, "max_length": 48, "batch_size": 16, "reference_size": 50},
        "trainer": {"max_epochs": 2, "val_check_interval": 0.5, "early_stopping_patience": 0},
        "tracking": {"wandb": False},
    }


def _refit(args: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "refit", *args],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--train-rows", type=int, default=400)
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    work = Path(tempfile.mkdtemp(prefix="refit-bench-tune-"))
    data = _write_subset(work, args.train_rows)
    base = _finetune_cfg(data)
    space = {"optim.lr": {"loguniform": [5e-6, 5e-4]}, "optim.warmup_ratio": {"uniform": [0.0, 0.2]}}
    searches = {}
    for scheduler in ("asha", "fifo"):
        cfg = {
            "finetune": base,
            "space": space,
            "scheduler": scheduler,
            "num_samples": args.trials,
            "max_concurrent_trials": 1,
            "max_t": 4,
            "grace_period": 1,
            "reduction_factor": 2,
            "storage_path": str(work / "tune"),
            "name": scheduler,
            "seed": 0,
        }
        path = work / f"{scheduler}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        wall = _refit(["tune", "--config", str(path)], env)
        results = json.loads((work / "tune" / scheduler / "results.json").read_text())
        trials = results["trials"]
        searches[scheduler] = {
            "wall_s": round(wall, 1),
            "trial_seconds": round(sum(t["seconds"] for t in trials), 1),
            "best_val_accuracy": max(t["best"] for t in trials if t["best"] is not None),
            "stopped_early": sum(t["status"] == "stopped early" for t in trials),
            "trials": len(trials),
        }
        print(scheduler, searches[scheduler])

    one = work / "one.yaml"
    one.write_text(
        yaml.safe_dump(
            {
                "finetune": base,
                "space": {"optim.lr": {"choice": [5e-5]}},
                "num_samples": 1,
                "scheduler": "fifo",
                "storage_path": str(work / "tune"),
                "name": "one",
            }
        )
    )
    plain = work / "plain.yaml"
    plain.write_text(yaml.safe_dump({**base, "optim": {"lr": 5e-5}, "output_dir": str(work / "plain")}))
    t_finetune = _refit(["finetune", "--config", str(plain)], env)
    t_tune = _refit(["tune", "--config", str(one)], env)
    trial_s = json.loads((work / "tune" / "one" / "results.json").read_text())["trials"][0]["seconds"]
    result = {
        "machine": "2-core x86_64 CPU, no GPU (shared with other jobs during the run)",
        "setup": {
            "model": "all-MiniLM-L6-v2",
            "train_rows": args.train_rows,
            "validation_rows": 200,
            "epochs": 2,
            "validations_per_trial": 4,
            "trials": args.trials,
            "space": space,
        },
        "searches": searches,
        "overhead": {
            "finetune_s": round(t_finetune, 1),
            "tune_one_trial_s": round(t_tune, 1),
            "trial_time_inside_tune_s": round(trial_s, 1),
            "ratio_whole_command": round(t_tune / t_finetune, 3),
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tune.json").write_text(json.dumps(result, indent=2) + "\n")
    a, f, o = searches["asha"], searches["fifo"], result["overhead"]
    lines = [
        f"# refit tune on sst2 ({result['machine']})",
        "",
        f"MiniLM, {args.train_rows} training rows, 200 validation rows, 2 epochs with 2 validations each, "
        f"{args.trials} trials, one at a time.",
        "",
        "| search | best val accuracy | trial-seconds | wall s | stopped early |",
        "|---|---|---|---|---|",
        f"| ASHA | {a['best_val_accuracy']:.4f} | {a['trial_seconds']} | {a['wall_s']} | {a['stopped_early']} |",
        f"| FIFO (random) | {f['best_val_accuracy']:.4f} | {f['trial_seconds']} | {f['wall_s']} | "
        f"{f['stopped_early']} |",
        "",
        f"Overhead: `refit finetune` {o['finetune_s']} s; the same config as a one-trial `refit tune` "
        f"{o['tune_one_trial_s']} s ({o['ratio_whole_command']}x, Ray start and worker start included).",
    ]
    (RESULTS / "tune.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
