"""Building the Lightning Trainer: precision, devices, strategy, checkpoints, early stopping."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.strategies import StrategyRegistry

from refit.errors import ConfigError
from refit.train.resume import CKPT_KEY

__all__ = ["build_trainer", "AtomicCheckpointIO", "ResumeCheckpoint", "LAST_CKPT"]

LAST_CKPT = "last.ckpt"


class ResumeCheckpoint(Callback):
    """Keeps checkpoints/last.ckpt current so `--resume` loses little work.

    Lightning's ModelCheckpoint saves only on its own schedule; this also saves every N steps, after
    every validation, at the end of training and when the run is interrupted (Ctrl-C, an exception).
    """

    def __init__(self, dirpath: str | Path, every_n_steps: int = 0, run_info: dict | None = None) -> None:
        self.path = Path(dirpath) / LAST_CKPT
        self.every_n_steps = every_n_steps
        self.run_info = run_info
        self._saved_at = -1

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """Store what the run is trained with (config, data fingerprints): `--resume` compares against it."""
        if self.run_info is not None:
            checkpoint[CKPT_KEY] = self.run_info

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.global_step != self._saved_at:
            trainer.save_checkpoint(self.path)
            self._saved_at = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0 and trainer.global_step:
            self._save(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._save(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if trainer.state.fn == "fit" and trainer.global_step > 0:
            trainer.save_checkpoint(self.path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written beside their destination, fsync'd, then renamed over it: whole or not at all.

    Lightning's own save stages the file in the system temp folder and moves it into place; where that
    folder is another filesystem (a tmpfs /tmp) the move is a copy into the truncated old file, so a kill
    during it left half of last.ckpt, the run's only checkpoint. A rename within one folder is atomic.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options.")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        with _ctrl_c_after():
            try:
                with tmp.open("wb") as f:
                    torch.save(checkpoint, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise


@contextlib.contextmanager
def _ctrl_c_after() -> Iterator[None]:
    """Hold a Ctrl-C back until the block ends, then deliver it to the handler there was.

    A KeyboardInterrupt inside torch.save's zip writer turned into a RuntimeError from its __exit__
    ("unexpected pos"), so the run died with a traceback and exit 1 instead of stopping cleanly (130) with
    its last checkpoint; a save takes milliseconds to seconds, so the user waits no longer than that. Only
    the main thread can take signals (a Tune trial's thread saves as before)."""
    # getsignal is None where the handler was not set from Python (an embedding host): it cannot be restored
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield
        return
    pending: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:
            signal.raise_signal(signal.SIGINT)


class _CheckValidationInterval(Callback):
    """An integer `val_check_interval` larger than an epoch's batches: Lightning refuses it only once `fit`
    has set up the data, with a traceback; this says it as a config error at the same moment, no training yet.
    """

    def __init__(self, every_n_batches: int) -> None:
        self.every = every_n_batches

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or trainer.datamodule is None:
            return
        batches = len(trainer.datamodule.train_dataloader()) // max(1, trainer.world_size)
        if self.every > batches:
            raise ConfigError(
                f"Invalid value for 'trainer.val_check_interval': {self.every} batches, but an epoch has only "
                f"{batches}. Give at most {batches}, or a share of an epoch (0 < x <= 1, e.g. 0.5)."
            )


def build_trainer(
    output_dir: str | Path,
    *,
    loggers: list,
    has_validation: bool,
    max_epochs: int = 3,
    max_steps: int = -1,
    precision: str = "32",
    accelerator: str = "auto",
    devices: int | str | list[int] = "auto",
    strategy: str = "auto",
    num_nodes: int = 1,
    gradient_clip_val: float = 1.0,
    accumulate_grad_batches: int = 1,
    val_check_interval: int | float = 1.0,
    log_every_n_steps: int = 10,
    monitor: str = "val/accuracy",
    mode: str = "max",
    early_stopping_patience: int = 3,
    checkpoint_every_n_steps: int = 0,
    deterministic: bool = False,
    extra_callbacks: list[Callback] | None = None,
    run_info: dict | None = None,
    resumable: bool = True,
) -> L.Trainer:
    """A Trainer whose best checkpoint (on `monitor`) ends up in output_dir/checkpoints.

    `resumable` False is for runs whose supervisor restarts them itself (Ray Tune trials): no last.ckpt for
    `--resume`, and a weights-only best.ckpt (a third of a full one: no optimizer state), which is all the
    final evaluation reloads.

    Settings Lightning would refuse (an unknown strategy, an accelerator or device count this machine does
    not have, a precision it cannot run) are a ConfigError naming the `trainer.` key, before any training.
    """
    strategies = ["auto", *StrategyRegistry.available_strategies()]
    if isinstance(strategy, str) and strategy not in strategies:
        raise ConfigError(
            f"Invalid value for 'trainer.strategy': '{strategy}' is not a Lightning strategy; choose from "
            f"{', '.join(s for s in strategies if 'xla' not in s and 'tpu' not in s)}."
        )
    ckpt_dir = Path(output_dir) / "checkpoints"
    callbacks: list[Callback] = (
        [ResumeCheckpoint(ckpt_dir, checkpoint_every_n_steps, run_info)] if resumable else []
    )
    if has_validation:
        callbacks.append(
            ModelCheckpoint(
                dirpath=ckpt_dir,
                filename="best",
                monitor=monitor,
                mode=mode,
                save_top_k=1,
                enable_version_counter=False,
                auto_insert_metric_name=False,
                save_weights_only=not resumable,
            )
        )
        if early_stopping_patience:
            callbacks.append(
                EarlyStopping(
                    monitor=monitor,
                    mode=mode,
                    patience=early_stopping_patience,
                    check_on_train_epoch_end=False,
                )
            )
    if has_validation and isinstance(val_check_interval, int) and not isinstance(val_check_interval, bool):
        callbacks.append(_CheckValidationInterval(val_check_interval))
    callbacks += extra_callbacks or []
    try:
        return L.Trainer(
            default_root_dir=str(output_dir),
            max_epochs=max_epochs,
            max_steps=max_steps,
            precision=precision,
            accelerator=accelerator,
            devices=devices,
            strategy=strategy,
            num_nodes=num_nodes,
            gradient_clip_val=gradient_clip_val or None,
            accumulate_grad_batches=accumulate_grad_batches,
            val_check_interval=val_check_interval if has_validation else None,
            limit_val_batches=None if has_validation else 0,
            log_every_n_steps=log_every_n_steps,
            deterministic=deterministic,
            logger=loggers or False,
            callbacks=callbacks,
            plugins=[AtomicCheckpointIO()],
            num_sanity_val_steps=0,
            enable_model_summary=False,
        )
    except (MisconfigurationException, ValueError, TypeError) as e:  # Lightning's checks of these settings
        raise ConfigError(
            f"Lightning cannot run with trainer.accelerator={accelerator!r}, trainer.devices={devices!r}, "
            f"trainer.strategy={strategy!r}, trainer.precision={precision!r} on this machine: {e}"
        ) from None
