"""When to retrain, and when a challenger may replace the champion."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "retrain_reasons",
    "Paired",
    "paired",
    "mcnemar_p",
    "GateResult",
    "gate",
    "per_class_recall",
    "largest_class_fall",
]


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


@dataclass(frozen=True)
class Paired:
    """Champion and challenger scored on the SAME rows: the discordant counts and McNemar's exact test.

    Two accuracies on the same small set differ by noise alone; only the rows where the two models disagree
    on correctness (b, c) carry evidence, so the test is the exact binomial on b + c (McNemar's exact test).
    """

    n: int  # rows compared
    b: int  # champion right, challenger wrong
    c: int  # challenger right, champion wrong
    p_two_sided: float  # McNemar's exact two-sided p: is there any difference at all?
    p_better: float  # one-sided p: is the challenger better? (what recent_alpha tests)

    @property
    def gain_points(self) -> float:
        """Challenger minus champion accuracy, in points: (c - b) / n, exact (no float32 accuracy)."""
        return (self.c - self.b) / self.n * 100 if self.n else 0.0

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "b": self.b,
            "c": self.c,
            "p_two_sided": self.p_two_sided,
            "p_better": self.p_better,
        }


def mcnemar_p(b: int, c: int, alternative: str = "two-sided") -> float:
    """McNemar's exact p for b (champion-only right) vs c (challenger-only right) discordant rows.

    alternative "greater": the challenger is better (c large). No discordant rows: no evidence, p = 1.
    scipy is imported here, not at module level: scipy.stats costs about a second to import, and every
    command that imports the maintain package (each `--help`) would pay for it.
    """
    if b + c == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(c, b + c, 0.5, alternative=alternative).pvalue)


def paired(champion_correct: Sequence[bool], challenger_correct: Sequence[bool]) -> Paired:
    """The paired comparison of two per-row correctness vectors over the same rows, in the same order."""
    if len(champion_correct) != len(challenger_correct):
        raise ValueError(
            f"champion scored on {len(champion_correct)} rows, challenger on {len(challenger_correct)}: "
            "a paired test needs the same rows"
        )
    pairs = list(zip(map(bool, champion_correct), map(bool, challenger_correct)))
    b = sum(1 for ch, cl in pairs if ch and not cl)
    c = sum(1 for ch, cl in pairs if cl and not ch)
    return Paired(len(pairs), b, c, mcnemar_p(b, c), mcnemar_p(b, c, "greater"))


@dataclass
class GateResult:
    passed: bool
    reasons: list[str]
    paired: dict[str, Paired] = field(default_factory=dict)  # "golden", "recent": what each reason rests on


# The level at which a reason calls a difference "significant" rather than "within noise": a wording for the
# reader only, the conventional two-sided 5%; what decides is golden_tolerance, recent_margin, recent_alpha.
READING_ALPHA = 0.05


def _noise(p: Paired) -> str:
    return "within noise" if p.p_two_sided >= READING_ALPHA else f"significant at {READING_ALPHA:g}"


def _evidence(p: Paired) -> str:
    return (
        f"{round(p.gain_points, 2) + 0.0:+.2f} points vs the champion on {p.n} rows (challenger right where the "
        f"champion was wrong: {p.c}, the reverse: {p.b}; McNemar p = {p.p_two_sided:.2g}"
    )


def gate(
    golden: Paired,
    recent: Paired | None,
    golden_tolerance: float,
    recent_margin: float,
    recent_alpha: float | None = None,
) -> GateResult:
    """No regression on the golden set beyond `golden_tolerance` points, and at least `recent_margin`
    points better on the recent labelled window (when there is one).

    With `recent_alpha` set, the recent-window win must also be significant: one-sided McNemar p below
    `recent_alpha`, so a gain of a few rows out of a small held-out window (noise) is not promoted (None: the
    margin alone; GateConfig's default is 0.2, chosen in scripts/results/gate.md). Each
    reason says the rows, the discordant counts and the two-sided p, so a reader can tell noise from a win.
    """
    reasons, passed = [], True
    drop = -golden.gain_points
    noise = _noise(golden)
    if not golden.n:  # fail closed: no golden rows is no evidence of "no regression"
        passed = False
        reasons.append("golden set: no rows compared; a challenger cannot be promoted without a golden set")
    elif drop > golden_tolerance:
        passed = False
        reasons.append(
            f"golden set: {drop:.2f} points worse than the champion on {golden.n} rows (challenger right where "
            f"the champion was wrong: {golden.c}, the reverse: {golden.b}; McNemar p = "
            f"{golden.p_two_sided:.2g}, {noise}) (tolerance {golden_tolerance:g})"
        )
    else:
        reasons.append(f"golden set: {_evidence(golden)}, {noise}) (tolerance {golden_tolerance:g})")
    if recent is not None and recent.n:
        gain = recent.gain_points
        ok = gain >= recent_margin
        noise = _noise(recent)
        need = f"needs >= {recent_margin:+g}"
        if recent_alpha is not None:
            significant = recent.p_better < recent_alpha
            ok = ok and significant
            need += f" and one-sided McNemar p < {recent_alpha:g}: p = {recent.p_better:.2g}" + (
                "" if significant else ", not significant"
            )
        passed = passed and ok
        reasons.append(f"recent window: {_evidence(recent)}, {noise}) ({need})")
    return GateResult(
        passed, reasons, {"golden": golden, **({"recent": recent} if recent is not None else {})}
    )


def per_class_recall(
    labels: Sequence[int],
    champion_correct: Sequence[bool],
    challenger_correct: Sequence[bool],
    names: Sequence[str],
) -> dict[str, dict]:
    """Recall of each class present in `labels`, champion vs challenger, on the same rows.

    Overall accuracy hides a class the challenger forgot: on a 20-topic golden set one class is 5% of the
    rows, so losing it whole costs 5 points that gains elsewhere repay. Classes absent from the rows are
    left out (no recall to compare), not reported as 0.
    """
    out = {}
    for k, name in enumerate(names):
        rows = [i for i, y in enumerate(labels) if int(y) == k]
        if rows:
            out[name] = {
                "n": len(rows),
                "champion": sum(bool(champion_correct[i]) for i in rows) / len(rows),
                "challenger": sum(bool(challenger_correct[i]) for i in rows) / len(rows),
            }
    return out


def largest_class_fall(recall: dict[str, dict], set_name: str = "golden set") -> str | None:
    """The reason line naming the class whose recall fell most from champion to challenger (None for fewer
    than two classes). Said, not gated: a class of a few rows moves by many points on one row."""
    if len(recall) < 2:
        return None
    name, r = min(recall.items(), key=lambda kv: (kv[1]["challenger"] - kv[1]["champion"], kv[0]))
    fall = 100 * (r["champion"] - r["challenger"])
    if fall <= 0:
        return f"{set_name} per class: no class's recall fell ({len(recall)} classes; not gated)"
    return (
        f"{set_name} per class: largest recall fall {name} {r['champion']:.3f} -> {r['challenger']:.3f} "
        f"(-{fall:.1f} points on {r['n']} rows; not gated: the gate reads overall accuracy)"
    )
