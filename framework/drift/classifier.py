"""Classifier two-sample test: can a domain classifier tell reference from current embeddings?"""

from __future__ import annotations

import torch

from refit.drift.result import DriftResult

__all__ = ["classifier_test"]


def classifier_test(
    reference: torch.Tensor,
    current: torch.Tensor,
    alpha: float = 0.05,
    seed: int = 0,
    test_fraction: float = 0.5,
) -> DriftResult:
    """Logistic regression trained on one half, AUC on the held-out half, one-sided Mann-Whitney p-value.

    A single held-out split keeps the p-value exact: given the trained model, held-out scores are
    exchangeable under no drift. Pooling out-of-fold scores of K models instead breaks that exchangeability
    (measured: 12% false alarms at alpha 0.05), so this trades a little power for calibration.
    """
    import numpy as np
    from scipy.stats import mannwhitneyu
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([reference.float().numpy(), current.float().numpy()])
    y = np.concatenate([np.zeros(len(reference)), np.ones(len(current))])
    idx = np.arange(len(y))
    train, test = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced"))
    model.fit(x[train], y[train])
    scores = model.predict_proba(x[test])[:, 1]
    cur_scores, ref_scores = scores[y[test] == 1], scores[y[test] == 0]
    u = mannwhitneyu(cur_scores, ref_scores, alternative="greater")
    auc = float(u.statistic / (len(cur_scores) * len(ref_scores)))
    p = float(u.pvalue)
    held_out_current = test[y[test] == 1] - len(reference)
    top = held_out_current[np.argsort(-cur_scores)[:5]]
    return DriftResult(
        "classifier",
        auc,
        p,
        alpha,
        p < alpha,
        f"a domain classifier separates held-out window inputs from the reference with AUC {auc:.3f}",
        {"auc": auc, "held_out": int(len(test)), "most_separable_current_rows": top.tolist()},
    )
