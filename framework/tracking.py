"""Experiment tracking: W&B through Lightning's WandbLogger (offline by default) plus CSV logs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from refit.errors import ConfigError

__all__ = [
    "resolve_wandb_mode",
    "build_loggers",
    "log_version_artifact",
    "version_artifact",
    "finish",
    "log_drift_run",
    "log_summary_run",
]


def resolve_wandb_mode(enabled: bool, mode: str | None) -> str:
    """'offline' unless the config or $WANDB_MODE says otherwise; 'disabled' when tracking is off."""
    if not enabled:
        return "disabled"
    return mode or os.environ.get("WANDB_MODE") or "offline"


def _appending_csv_logger(save_dir: str):
    """A CSVLogger that adds to an existing logs/metrics.csv (a resumed run) instead of deleting it."""
    import csv

    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    class AppendingWriter(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:  # Lightning's version deletes the earlier rows
            if self._fs.isfile(self.metrics_file_path):
                with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                    self.metrics_keys = next(csv.reader(f), [])

    class AppendingCSVLogger(CSVLogger):
        @property
        def experiment(self):
            if self._experiment is None:
                self._fs.makedirs(self.root_dir, exist_ok=True)
                self._experiment = AppendingWriter(log_dir=self.log_dir)
            return self._experiment

    return AppendingCSVLogger(save_dir=save_dir, name="logs", version="")


def build_loggers(
    output_dir: str | Path,
    run_name: str,
    config: dict,
    wandb_mode: str,
    project: str,
    group: str | None = None,
    append: bool = False,
) -> list:
    """CSV logs always; a WandbLogger unless W&B is disabled (then no W&B files are written at all).

    `append` (a resumed run) keeps the rows already in logs/metrics.csv."""
    from lightning.pytorch.loggers import CSVLogger

    csv_logger = (
        _appending_csv_logger(str(output_dir))
        if append
        else CSVLogger(save_dir=str(output_dir), name="logs", version="")
    )
    loggers: list = [csv_logger]
    if wandb_mode != "disabled":
        try:
            import wandb  # noqa: F401
            from lightning.pytorch.loggers import WandbLogger
        except ImportError:
            raise ConfigError(
                "W&B tracking needs `pip install wandb`, or set 'tracking.wandb: false'."
            ) from None
        logger = WandbLogger(
            save_dir=str(output_dir),
            project=project,
            name=run_name,
            mode=wandb_mode,
            group=group,
            config=config,
        )
        # Lightning always passes anonymous=None, which W&B >= 0.19 answers with a deprecation warning on
        # every run; not passing it at all means the same thing (no anonymous logging).
        getattr(logger, "_wandb_init", {}).pop("anonymous", None)
        loggers.append(logger)
    for logger in loggers:
        logger.log_hyperparams(config)
    return loggers


def _wandb_logger(loggers: list):
    return next((lg for lg in loggers if type(lg).__name__ == "WandbLogger"), None)


def version_artifact(name: str, version_dir: str | Path, metadata: dict):
    """A W&B model artifact of the sealed version: only the files its manifests list (and the manifests),
    verified first. `add_dir` took the whole folder, staging of a write in progress included (an export's
    `.staging-*` and `.exports.old-swap`, `exports/.NAME.tmp-*`): files no load of the version accepts."""
    import wandb

    from refit.models.version import sealed_files  # here: refit.models pulls in transformers

    artifact = wandb.Artifact(name, type="model", metadata=metadata)
    folder = Path(version_dir)
    for rel in sealed_files(folder):
        artifact.add_file(str(folder / rel), name=rel)
    return artifact


def log_version_artifact(loggers: list, version_dir: str | Path, version_id: str, metrics: dict) -> None:
    """Upload the version folder as a W&B model artifact (offline runs store it for a later `wandb sync`)."""
    logger = _wandb_logger(loggers)
    if logger is None:
        return
    metadata = {"version_id": version_id, "metrics": metrics}
    artifact = version_artifact(f"model-{logger.experiment.id}", version_dir, metadata)
    logger.experiment.log_artifact(artifact, aliases=["latest", version_id])
    logger.experiment.summary.update(
        {f"final/{split}/{k}": v for split, values in metrics.items() for k, v in values.items()}
    )


def finish(loggers: list) -> str | None:
    """Close the W&B run; returns its local folder so the user can find (or `wandb sync`) it."""
    logger = _wandb_logger(loggers)
    if logger is None:
        return None
    run_dir = logger.experiment.dir
    logger.experiment.finish()
    return str(Path(run_dir).parent)


def _start_run(job_type: str, name: str, config: dict, out_dir: str | Path, wandb_mode: str, project: str):
    """The one W&B run of a standalone job (drift check, maintenance cycle), or None when tracking is off:
    the drift and summary runs are set up the same way, so they share this."""
    if wandb_mode == "disabled":
        return None
    import wandb

    return wandb.init(
        project=project, dir=str(out_dir), mode=wandb_mode, job_type=job_type, name=name, config=config
    )


def log_drift_run(report: dict, out_dir: str | Path, wandb_mode: str, project: str) -> str | None:
    """One W&B run per drift check: p-values per window and test, the decision, the HTML report."""
    run = _start_run(
        "drift", f"drift-{report['version']['id']}", report["config"], out_dir, wandb_mode, project
    )
    if run is None:
        return None
    import wandb

    tests = report["tests"]
    table = wandb.Table(columns=["window", "n", "drift", *[f"{t}_p" for t in tests]])
    for step, w in enumerate(report["windows"]):
        res = w.get("results", {})
        table.add_data(w["name"], w["size"], w["drift"], *[res.get(t, {}).get("p_value") for t in tests])
        if res:
            run.log(
                {
                    **{f"drift/{t}_p_value": r["p_value"] for t, r in res.items()},
                    "drift/any": int(w["drift"]),
                },
                step=step,
            )
    run.log({"drift/windows": table, "drift/report": wandb.Html(str(Path(out_dir) / "report.html"))})
    run.summary["drift"] = report["drift"]
    run_dir = str(Path(run.dir).parent)
    run.finish()
    return run_dir


def log_summary_run(
    job_type: str,
    name: str,
    summary: dict,
    out_dir: str | Path,
    wandb_mode: str,
    project: str,
    html_path: str | Path | None = None,
    also: Callable[[object], None] | None = None,
) -> str | None:
    """One short W&B run holding a job's outcome (e.g. a maintenance cycle) and its HTML report.

    `also(run)` logs more into the same run before it ends (a cycle's promotion mirror), so one job is one run."""
    scalars = {k: v for k, v in summary.items() if isinstance(v, (str, int, float, bool))}
    run = _start_run(job_type, name, scalars, out_dir, wandb_mode, project)
    if run is None:
        return None
    import wandb

    flat = {
        f"{k}/{k2}": v2
        for k, v in summary.items()
        if isinstance(v, dict)
        for k2, v2 in v.items()
        if isinstance(v2, (int, float, bool))
    }
    run.log({**flat, **({"report": wandb.Html(str(html_path))} if html_path else {})})
    run.summary.update(scalars)
    if also is not None:
        also(run)
    folder = str(Path(run.dir).parent)
    run.finish()
    return folder
