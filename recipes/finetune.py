"""refit finetune: fine-tune a pre-trained transformer on labelled text and write a model version.

    refit finetune --config configs/finetune/demo.yaml
    refit finetune --data.train train.jsonl --data.validation val.jsonl --trainer.max_epochs 2

The version lands in OUTPUT_DIR/version (model/, refit.json, reference/, exports/); checkpoints,
CSV logs and the offline W&B run sit beside it in OUTPUT_DIR.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import lightning as L

from refit.config import config_to_dict
from refit.data import TextDataModule, load_splits
from refit.errors import ConfigError
from refit.models import embed_texts, load_classifier, new_version_id, write_version
from refit.report import print_metrics
from refit.settings import FinetuneConfig
from refit.tracking import build_loggers, finish, log_version_artifact, resolve_wandb_mode
from refit.train import LAST_CKPT, SequenceClassifier, build_trainer

Config = FinetuneConfig
DESCRIPTION = "Fine-tune a pre-trained transformer on labelled text and write a model version."


def _check_output_dir(out: Path, resume: bool) -> Path | None:
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
    return {k[len(prefix):]: float(v) for k, v in values.items() if k.startswith(prefix) and "loss" not in k}


def run(cfg: FinetuneConfig) -> Path | None:
    # --- setup -------------------------------------------------------------------------------------
    out = Path(cfg.output_dir)
    ckpt = _check_output_dir(out, cfg.resume)
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    d, t = cfg.data, cfg.trainer
    splits = load_splits(d.train, d.validation, d.test, d.dataset, d.dataset_config, d.text_column,
                         d.label_column, d.max_train_samples)
    model, tokenizer, model_parent = load_classifier(cfg.model, splits.label_names)
    data = TextDataModule(splits, tokenizer, d.max_length, d.batch_size, d.eval_batch_size,
                          d.group_by_length, d.num_workers, seed=t.seed)
    module = SequenceClassifier(model, len(splits.label_names), **vars(cfg.optim))
    config = config_to_dict(cfg)
    loggers = build_loggers(out, cfg.tracking.name or out.name, config,
                            resolve_wandb_mode(cfg.tracking.wandb, cfg.tracking.mode), cfg.tracking.project)
    has_val = data.has("validation")
    trainer = build_trainer(
        out, loggers, has_val, t.max_epochs, t.max_steps, t.precision, t.accelerator, t.devices, t.strategy,
        t.num_nodes, t.gradient_clip_val, t.accumulate_grad_batches, t.val_check_interval,
        t.log_every_n_steps, t.monitor, t.mode, t.early_stopping_patience, t.checkpoint_every_n_steps,
        t.deterministic,
    )

    # --- run ---------------------------------------------------------------------------------------
    started = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=ckpt)
    train_seconds = time.perf_counter() - started
    metrics = {"train": _split_metrics(trainer.callback_metrics, "train/")}
    best = trainer.checkpoint_callback.best_model_path if has_val else ""
    if has_val:  # reload the best checkpoint's weights into `module`, then score it
        metrics["validation"] = _split_metrics(trainer.validate(module, data, ckpt_path=best or None,
                                                                verbose=False)[0], "val/")
    if data.has("test"):
        metrics["test"] = _split_metrics(trainer.test(module, data, verbose=False)[0], "test/")
    if not trainer.is_global_zero:
        return None

    ref_split = "validation" if has_val else "test" if data.has("test") else None
    reference = None
    if ref_split and d.reference_size:
        texts = splits.texts[ref_split]
        sample = sorted(random.Random(t.seed).sample(range(len(texts)), min(d.reference_size, len(texts))))
        ref_texts = [texts[i] for i in sample]
        embeddings = embed_texts(module.model, tokenizer, ref_texts, d.eval_batch_size, d.max_length)
        reference = (embeddings, ref_texts, {"split": ref_split, "pooling": "mean", "layer": -1,
                                             "max_length": d.max_length})
    version_id = new_version_id()
    meta = {
        "version_id": version_id,
        "parent": cfg.parent or model_parent,
        "recipe": "finetune",
        "base_model": cfg.model,
        "config": config,
        "labels": splits.label_names,
        "data": splits.fingerprints,
        "metrics": metrics,
        "training": {
            "global_step": trainer.global_step,
            "epochs": trainer.current_epoch,
            "seconds": round(train_seconds, 1),
            "best_checkpoint": best or None,
            "best_score": float(trainer.checkpoint_callback.best_model_score)
            if has_val and trainer.checkpoint_callback.best_model_score is not None else None,
        },
    }
    version_dir = write_version(out / "version", module.model, tokenizer, meta, reference)

    # --- report ------------------------------------------------------------------------------------
    if cfg.tracking.log_version:
        log_version_artifact(loggers, version_dir, version_id, metrics)
    wandb_dir = finish(loggers)
    print_metrics(metrics, title=f"refit finetune: {version_id}")
    print(f"Model version: {version_dir}")
    print(f"Logs: {out / 'logs'}" + (f"   W&B run: {wandb_dir}" if wandb_dir else ""))
    return version_dir
