"""Detector state fitted on a version's reference only (bandwidth, PCA basis), stored beside it."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from refit.drift.ks import fit_pca
from refit.drift.mmd import median_bandwidth
from refit.io import write_json

__all__ = ["fit_state", "save_state", "load_state"]

_TENSORS, _META = "detector.safetensors", "detector.json"


def fit_state(reference: torch.Tensor, seed: int = 0, n_components: int = 10) -> dict:
    """Bandwidth on the whole reference; the PCA on a random half of it.

    KS then compares windows with the *other* half only: projected on components fitted to themselves,
    reference rows look more spread out than any new sample, which alone raised KS's false alarms to
    8.5% at alpha 0.05 on sst2 (scripts/results/drift.md).
    """
    order = torch.randperm(len(reference), generator=torch.Generator().manual_seed(seed))
    fit_rows, test_rows = order[: len(reference) // 2], order[len(reference) // 2:]
    mean, basis = fit_pca(reference[fit_rows], n_components)
    return {"bandwidth": median_bandwidth(reference, seed=seed), "pca_mean": mean, "pca_basis": basis,
            "ks_reference_rows": test_rows.sort().values, "n_reference": len(reference), "seed": seed}


def save_state(folder: str | Path, state: dict) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    save_file({k: v.contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)}, str(folder / _TENSORS))
    write_json(folder / _META, {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)})


def load_state(folder: str | Path) -> dict:
    """The stored state; FileNotFoundError when the version predates it (the caller refits)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / _META).is_file() or not (folder / _TENSORS).is_file():
        raise FileNotFoundError(folder / _META)
    return {**json.loads((folder / _META).read_text()), **load_file(str(folder / _TENSORS))}
