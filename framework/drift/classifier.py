"""Classifier two-sample test: can a domain classifier tell reference from current embeddings?"""

from __future__ import annotations

import math

import torch

from refit.drift.result import DriftResult

__all__ = ["classifier_test"]


def classifier_test(
    reference: torch.Tensor,
    current: torch.Tensor,
    alpha: float = 0.05,
    seed: int = 0,
    folds: int = 5,
) -> DriftResult:
    """Logistic regression on the embeddings, out-of-fold AUC; one-sided p-value from the Mann-Whitney
    normal approximation (under no drift the AUC is 0.5 with variance (n1 + n2 + 1) / (12 n1 n2))."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([reference.float().numpy(), current.float().numpy()])
    y = np.concatenate([np.zeros(len(reference)), np.ones(len(current))])
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced"))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, x, y, cv=cv, method="predict_proba")[:, 1]
    auc = float(roc_auc_score(y, scores))
    n1, n2 = len(reference), len(current)
    z = (auc - 0.5) / math.sqrt((n1 + n2 + 1) / (12 * n1 * n2))
    p = 0.5 * math.erfc(z / math.sqrt(2))
    top = np.argsort(-scores[n1:])[:5]
    return DriftResult("classifier", auc, p, alpha, p < alpha,
                       f"a domain classifier separates the window from the reference with out-of-fold AUC {auc:.3f}",
                       {"auc": auc, "z": z, "most_separable_current_rows": top.tolist()})
