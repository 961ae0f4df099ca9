"""Where the benchmarks find the shared labelled datasets (never copied into the repo).

`$REFIT_DATASETS` if set, else `../shared/datasets` beside the checkout. One definition for every script,
so a worktree or a machine with the data elsewhere needs one variable, not a flag per script.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("REFIT_DATASETS") or ROOT.parent / "shared" / "datasets")


def read_rows(name: str, split: str) -> list[dict]:
    """The rows of one split of a shared dataset (JSONL: text, label)."""
    return [json.loads(line) for line in (DATASETS / name / f"{split}.jsonl").read_text().splitlines()]


def minilm_version(
    cache: Path, *, rows: int, reference_size: int, max_length: int = 64, source: str = "sst2"
) -> Path:
    """A MiniLM version fine-tuned 1 epoch on the first `rows` training rows of the shared data set `source`
    (sst2 by default), made once under `cache` (folder SOURCE-minilm).

    The drift, drift-power and estimate benchmarks all judge such a model; one recipe keeps them alike.
    """
    out = cache / f"{source}-minilm"
    if not (out / "version" / "refit.json").is_file():
        from refit.settings import DataConfig, OptimConfig, TrackingConfig, TrainerConfig
        from refit.train import run_finetune

        splits = DATASETS / source
        run_finetune(
            "minilm",
            data=DataConfig(
                train=str(splits / "train.jsonl"),
                validation=str(splits / "validation.jsonl"),
                max_length=max_length,
                max_train_samples=rows,
                reference_size=reference_size,
            ),
            optim=OptimConfig(lr=5e-5),
            trainer=TrainerConfig(max_epochs=1),
            tracking=TrackingConfig(wandb=False),
            output_dir=out,
        )
    return out / "version"
