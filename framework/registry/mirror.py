"""Mirroring the registry into W&B: versions as model artifacts, aliases as artifact aliases.

The SQLite registry stays the source of truth; the mirror is for people who browse models in W&B. Offline
runs keep the mirror locally until `wandb sync`.
"""

from __future__ import annotations

from pathlib import Path

from refit.io import check_name
from refit.tracking import version_artifact

__all__ = ["mirror_alias"]


def mirror_alias(
    out_dir: str | Path,
    version_path: str | Path,
    version_id: str,
    alias: str,
    reason: str,
    wandb_mode: str,
    project: str,
    run=None,
) -> str | None:
    """Log the version as artifact `refit-model` with aliases [alias, version id]; returns the run folder.

    With `run` (an open W&B run, e.g. a maintenance cycle's) the artifact goes into it and it stays open."""
    check_name(version_id, "version id")
    check_name(alias, "alias name")
    if wandb_mode == "disabled":
        return None
    import wandb

    def log_to(target) -> None:
        # Built only once a run is open: W&B's quiet mode (WANDB_SILENT, which the CLI sets) takes effect
        # at wandb.init, and before it `add_dir` printed "wandb: Adding directory to artifact ..." on every
        # promote, rollback and alias move. Only the sealed version's files go in (tracking.version_artifact).
        artifact = version_artifact("refit-model", version_path, {"version_id": version_id, "reason": reason})
        target.log_artifact(artifact, aliases=[alias, version_id])

    if run is not None:
        log_to(run)
        return str(Path(run.dir).parent)
    run = wandb.init(
        project=project,
        dir=str(out_dir),
        mode=wandb_mode,
        job_type="registry",
        name=f"{alias}-{version_id}",
        config={"alias": alias, "version": version_id, "reason": reason},
    )
    log_to(run)
    folder = str(Path(run.dir).parent)
    run.finish()
    return folder
