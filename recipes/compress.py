"""refit compress: prune or cast a model version, gate it on validation accuracy, write a child version.

    refit compress --config configs/compress/magnitude.yaml --version runs/demo/version
    refit compress --version runs/demo/version --method heads --amount 0.25 --recovery.epochs 1

Methods: magnitude (global unstructured), heads (attention heads by importance), ffn (feed-forward
neurons by importance), 2:4 (semi-structured), fp16 / bf16 (weights cast, for GPU inference).
The child version lands in OUTPUT_DIR/version with `parent` set; it is written only if its validation
accuracy is at most `max_accuracy_drop` points below the parent's (gate.json beside it says by how much).
"""

from __future__ import annotations

import copy
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jsonargparse.typing import (
    ClosedUnitInterval,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
)

from refit.compress import METHODS, Method
from refit.compress.prune import shrink_pruned_heads, sparsity
from refit.config import config_to_dict
from refit.drift.reference import Reference, load_reference, reembed
from refit.errors import ConfigError
from refit.estimate import load_calibration
from refit.evaluate import (
    AccuracyGateError,
    GateData,
    check_gate,
    check_parent_reproduces,
    evaluation_texts,
    load_gate_data,
    score,
)
from refit.inference import TorchPredictor, encode, interleaved_p50_ms, predict_logits
from refit.io import hold_folder, write_json
from refit.models import new_version_id, write_version
from refit.report import print_metrics
from refit.settings import TrackingConfig


@dataclass
class RecoveryConfig:
    """A short fine-tune after pruning, through the regular fine-tune job, pruned weights held at zero.

    Args:
        epochs: Recovery epochs on the parent's training data (0 = no recovery fine-tune).
        lr: Learning rate of the recovery fine-tune.
        max_train_samples: Use only the first N training rows (0 = all).
    """

    epochs: NonNegativeInt = 0
    lr: PositiveFloat = 2e-5
    max_train_samples: NonNegativeInt = 0


@dataclass
class Config:
    """Compress a model version into a new child version, refused if it loses too much accuracy.

    Args:
        version: The parent model version folder (required).
        method: A compression method: magnitude, heads, ffn, 2:4, fp16 or bf16 (refit.compress.METHODS).
        amount: Share to prune: of the encoder's Linear weights (magnitude), of all attention heads (heads),
            of each layer's feed-forward neurons (ffn); 2:4 always prunes 0.5; ignored by fp16/bf16.
        importance_samples: Training inputs used to score head/neuron importance.
        max_accuracy_drop: Largest allowed fall in validation accuracy, in points (1.0 = one percentage point).
        parent_tolerance: Largest allowed difference, in points, between the parent's validation metrics now
            and those recorded in its refit.json; beyond it the parent is taken as damaged and refused.
        validation: Validation file to gate on (default: the one in the version's refit.json config).
        recovery: Optional recovery fine-tune.
        tracking: Tracking of the recovery fine-tune.
        output_dir: Run folder: the child version goes to OUTPUT_DIR/version, gate.json beside it.
    """

    version: str | None = None
    method: str = "magnitude"
    amount: ClosedUnitInterval = 0.5
    importance_samples: PositiveInt = 256
    max_accuracy_drop: NonNegativeFloat = 1.0
    parent_tolerance: NonNegativeFloat = 1.0
    validation: str | None = None
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    output_dir: str = "runs/compress"

    def __post_init__(self) -> None:
        if self.method not in METHODS:  # checked here, not by a Literal, so a registered method is a choice
            raise ValueError(f"Unknown 'method' {self.method!r}; allowed: {', '.join(METHODS)}.")


def _weights_mb(model: torch.nn.Module) -> float:
    return round(sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 1e6, 2)


def _deployed(model: torch.nn.Module) -> TorchPredictor:
    """The model as a deployment runs it (pruned heads physically removed), on a copy."""
    return TorchPredictor(shrink_pruned_heads(copy.deepcopy(model)))


def _latencies(parent: TorchPredictor, child: torch.nn.Module, tokenizer, text: str, max_length: int):
    """p50 ms at batch 1 of parent and child, in alternating rounds (a fair pair on a shared machine)."""
    batch = encode(tokenizer, [text], max_length, 1)[0]
    ms = interleaved_p50_ms([parent, _deployed(child)], batch, warmup=3, iters=20, rounds=5)
    return tuple(round(m, 3) for m in ms)


def _reference(model, tokenizer, parent: Path) -> Reference | None:
    """The parent's drift reference texts embedded again by the child (its embedding space moved), with
    the detectors refitted on them, so the child version carries its own detector state."""
    if not (parent / "reference" / "texts.jsonl").is_file():
        return None
    reference = load_reference(parent)
    if not reference.texts:  # only hashes kept (privacy.store_texts false): nothing to re-embed
        return None
    child = reembed(reference, model, tokenizer, device="cpu")
    child.store_texts = reference.store_texts
    return child


def _measure(model: torch.nn.Module) -> dict:
    return {"size_mb": _weights_mb(model), **sparsity(model)}


def _importance_batches(method: Method, meta: dict, tokenizer, samples: int, max_length: int) -> list:
    """Tokenised training inputs for methods that score importance (none for the others)."""
    train = evaluation_texts(meta, "train") if method.needs_data else None
    if not train:
        return []
    picked = random.Random(0).sample(range(len(train[0])), min(samples, len(train[0])))
    return encode(tokenizer, [train[0][i] for i in picked], max_length, 16, [train[1][i] for i in picked])


def _setup(cfg: Config) -> tuple[GateData, dict, dict, dict]:
    """The parent and its gate data; its scores now, checked against those recorded in its refit.json."""
    if not cfg.version:
        raise ConfigError("refit compress needs --version DIR (the model version to compress).")
    child = Path(cfg.output_dir) / "version"
    if child.exists() and (
        not child.is_dir() or any(child.iterdir())
    ):  # as finetune: never a silent overwrite
        raise ConfigError(
            f"{Path(cfg.output_dir)} already holds a child version ({child}); refit compress will not "
            "overwrite it. Pick a new --output_dir, or remove that folder if you mean to replace it."
        )
    gd = load_gate_data(Path(cfg.version), cfg.validation, "compress")
    baseline = score(predict_logits(TorchPredictor(gd.model), gd.batches), gd.labels, len(gd.meta["labels"]))
    parent_check = (
        check_parent_reproduces(gd.meta, baseline, tolerance=cfg.parent_tolerance, recipe="compress")
        if gd.used_recorded_split
        else {"reproduced": False, "reason": "--validation given"}
    )
    # the parent as deployed, kept for the latency pair at the end (compression may change gd.model in place)
    before = {**_measure(gd.model), "runner": _deployed(gd.model)}
    return gd, baseline, parent_check, before


def _compress(cfg: Config, gd: GateData, out: Path) -> tuple[torch.nn.Module, dict, Path | None]:
    """Apply the method, then the optional recovery fine-tune; (model, summary, recovered model folder)."""
    method = METHODS[cfg.method]
    batches = _importance_batches(method, gd.meta, gd.tokenizer, cfg.importance_samples, gd.max_length)
    model, summary = method.apply(gd.model, cfg.amount, batches)
    if not (cfg.recovery.epochs and method.recoverable):
        return model, summary, None
    staged = out / "recovery-input"
    model.save_pretrained(staged)
    gd.tokenizer.save_pretrained(staged)
    r = cfg.recovery
    from refit.compress.recovery import recover  # Lightning loads only for a recovery fine-tune

    recovered = recover(
        staged,
        gd.meta,
        out / "recovery",
        epochs=r.epochs,
        lr=r.lr,
        max_train_samples=r.max_train_samples,
        tracking=cfg.tracking,
    )
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(recovered).eval(), summary, recovered


def _gate(
    cfg: Config, gd: GateData, model: torch.nn.Module, baseline: dict, parent_check: dict, out: Path
) -> tuple[dict, dict]:
    """Score the child and gate it against the parent (now and as recorded); gate.json either way."""
    candidate = score(predict_logits(TorchPredictor(model), gd.batches), gd.labels, len(gd.meta["labels"]))
    recorded = parent_check.get("recorded") if parent_check.get("reproduced") else None
    try:
        gate = check_gate(
            f"{cfg.method} (amount {cfg.amount})",
            baseline,
            candidate,
            cfg.max_accuracy_drop,
            METHODS[cfg.method].hint,
            recorded=recorded,
        )
    except AccuracyGateError as e:
        write_json(out / "gate.json", e.report)
        raise
    write_json(out / "gate.json", gate)
    return candidate, gate


def _record(
    cfg: Config,
    gd: GateData,
    model: torch.nn.Module,
    out: Path,
    parent: Path,
    candidate: dict,
    compression: dict,
) -> Path:
    """Write the child version (weights, lineage, metrics, its own drift reference) in one atomic write."""
    meta = gd.meta
    metrics = {"validation": candidate}
    test = evaluation_texts(meta, "test")
    if test is not None:
        test_batches = encode(gd.tokenizer, test[0], gd.max_length, gd.eval_batch_size)
        metrics["test"] = score(
            predict_logits(TorchPredictor(model), test_batches), test[1], len(meta["labels"])
        )
    child = {
        "version_id": new_version_id(),
        "parent": meta.get("version_id"),
        "recipe": "compress",
        "base_model": meta.get("base_model"),
        "config": meta.get("config"),
        "labels": meta["labels"],
        "data": meta.get("data"),
        "metrics": metrics,
        "compression": compression,
    }
    # The child keeps its parent's temperature (compression is gated to change predictions little); its
    # validation statistics for the estimators are the parent's too, which the note says.
    calibration = load_calibration(parent)
    if calibration is not None:
        calibration.note = f"inherited from parent {meta.get('version_id')}; not refitted on the child"
    return write_version(
        out / "version", model, gd.tokenizer, child, _reference(model, gd.tokenizer, parent), calibration
    )


def _discard_unfinished(out: Path) -> None:
    """A compress killed before its child version was written leaves its recovery fine-tune (checkpoints,
    an intermediate version) in OUTPUT_DIR: the rerun's recovery refused it ("already holds a run ...
    --resume", a flag compress does not have), a dead end. With no child version it is an intermediate
    nothing refers to, and this process holds OUTPUT_DIR, so it is removed and the recovery is redone."""
    for name in ("recovery", "recovery-input"):
        if (out / name).exists():
            print(f"Removing {out / name}: the intermediate of an earlier compress that did not finish.")
            shutil.rmtree(out / name)


def run(cfg: Config) -> Path:
    if not cfg.version:
        raise ConfigError("refit compress needs --version DIR (the model version to compress).")
    with hold_folder(cfg.output_dir, "refit compress"):  # one compress per OUTPUT_DIR at a time
        return _run(cfg)


def _run(cfg: Config) -> Path:
    # setup
    out, parent = Path(cfg.output_dir), Path(cfg.version or "")
    gd, baseline, parent_check, before = _setup(cfg)
    _discard_unfinished(out)  # after _setup: it refuses an OUTPUT_DIR that holds a finished child

    # work: compress, optionally recover, gate
    model, summary, recovered = _compress(cfg, gd, out)
    candidate, gate = _gate(cfg, gd, model, baseline, parent_check, out)
    after = _measure(model)
    before["latency_ms"], after["latency_ms"] = _latencies(
        before.pop("runner"), model, gd.tokenizer, gd.texts[0], gd.max_length
    )

    # record
    compression = {
        "method": cfg.method,
        "amount": cfg.amount,
        "summary": summary,
        "before": before,
        "after": after,
        "gate": gate,
        "parent_check": parent_check,
        "recovery": {**config_to_dict(cfg.recovery), "model": str(recovered) if recovered else None},
        "settings": config_to_dict(cfg),
    }
    version = _record(cfg, gd, model, out, parent, candidate, compression)

    # report
    print_metrics({"parent": baseline, "child": candidate}, title=f"refit compress {cfg.method}: validation")
    print(
        f"weights {before['size_mb']} MB -> {after['size_mb']} MB; p50 latency (batch 1, CPU) "
        f"{before['latency_ms']} ms -> {after['latency_ms']} ms; prunable-weight sparsity "
        f"{before['prunable_sparsity']:.1%} -> {after['prunable_sparsity']:.1%}"
    )
    if METHODS[cfg.method].note:
        print(METHODS[cfg.method].note)
    print(f"Child version: {version} (parent {gd.meta.get('version_id')})")
    return version
