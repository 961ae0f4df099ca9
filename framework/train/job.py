"""The fine-tune job: data -> model -> Lightning fit -> evaluation -> model version.

It is library code (not only the `finetune` recipe) because `refit tune` trials and `refit maintain`
retraining must run exactly this code path, not a second training loop.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerStatus

from refit.data import TextDataModule, load_splits
from refit.errors import ConfigError, RunInterrupted
from refit.models import encode_texts, load_classifier, new_version_id, write_version
from refit.settings import DataConfig, OptimConfig, TrackingConfig, TrainerConfig
from refit.tracking import build_loggers, finish, log_version_artifact, resolve_wandb_mode
from refit.train.module import SequenceClassifier
from refit.train.trainer import LAST_CKPT, build_trainer

__all__ = ["FinetuneResult", "run_finetune", "VERSION_DIRNAME"]

VERSION_DIRNAME = "version"


@dataclass
class FinetuneResult:
    version_dir: Path | None  # None on non-zero ranks of a distributed run
    version_id: str | None
    metrics: dict[str, dict[str, float]]
    wandb_dir: str | None


def _checkpoint_to_resume(out: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from; refuses to silently overwrite an earlier run's checkpoints."""
    last = out / "checkpoints" / LAST_CKPT
    if resume:
        if not last.is_file():
            raise ConfigError(f"--resume: no checkpoint to resume from at {last}.")
        return last
    if last.is_file():
        raise ConfigError(
            f"{out} already holds a run (checkpoints/{LAST_CKPT}). Continue it with --resume, or pick a new "
            "--output_dir."
        )
    return None


def _split_metrics(values: dict, prefix: str) -> dict[str, float]:
    return {k[len(prefix):].removesuffix("_epoch"): float(v) for k, v in values.items()
            if k.startswith(prefix) and not k.endswith("_step")}


def run_finetune(
    model: str,
    data: DataConfig,
    optim: OptimConfig,
    trainer: TrainerConfig,
    tracking: TrackingConfig,
    output_dir: str | Path,
    resume: bool = False,
    parent: str | None = None,
    config: dict | None = None,
    callbacks: list[Callback] | None = None,
    wandb_group: str | None = None,
    resume_from: str | Path | None = None,
    reference_texts: list[str] | None = None,
) -> FinetuneResult:
    """Fine-tune, evaluate the best checkpoint on validation and test, and write OUTPUT_DIR/version.

    `resume_from` continues from a given Lightning checkpoint (Ray Tune hands trials theirs on restore).
    `reference_texts` replaces the validation sample as the drift reference (held-out inputs the caller
    chose, e.g. a maintenance cycle's recent production inputs; never rows the model was trained on).
    """
    out = Path(output_dir)
    ckpt = Path(resume_from) if resume_from else _checkpoint_to_resume(out, resume)
    d, t = data, trainer
    L.seed_everything(t.seed, workers=True, verbose=False)
    splits = load_splits(d.train, d.validation, d.test, d.dataset, d.dataset_config, d.text_column,
                         d.label_column, d.max_train_samples)
    hf_model, tokenizer, model_parent = load_classifier(model, splits.label_names)
    datamodule = TextDataModule(splits, tokenizer, d.max_length, d.batch_size, d.eval_batch_size,
                                d.group_by_length, d.num_workers, seed=t.seed)
    module = SequenceClassifier(hf_model, len(splits.label_names), **asdict(optim))
    config = config or {}
    loggers = build_loggers(out, tracking.name or out.name, config,
                            resolve_wandb_mode(tracking.wandb, tracking.mode), tracking.project, wandb_group)
    has_val = datamodule.has("validation")
    pl_trainer = build_trainer(
        out, loggers, has_val, t.max_epochs, t.max_steps, t.precision, t.accelerator, t.devices, t.strategy,
        t.num_nodes, t.gradient_clip_val, t.accumulate_grad_batches, t.val_check_interval,
        t.log_every_n_steps, t.monitor, t.mode, t.early_stopping_patience, t.checkpoint_every_n_steps,
        t.deterministic, callbacks,
    )

    started = time.perf_counter()
    try:
        pl_trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
    except SystemExit:  # Lightning turns Ctrl-C into sys.exit(1) after its graceful shutdown
        if pl_trainer.state.status != TrainerStatus.INTERRUPTED:
            raise
        raise RunInterrupted(
            f"Interrupted at step {pl_trainer.global_step}; checkpoint saved to "
            f"{out / 'checkpoints' / LAST_CKPT}. Continue with the same command plus --resume."
        ) from None
    train_seconds = time.perf_counter() - started
    metrics = {"train": _split_metrics(pl_trainer.callback_metrics, "train/")}
    best_cb = pl_trainer.checkpoint_callback if has_val else None
    best = best_cb.best_model_path if best_cb else ""
    if has_val:  # reloads the best checkpoint's weights into `module`, then scores it
        values = pl_trainer.validate(module, datamodule, ckpt_path=best or None, verbose=False)[0]
        metrics["validation"] = _split_metrics(values, "val/")
    if datamodule.has("test"):
        metrics["test"] = _split_metrics(pl_trainer.test(module, datamodule, verbose=False)[0], "test/")
    if not pl_trainer.is_global_zero:
        return FinetuneResult(None, None, metrics, None)

    reference = None
    ref_split = "validation" if has_val else "test" if datamodule.has("test") else None
    if reference_texts:
        ref_split = "given"
    if ref_split and d.reference_size:
        texts = reference_texts or splits.texts[ref_split]
        sample = sorted(random.Random(t.seed).sample(range(len(texts)), min(d.reference_size, len(texts))))
        ref_texts = [texts[i] for i in sample]
        encoded = encode_texts(module.model, tokenizer, ref_texts, d.eval_batch_size, d.max_length)
        reference = (encoded.embeddings, encoded.probs, ref_texts,
                     {"split": ref_split, "pooling": "mean", "layer": -1, "max_length": d.max_length})
    version_id = new_version_id()
    meta = {
        "version_id": version_id,
        "parent": parent or model_parent,
        "recipe": "finetune",
        "base_model": model,
        "config": config,
        "labels": splits.label_names,
        "data": splits.fingerprints,
        "metrics": metrics,
        "training": {
            "global_step": pl_trainer.global_step,
            "epochs": pl_trainer.current_epoch,
            "seconds": round(train_seconds, 1),
            "best_checkpoint": best or None,
            "best_score": float(best_cb.best_model_score)
            if best_cb is not None and best_cb.best_model_score is not None else None,
        },
    }
    from refit.drift.check import fit_reference_state

    # detector state (bandwidth, PCA), fitted on the reference alone, inside the version's atomic write
    seal = (lambda tmp: fit_reference_state(tmp, t.seed)) if reference is not None else None
    version_dir = write_version(out / VERSION_DIRNAME, module.model, tokenizer, meta, reference, before_seal=seal)
    if tracking.log_version:
        log_version_artifact(loggers, version_dir, version_id, metrics)
    return FinetuneResult(version_dir, version_id, metrics, finish(loggers))
