"""The fine-tune job: data -> model -> Lightning fit -> evaluation -> model version.

It is library code (not only the `finetune` recipe) because `refit tune` trials and `refit maintain`
retraining must run exactly this code path, not a second training loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerStatus

from refit.data import Splits, TextDataModule, load_splits
from refit.drift.embed import ENCODER_LAYER, ENCODER_POOLING, load_encoder
from refit.drift.reference import build_reference, reference_encoder, sample_texts
from refit.errors import ConfigError, RunInterrupted
from refit.estimate import Calibration, Probe, fit_calibration, fit_probe
from refit.evaluate import per_class_scores
from refit.inference import TorchPredictor, encode, predict_logits
from refit.io import hold_folder
from refit.models import check_max_length, encode_texts, load_classifier, new_version_id, write_version
from refit.settings import DataConfig, OptimConfig, TrackingConfig, TrainerConfig
from refit.tracking import build_loggers, finish, log_version_artifact, resolve_wandb_mode
from refit.train.module import SequenceClassifier
from refit.train.resume import check_resume
from refit.train.trainer import LAST_CKPT, build_trainer

__all__ = ["FinetuneResult", "run_finetune", "check_monitor_defined", "VERSION_DIRNAME"]

VERSION_DIRNAME = "version"
log = logging.getLogger("refit.train")


@dataclass
class FinetuneResult:
    version_dir: Path | None  # None on non-zero ranks of a distributed run
    version_id: str | None
    metrics: dict[str, dict[str, float]]
    wandb_dir: str | None


def _checkpoint_to_resume(
    out: Path, resume: bool, config: dict | None = None, with_changes: bool = False
) -> Path | None:
    """The checkpoint to resume from; refuses to silently overwrite an earlier run's checkpoints, to resume
    from a damaged checkpoint, or (unless `with_changes`) under another training setup than its own."""
    last = out / "checkpoints" / LAST_CKPT
    if resume:
        if not last.is_file():
            raise ConfigError(f"--resume: no checkpoint to resume from at {last}.")
        check_resume(last, config, with_changes)
        return last
    if last.is_file() and (out / VERSION_DIRNAME / "refit.json").is_file():
        # rerunning the quickstart's command is the usual way here: --resume would only say "finished"
        raise ConfigError(
            f"{out} already holds a finished run (its model version is {out / VERSION_DIRNAME}). Give a new "
            "--output_dir for another run, or delete that folder to redo this one."
        )
    if last.is_file():
        raise ConfigError(
            f"{out} already holds a run (checkpoints/{LAST_CKPT}). Continue it with --resume, or pick a new "
            "--output_dir."
        )
    return None


def _output_lock(out: Path):
    """Hold OUTPUT_DIR for this run (refit.io.hold_folder); ranks other than 0 of a distributed run are the
    same run and do not take it."""
    if any(int(os.environ.get(k) or 0) > 0 for k in ("RANK", "LOCAL_RANK", "NODE_RANK")):
        return contextlib.nullcontext(out)
    return hold_folder(out, "refit run")


def _split_metrics(values: dict, prefix: str) -> dict[str, float | None]:
    """One split's logged metrics for refit.json. An AUROC that was not logged (undefined: the split holds
    one class) is recorded as None, as refit.evaluate scores it, so reports show "n/a (one class)"."""
    metrics: dict[str, float | None] = {
        k[len(prefix) :].removesuffix("_epoch"): float(v)
        for k, v in values.items()
        if k.startswith(prefix) and not k.endswith("_step")
    }
    if metrics:  # none at all: the epoch's train metrics were not reported (a resumed run), not one class
        metrics.setdefault("auroc", None)
    return metrics


def check_monitor_defined(monitor: str, splits: Splits, validation_file: str | None) -> None:
    """Refuse to monitor AUROC on a validation split of one class, before any training: it is undefined
    there every epoch, so the best checkpoint and early stopping would have nothing to compare (Lightning
    stops at the first validation, after an epoch of training, with a message about a missing key).
    `refit tune` makes the same check once, before Ray starts (each trial's worker failed on it in turn)."""
    if not monitor.endswith("/auroc") or "validation" not in splits.labels:
        return
    present = sorted(set(splits.labels["validation"]))
    if len(present) < 2:
        names = ", ".join(repr(splits.label_names[i]) for i in present)
        where = validation_file or "the dataset's validation split"
        raise ConfigError(
            f"'trainer.monitor' is '{monitor}', but the validation data ({where}) holds one class ({names}): "
            "AUROC is undefined there, so no checkpoint could be chosen by it. Monitor another metric "
            "(--trainer.monitor val/loss --trainer.mode min, or val/accuracy), or give validation data "
            "with at least two classes."
        )


@dataclass
class _Setup:
    """What the fit needs, built from the config groups."""

    out: Path
    ckpt: Path | None
    splits: Splits
    tokenizer: object
    model_parent: str | None
    datamodule: TextDataModule
    module: SequenceClassifier
    loggers: list
    trainer: L.Trainer
    reference_encoder: str | None  # what embeds the version's drift reference (None: the version itself)


def _setup(
    model: str,
    d: DataConfig,
    optim: OptimConfig,
    t: TrainerConfig,
    tracking: TrackingConfig,
    out: Path,
    ckpt: Path | None,
    config: dict,
    callbacks: list[Callback] | None,
    wandb_group: str | None,
    resumable: bool = True,
) -> _Setup:
    """Data, model, loggers and Trainer; every config group is unpacked into plain values here."""
    L.seed_everything(t.seed, workers=True, verbose=False)
    splits = load_splits(
        d.train,
        d.validation,
        d.test,
        d.dataset,
        d.dataset_config,
        d.text_column,
        d.label_column,
        d.max_train_samples,
    )
    check_monitor_defined(t.monitor, splits, d.validation)
    hf_model, tokenizer, model_parent = load_classifier(model, splits.label_names)
    check_max_length(hf_model, d.max_length)
    encoder = reference_encoder(d.reference_encoder, model) if d.reference_size else None
    # an encoder other than the model just loaded (chosen, or a parent version's) must load now, not
    # after the training that a failure at the version's write would throw away
    if encoder is not None and (d.reference_encoder != "base" or model_parent is not None):
        load_encoder(encoder)
    datamodule = TextDataModule(
        splits,
        tokenizer,
        d.max_length,
        d.batch_size,
        d.eval_batch_size,
        d.group_by_length,
        d.num_workers,
        seed=t.seed,
    )
    module = SequenceClassifier(hf_model, len(splits.label_names), **asdict(optim))
    loggers = build_loggers(
        out,
        tracking.name or out.name,
        config,
        resolve_wandb_mode(tracking.wandb, tracking.mode),
        tracking.project,
        wandb_group,
        append=ckpt is not None,
    )
    pl_trainer = build_trainer(
        out,
        loggers=loggers,
        has_validation=datamodule.has("validation"),
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        precision=t.precision,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        gradient_clip_val=t.gradient_clip_val,
        accumulate_grad_batches=t.accumulate_grad_batches,
        val_check_interval=t.val_check_interval,
        log_every_n_steps=t.log_every_n_steps,
        monitor=t.monitor,
        mode=t.mode,
        early_stopping_patience=t.early_stopping_patience,
        checkpoint_every_n_steps=t.checkpoint_every_n_steps,
        deterministic=t.deterministic,
        extra_callbacks=callbacks,
        run_info={"config": config, "data": splits.fingerprints},
        resumable=resumable,
    )
    return _Setup(
        out, ckpt, splits, tokenizer, model_parent, datamodule, module, loggers, pl_trainer, encoder
    )


def _fit(s: _Setup) -> float:
    """Lightning fit (resumable); returns the training seconds. Ctrl-C becomes RunInterrupted."""
    started = time.perf_counter()
    try:
        # weights_only: a checkpoint is a pickle; only tensors and plain values are read back (resume.py)
        s.trainer.fit(s.module, datamodule=s.datamodule, ckpt_path=s.ckpt, weights_only=True)
    except SystemExit:  # Lightning turns Ctrl-C into sys.exit(1) after its graceful shutdown
        if s.trainer.state.status != TrainerStatus.INTERRUPTED:
            raise
        # Lightning ignores SIGINT from the first Ctrl-C on and never restores it: give the process (a
        # `maintain --every` loop, a notebook, child processes, which inherit SIG_IGN) its Ctrl-C back.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)
        raise RunInterrupted(
            f"Interrupted at step {s.trainer.global_step}; checkpoint saved to "
            f"{s.out / 'checkpoints' / LAST_CKPT}. Continue with the same command plus --resume."
        ) from None
    return time.perf_counter() - started


def _evaluate(s: _Setup) -> tuple[dict[str, dict[str, float]], str, np.ndarray | None]:
    """Train/validation/test metrics of the best checkpoint (its weights end up in `s.module`), and the
    validation logits that scored it, for the calibrator (None where they are not the whole split in order
    at the model's own precision: a distributed run's ranks each see a shard, mixed precision autocasts)."""
    metrics = {"train": _split_metrics(s.trainer.callback_metrics, "train/")}
    best_cb = s.trainer.checkpoint_callback if s.datamodule.has("validation") else None
    best = best_cb.best_model_path if best_cb else ""
    logits = None
    if s.datamodule.has("validation"):  # reloads the best checkpoint's weights into `module`, then scores it
        keep = s.trainer.world_size == 1 and not str(s.trainer.precision).endswith("-mixed")
        s.module.kept_val_logits = [] if keep else None
        try:
            values = s.trainer.validate(
                s.module, s.datamodule, ckpt_path=best or None, verbose=False, weights_only=True
            )[0]
            if keep:
                logits = torch.cat(s.module.kept_val_logits).numpy()
        finally:
            s.module.kept_val_logits = None
        metrics["validation"] = _split_metrics(values, "val/")
    if s.datamodule.has("test"):
        metrics["test"] = _split_metrics(s.trainer.test(s.module, s.datamodule, verbose=False)[0], "test/")
    return metrics, best, logits


def _record(
    s: _Setup,
    *,
    model: str,
    d: DataConfig,
    seed: int,
    parent: str | None,
    config: dict,
    metrics: dict,
    best: str,
    train_seconds: float,
    store_texts: bool,
    reference_texts: list[str] | None,
    val_logits: np.ndarray | None,
) -> tuple[Path, str]:
    """Write the version (weights, lineage, metrics and drift reference) in one atomic write."""
    reference = None
    ref_split = (
        "validation" if s.datamodule.has("validation") else "test" if s.datamodule.has("test") else None
    )
    if reference_texts:
        ref_split = "given"
    # the fixed encoder, loaded once for both of its uses here: the drift reference and twoview's probe
    encoder = load_encoder(s.reference_encoder) if s.reference_encoder and d.reference_size else None
    if ref_split and d.reference_size:  # held-out inputs only; detector state fitted on them alone
        texts = sample_texts(reference_texts or s.splits.texts[ref_split], d.reference_size, seed)
        reference = build_reference(
            s.module.model,
            s.tokenizer,
            texts,
            meta={"split": ref_split},
            seed=seed,
            batch_size=d.eval_batch_size,
            max_length=d.max_length,
            encoder=s.reference_encoder,
            loaded_encoder=encoder,
        )
        reference.store_texts = store_texts
    # the encoder's weights digest as the reference recorded it (computed once, there): the probe must read
    # the very embeddings the reference and its windows are made of
    digest = reference.meta.get("encoder_sha256") if reference is not None else None
    calibration = _calibrate(s, d, seed, val_logits, encoder, encoder_sha256=digest)
    if calibration is not None:
        metrics = {**metrics, "calibration": calibration.metrics()}
    val_labels = s.splits.labels.get("validation") or []
    if val_logits is not None and len(val_logits) == len(val_labels):  # the best checkpoint's, in split order
        metrics = {
            **metrics,
            "per_class": {"validation": per_class_scores(val_logits, val_labels, s.splits.label_names)},
        }
    best_cb = s.trainer.checkpoint_callback if s.datamodule.has("validation") else None
    version_id = new_version_id()
    meta = {
        "version_id": version_id,
        "parent": parent or s.model_parent,
        "recipe": "finetune",
        "base_model": model,
        "config": config,
        "labels": s.splits.label_names,
        # rows cut at max_length beside each split's fingerprint: a metric on cut text says so
        "data": {
            split: {**fp, "truncated_rows": s.datamodule.truncated.get(split, 0)}
            for split, fp in s.splits.fingerprints.items()
        },
        "metrics": metrics,
        "training": {
            "global_step": s.trainer.global_step,
            "epochs": s.trainer.current_epoch,
            "seconds": round(train_seconds, 1),
            "best_checkpoint": best or None,
            "best_score": float(best_cb.best_model_score)
            if best_cb is not None and best_cb.best_model_score is not None
            else None,
        },
    }
    return write_version(
        s.out / VERSION_DIRNAME, s.module.model, s.tokenizer, meta, reference, calibration
    ), version_id


def _calibrate(
    s: _Setup,
    d: DataConfig,
    seed: int,
    val_logits: np.ndarray | None,
    encoder: tuple | None,
    *,
    encoder_sha256: str | None,
) -> Calibration | None:
    """Temperature scaling fitted on the validation logits of the best checkpoint (refit.estimate): the
    version's label-free accuracy estimates start from it. None without a validation split. It reuses the
    logits of the final validation (`val_logits`, in split order); only where there are none (distributed,
    mixed precision) does it run the model over validation again, on this process at the model's own dtype.
    The probe is fitted where the reference is embedded by the fixed `encoder`, whose digest it recorded
    (`encoder_sha256`), and data.probe_rows is not 0; otherwise `no_probe` records why, and a warning says
    it (a version without twoview must not be found out only when a policy asks for it)."""
    if not s.datamodule.has("validation") or len(s.splits.labels.get("validation") or []) < 2:
        return None
    texts, labels = s.splits.texts["validation"], s.splits.labels["validation"]
    device = str(next(s.module.model.parameters()).device)
    if val_logits is None or len(val_logits) != len(labels):
        model = s.module.model
        was_training = model.training
        val_logits = predict_logits(
            TorchPredictor(model, device), encode(s.tokenizer, texts, d.max_length, d.eval_batch_size)
        )
        model.train(was_training)
    calibration = fit_calibration(val_logits, labels, source="validation", seed=seed)
    if not d.probe_rows:  # the opt-out of the probe's cost
        calibration.no_probe = "fine-tuned with data.probe_rows 0 (the opt-out of the probe)"
    elif encoder is None or not encoder_sha256:
        calibration.no_probe = (
            "the drift reference is not embedded by a fixed encoder (data.reference_encoder version, or "
            "data.reference_size 0): the probe reads that encoder's embeddings"
        )
    else:
        calibration.probe, calibration.no_probe = _fit_probe(
            s, d, val_logits, labels, seed, device, encoder, encoder_sha256=encoder_sha256
        )
    if calibration.no_probe and d.probe_rows:  # an opt-out (probe_rows 0) is recorded, not warned about
        log.warning(
            "No twoview estimate for this version (the other estimators remain): %s.", calibration.no_probe
        )
    return calibration


def _probe_sample_problem(labels: np.ndarray, names: list[str], probe_rows: int) -> str:
    """Why these sampled training labels cannot fit the probe ('' where they can): a logistic regression
    needs at least two classes among them."""
    if len(np.unique(labels)) >= 2:
        return ""
    counts = ", ".join(
        f"{names[k] if k < len(names) else k}: {n}" for k, n in zip(*np.unique(labels, return_counts=True))
    )
    return (
        f"the probe's sample of {len(labels)} training row(s) (data.probe_rows {probe_rows}) has fewer than "
        f"2 classes ({counts or 'no rows'}); it needs rows of at least 2 classes"
    )


def _fit_probe(
    s: _Setup,
    d: DataConfig,
    val_logits,
    val_labels,
    seed: int,
    device: str,
    encoder: tuple,
    *,
    encoder_sha256: str,
) -> tuple[Probe | None, str]:
    """The twoview estimator's probe (refit.estimate.probe): training rows (a seeded sample of at most
    data.probe_rows) and validation embedded by the drift reference's fixed encoder (`encoder`: what
    load_encoder returned; `encoder_sha256`: its weights digest, as the reference recorded it), as windows
    are embedded. Returns (probe, ''), or (None, why) where the sample has fewer than two classes: the
    reason is stored with the version, so `refit drift` and `refit maintain` can say why twoview is absent."""
    enc_model, enc_tokenizer, _ = encoder  # never a version: reference_encoder refuses one
    train_texts, train_labels = s.splits.texts["train"], np.asarray(s.splits.labels["train"])
    pick = np.sort(np.random.default_rng(seed).permutation(len(train_texts))[: d.probe_rows])
    picked = train_labels[pick]
    problem = _probe_sample_problem(picked, s.splits.label_names, d.probe_rows)
    if problem:  # checked before the encoder's pass over the rows, which would be wasted
        return None, problem

    def embed(texts: list[str]):
        return encode_texts(
            enc_model,
            enc_tokenizer,
            texts,
            d.eval_batch_size,
            d.max_length,
            ENCODER_POOLING,
            ENCODER_LAYER,
            device,
        ).embeddings.numpy()

    probe = fit_probe(
        embed([train_texts[i] for i in pick]),
        picked,
        embed(list(s.splits.texts["validation"])),
        val_logits,
        val_labels,
        encoder=s.reference_encoder,
        encoder_sha256=encoder_sha256,
    )
    return probe, ""


def run_finetune(
    model: str,
    *,
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
    resume_with_changes: bool = False,
    store_texts: bool = True,
    reference_texts: list[str] | None = None,
    resumable: bool = True,
) -> FinetuneResult:
    """Fine-tune, evaluate the best checkpoint on validation and test, and write OUTPUT_DIR/version.

    The one library function that takes config groups: it is the shared body of four recipes (finetune,
    tune trials, maintain retraining, compress recovery); everything it calls takes plain values.
    `resume_from` continues from a given Lightning checkpoint (Ray Tune hands trials theirs on restore).
    `store_texts` False (privacy.store_texts) keeps only hashes of the reference texts in the version.
    `reference_texts` replaces the validation sample as the drift reference (held-out inputs the caller
    chose, e.g. a maintenance cycle's recent production inputs; never rows the model was trained on).
    `resumable` False (Tune trials, which Tune restarts itself) writes no last.ckpt and a weights-only best.ckpt.
    """
    out = Path(output_dir)
    with _output_lock(out):
        return _run_locked(
            model,
            data,
            optim,
            trainer,
            tracking,
            out,
            resume=resume,
            parent=parent,
            config=config,
            callbacks=callbacks,
            wandb_group=wandb_group,
            resume_from=resume_from,
            resume_with_changes=resume_with_changes,
            store_texts=store_texts,
            reference_texts=reference_texts,
            resumable=resumable,
        )


def _run_locked(
    model: str,
    data: DataConfig,
    optim: OptimConfig,
    trainer: TrainerConfig,
    tracking: TrackingConfig,
    out: Path,
    *,
    resume: bool,
    parent: str | None,
    config: dict | None,
    callbacks: list[Callback] | None,
    wandb_group: str | None,
    resume_from: str | Path | None,
    resume_with_changes: bool,
    store_texts: bool,
    reference_texts: list[str] | None,
    resumable: bool,
) -> FinetuneResult:
    """run_finetune's body, run while it holds OUTPUT_DIR."""
    # a run killed while writing its version left the staging copy (the size of the weights): the lock says
    # no other run writes here, so it is litter, never picked up (the version is only ever the renamed whole)
    for stale in out.glob(f".{VERSION_DIRNAME}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in (out / "checkpoints").glob(".*.tmp-*"):  # AtomicCheckpointIO's, from a kill mid-save
        stale.unlink(missing_ok=True)
    ckpt = (
        Path(resume_from) if resume_from else _checkpoint_to_resume(out, resume, config, resume_with_changes)
    )
    config = config or {}
    s = _setup(model, data, optim, trainer, tracking, out, ckpt, config, callbacks, wandb_group, resumable)
    train_seconds = _fit(s)
    metrics, best, val_logits = _evaluate(s)
    if not s.trainer.is_global_zero:
        return FinetuneResult(None, None, metrics, None)
    version_dir, version_id = _record(
        s,
        model=model,
        d=data,
        seed=trainer.seed,
        parent=parent,
        config=config,
        metrics=metrics,
        best=best,
        train_seconds=train_seconds,
        store_texts=store_texts,
        reference_texts=reference_texts,
        val_logits=val_logits,
    )
    if tracking.log_version:
        log_version_artifact(s.loggers, version_dir, version_id, metrics)
    return FinetuneResult(version_dir, version_id, metrics, finish(s.loggers))
