"""Scoring and gating model versions: the metric set, scores of probabilities or logits, the validation
data a version is gated on, and the accuracy gate.

Low level on purpose: training, drift (accuracy per window), compression, export and maintenance all score
with these, so none of them has to import another to do it.

The accuracy gate scores every compressed or exported artefact on the validation split with the same
metrics as training and refuses it when its accuracy falls more than `max_accuracy_drop` points below the
parent's, scored the same way (so tokenisation and batching are identical on both sides). Because a
damaged parent (a lost tokenizer file, altered weights) scores badly on both sides and would pass, the
parent's score now is first checked against the metrics recorded in its refit.json when it was made
(check_parent_reproduces), and the drop is measured from the recorded accuracy as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from refit.data import load_splits, read_table, to_label_ids
from refit.errors import ConfigError, DataError, RefitError, VersionError
from refit.inference import Batch, encode
from refit.models import load_version

if TYPE_CHECKING:
    from torchmetrics import MetricCollection

__all__ = [
    "METRIC_NAMES",
    "NO_AUROC",
    "auroc",
    "format_metric",
    "AccuracyGateError",
    "GateData",
    "ParentMismatchError",
    "check_gate",
    "check_parent_reproduces",
    "classification_metrics",
    "evaluation_texts",
    "load_gate_data",
    "recorded_metrics",
    "score",
    "score_probs",
    "per_class_scores",
    "weakest_classes",
]

METRIC_NAMES = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "auroc", "ece")


def format_metric(value: float | None, name: str = "") -> str:
    """A metric for a table or message: 4 decimals; an undefined AUROC (None) as NO_AUROC, not as 0."""
    if value is None:
        return NO_AUROC if name == "auroc" else "n/a"
    return f"{value:.4f}"


def classification_metrics(num_classes: int, prefix: str, *, with_auroc: bool = True) -> MetricCollection:
    """Accuracy, macro F1/precision/recall, AUROC and expected calibration error (15 bins).

    `with_auroc=False` leaves AUROC out, for score_probs, which computes it only where it is defined.

    Give them probabilities (softmax first), binary and multi-class alike: torchmetrics applies softmax
    itself only when some value lies outside [0, 1], so logits that all fall inside it (a weakly trained
    model's) were scored as if they were probabilities.
    torchmetrics is imported here, not at module level: it pulls in transformers and Lightning's
    utilities (about 4 s on a small machine), which every command that only imports this module for its
    gate or its metric names (`refit drift`, every `--help`) would pay for.
    """
    from torchmetrics import MetricCollection
    from torchmetrics.classification import (
        MulticlassAccuracy,
        MulticlassAUROC,
        MulticlassCalibrationError,
        MulticlassF1Score,
        MulticlassPrecision,
        MulticlassRecall,
    )

    metrics = {
        "accuracy": MulticlassAccuracy(num_classes, average="micro"),
        "f1_macro": MulticlassF1Score(num_classes, average="macro"),
        "precision_macro": MulticlassPrecision(num_classes, average="macro"),
        "recall_macro": MulticlassRecall(num_classes, average="macro"),
        "auroc": MulticlassAUROC(num_classes),
        "ece": MulticlassCalibrationError(num_classes, n_bins=15),
    }
    if not with_auroc:
        del metrics["auroc"]
    return MetricCollection(metrics, prefix=prefix)


NO_AUROC = "n/a (one class)"  # how tables and reports show an AUROC that is undefined (None in JSON)


def auroc(probs: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Macro one-vs-rest AUROC over the classes that occur in `labels`; None with fewer than two.

    AUROC ranks positives against negatives, so a class with no positives (or no negatives) has none:
    torchmetrics' MulticlassAUROC then scores that class 0.0 with a warning per call, and a labelled
    window of one class (a day of complaints, a golden set of one label) reported AUROC 0.0, which reads
    as a model that ranks every case backwards. Each present class is scored with binary_auroc (exact,
    no thresholds), which over a split holding every class equals MulticlassAUROC's macro average.
    """
    from torchmetrics.functional.classification import binary_auroc

    present = labels.unique().tolist()
    if len(present) < 2:
        return None
    per_class = [float(binary_auroc(probs[:, c], (labels == c).long())) for c in present]
    return sum(per_class) / len(per_class)


def score_probs(probs: torch.Tensor, labels: Sequence[int]) -> dict[str, float | None]:
    """accuracy, macro F1/precision/recall, AUROC, ECE of predicted probabilities. AUROC is None where it
    is undefined (fewer than two classes among `labels`): callers show it as NO_AUROC, never as 0."""
    metrics = classification_metrics(probs.shape[1], prefix="", with_auroc=False)
    target = torch.as_tensor(list(labels), dtype=torch.long)
    values: dict[str, float | None] = {k: float(v) for k, v in metrics(probs.float(), target).items()}
    values["auroc"] = auroc(probs.float(), target)
    return {n: values[n] for n in METRIC_NAMES}


def score(logits: np.ndarray, labels: list[int] | np.ndarray, num_classes: int) -> dict[str, float | None]:
    """The training metric set (accuracy, macro F1/precision/recall, AUROC, ECE) on logits."""
    probs = torch.from_numpy(np.asarray(logits, dtype=np.float32)).softmax(-1)
    if probs.shape[1] != num_classes:
        raise ValueError(f"{probs.shape[1]} logits per row for {num_classes} classes")
    return score_probs(probs, np.asarray(labels).tolist())


def per_class_scores(scores: np.ndarray, labels: Sequence[int], names: Sequence[str]) -> dict[str, dict]:
    """rows, precision, recall and F1 of each class, by name, from logits or probabilities [n, K] (argmax).

    The macro averages hide which class is failing: a trec6 model at validation accuracy 0.72 (macro F1 0.60)
    never predicted its rarest question type (ABBR, 9 of 545 rows). A class with no rows has recall
    None; one never predicted has precision None (not 0: nothing to divide), and F1 0 when it has rows.
    """
    predicted = np.asarray(scores).argmax(1)
    truth = np.asarray(list(labels), dtype=np.int64)
    out = {}
    for k, name in enumerate(names):
        tp = int(((predicted == k) & (truth == k)).sum())
        rows, chosen = int((truth == k).sum()), int((predicted == k).sum())
        precision = tp / chosen if chosen else None
        recall = tp / rows if rows else None
        f1 = 2 * tp / (rows + chosen) if rows + chosen else None
        out[name] = {"n": rows, "precision": precision, "recall": recall, "f1": f1}
    return out


def weakest_classes(per_class: dict[str, dict], k: int = 3) -> str:
    """'ABBR 0.00 (6 rows), DESC 0.71 (57 rows)': the `k` classes of lowest recall, for a printed line."""
    ranked = sorted(
        ((name, r) for name, r in per_class.items() if r.get("recall") is not None),
        key=lambda kv: (kv[1]["recall"], kv[0]),
    )
    return ", ".join(f"{name} {r['recall']:.2f} ({r['n']} rows)" for name, r in ranked[:k])


class AccuracyGateError(RefitError):
    """A compressed or exported artefact lost more accuracy than allowed; nothing was written.

    `report` holds the numbers, so that a recipe can keep them beside the run.
    """

    def __init__(self, message: str, report: dict) -> None:
        super().__init__(message)
        self.report = report


def evaluation_texts(
    meta: dict, split: str = "validation", override: str | None = None
) -> tuple[list[str], list[int]] | None:
    """(texts, label ids) of a version's `split`, from the data its fine-tune config names (or `override`).

    Returns None when the config names no such split. Labels are encoded exactly as at training time and
    checked against the version's label list.
    """
    d = (meta.get("config") or {}).get("data") or {}
    files = {"train": d.get("train"), "validation": d.get("validation"), "test": d.get("test")}
    if override:
        if Path(override).exists() and not Path(override).is_file():
            raise DataError(
                f"--validation {override} is not a regular file (a folder, FIFO or device); give a .jsonl, "
                ".csv or .parquet file with text and label columns."
            )
        if not Path(override).is_file():
            raise DataError(
                f"--validation {override}: no such file (looked for {Path(override).absolute()}); give a "
                ".jsonl, .csv or .parquet file with text and label columns, or leave it out to use the "
                "version's own validation split."
            )
        if d.get("dataset"):  # trained on a named dataset (the demo, a hub set): it would replace the file
            texts, raw = read_table(override, d.get("text_column", "text"), d.get("label_column", "label"))
            return texts, to_label_ids(raw, meta.get("labels") or [])
        files[split] = override
    if not d.get("dataset") and not files[split]:
        return None
    try:
        splits = load_splits(
            files["train"],
            files["validation"],
            files["test"],
            d.get("dataset"),
            d.get("dataset_config"),
            d.get("text_column", "text"),
            d.get("label_column", "label"),
        )
    except DataError as e:
        raise DataError(
            f"{e} (the {split} data comes from the version's refit.json config; point to a file "
            f"with --validation)"
        ) from None
    if meta.get("labels") and splits.label_names != meta["labels"]:
        raise DataError(f"The data's labels {splits.label_names} differ from the version's {meta['labels']}.")
    if split not in splits.texts:
        return None
    return splits.texts[split], splits.labels[split]


@dataclass
class GateData:
    """A version loaded for gating: the model, its validation split encoded as at training time."""

    model: torch.nn.Module
    tokenizer: object
    meta: dict
    texts: list[str]
    labels: list[int]
    batches: list[Batch]
    max_length: int
    eval_batch_size: int
    used_recorded_split: bool = True  # False when --validation replaced the split the version was scored on


def load_gate_data(version_dir: str | Path, validation: str | None, recipe: str) -> GateData:
    """Load a version (hash-checked) and the validation data every gate of `recipe` scores on."""
    model, tokenizer, meta = load_version(version_dir)
    if not meta.get("labels"):  # every gate scores against the version's label names
        raise VersionError(
            f"{version_dir}/refit.json records no 'labels' (the model's label names): `refit {recipe}` "
            "cannot score it. Restore the version, or re-create it (refit finetune / compress)."
        )
    data = (meta.get("config") or {}).get("data") or {}
    max_length, eval_bs = data.get("max_length", 128), data.get("eval_batch_size", 64)
    val = evaluation_texts(meta, "validation", validation)
    if val is None:
        raise ConfigError(
            f"The version's config names no validation data for `refit {recipe}` to gate on: "
            "pass --validation FILE."
        )
    texts, labels = val
    return GateData(
        model,
        tokenizer,
        meta,
        texts,
        labels,
        encode(tokenizer, texts, max_length, eval_bs, labels),
        max_length,
        eval_bs,
        used_recorded_split=not validation,
    )


class ParentMismatchError(RefitError):
    """The parent no longer scores what its refit.json says it scored: it was altered or is damaged."""


def recorded_metrics(meta: dict, split: str = "validation") -> dict[str, float]:
    """The metrics of `split` recorded in a version's refit.json ({} when none were recorded)."""
    return {
        k: float(v)
        for k, v in ((meta.get("metrics") or {}).get(split) or {}).items()
        if k in METRIC_NAMES and isinstance(v, (int, float))
    }


def check_parent_reproduces(meta: dict, now: dict[str, float], *, tolerance: float, recipe: str) -> dict:
    """Refuse a parent whose validation metrics now differ from those recorded in its refit.json by more
    than `tolerance` points (1.0 = one percentage point); returns the comparison for the gate report.

    Only meaningful on the split the version was scored on (the caller skips it for a --validation file).
    AUROC is not compared: a fine-tune records torchmetrics' MulticlassAUROC (Lightning's), which scores a
    class absent from the split 0.0 (and one class as 0.0 overall), while `auroc` here leaves such classes
    out or reports None; the two differ exactly where a class is missing, and that is no sign of damage.
    Accuracy, the macro scores and ECE move with any change of the weights or tokenizer.
    """
    recorded = recorded_metrics(meta)
    off = {
        n: (recorded[n], now[n])
        for n in METRIC_NAMES
        if n != "auroc"
        and recorded.get(n) is not None
        and now.get(n) is not None
        and 100.0 * abs(recorded[n] - now[n]) > tolerance + 1e-9
    }
    if off:
        rows = "\n".join(f"    {n:<16} recorded {r:.4f}, now {c:.4f}" for n, (r, c) in off.items())
        raise ParentMismatchError(
            f"The parent version {meta.get('version_id', '')} no longer reproduces the validation metrics "
            f"recorded in its refit.json (tolerance {tolerance} points):\n{rows}\n  Its files were altered or "
            f"damaged since it was written; `refit {recipe}` refuses to gate against it. Restore the version "
            "(or re-create it), or raise parent_tolerance if the difference is expected."
        )
    return {"recorded": recorded, "tolerance_points": tolerance, "reproduced": bool(recorded)}


def check_gate(
    artefact: str,
    baseline: dict[str, float],
    candidate: dict[str, float],
    max_drop: float,
    hint: str = "",
    recorded: dict[str, float] | None = None,
) -> dict:
    """The gate report; raises AccuracyGateError (with the report in its message) when the drop is too big.

    The drop is measured from the parent as it scores now and, when given, from its `recorded` metrics
    (refit.json): the larger of the two counts.
    """
    drop = 100.0 * (baseline["accuracy"] - candidate["accuracy"])
    if recorded and "accuracy" in recorded:
        drop = max(drop, 100.0 * (recorded["accuracy"] - candidate["accuracy"]))
    report = {
        "artefact": artefact,
        "accuracy_drop_points": round(drop, 4),
        "max_accuracy_drop": max_drop,
        "passed": drop <= max_drop + 1e-9,
        "baseline": baseline,
        "candidate": candidate,
    }
    if recorded:
        report["recorded"] = recorded
    if not report["passed"]:
        rows = "\n".join(
            f"    {n:<16} {format_metric(baseline[n], n)} -> {format_metric(candidate[n], n)}"
            for n in METRIC_NAMES
            if n in baseline and n in candidate
        )
        raise AccuracyGateError(
            f"accuracy gate failed for {artefact}: validation accuracy fell {drop:.2f} points, more than "
            f"max_accuracy_drop={max_drop}. Nothing was written.\n  parent -> candidate:\n{rows}\n"
            + (
                f"  {hint}"
                if hint
                else "  Compress less, or raise max_accuracy_drop if the loss is acceptable."
            ),
            report,
        )
    return report
