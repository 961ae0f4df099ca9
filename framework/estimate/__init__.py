"""Label-free performance estimation: a version's calibrator (temperature scaling fitted on validation,
stored as calibration.json in the version) and the CBPE, ATC, DoC, label-shift-corrected CBPE and two-view accuracy estimators with bootstrap
intervals, and CBPE's expected macro-F1. Low level (numpy only): training writes the calibrator, drift and maintenance read it."""

from refit.estimate.calibration import (
    CALIBRATION_JSON,
    Calibration,
    apply_temperature,
    expected_calibration_error,
    fit_calibration,
    fit_temperature,
    load_calibration,
)
from refit.estimate.estimators import (
    ESTIMATORS,
    PRIMARY,
    Estimate,
    estimate_accuracy,
    estimate_f1,
    log_probs_of,
    twoview_unavailable,
    usable,
    window_prior,
)
from refit.estimate.probe import Probe, fit_probe

__all__ = [
    "CALIBRATION_JSON",
    "Calibration",
    "ESTIMATORS",
    "PRIMARY",
    "Estimate",
    "Probe",
    "apply_temperature",
    "estimate_accuracy",
    "estimate_f1",
    "expected_calibration_error",
    "fit_calibration",
    "fit_probe",
    "fit_temperature",
    "load_calibration",
    "log_probs_of",
    "twoview_unavailable",
    "usable",
    "window_prior",
]
