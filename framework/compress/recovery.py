"""Recovery fine-tune after pruning: the regular fine-tune job, with the pruned zeros held at zero.

It calls `refit.train.run_finetune` (the one training code path) on the pruned model with the parent's
data and settings; `KeepZeros` re-applies the zero pattern after every optimizer step, because gradient
updates (and AdamW's moments) would otherwise regrow pruned weights within a few steps.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from refit.compress.prune import prunable_linears
from refit.errors import ConfigError
from refit.settings import DataConfig, OptimConfig, TrackingConfig, TrainerConfig
from refit.train import run_finetune

__all__ = ["KeepZeros", "recover"]


class KeepZeros(Callback):
    """Multiplies every prunable weight by its initial non-zero mask after each training batch."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.masks = [(m.weight, m.weight != 0) for _, m in prunable_linears(pl_module.model)]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        with torch.no_grad():
            for weight, mask in self.masks:
                weight.mul_(mask)


def _section(cls, values: dict, **overrides):
    """A config section from the parent's recorded config, keeping only keys the section still has."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names}, **overrides)


def recover(
    model_dir: Path,
    parent_meta: dict,
    output_dir: Path,
    *,
    epochs: int,
    lr: float,
    max_train_samples: int,
    tracking: TrackingConfig,
) -> Path:
    """Fine-tune the pruned model in `model_dir` for `epochs` on the parent's training data.

    Returns the model folder of the recovered version written by the fine-tune job (an intermediate:
    the compress recipe gates it and writes the child version itself).
    """
    config = parent_meta.get("config") or {}
    if "data" not in config:
        raise ConfigError(
            "The parent version records no training config, so a recovery fine-tune cannot find "
            "its data. Set recovery.epochs to 0."
        )
    data = _section(
        DataConfig, {**config["data"], "max_train_samples": max_train_samples, "reference_size": 0}
    )
    optim = _section(OptimConfig, {**config.get("optim", {}), "lr": lr})
    trainer = _section(TrainerConfig, {**config.get("trainer", {}), "max_epochs": epochs, "max_steps": -1})
    result = run_finetune(
        str(model_dir),
        data=data,
        optim=optim,
        trainer=trainer,
        tracking=tracking,
        output_dir=output_dir,
        parent=parent_meta.get("version_id"),
        config={
            "data": dataclasses.asdict(data),
            "optim": dataclasses.asdict(optim),
            "trainer": dataclasses.asdict(trainer),
        },
        callbacks=[KeepZeros()],
    )
    return Path(result.version_dir) / "model"
