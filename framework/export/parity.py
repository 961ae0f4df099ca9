"""How closely an exported artefact reproduces the PyTorch model it came from."""

from __future__ import annotations

import numpy as np

__all__ = ["parity"]


def parity(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float | int]:
    """Max/mean absolute logit difference and the share of inputs whose predicted class agrees."""
    if reference.shape != candidate.shape:
        raise ValueError(f"logit shapes differ: {reference.shape} vs {candidate.shape}")
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    return {
        "n": int(reference.shape[0]),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "argmax_agreement": float((reference.argmax(-1) == candidate.argmax(-1)).mean())
        if diff.size
        else 1.0,
    }
