"""The table of drift tests. Each is a small class with one interface, so adding a test is one class
(in its own file or here) and one line in DETECTORS:

    fit(reference, seed=...) -> State | None        fitted on the reference only, once per reference
    test(state, reference, current, alpha=..., seed=..., permutations=..., label_names=...) -> DriftResult

`reference`/`current` are embeddings, or softmax outputs for a test with `on_probs = True`. A State is a
dataclass of tensors and plain values; refit.drift.reference saves it beside the reference
(safetensors + JSON) and loads it once per run, so a window never refits anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch

from refit.drift.bbsd import bbsd_test
from refit.drift.classifier import classifier_test
from refit.drift.ks import fit_pca, ks_test
from refit.drift.mmd import median_bandwidth, mmd_test
from refit.drift.result import DriftResult

__all__ = ["DETECTORS", "ON_PROBS", "Detector", "MMD", "MMDState", "KS", "KSState", "Classifier", "BBSD"]


class Detector(Protocol):
    """A drift test: what it is fitted on, how its state looks, how it tests one window."""

    on_probs: ClassVar[bool]  # True: compares softmax outputs instead of embeddings
    state_type: ClassVar[type | None]  # the dataclass fit returns (None: nothing to fit)

    def fit(self, reference: torch.Tensor, *, seed: int = 0) -> Any: ...

    def test(
        self,
        state: Any,
        reference: torch.Tensor,
        current: torch.Tensor,
        *,
        alpha: float,
        seed: int = 0,
        permutations: int = 500,
        label_names: list[str] | None = None,
    ) -> DriftResult: ...


@dataclass
class MMDState:
    bandwidth: float  # median pairwise distance of the reference
    # The kernel is the sum of Gaussians of widths bandwidth * scale. A state stored before scales existed
    # loads with [1.0]: the single median-heuristic kernel it was fitted and judged with.
    scales: list[float] = field(default_factory=lambda: [1.0])


class MMD:
    """Gaussian-kernel MMD, permutation p-value (k + 1) / (B + 1); bandwidth fitted on the reference.

    New states use a multi-bandwidth kernel (`scales` times the median heuristic, summed): the median
    width alone is too wide for shifts that move a few inputs a little (scripts/results/drift.md).
    """

    on_probs = False
    state_type = MMDState
    scales: ClassVar[tuple[float, ...]] = (1.0,)

    def fit(self, reference: torch.Tensor, *, seed: int = 0) -> MMDState:
        return MMDState(median_bandwidth(reference, seed=seed), list(self.scales))

    def test(
        self,
        state: MMDState | None,
        reference: torch.Tensor,
        current: torch.Tensor,
        *,
        alpha: float,
        seed: int = 0,
        permutations: int = 500,
        label_names: list[str] | None = None,
    ) -> DriftResult:
        widths = [state.bandwidth * s for s in state.scales] if state else None
        return mmd_test(reference, current, permutations, seed, alpha, widths)


@dataclass
class KSState:
    mean: torch.Tensor  # [d] PCA mean
    basis: torch.Tensor  # [k, d] top components
    rows: torch.Tensor  # reference rows the windows are compared with (the half the PCA was not fitted on)


class KS:
    """KS per principal component, Bonferroni over components.

    The PCA is fitted on a random half of the reference and windows are compared with the *other* half:
    projected on components fitted to themselves, reference rows look more spread out than any new
    sample, which alone raised KS's false alarms to 8.5% at alpha 0.05 on sst2 (scripts/results/drift.md).
    """

    on_probs = False
    state_type = KSState
    n_components = 10

    def fit(self, reference: torch.Tensor, *, seed: int = 0) -> KSState:
        order = torch.randperm(len(reference), generator=torch.Generator().manual_seed(seed))
        fit_rows, test_rows = order[: len(reference) // 2], order[len(reference) // 2 :]
        mean, basis = fit_pca(reference[fit_rows], self.n_components)
        return KSState(mean, basis, test_rows.sort().values)

    def test(
        self,
        state: KSState | None,
        reference: torch.Tensor,
        current: torch.Tensor,
        *,
        alpha: float,
        seed: int = 0,
        permutations: int = 500,
        label_names: list[str] | None = None,
    ) -> DriftResult:
        if state is None:
            return ks_test(reference, current, alpha)
        return ks_test(reference[state.rows.long()], current, alpha, pca=(state.mean, state.basis))


class Classifier:
    """Domain classifier two-sample test (held-out AUC, Mann-Whitney p); nothing to fit ahead."""

    on_probs = False
    state_type = None

    def fit(self, reference: torch.Tensor, *, seed: int = 0) -> None:
        return None

    def test(
        self,
        state: None,
        reference: torch.Tensor,
        current: torch.Tensor,
        *,
        alpha: float,
        seed: int = 0,
        permutations: int = 500,
        label_names: list[str] | None = None,
    ) -> DriftResult:
        return classifier_test(reference, current, alpha, seed)


class BBSD:
    """Black-box shift detection: KS on the model's softmax outputs."""

    on_probs = True
    state_type = None

    def fit(self, reference: torch.Tensor, *, seed: int = 0) -> None:
        return None

    def test(
        self,
        state: None,
        reference: torch.Tensor,
        current: torch.Tensor,
        *,
        alpha: float,
        seed: int = 0,
        permutations: int = 500,
        label_names: list[str] | None = None,
    ) -> DriftResult:
        return bbsd_test(reference, current, alpha, label_names)


# name -> detector. Adding a test is one class and one line here.
DETECTORS: dict[str, Detector] = {"mmd": MMD(), "ks": KS(), "classifier": Classifier(), "bbsd": BBSD()}
ON_PROBS = frozenset(name for name, d in DETECTORS.items() if d.on_probs)
