"""The table of drift tests. Each entry has one signature, so adding a test is one file and one line here.

    detector(reference, current, alpha=..., seed=..., state=..., permutations=...) -> DriftResult

`reference`/`current` are embeddings, except for tests in ON_PROBS, which get softmax outputs. `state` is
the detector state fitted on the reference (refit.drift.state); a test uses what it needs from it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from refit.drift.bbsd import bbsd_test
from refit.drift.classifier import classifier_test
from refit.drift.ks import ks_test
from refit.drift.mmd import mmd_test
from refit.drift.result import DriftResult

__all__ = ["DETECTORS", "ON_PROBS", "Detector"]

Detector = Callable[..., DriftResult]


def _mmd(reference: torch.Tensor, current: torch.Tensor, alpha: float, seed: int, state: dict | None,
         permutations: int) -> DriftResult:
    return mmd_test(reference, current, permutations, seed, alpha, (state or {}).get("bandwidth"))


def _ks(reference: torch.Tensor, current: torch.Tensor, alpha: float, seed: int, state: dict | None,
        permutations: int) -> DriftResult:
    if state and "pca_basis" in state:  # components fitted on the other half of the reference (see state.py)
        rows = state.get("ks_reference_rows")
        return ks_test(reference if rows is None else reference[rows.long()], current, alpha,
                       pca=(state["pca_mean"], state["pca_basis"]))
    return ks_test(reference, current, alpha)


def _classifier(reference: torch.Tensor, current: torch.Tensor, alpha: float, seed: int, state: dict | None,
                permutations: int) -> DriftResult:
    return classifier_test(reference, current, alpha, seed)


def _bbsd(reference: torch.Tensor, current: torch.Tensor, alpha: float, seed: int, state: dict | None,
          permutations: int) -> DriftResult:
    return bbsd_test(reference, current, alpha, (state or {}).get("label_names"))


DETECTORS: dict[str, Detector] = {"mmd": _mmd, "ks": _ks, "classifier": _classifier, "bbsd": _bbsd}
ON_PROBS = frozenset({"bbsd"})
