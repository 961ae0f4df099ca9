"""Explanations that do not depend on a test: what the window looks like next to the reference."""

from __future__ import annotations

import torch

__all__ = ["class_shares", "most_unlike", "pca_2d"]


def class_shares(probs: torch.Tensor) -> list[float]:
    """Share of inputs predicted as each class."""
    if probs.numel() == 0:
        return []
    counts = torch.bincount(probs.argmax(-1), minlength=probs.shape[1]).float()
    return (counts / counts.sum()).tolist()


def most_unlike(reference: torch.Tensor, current: torch.Tensor, texts: list[str], k: int = 5) -> list[dict]:
    """The current inputs farthest (cosine) from their nearest reference input: what is new in the window.
    `row` is the input's 1-based position in the window, what a report shows when texts are not stored."""
    ref = torch.nn.functional.normalize(reference.float(), dim=1)
    cur = torch.nn.functional.normalize(current.float(), dim=1)
    nearest = torch.cat([(1 - c @ ref.T).min(dim=1).values for c in cur.split(1024)])
    top = nearest.topk(min(k, len(texts))).indices.tolist()
    return [{"text": texts[i], "row": i + 1, "score": float(nearest[i])} for i in top]


def pca_2d(reference: torch.Tensor, *others: torch.Tensor, max_points: int = 300, seed: int = 0):
    """Project the reference and other samples on the reference's first two principal components."""
    mean = reference.mean(0)
    _, _, v = torch.linalg.svd(reference - mean, full_matrices=False)
    basis = v[:2].T
    g = torch.Generator().manual_seed(seed)

    def project(x: torch.Tensor) -> list[list[float]]:
        if len(x) > max_points:
            x = x[torch.randperm(len(x), generator=g)[:max_points]]
        return [[round(a, 4), round(b, 4)] for a, b in ((x - mean) @ basis).tolist()]

    return project(reference), [project(o) for o in others]
