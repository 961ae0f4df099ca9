"""Drift detection on embeddings: calibrated two-sample tests, windows of production data, reports."""

from refit.drift.bbsd import bbsd_test
from refit.drift.classifier import classifier_test
from refit.drift.detectors import DETECTORS, ON_PROBS, Detector
from refit.drift.embed import VersionEncoder, embed
from refit.drift.ks import ks_test
from refit.drift.mmd import mmd_test
from refit.drift.reference import Reference, build_reference, load_reference, reembed
from refit.drift.result import DriftResult

__all__ = [
    "DETECTORS",
    "ON_PROBS",
    "Detector",
    "DriftResult",
    "Reference",
    "VersionEncoder",
    "bbsd_test",
    "build_reference",
    "classifier_test",
    "embed",
    "ks_test",
    "load_reference",
    "mmd_test",
    "reembed",
]
