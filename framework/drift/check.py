"""Running the chosen drift tests on one window against a version's reference, with explanations."""

from __future__ import annotations

import torch

from refit.data import to_label_ids
from refit.drift.detectors import DETECTORS
from refit.drift.embed import VersionEncoder
from refit.drift.explain import class_shares, most_unlike, pca_2d
from refit.drift.reference import Reference
from refit.drift.windows import Window
from refit.errors import DataError, VersionError
from refit.estimate import Calibration, estimate_accuracy, log_probs_of, twoview_unavailable
from refit.evaluate import score_probs

__all__ = ["run_window"]


def run_window(
    window: Window,
    reference: Reference,
    encoder: VersionEncoder,
    label_names: list[str],
    tests: list[str],
    alpha: float,
    permutations: int,
    seed: int,
    calibration: Calibration | None = None,
) -> dict:
    """One window's entry of drift.json: per-test results, the decision and what moved.

    The detectors' states come with `reference` (refit.drift.reference.load_reference loads them once);
    a reference without them (e.g. re-embedded by a fixed encoder) has them fitted on first use, on the
    reference only, with `seed`. With the version's `calibration` (and its own
    probabilities: not a fixed --encoder's), the entry carries the label-free accuracy estimates
    ("estimate": {method: {value, low, high, n}}, refit.estimate); twoview among them only where the window
    was embedded by the very encoder weights its probe was fitted on (not under a one-off --encoder).
    """
    entry = {
        "name": window.name,
        "size": len(window.texts),
        "skipped": window.skipped,
        "drift": False,
        "results": {},
    }
    if window.skipped:
        return entry
    encoded = encoder.encode(window.texts)
    for what, values in (("embeddings", encoded.embeddings), ("probabilities", encoded.probs)):
        if values is not None and not torch.isfinite(values).all():  # every test would be silently wrong
            raise VersionError(
                f"Window {window.name} ({window.source}): the model gave non-finite {what} (NaN or inf); its "
                "weights are damaged or overflow. No drift decision can be made with them."
            )
    if not reference.states:
        reference.seed = seed
    per_test_alpha = alpha / len(tests)  # Bonferroni: the window's false-alarm rate stays at alpha
    for name in tests:
        detector = DETECTORS[name]
        if detector.on_probs:
            if reference.probs is None:  # a reference made without probabilities cannot run this test
                continue
            ref, cur = reference.probs, encoded.probs
        else:
            ref, cur = reference.embeddings, encoded.embeddings
        result = detector.test(
            reference.state(name),
            ref,
            cur,
            alpha=per_test_alpha,
            seed=seed,
            permutations=permutations,
            label_names=label_names,
        )
        entry["results"][name] = result.to_dict()
    entry["drift"] = any(r["drift"] for r in entry["results"].values())
    if calibration is not None:
        estimates = estimate_accuracy(
            log_probs_of(encoded.probs.numpy()),
            calibration,
            seed=seed,
            embeddings=None
            if twoview_unavailable(calibration, encoder.encoder_sha256)
            else encoded.embeddings.numpy(),
        )
        entry["estimate"] = {k: e.to_dict() for k, e in estimates.items()}
    entry["class_shares"] = class_shares(encoded.probs)
    entry["truncated_rows"] = encoded.truncated  # cut at max_length: tested on their first tokens only
    entry["most_unlike"] = most_unlike(reference.embeddings, encoded.embeddings, window.texts)
    _, (entry["projection"],) = pca_2d(reference.embeddings, encoded.embeddings, seed=seed)
    if window.labels is not None and label_names:
        try:
            entry["accuracy"] = score_probs(encoded.probs, to_label_ids(window.labels, label_names))[
                "accuracy"
            ]
        except DataError:  # labels of another label set: report no accuracy rather than fail the check
            entry["accuracy"] = None
    return entry
