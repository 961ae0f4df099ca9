"""The outcome of a search: a table of trials, the best config as a finetune YAML, the best version."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from refit.errors import RefitError
from refit.io import atomic_dir, atomic_write_text, write_json

__all__ = ["TrialRow", "collect_trials", "write_outputs"]


@dataclass
class TrialRow:
    trial: str
    status: str  # finished | stopped early | error
    overrides: dict
    best: float | None  # best monitored value the trial reported
    final: float | None  # the finished version's validation metric (best checkpoint), if it finished
    iterations: int
    seconds: float
    version: str | None


def _version_of(trial_runs: Path) -> Path | None:
    """The version of the trial's last attempt (a PBT-restarted trial has several; only the last finishes)."""
    versions = sorted(trial_runs.glob("run-*/version/refit.json"), key=lambda p: int(p.parts[-3][4:]))
    return versions[-1].parent if versions else None


def collect_trials(results, metric_name: str, monitor: str, mode: str, runs_dir: Path) -> list[TrialRow]:
    """One row per trial from Ray's results and the trial's runs under RUNS_DIR/<trial id>."""
    rows = []
    for result in results:
        trial_dir = Path(result.path)
        history = result.metrics_dataframe
        values = history[metric_name].tolist() if history is not None and metric_name in history else []
        best = (max(values) if mode == "max" else min(values)) if values else None
        trial_id = (result.metrics or {}).get("trial_id")
        version = _version_of(runs_dir / trial_id) if trial_id else None
        final = None
        if version is not None:
            final = json.loads((version / "refit.json").read_text())["metrics"]["validation"].get(
                monitor.split("/", 1)[1]
            )
        iterations = int(result.metrics.get("training_iteration", 0)) if result.metrics else 0
        status = "error" if result.error else "finished" if version is not None else "stopped early"
        rows.append(
            TrialRow(
                str(trial_id or trial_dir.name),
                status,
                dict(result.config or {}),
                best,
                final,
                iterations,
                float((result.metrics or {}).get("time_total_s", 0.0)),
                str(version) if version else None,
            )
        )
    return rows


def write_outputs(
    rows: list[TrialRow], base: dict, out: Path, mode: str, monitor: str, timings: dict | None = None
) -> tuple[Path, Path, TrialRow]:
    """results.csv/json, best.yaml (a ready finetune config) and best_version/ (a copy, written atomically).

    `timings`: the search's own seconds per phase (Ray start, the search, ...), kept in results.json."""
    from refit.tune.space import apply_overrides

    finished = [r for r in rows if r.final is not None]
    if not finished:
        errors = sum(r.status == "error" for r in rows)
        raise RefitError(
            f"No trial finished ({len(rows)} trials, {errors} failed); see the trial logs under {out}."
        )
    # ties go to the trial made first, by id: Ray's order of results changes when a search is resumed
    sign = -1 if mode == "max" else 1
    best = min(finished, key=lambda r: (sign * r.final, r.trial))
    write_json(
        out / "results.json",
        {"trials": [vars(r) for r in rows], "best": vars(best), "monitor": monitor, "timings": timings or {}},
    )
    keys = sorted({k for r in rows for k in r.overrides})
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["trial", "status", *keys, f"best {monitor}", f"final {monitor}", "iterations", "seconds"]
        )
        for r in rows:
            writer.writerow(
                [
                    r.trial,
                    r.status,
                    *[r.overrides.get(k) for k in keys],
                    r.best,
                    r.final,
                    r.iterations,
                    round(r.seconds, 1),
                ]
            )
    best_config = apply_overrides(base, best.overrides)
    best_config["output_dir"] = str(out / "best_run")
    best_yaml = out / "best.yaml"
    atomic_write_text(
        best_yaml,
        f"# refit finetune --config {best_yaml}\n# best trial {best.trial}: {monitor} "
        f"{best.final:.4f}\n" + yaml.safe_dump(best_config, sort_keys=False),
    )
    best_version = out / "best_version"
    with atomic_dir(best_version) as tmp:
        shutil.copytree(best.version, tmp, dirs_exist_ok=True)
    return best_yaml, best_version, best
