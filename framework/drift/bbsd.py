"""Black-box shift detection (Rabanser et al., "Failing Loudly", 2019): KS tests on the model's softmax outputs."""

from __future__ import annotations

import torch

from refit.drift.result import DriftResult

__all__ = ["bbsd_test"]


def bbsd_test(
    reference_probs: torch.Tensor,
    current_probs: torch.Tensor,
    alpha: float = 0.05,
    label_names: list[str] | None = None,
) -> DriftResult:
    """Per-class KS on predicted probabilities, Bonferroni over classes (one class for binary models, whose
    two columns carry the same information)."""
    from scipy.stats import ks_2samp

    n_classes = reference_probs.shape[1]
    classes = [1] if n_classes == 2 else list(range(n_classes))
    names = label_names or [str(c) for c in range(n_classes)]
    tests = {c: ks_2samp(reference_probs[:, c].numpy(), current_probs[:, c].numpy()) for c in classes}
    pvals = {c: float(t.pvalue) for c, t in tests.items()}
    p = min(1.0, min(pvals.values()) * len(classes))
    ref_share = torch.bincount(reference_probs.argmax(1), minlength=n_classes).float() / len(reference_probs)
    cur_share = torch.bincount(current_probs.argmax(1), minlength=n_classes).float() / max(
        len(current_probs), 1
    )
    moves = sorted(range(n_classes), key=lambda c: -abs(float(cur_share[c] - ref_share[c])))
    explanation = "predicted shares: " + ", ".join(
        f"{names[c]} {float(ref_share[c]):.0%} -> {float(cur_share[c]):.0%}" for c in moves[:4]
    )
    return DriftResult(
        "bbsd",
        max(float(t.statistic) for t in tests.values()),
        p,
        alpha,
        p < alpha,
        explanation,
        {
            "per_class_p": {names[c]: v for c, v in pvals.items()},
            "reference_shares": ref_share.tolist(),
            "current_shares": cur_share.tolist(),
        },
    )
