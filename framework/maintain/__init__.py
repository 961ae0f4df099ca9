"""The maintenance loop: read new data, check drift, decide, retrain, gate, promote or keep; on a schedule."""

from refit.maintain.cycle import CycleReport, run_cycle
from refit.maintain.policy import GateResult, gate, retrain_reasons
from refit.maintain.schedule import cycle_lock, next_run, parse_every, run_forever

__all__ = [
    "CycleReport", "GateResult", "cycle_lock", "gate", "next_run", "parse_every", "retrain_reasons", "run_cycle",
    "run_forever",
]
