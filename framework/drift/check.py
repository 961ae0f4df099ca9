"""Running the chosen drift tests on one window against a version's reference, with explanations."""

from __future__ import annotations

from pathlib import Path

from refit.data import to_label_ids
from refit.drift.embed import Reference, VersionEncoder, load_reference
from refit.drift.explain import class_shares, most_unlike, pca_2d
from refit.drift.windows import Window
from refit.errors import DataError
from refit.evaluate import score_probs

__all__ = ["run_window", "fit_reference_state"]


def fit_reference_state(version_dir: str | Path, seed: int = 0) -> dict:
    """Fit every detector's state (bandwidth, PCA basis, ...) on the reference alone and store it."""
    from refit.drift.state import fit_state, save_state

    reference = load_reference(version_dir)
    state = fit_state(reference.embeddings, seed=seed)
    save_state(Path(version_dir) / "reference", state)
    return state


def _state(version_dir: str | Path | None, reference: Reference, seed: int) -> dict:
    """The stored detector state, or one fitted now (on the reference only) when there is none to use."""
    from refit.drift.state import fit_state, load_state

    if version_dir is not None:
        try:
            return load_state(Path(version_dir) / "reference")
        except FileNotFoundError:  # a version written before detector state was stored
            pass
    return fit_state(reference.embeddings, seed=seed)


def run_window(window: Window, reference: Reference, encoder: VersionEncoder, label_names: list[str],
               tests: list[str], alpha: float, permutations: int, seed: int, version_dir: str | Path | None) -> dict:
    """One window's entry of drift.json: per-test results, the decision and what moved.

    `version_dir` holds the stored detector state; None fits it on `reference` (e.g. a re-embedded one).
    """
    from refit.drift.detectors import DETECTORS, ON_PROBS

    entry = {"name": window.name, "size": len(window.texts), "skipped": window.skipped, "drift": False,
             "results": {}}
    if window.skipped:
        return entry
    encoded = encoder.encode(window.texts)
    state = _state(version_dir, reference, seed)
    per_test_alpha = alpha / len(tests)  # Bonferroni: the window's false-alarm rate stays at alpha
    state = {**state, "label_names": label_names}
    for name in tests:
        if name in ON_PROBS:
            if reference.probs is None:  # a reference made without probabilities cannot run this test
                continue
            ref, cur = reference.probs, encoded.probs
        else:
            ref, cur = reference.embeddings, encoded.embeddings
        result = DETECTORS[name](ref, cur, alpha=per_test_alpha, seed=seed, state=state,
                                 permutations=permutations)
        entry["results"][name] = result.to_dict()
    entry["drift"] = any(r["drift"] for r in entry["results"].values())
    entry["class_shares"] = class_shares(encoded.probs)
    entry["most_unlike"] = most_unlike(reference.embeddings, encoded.embeddings, window.texts)
    _, (entry["projection"],) = pca_2d(reference.embeddings, encoded.embeddings, seed=seed)
    if window.labels is not None and label_names:
        try:
            entry["accuracy"] = score_probs(encoded.probs, to_label_ids(window.labels, label_names))["accuracy"]
        except DataError:  # labels of another label set: report no accuracy rather than fail the check
            entry["accuracy"] = None
    return entry
