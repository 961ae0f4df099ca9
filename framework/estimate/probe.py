"""A second, label-blind view of the inputs for the `twoview` estimator (refit.estimate.estimators).

The probe is a logistic regression on the base encoder's embeddings (the pre-trained model that embeds
the version's drift reference: data.reference_encoder base), fitted on the version's training rows. It is
a second classifier that never saw the fine-tuning, so it errs differently from the version: on short,
easy sentences it stays confident where the fine-tuned model's confidence falls (uci_sentences), and a
lean the domain gives the version (balanced Amazon reviews read as mostly negative) is not its lean.

Two things are fitted on validation, where the labels are:
- the stack: softmax(a * log p_version + b * log p_probe + c), a, b scalars and c a class bias, by NLL
  (stacked generalisation, Wolpert 1992): one calibrated probability from both views;
- the probe's confusion table [predicted][true], so the window's class prior can be estimated from the
  probe's predictions too (BBSE) and compared with the version's estimate.

Stored in calibration.json (format /3, key "probe"): a few hundred floats, written with the version.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Probe", "fit_probe", "unit_rows"]

PROBE_C = 1.0  # sklearn's default inverse regularisation: not tuned on any domain


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (sentence embeddings are compared by angle; their norm carries little)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class Probe:
    """A linear probe on base-encoder embeddings plus its stack with the version, fitted at fine-tune time."""

    coef: list[list[float]]  # [classes][dim] on unit-normalised embeddings
    intercept: list[float]  # [classes]
    confusion: list[list[float]]  # the probe's [predicted][true] shares on validation (sum 1)
    stack_weights: list[float]  # (a, b): weights of log p_version and log p_probe in the stack
    stack_bias: list[float]  # [classes]
    stack_mean_confidence: float  # mean max-probability of the stack on validation (DoC's baseline)
    train_rows: int
    dim: int
    # the encoder whose embeddings it reads (as the drift reference records it): a caller embedding windows
    # with another encoder (a one-off `refit drift --encoder`) must not feed them to the probe
    encoder: str = ""
    encoder_sha256: str = ""

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        """The probe's logits [..., n, classes] of embeddings [..., n, dim] (the base encoder's)."""
        emb = unit_rows(embeddings)
        if emb.shape[-1] != self.dim:
            raise ValueError(
                f"the probe takes {self.dim}-d embeddings of the base encoder, got {emb.shape[-1]}"
            )
        return emb @ np.asarray(self.coef).T + np.asarray(self.intercept)

    def stack(self, logits: np.ndarray, probe_logits: np.ndarray) -> np.ndarray:
        """Stacked probabilities [..., n, classes] from the version's logits and the probe's."""
        from scipy.special import log_softmax  # here, not at import: scipy.special costs ~0.3 s to load

        a, b = self.stack_weights
        z = (
            a * log_softmax(logits, axis=-1)
            + b * log_softmax(probe_logits, axis=-1)
            + np.asarray(self.stack_bias)
        )
        return np.exp(log_softmax(z, axis=-1))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> Probe:
        """A probe read from calibration.json; ValueError (the caller names the file) when malformed."""
        probe = cls(**raw)
        coef, intercept = (
            np.asarray(probe.coef, dtype=np.float64),
            np.asarray(probe.intercept, dtype=np.float64),
        )
        confusion = np.asarray(probe.confusion, dtype=np.float64)
        classes = len(intercept)
        if coef.shape != (classes, probe.dim) or confusion.shape != (classes, classes):
            raise ValueError("probe coef must be [classes][dim] and confusion [classes][classes]")
        if len(probe.stack_weights) != 2 or len(probe.stack_bias) != classes:
            raise ValueError("probe stack_weights must be 2 numbers and stack_bias one per class")
        numbers = [coef, intercept, confusion, np.asarray(probe.stack_weights), np.asarray(probe.stack_bias)]
        if not all(np.isfinite(x).all() for x in numbers) or not math.isfinite(probe.stack_mean_confidence):
            raise ValueError("probe holds a non-finite number")
        if (confusion < 0).any() or abs(confusion.sum() - 1) > 1e-6:
            raise ValueError("probe confusion must hold non-negative shares that sum to 1")
        return probe


def _fit_stack(version_logits: np.ndarray, probe_logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(a, b, c_1 .. c_{k-1}) minimising validation NLL of the stack (c_0 fixed at 0: softmax is shift-free)."""
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    lf, lg = log_softmax(version_logits, axis=-1), log_softmax(probe_logits, axis=-1)
    rows, classes = np.arange(len(labels)), lf.shape[1]

    def nll(theta: np.ndarray) -> float:
        bias = np.r_[0.0, theta[2:]]
        return float(-log_softmax(theta[0] * lf + theta[1] * lg + bias, axis=-1)[rows, labels].mean())

    start = np.r_[1.0, 0.0, np.zeros(classes - 1)]
    theta = minimize(nll, start, method="L-BFGS-B").x
    return np.r_[theta[:2], 0.0, theta[2:]]


def fit_probe(
    train_embeddings: np.ndarray,
    train_labels: np.ndarray,
    val_embeddings: np.ndarray,
    val_logits: np.ndarray,
    val_labels: np.ndarray,
    encoder: str = "",
    encoder_sha256: str = "",
) -> Probe:
    """Fit the probe on training rows (base-encoder embeddings, labels), then its stack with the version and
    its confusion table on validation (the version's logits or log-probabilities and the same rows' labels)."""
    from sklearn.linear_model import LogisticRegression

    train_labels, val_labels = (
        np.asarray(train_labels, dtype=np.int64),
        np.asarray(val_labels, dtype=np.int64),
    )
    val_logits = np.asarray(val_logits, dtype=np.float64)
    classes = val_logits.shape[1]
    if len(np.unique(train_labels)) < 2 or len(val_labels) < 2 or len(val_embeddings) != len(val_labels):
        raise ValueError("the probe needs training rows of >= 2 classes and >= 2 validation rows with labels")
    clf = LogisticRegression(C=PROBE_C, max_iter=2000).fit(unit_rows(train_embeddings), train_labels)
    coef = np.zeros((classes, clf.coef_.shape[1]))
    intercept = np.zeros(classes)
    if len(clf.classes_) == 2:  # sklearn's binary form: one row for the second class
        coef[clf.classes_[1]], intercept[clf.classes_[1]] = clf.coef_[0], clf.intercept_[0]
    else:
        coef[clf.classes_], intercept[clf.classes_] = clf.coef_, clf.intercept_
    dim = coef.shape[1]
    probe_val = unit_rows(val_embeddings) @ coef.T + intercept
    confusion = np.zeros((classes, classes))
    np.add.at(confusion, (probe_val.argmax(1), val_labels), 1.0 / len(val_labels))
    theta = _fit_stack(val_logits, probe_val, val_labels)
    probe = Probe(
        coef=coef.tolist(),
        intercept=intercept.tolist(),
        confusion=confusion.tolist(),
        stack_weights=[float(theta[0]), float(theta[1])],
        stack_bias=[float(x) for x in theta[2:]],
        stack_mean_confidence=0.0,
        train_rows=len(train_labels),
        dim=dim,
        encoder=encoder,
        encoder_sha256=encoder_sha256,
    )
    probe.stack_mean_confidence = float(probe.stack(val_logits, probe_val).max(-1).mean())
    return probe
