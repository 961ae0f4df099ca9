"""refit finetune: fine-tune a pre-trained transformer on labelled text and write a model version.

    refit finetune --config configs/finetune/demo.yaml
    refit finetune --data.train train.jsonl --data.validation val.jsonl --trainer.max_epochs 2

The version lands in OUTPUT_DIR/version (model/, refit.json, reference/, exports/); checkpoints,
CSV logs and the offline W&B run sit beside it in OUTPUT_DIR.
"""

from __future__ import annotations

from pathlib import Path

from refit.config import config_to_dict
from refit.models import REFIT_JSON, read_version
from refit.report import print_metrics
from refit.settings import FinetuneConfig

Config = FinetuneConfig


def run(cfg: FinetuneConfig) -> Path | int | None:
    # setup: the config is parsed and validated by the CLI; everything else happens in the job. The job is
    # imported here, not at the top: it loads Lightning, which `refit finetune --help` does not need.
    from refit.train import VERSION_DIRNAME, run_finetune

    finished = Path(cfg.output_dir) / VERSION_DIRNAME
    if cfg.resume and (finished / REFIT_JSON).is_file():
        print(f"Nothing to resume: the run in {cfg.output_dir} is finished; its model version is {finished}.")
        return 0
    # run
    result = run_finetune(
        cfg.model,
        data=cfg.data,
        optim=cfg.optim,
        trainer=cfg.trainer,
        tracking=cfg.tracking,
        output_dir=cfg.output_dir,
        resume=cfg.resume,
        parent=cfg.parent,
        config=config_to_dict(cfg),
        resume_with_changes=cfg.resume_with_changes,
        store_texts=cfg.privacy.store_texts,
    )
    if result.version_dir is None:  # a non-zero rank of a distributed run: rank 0 reports
        return None
    # report
    print_metrics(result.metrics, title=f"refit finetune: {result.version_id}")
    if result.metrics.get("train") and len(result.metrics) > 1:
        # a train row below validation read as a broken run: it is not the final model on the training set
        print("train: averaged over the last epoch's batches while the weights still changed; the other")
        print("splits: scored by the best checkpoint, the weights the version holds.")
    from refit.evaluate import weakest_classes  # torch-heavy: not for `refit finetune --help`

    per_class = (read_version(result.version_dir, verify=False).get("metrics") or {}).get("per_class", {})
    per_class = per_class.get("validation")
    if per_class and len(per_class) > 2:  # macro averages hide which of K classes fails
        print(
            f"Lowest recall on validation: {weakest_classes(per_class)} (all classes: refit.json per_class)"
        )
    print(f"Model version: {result.version_dir}")
    print(
        f"Logs: {Path(cfg.output_dir) / 'logs'}"
        + (f"   W&B run: {result.wandb_dir}" if result.wandb_dir else "")
    )
    return result.version_dir
