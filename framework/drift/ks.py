"""Kolmogorov-Smirnov tests on the reference's top principal components, Bonferroni-corrected."""

from __future__ import annotations

import torch

from refit.drift.result import DriftResult

__all__ = ["fit_pca", "ks_test"]


def fit_pca(reference: torch.Tensor, n_components: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [d], basis [k, d]) of the reference's top components: fitted on the reference only."""
    x = reference.float()
    mean = x.mean(0)
    _, _, v = torch.linalg.svd(x - mean, full_matrices=False)
    return mean, v[: min(n_components, v.shape[0])]


def ks_test(
    reference: torch.Tensor,
    current: torch.Tensor,
    alpha: float = 0.05,
    n_components: int = 10,
    pca: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> DriftResult:
    """Two-sample KS per component; the window drifts if any component's p < alpha / k.

    Without a given `pca` the components are fitted on `reference` itself, which inflates false alarms
    a little; the stored KS state (refit.drift.detectors.KS) avoids that by fitting on a separate half.
    """
    from scipy.stats import ks_2samp

    mean, basis = pca if pca is not None else fit_pca(reference, n_components)
    ref = ((reference.float() - mean) @ basis.T).numpy()
    cur = ((current.float() - mean) @ basis.T).numpy()
    k = basis.shape[0]
    tests = [ks_2samp(ref[:, c], cur[:, c]) for c in range(k)]
    pvals = [float(t.pvalue) for t in tests]
    stats = [float(t.statistic) for t in tests]
    p = min(1.0, min(pvals) * k)  # Bonferroni-adjusted p of the most shifted component
    moved = [c for c in range(k) if pvals[c] < alpha / k]
    explanation = (
        "components moved: " + ", ".join(f"PC{c + 1} (KS {stats[c]:.2f}, p {pvals[c]:.2g})" for c in moved)
        if moved
        else f"no component moved at alpha/{k}"
    )
    return DriftResult(
        "ks",
        max(stats),
        p,
        alpha,
        p < alpha,
        explanation,
        {"per_component_p": pvals, "per_component_statistic": stats, "components_moved": moved},
    )
