"""Checks before `--resume`: the checkpoint is readable and was made by the same training setup.

Resuming with another learning rate, batch size or data silently gives a model that no config describes
(its refit.json would record the new config for weights mostly trained under the old one), so such a
resume is refused unless the user says `--resume_with_changes`. What a run is trained with is stored in
each checkpoint by `ResumeCheckpoint` (key `refit`), so the check needs no file beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from refit.data import file_fingerprint
from refit.errors import ConfigError

__all__ = ["CKPT_KEY", "TRAINING_KEYS", "read_checkpoint", "check_resume", "config_changes"]

CKPT_KEY = "refit"
# Keys that define what is trained. Everything else (max_epochs/max_steps to extend a run, devices, logging,
# tracking, output folders, eval batch size) may change on resume.
TRAINING_KEYS = (
    "model",
    "data.train",
    "data.validation",
    "data.test",
    "data.dataset",
    "data.dataset_config",
    "data.text_column",
    "data.label_column",
    "data.max_length",
    "data.batch_size",
    "data.max_train_samples",
    "data.group_by_length",
    "optim.lr",
    "optim.weight_decay",
    "optim.warmup_ratio",
    "optim.betas",
    "optim.eps",
    "trainer.precision",
    "trainer.accumulate_grad_batches",
    "trainer.gradient_clip_val",
    "trainer.seed",
    "trainer.monitor",
    "trainer.mode",
)


def read_checkpoint(path: Path) -> dict:
    """The checkpoint as a dict, or a ConfigError when it is truncated, not a Lightning checkpoint, or holds
    anything but tensors and plain values.

    `weights_only=True`: a checkpoint is a pickle, and a run folder can come from anyone (copied, shared,
    downloaded); with `weights_only=False` a crafted last.ckpt ran its code here on `--resume`, before any
    check. refit's checkpoints hold only tensors, numbers, strings and containers, so the safe unpickler
    reads them all; Lightning's own load on resume uses torch's default, which is the same.
    """
    import pickle

    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:  # what the safe unpickler raises for a global it will not load
        raise ConfigError(
            f"--resume: the checkpoint {path} holds Python objects other than tensors and plain values "
            f"({str(e).splitlines()[0][:160]}); refit does not unpickle such a file, since loading it could run "
            "code. Resume only from checkpoints refit wrote, or start over in a new --output_dir."
        ) from None
    except Exception as e:  # torch raises RuntimeError, EOFError, ... for a damaged file
        raise ConfigError(
            f"--resume: the checkpoint {path} is damaged or incomplete ({type(e).__name__}: {str(e)[:160]}). "
            "It cannot be continued: restore it, or start over without --resume in a new --output_dir."
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "loops" not in ckpt:
        raise ConfigError(f"--resume: {path} is not a Lightning training checkpoint (no state_dict/loops).")
    return ckpt


def _get(config: dict, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return list(value) if isinstance(value, tuple) else value


def config_changes(saved: dict, current: dict, saved_data: dict | None = None) -> list[str]:
    """'key: checkpoint X, now Y' for each training-defining difference, data file contents included."""
    changes = [
        f"{k}: checkpoint {_get(saved, k)!r}, now {_get(current, k)!r}"
        for k in TRAINING_KEYS
        if _get(saved, k) != _get(current, k)
    ]
    for split, fp in (saved_data or {}).items():
        path = _get(current, f"data.{split}")
        if "path" not in fp or not path or not Path(path).is_file():
            continue
        if file_fingerprint(path, fp.get("rows", 0))["sha256"] != fp.get("sha256"):
            changes.append(f"data.{split}: the file {path} changed since the checkpoint (sha256 differs)")
    return changes


def check_resume(checkpoint: Path, config: dict | None, allow_changes: bool) -> None:
    """Refuse a damaged checkpoint, or (unless allow_changes) one trained with another setup than `config`."""
    ckpt = read_checkpoint(checkpoint)
    info = ckpt.get(CKPT_KEY) or {}
    if not config or not info.get("config"):  # a checkpoint from before refit stored its config
        return
    changes = config_changes(info["config"], config, info.get("data"))
    if changes and not allow_changes:
        raise ConfigError(
            f"--resume: this config differs from the one {checkpoint} was trained with: "
            + "; ".join(changes)
            + ". Resume with the same settings, or add --resume_with_changes to continue under the new ones."
        )
