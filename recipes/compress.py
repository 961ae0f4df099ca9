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
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from jsonargparse.typing import (
    ClosedUnitInterval,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
)

from refit.compress import (
    PRUNERS,
    TORCH_QUANTIZERS,
    AccuracyGateError,
    check_gate,
    evaluation_texts,
    load_gate_data,
    score,
)
from refit.compress.prune import shrink_pruned_heads, sparsity
from refit.compress.recovery import recover
from refit.config import config_to_dict
from refit.errors import ConfigError
from refit.export.benchmark import latency_ms
from refit.export.runtimes import TorchPredictor, encode, predict_logits
from refit.io import write_json
from refit.models import encode_texts, new_version_id, write_version
from refit.report import print_metrics
from refit.settings import TrackingConfig

METHODS = (*PRUNERS, "fp16", "bf16")
_HINTS = {"magnitude": "Lower --amount or add --recovery.epochs 1.", "heads": "Prune fewer heads (--amount) or "
          "add --recovery.epochs 1.", "ffn": "Lower --amount or add --recovery.epochs 1.",
          "2:4": "Add --recovery.epochs 1 (2:4 always prunes half).", "fp16": "Use bf16, or keep fp32 for this model.",
          "bf16": "Use fp16 on GPU, or keep fp32 for this model."}


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
        method: magnitude, heads, ffn, 2:4, fp16 or bf16.
        amount: Share to prune: of the encoder's Linear weights (magnitude), of all attention heads (heads),
            of each layer's feed-forward neurons (ffn); 2:4 always prunes 0.5; ignored by fp16/bf16.
        importance_samples: Training inputs used to score head/neuron importance.
        max_accuracy_drop: Largest allowed fall in validation accuracy, in points (1.0 = one percentage point).
        validation: Validation file to gate on (default: the one in the version's refit.json config).
        recovery: Optional recovery fine-tune.
        tracking: Tracking of the recovery fine-tune.
        output_dir: Run folder: the child version goes to OUTPUT_DIR/version, gate.json beside it.
    """

    version: str | None = None
    method: Literal[METHODS] = "magnitude"  # type: ignore[valid-type]
    amount: ClosedUnitInterval = 0.5
    importance_samples: PositiveInt = 256
    max_accuracy_drop: NonNegativeFloat = 1.0
    validation: str | None = None
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    output_dir: str = "runs/compress"


def _weights_mb(model: torch.nn.Module) -> float:
    return round(sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 1e6, 2)


def _latency(model: torch.nn.Module, tokenizer, text: str, max_length: int) -> float:
    """p50 ms at batch 1 of the model as a deployment runs it (pruned heads physically removed)."""
    batch = encode(tokenizer, [text], max_length, 1)[0]
    return round(latency_ms(TorchPredictor(shrink_pruned_heads(copy.deepcopy(model))), batch, 3, 20)[0], 3)


def _reference(model, tokenizer, parent: Path, max_length: int):
    """The parent's drift reference texts, embedded again by the child (its embedding space moved)."""
    ref = parent / "reference"
    if not (ref / "texts.jsonl").is_file():
        return None
    texts = [json.loads(line).get("text") for line in (ref / "texts.jsonl").read_text().splitlines() if line]
    if not texts or None in texts:  # only hashes kept (privacy.store_texts false): nothing to re-embed
        return None
    meta = json.loads((ref / "reference.json").read_text())
    enc = encode_texts(model, tokenizer, texts, 64, meta.get("max_length", max_length), device="cpu")
    return enc.embeddings, enc.probs, texts, {k: meta[k] for k in ("split", "pooling", "layer", "max_length") if k in meta}


def run(cfg: Config) -> Path:
    # setup
    if not cfg.version:
        raise ConfigError("refit compress needs --version DIR (the model version to compress).")
    parent = Path(cfg.version)
    gd = load_gate_data(parent, cfg.validation, "compress")
    model, tokenizer, meta, max_length, eval_bs, batches = (gd.model, gd.tokenizer, gd.meta, gd.max_length,
                                                            gd.eval_batch_size, gd.batches)
    val = (gd.texts, gd.labels)
    n_labels = len(meta["labels"])
    baseline = score(predict_logits(TorchPredictor(model), batches), val[1], n_labels)
    before = {"size_mb": _weights_mb(model), "latency_ms": _latency(model, tokenizer, val[0][0], max_length),
              **sparsity(model)}

    # run: compress, optionally recover, gate
    out = Path(cfg.output_dir)
    if cfg.method in PRUNERS:
        train = evaluation_texts(meta, "train") if cfg.method in ("heads", "ffn") else None
        picked = random.Random(0).sample(range(len(train[0])), min(cfg.importance_samples, len(train[0]))) if train else []
        calib = encode(tokenizer, [train[0][i] for i in picked], max_length, 16, [train[1][i] for i in picked]) if train else []
        summary = PRUNERS[cfg.method](model, cfg.amount, calib)
    else:
        model, summary = TORCH_QUANTIZERS[cfg.method](model), {"dtype": cfg.method}
    recovered = None
    if cfg.recovery.epochs and cfg.method in PRUNERS:
        staged = out / "recovery-input"
        model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        r = cfg.recovery
        recovered = recover(staged, meta, out / "recovery", r.epochs, r.lr, r.max_train_samples, cfg.tracking)
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(recovered).eval()
    candidate = score(predict_logits(TorchPredictor(model), batches), val[1], n_labels)
    try:
        gate = check_gate(f"{cfg.method} (amount {cfg.amount})", baseline, candidate, cfg.max_accuracy_drop,
                          _HINTS[cfg.method])
    except AccuracyGateError as e:
        write_json(out / "gate.json", e.report)
        raise
    write_json(out / "gate.json", gate)
    after = {"size_mb": _weights_mb(model), "latency_ms": _latency(model, tokenizer, val[0][0], max_length),
             **sparsity(model)}
    metrics = {"validation": candidate}
    test = evaluation_texts(meta, "test")
    if test is not None:
        metrics["test"] = score(predict_logits(TorchPredictor(model), encode(tokenizer, test[0], max_length, eval_bs)),
                                test[1], n_labels)
    child = {
        "version_id": new_version_id(), "parent": meta.get("version_id"), "recipe": "compress",
        "base_model": meta.get("base_model"), "config": meta.get("config"), "labels": meta["labels"],
        "data": meta.get("data"), "metrics": metrics,
        "compression": {"method": cfg.method, "amount": cfg.amount, "summary": summary, "before": before,
                        "after": after, "gate": gate, "recovery": {**config_to_dict(cfg.recovery),
                                                                   "model": str(recovered) if recovered else None},
                        "settings": config_to_dict(cfg)},
    }
    version = write_version(out / "version", model, tokenizer, child, _reference(model, tokenizer, parent, max_length))

    # report
    print_metrics({"parent": baseline, "child": candidate}, title=f"refit compress {cfg.method}: validation")
    print(f"weights {before['size_mb']} MB -> {after['size_mb']} MB; p50 latency (batch 1, CPU) "
          f"{before['latency_ms']} ms -> {after['latency_ms']} ms; prunable-weight sparsity "
          f"{before['prunable_sparsity']:.1%} -> {after['prunable_sparsity']:.1%}")
    if cfg.method in ("magnitude", "2:4"):
        print("Note: zeros are still stored and multiplied, so unstructured and 2:4 sparsity neither shrink the "
              "file nor speed up dense CPU kernels (2:4 needs sparse tensor cores on an Ampere+ GPU).")
    print(f"Child version: {version} (parent {meta.get('version_id')})")
    return version
