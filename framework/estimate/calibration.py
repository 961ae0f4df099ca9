"""Temperature scaling of a version's probabilities, fitted on held-out validation logits.

Why temperature and not isotonic regression: one scalar cannot reorder predictions (accuracy and AUROC are
unchanged), it needs no binning, it cannot overfit a few hundred validation rows the way a free monotone
map does, and it stays a sensible map outside the validation range of confidences. That last point
matters most here: the estimators (refit.estimate.estimators) apply the calibrator to shifted production
windows whose confidences a step-function isotonic fit has never seen. Guo et al. (ICML 2017) found it as
good as or better than isotonic for neural classifiers.

The calibrator also carries what the label-free estimators need from validation (its accuracy, mean raw
confidence, ATC threshold), so a version's `calibration.json` is everything `refit.estimate` reads.
It is written inside the version's atomic write (models.write_version), like the drift reference.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from refit.errors import VersionError
from refit.estimate.probe import Probe
from refit.io import write_json

__all__ = [
    "CALIBRATION_JSON",
    "Calibration",
    "apply_temperature",
    "expected_calibration_error",
    "fit_calibration",
    "fit_temperature",
    "load_calibration",
    "log_probs",
]

CALIBRATION_JSON = "calibration.json"
ECE_BINS = 15  # as torchmetrics' MulticlassCalibrationError in refit.evaluate, so the figures compare
# /2 added class_prior and confusion (cbpe_ls), /3 probe (twoview), /4 no_probe (why a version has none)
_FORMAT = "refit-calibration/4"
_FORMATS = (
    "refit-calibration/1",
    "refit-calibration/2",
    "refit-calibration/3",
    _FORMAT,
)  # older files still load


def log_probs(scores: np.ndarray) -> np.ndarray:
    """Log-softmax of logits [..., classes]; also accepts probabilities' logs (softmax is shift-invariant
    per row). Leading axes are free, so the estimators can score a stack of bootstrap replicates at once."""
    z = np.asarray(scores, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T). Probabilities may be passed as log(p): log-softmax is the logits up to a shift."""
    return np.exp(log_probs(np.asarray(logits, dtype=np.float64) / temperature))


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    return float(-log_probs(logits / temperature)[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, iters: int = 80) -> float:
    """The T minimising validation NLL of softmax(logits / T), by golden-section search on log T in [-4, 4].

    NLL is convex in 1/T, hence unimodal in log T: a 1-D bracket search finds the optimum without a
    learning rate or an optimiser's stopping rules (T within ~1e-6 relative after 80 steps).
    """
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    lo, hi = -4.0, 4.0
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = _nll(logits, labels, math.exp(a)), _nll(logits, labels, math.exp(b))
    for _ in range(iters):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = _nll(logits, labels, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = _nll(logits, labels, math.exp(b))
    return math.exp((lo + hi) / 2)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE with equal-width confidence bins: sum over bins of share * |accuracy - confidence|."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    conf, correct = probs.max(axis=1), (probs.argmax(axis=1) == labels).astype(np.float64)
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)  # (k/bins, (k+1)/bins]
    ece = 0.0
    for k in range(bins):
        m = which == k
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def neg_entropy(probs: np.ndarray) -> np.ndarray:
    """Negative entropy per row (ATC's score: Garg et al. 2022 found it better than max-probability)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    return (p * np.log(p)).sum(axis=-1)


@dataclass
class Calibration:
    """A fitted temperature plus the validation statistics the label-free estimators start from."""

    temperature: float
    n: int  # validation rows it was fitted on
    accuracy: float  # validation accuracy (temperature does not change it)
    mean_confidence: float  # mean raw (uncalibrated) max-probability on validation: DoC's baseline
    atc_threshold: float  # negative entropy of calibrated probs; share of validation above it == accuracy
    ece_before: float
    ece_after: float  # out-of-fold: 2-fold cross-fitted, so it is not flattered by fitting on the same rows
    source: str = "validation"
    note: str = ""
    # what label-shift estimation (estimators.cbpe_ls) needs; None in files made before it existed
    class_prior: list[float] | None = None  # share of each class among the validation labels
    confusion: list[list[float]] | None = None  # [predicted][true] joint shares on validation (sum 1)
    # what twoview needs (a probe on the base encoder's embeddings: refit.estimate.probe); None before /3
    probe: Probe | None = None
    # why `probe` is None, as fine-tuning found it (data.probe_rows 0, a one-class sample, no fixed encoder);
    # "" where there is a probe, or in a file from before /4 (an older version: the reason is not known)
    no_probe: str = ""

    def calibrate(self, logits_or_log_probs: np.ndarray) -> np.ndarray:
        return apply_temperature(logits_or_log_probs, self.temperature)

    def save(self, folder: str | Path) -> None:
        """Write calibration.json into `folder` (a version's staging folder: see models.write_version)."""
        write_json(Path(folder) / CALIBRATION_JSON, {"format": _FORMAT, **asdict(self)})

    def metrics(self) -> dict[str, float]:
        """What refit.json's metrics["calibration"] records."""
        return {
            "temperature": self.temperature,
            "ece_before": self.ece_before,
            "ece_after": self.ece_after,
            "n": float(self.n),
        }


def atc_threshold(scores: np.ndarray, accuracy: float) -> float:
    """The t with mean(scores > t) == accuracy (up to ties): the (1 - accuracy) quantile of the scores."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    k = int(round((1 - accuracy) * len(s)))  # rows at or below t
    if k <= 0:
        return float(s[0] - 1e-9)
    if k >= len(s):
        return float(s[-1])
    return float((s[k - 1] + s[k]) / 2)


def fit_calibration(
    logits: np.ndarray, labels: np.ndarray, *, source: str = "validation", seed: int = 0
) -> Calibration:
    """Fit the temperature on all held-out rows; ECE after is measured out-of-fold (two halves, each scored
    with the temperature fitted on the other), the honest figure for rows the calibrator has not seen."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if len(labels) < 2 or logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(
            f"calibration needs >= 2 rows of logits [n, classes] and n labels; got {logits.shape}, "
            f"{len(labels)} labels"
        )
    t = fit_temperature(logits, labels)
    raw = apply_temperature(logits, 1.0)
    cal = apply_temperature(logits, t)
    perm = np.random.default_rng(seed).permutation(len(labels))
    halves = (perm[: len(perm) // 2], perm[len(perm) // 2 :])
    oof = np.empty_like(cal)
    for fit_on, score_on in (halves, halves[::-1]):
        oof[score_on] = apply_temperature(logits[score_on], fit_temperature(logits[fit_on], labels[fit_on]))
    predicted = raw.argmax(1)
    accuracy = float((predicted == labels).mean())
    classes = logits.shape[1]
    confusion = np.zeros((classes, classes))
    np.add.at(confusion, (predicted, labels), 1.0 / len(labels))
    return Calibration(
        temperature=t,
        n=len(labels),
        accuracy=accuracy,
        mean_confidence=float(raw.max(1).mean()),
        atc_threshold=atc_threshold(neg_entropy(cal), accuracy),
        ece_before=expected_calibration_error(raw, labels),
        ece_after=expected_calibration_error(oof, labels),
        source=source,
        class_prior=[float(x) for x in confusion.sum(0)],
        confusion=[[float(x) for x in row] for row in confusion],
    )


def _check_label_shift_fields(cal: Calibration) -> None:
    """confusion must be a square table of shares summing to 1 and class_prior its column sums."""
    confusion = np.asarray(cal.confusion, dtype=np.float64)
    prior = np.asarray(cal.class_prior, dtype=np.float64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1] or prior.shape != confusion.shape[:1]:
        raise ValueError("confusion must be [classes][classes] and class_prior [classes]")
    if not (np.isfinite(confusion).all() and (confusion >= 0).all() and abs(confusion.sum() - 1) < 1e-6):
        raise ValueError("confusion must hold non-negative shares that sum to 1")
    if not np.allclose(confusion.sum(0), prior, atol=1e-6):
        raise ValueError("class_prior must equal the column sums of confusion")


def load_calibration(version_dir: str | Path) -> Calibration | None:
    """The version's calibrator, or None for a version made before calibration was stored (no file).

    Read from the (already verified) version folder; a malformed file is refused with its path."""
    path = Path(version_dir) / CALIBRATION_JSON
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.pop("format", None) not in _FORMATS:
            raise ValueError(f"format is not one of {', '.join(_FORMATS)}")
        if raw.get("probe") is not None:
            raw["probe"] = Probe.from_dict(raw["probe"])
        cal = Calibration(**raw)
        if not (cal.temperature > 0 and math.isfinite(cal.temperature)):
            raise ValueError(f"temperature {cal.temperature} is not a positive number")
        if cal.confusion is not None or cal.class_prior is not None:
            _check_label_shift_fields(cal)
    except (ValueError, TypeError) as exc:
        raise VersionError(f"{path} is not a valid calibration file ({exc}).") from None
    return cal
