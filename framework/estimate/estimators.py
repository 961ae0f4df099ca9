"""Accuracy of a model on a window of unlabelled inputs, estimated from its own probabilities.

Five estimators, one table (ESTIMATORS: name -> per-row statistic); each window estimate is the mean of a
per-row statistic, so one bootstrap serves all of them. A statistic may depend on the whole window
(cbpe_ls, twoview: the window's estimated class prior), so it is computed on each bootstrap replicate in turn
(the functions take logits [..., n, classes], leading axes being replicates, and twoview the probe's logits
of the same rows as `second`):

- cbpe: confidence-based performance estimation (NannyML's CBPE for classifiers): with calibrated
  probabilities the chance that a prediction is right is its max-probability, so the expected accuracy
  is their mean. Exact if the calibration still holds on the window; shift breaks that (models grow
  over-confident off-domain), which is where the estimate errs.
- atc: average thresholded confidence (Garg et al., ICLR 2022): a threshold on the negative entropy of
  calibrated probabilities, fitted on validation so that the share above it equals validation accuracy;
  the estimate is the share of the window above it.
- doc: difference of confidences (Guillory et al., ICCV 2021): validation accuracy minus the drop in
  mean raw confidence from validation to the window.
- cbpe_ls: CBPE corrected for label shift. The window's class prior is estimated by black-box shift
  estimation (BBSE, Lipton et al., ICML 2018: solve validation's confusion table [predicted][true] against
  the window's share of each predicted class), the calibrated probabilities are re-weighted by the prior
  ratio (Saerens et al., Neural Computation 2002), and the expected accuracy is their mean probability of
  the predicted class. Why: when a domain's classes are unbalanced the way the model leans (airline tweets:
  80% negative, 89% predicted negative) each prediction is more likely right than its validation-calibrated
  probability says; plain CBPE and DoC miss that by 15 points there (scripts/results/estimate.md). It
  assumes the shift is in the label balance only: where the model's lean is a bias the domain gives it
  (balanced Amazon electronics reviews, 27% predicted positive) it reads the lean as a prior and
  over-estimates. Needs the calibration's confusion table (calibration.json format /2).
- twoview: a second view settles that ambiguity. A probe on the base encoder's embeddings (refit.estimate.
  probe: fitted on the training rows, stacked with the version on validation) estimates the window's prior
  by BBSE too; label shift is believed only where both views move the prior the same way (a label-balance
  change moves every classifier's predictions; a lean the domain gives the fine-tuned model does not move
  the probe's), and then it is cbpe_ls on the stacked probabilities; otherwise DoC on the stack's
  confidence. The stack also keeps the probe's confidence where the version's falls on easy inputs. Needs
  the probe (calibration.json format /3) and the window's base-encoder embeddings.

Two 95% intervals. `low`/`high` are for the accuracy the window's labels would show, were they known: a percentile bootstrap over
the window's rows (fixed seed) for the estimate, with each replicate then drawn as a binomial share of n
correct at the replicate's estimate. The second step matters: a window's realised accuracy is itself a
binomial draw around the model's accuracy (about 2.5 points of sd at n 200, accuracy 0.8), far more than
the row-bootstrap of a mean confidence (measured: 36% coverage of window accuracy in-domain without it).
`ci_low`/`ci_high` (the row bootstrap alone) are for the expected accuracy on inputs like the window's:
the question a retrain decision asks (is the model hurt on this kind of input?), so maintenance uses them.
Both cover sampling noise, NOT the estimator's bias under shift (scripts/results/estimate.md measures that).

`estimate_f1` is CBPE's expected macro-F1 (the expected confusion counts from calibrated probabilities):
not a per-row mean, so it sits beside the accuracy table rather than in it.

PRIMARY is the estimator shown first (drift table, report) and the maintenance default: doc, which every
calibrator can serve and which errs on the safe side for a retrain trigger. In scripts/results/estimate.md
twoview has the lowest mean error (2.80 points over 11 domains on fresh windows; cbpe_ls 3.76, doc 4.67),
but its interval is wide (the prior re-estimated and the gate re-decided per replicate: 5.4 points vs doc's
1.8), so as a trigger it missed 51 of 99 harmed windows against doc's 45 (with 3 needless alarms vs 9);
cbpe_ls over-states accuracy where a lean is read as a prior and missed 96: better point estimates, not
better alarms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from refit.estimate.calibration import Calibration, apply_temperature, neg_entropy

__all__ = [
    "ESTIMATORS",
    "PRIMARY",
    "Estimate",
    "estimate_accuracy",
    "estimate_f1",
    "log_probs_of",
    "usable",
    "window_prior",
]

BOOTSTRAP = 200
LEVEL = 0.95


def _cbpe(logits: np.ndarray, cal: Calibration, second: np.ndarray | None = None) -> np.ndarray:
    return cal.calibrate(logits).max(axis=-1)


def _atc(logits: np.ndarray, cal: Calibration, second: np.ndarray | None = None) -> np.ndarray:
    return (neg_entropy(cal.calibrate(logits)) > cal.atc_threshold).astype(np.float64)


def _doc(logits: np.ndarray, cal: Calibration, second: np.ndarray | None = None) -> np.ndarray:
    # mean of (acc_val - conf_val + conf_i) == acc_val - (conf_val - mean conf_window)
    return cal.accuracy - cal.mean_confidence + apply_temperature(logits, 1.0).max(axis=-1)


def _bbse(predicted: np.ndarray, confusion: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """BBSE prior [..., classes] from predicted classes [..., n] and a [predicted][true] table."""
    share = np.eye(len(prior))[predicted].mean(-2)  # [..., classes]
    ratio = share @ np.linalg.pinv(confusion).T  # solves confusion @ ratio == predicted share
    shares = np.clip(ratio * prior, 0.0, None)
    total = shares.sum(-1, keepdims=True)
    return np.where(total > 0, shares / np.where(total > 0, total, 1.0), prior)


def window_prior(logits: np.ndarray, cal: Calibration) -> np.ndarray:
    """BBSE: the class prior [..., classes] of windows of logits [..., n, classes], from the share of each
    predicted class and validation's confusion table (least squares, so a singular table still answers;
    negative shares clipped to 0)."""
    return _bbse(np.asarray(logits).argmax(-1), np.asarray(cal.confusion), np.asarray(cal.class_prior))


def _shift(probs: np.ndarray, window: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Probabilities re-weighted from validation's class prior to the window's (Saerens et al. 2002)."""
    ratio = np.divide(window, prior, out=np.ones_like(window), where=prior > 0)  # a class absent: 1
    shifted = probs * ratio[..., None, :]
    return shifted / np.maximum(shifted.sum(-1, keepdims=True), 1e-300)


def _at(probs: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    return np.take_along_axis(probs, predicted[..., None], -1)[..., 0]


def _cbpe_ls(logits: np.ndarray, cal: Calibration, second: np.ndarray | None = None) -> np.ndarray:
    probs = cal.calibrate(logits)
    shifted = _shift(probs, window_prior(logits, cal), np.asarray(cal.class_prior))
    return _at(shifted, probs.argmax(-1))


_cbpe_ls.needs = "confusion"  # the Calibration field it reads; calibration.json /1 files lack it


def _twoview(logits: np.ndarray, cal: Calibration, second: np.ndarray | None = None) -> np.ndarray:
    """`second`: the probe's logits [..., n, classes] of the same rows (refit.estimate.probe)."""
    if second is None:
        raise ValueError("twoview needs the window's base-encoder embeddings (embeddings=...)")
    probe, prior = cal.probe, np.asarray(cal.class_prior)
    stacked = probe.stack(logits, second)
    version_prior = window_prior(logits, cal)
    probe_prior = _bbse(second.argmax(-1), np.asarray(probe.confusion), prior)
    # label shift is believed only where both views move the prior the same way (binary: the same sign)
    corroborated = ((version_prior - prior) * (probe_prior - prior)).sum(-1) > 0  # [...]
    shifted = _at(_shift(stacked, version_prior, prior), np.asarray(logits).argmax(-1))
    doc = cal.accuracy - probe.stack_mean_confidence + stacked.max(-1)
    return np.where(corroborated[..., None], shifted, doc)


_twoview.needs = "probe"

# name -> per-row statistic whose window mean is the estimated accuracy
ESTIMATORS: dict[str, Callable[[np.ndarray, Calibration], np.ndarray]] = {
    "cbpe": _cbpe,
    "atc": _atc,
    "doc": _doc,
    "cbpe_ls": _cbpe_ls,
    "twoview": _twoview,
}
PRIMARY = "doc"


def usable(cal: Calibration, embeddings: bool = False) -> list[str]:
    """The estimators this calibrator can serve (cbpe_ls needs the confusion table of format /2, twoview the
    probe of format /3 and, with `embeddings` False, is left out: it also reads the window's base-encoder
    embeddings)."""
    return [
        m
        for m, fn in ESTIMATORS.items()
        if getattr(cal, getattr(fn, "needs", ""), True) is not None and (embeddings or m != "twoview")
    ]


def twoview_unavailable(cal: Calibration | None, encoder_sha256: str | None) -> str:
    """Why twoview cannot be estimated on windows embedded by the encoder whose weights digest is
    `encoder_sha256` ('' where it can): every report that leaves it out says this instead of going quiet."""
    if cal is None:
        return (
            "the version has no calibration.json (made before refit.estimate, or without a validation split)"
        )
    probe = cal.probe
    if probe is None:
        return (
            f"the version has no probe: {cal.no_probe or 'an older version, made before twoview stored one'}"
        )
    if not probe.encoder_sha256 or probe.encoder_sha256 != encoder_sha256:
        return (
            f"the windows are not embedded by the encoder its probe was fitted on ({probe.encoder or '?'}): a "
            "one-off --encoder, or a reference re-embedded by another encoder (--refresh_reference --encoder)"
        )
    return ""


@dataclass
class Estimate:
    """Estimated accuracy of one window, with its percentile-bootstrap interval."""

    method: str
    value: float
    low: float  # 95% interval of the window's realised accuracy (what its labels would show)
    high: float
    n: int
    ci_low: float = 0.0  # 95% interval of the expected accuracy on inputs like these (row bootstrap only)
    ci_high: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


def log_probs_of(probs) -> np.ndarray:
    """Probabilities as log-probabilities (what the estimators take in place of logits: softmax is
    invariant to a per-row shift, so softmax(log p / T) == softmax(logits / T))."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-30, 1.0))


def estimate_accuracy(
    logits: np.ndarray,
    cal: Calibration,
    methods: tuple[str, ...] | list[str] | None = None,
    bootstrap: int = BOOTSTRAP,
    seed: int = 0,
    level: float = LEVEL,
    embeddings: np.ndarray | None = None,
) -> dict[str, Estimate]:
    """Every requested estimator (default: every one the calibrator and the inputs can serve) on one window
    of logits (or log-probabilities) [n, classes]; `embeddings` [n, dim] are the same rows embedded by the
    version's base encoder (how its drift reference is embedded), which twoview needs."""
    has_embeddings = embeddings is not None
    methods = usable(cal, has_embeddings) if methods is None else list(methods)
    unknown = [m for m in methods if m not in ESTIMATORS]
    if unknown:
        raise ValueError(f"unknown estimator(s) {unknown}; allowed: {', '.join(ESTIMATORS)}")
    missing = [m for m in methods if m not in usable(cal, True)]
    if missing:
        raise ValueError(
            f"estimator(s) {missing} need a calibration.json with a confusion table (format /2; twoview: "
            f"a probe, format /3); this calibrator has none (fine-tune again): usable here: "
            f"{', '.join(usable(cal, has_embeddings))}"
        )
    if "twoview" in methods and not has_embeddings:
        raise ValueError("estimator twoview needs the window's base-encoder embeddings (embeddings=...)")
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or len(logits) == 0:
        raise ValueError(f"estimate_accuracy needs logits [n >= 1, classes], got shape {logits.shape}")
    second = None
    if has_embeddings and "twoview" in methods:
        if len(embeddings) != len(logits):
            raise ValueError(f"{len(embeddings)} embeddings for {len(logits)} rows of logits")
        second = cal.probe.logits(embeddings)
    n = len(logits)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n, size=(bootstrap, n))  # same resamples for every method
    out = {}
    replicates = logits[rows]  # [bootstrap, n, classes]
    second_replicates = None if second is None else second[rows]
    for name in methods:
        stat = ESTIMATORS[name](logits, cal, second)
        means = np.clip(ESTIMATORS[name](replicates, cal, second_replicates).mean(axis=-1), 0.0, 1.0)
        realised = rng.binomial(n, means) / n  # what labels of n rows would show at that accuracy
        q = [(1 - level) / 2, (1 + level) / 2]
        lo, hi = np.quantile(realised, q)
        ci_lo, ci_hi = np.quantile(means, q)
        clip = lambda x: float(min(1.0, max(0.0, x)))  # noqa: E731 (DoC can leave [0, 1])
        out[name] = Estimate(name, clip(stat.mean()), clip(lo), clip(hi), n, clip(ci_lo), clip(ci_hi))
    return out


def _expected_macro_f1(probs: np.ndarray) -> np.ndarray:
    """CBPE's expected macro-F1 of each bootstrap replicate: probs [..., n, classes] calibrated.

    With calibrated probabilities a row predicted as class k is a true positive of k with chance p_k and a
    false positive with chance 1 - p_k, and a row predicted otherwise is a false negative of k with chance
    p_k; F1_k = 2 TP / (2 TP + FP + FN) from those expected counts (NannyML's CBPE does the same per
    threshold), then the unweighted mean over classes, as torchmetrics' macro F1 in refit.evaluate."""
    classes = probs.shape[-1]
    predicted = np.eye(classes)[probs.argmax(-1)]  # one-hot [..., n, classes]
    tp = (predicted * probs).sum(-2)
    fp = (predicted * (1 - probs)).sum(-2)
    fn = ((1 - predicted) * probs).sum(-2)
    return (2 * tp / np.maximum(2 * tp + fp + fn, 1e-12)).mean(-1)


def estimate_f1(
    logits: np.ndarray, cal: Calibration, bootstrap: int = BOOTSTRAP, seed: int = 0, level: float = LEVEL
) -> Estimate:
    """CBPE's expected macro-F1 of a window of logits (or log-probabilities) [n, classes], with a
    row-bootstrap interval (ci_low/ci_high; low/high are the same: F1 has no per-row binomial form)."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or len(logits) == 0:
        raise ValueError(f"estimate_f1 needs logits [n >= 1, classes], got shape {logits.shape}")
    probs = cal.calibrate(logits)
    rows = np.random.default_rng(seed).integers(0, len(probs), size=(bootstrap, len(probs)))
    reps = _expected_macro_f1(probs[rows])
    lo, hi = (float(x) for x in np.quantile(reps, [(1 - level) / 2, (1 + level) / 2]))
    return Estimate("cbpe_f1", float(_expected_macro_f1(probs)), lo, hi, len(probs), lo, hi)
