"""The maintenance loop: read new data, check drift, decide, retrain, gate, promote or keep; on a schedule."""

from refit.maintain.cycle import CycleInterrupted, CycleReport, run_cycle
from refit.maintain.faults import FAULT_ENV, PHASES, fault_point
from refit.maintain.policy import GateResult, gate, retrain_reasons
from refit.maintain.schedule import MIN_EVERY_S, check_cron, cycle_lock, next_run, parse_every, run_forever

__all__ = [
    "FAULT_ENV",
    "MIN_EVERY_S",
    "PHASES",
    "CycleInterrupted",
    "CycleReport",
    "check_cron",
    "fault_point",
    "GateResult",
    "cycle_lock",
    "gate",
    "next_run",
    "parse_every",
    "retrain_reasons",
    "run_cycle",
    "run_forever",
]
