"""Drift detection on embeddings: calibrated two-sample tests, windows of production data, reports."""

from refit.drift.bbsd import bbsd_test
from refit.drift.classifier import classifier_test
from refit.drift.detectors import DETECTORS, ON_PROBS
from refit.drift.embed import Reference, VersionEncoder, embed, load_reference
from refit.drift.ks import ks_test
from refit.drift.mmd import mmd_test
from refit.drift.result import DriftResult

__all__ = [
    "DETECTORS", "ON_PROBS", "DriftResult", "Reference", "VersionEncoder", "bbsd_test", "classifier_test", "embed",
    "ks_test", "load_reference", "mmd_test",
]
