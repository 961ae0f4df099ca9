"""When to retrain, and when a challenger may replace the champion."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["retrain_reasons", "GateResult", "gate"]


def retrain_reasons(
    drift: bool,
    drift_detail: str,
    accuracy: float | None,
    min_accuracy: float | None,
    age_days: float,
    max_age_days: float | None,
    on_schedule: bool,
    estimate: dict | None = None,
    min_estimated_accuracy: float | None = None,
) -> list[str]:
    """Every reason that calls for a retrain now; empty means keep the champion untouched.

    `estimate` ({"method", "value", "ci_low", "ci_high", "n"}: refit.estimate on the new inputs) triggers only
    when even the upper end of its 95% interval for the expected accuracy is below `min_estimated_accuracy`:
    a retrain needs evidence the model is hurt, so a window whose interval still reaches the floor does not
    churn the champion.
    """
    reasons = []
    if drift:
        reasons.append(f"drift: {drift_detail}")
    if accuracy is not None and min_accuracy is not None and accuracy < min_accuracy:
        reasons.append(
            f"accuracy {accuracy:.4f} on the recent labelled window is below the floor {min_accuracy:.4f}"
        )
    if (
        estimate is not None
        and min_estimated_accuracy is not None
        and estimate["ci_high"] < min_estimated_accuracy
    ):
        reasons.append(
            f"estimated accuracy {estimate['value']:.4f} ({estimate['method']}, 95% interval "
            f"[{estimate['ci_low']:.4f}, {estimate['ci_high']:.4f}], {estimate['n']} unlabelled inputs) is below "
            f"the floor {min_estimated_accuracy:.4f}"
        )
    if max_age_days is not None and age_days > max_age_days:
        reasons.append(f"champion is {age_days:.1f} days old (max {max_age_days:g})")
    if on_schedule:
        reasons.append("scheduled retrain")
    return reasons


@dataclass
class GateResult:
    passed: bool
    reasons: list[str]


def gate(
    champion_golden: float,
    challenger_golden: float,
    champion_recent: float | None,
    challenger_recent: float | None,
    golden_tolerance: float,
    recent_margin: float,
) -> GateResult:
    """No regression on the golden set beyond `golden_tolerance` points, and at least `recent_margin`
    points better on the recent labelled window (when there is one)."""
    reasons, passed = [], True
    drop = (champion_golden - challenger_golden) * 100
    if drop > golden_tolerance:
        passed = False
        reasons.append(
            f"golden set: {drop:.2f} points worse than the champion (tolerance {golden_tolerance:g})"
        )
    else:
        reasons.append(
            f"golden set: {round(-drop, 2) + 0.0:+.2f} points vs the champion (tolerance {golden_tolerance:g})"
        )
    if champion_recent is not None and challenger_recent is not None:
        gain = (challenger_recent - champion_recent) * 100
        ok = gain >= recent_margin
        passed = passed and ok
        reasons.append(
            f"recent window: {round(gain, 2) + 0.0:+.2f} points vs the champion (needs >= {recent_margin:+g})"
        )
    return GateResult(passed, reasons)
