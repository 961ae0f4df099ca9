"""What every drift test returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["DriftResult"]


@dataclass
class DriftResult:
    """statistic, p-value, the alpha it was judged at, the decision, and what moved (in words and numbers)."""

    name: str
    statistic: float
    p_value: float
    threshold: float
    drift: bool
    explanation: str = ""
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)
