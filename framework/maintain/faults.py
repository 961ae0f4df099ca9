"""A test hook for fault injection: `REFIT_FAULT_AT=<phase>` kills the process at that phase boundary.

The maintenance cycle calls `fault_point(name)` at every boundary between its phases (file read, drift,
retrain start, mid-training, register, export, gate, promote, after the promote commit, report). When
the environment variable REFIT_FAULT_AT names the phase, the process sends itself SIGKILL: no cleanup,
no `finally`, exactly what a power cut or the OOM killer does. scripts/chaos_maintain.py and
tests/recipes/test_maintain_faults.py use it to prove that a killed cycle never leaves a half-done
registry or repeats a promotion. Unset (always, outside those tests) it does nothing.
"""

from __future__ import annotations

from refit.models.version import FAULT_ENV, kill_at

__all__ = ["FAULT_ENV", "PHASES", "fault_point", "training_fault_callback"]

PHASES = (
    "read",
    "drift",
    "retrain",
    "training",
    "export",
    "register",
    "gate",
    "promote",
    "promoted",
    "report",
)


def fault_point(phase: str) -> None:
    """Kill this process with SIGKILL when REFIT_FAULT_AT names `phase` (a test hook; see the module doc)."""
    kill_at(phase, PHASES)


def training_fault_callback():
    """A Lightning callback that calls the 'training' fault point after the first optimiser step
    (mid-training). Built on call, so importing the maintenance loop does not import Lightning."""
    from lightning.pytorch.callbacks import Callback

    class FaultInTraining(Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 1:
                fault_point("training")

    return FaultInTraining()
