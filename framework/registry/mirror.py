"""Mirroring the registry into W&B: versions as model artifacts, aliases as artifact aliases.

The SQLite registry stays the source of truth; the mirror is for people who browse models in W&B. Offline
runs keep the mirror locally until `wandb sync`.
"""

from __future__ import annotations

from pathlib import Path

from refit.io import check_name

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

    artifact = wandb.Artifact(
        "refit-model", type="model", metadata={"version_id": version_id, "reason": reason}
    )
    artifact.add_dir(str(version_path))
    if run is not None:
        run.log_artifact(artifact, aliases=[alias, version_id])
        return str(Path(run.dir).parent)
    run = wandb.init(
        project=project,
        dir=str(out_dir),
        mode=wandb_mode,
        job_type="registry",
        name=f"{alias}-{version_id}",
        config={"alias": alias, "version": version_id, "reason": reason},
    )
    run.log_artifact(artifact, aliases=[alias, version_id])
    folder = str(Path(run.dir).parent)
    run.finish()
    return folder
