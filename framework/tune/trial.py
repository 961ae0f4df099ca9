"""One Ray Tune trial: the base finetune config with the sampled values, run by the finetune job itself."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from refit.config import config_to_dict, parse_config_dict
from refit.errors import RunInterrupted
from refit.io import write_json
from refit.settings import FinetuneConfig
from refit.tune.space import apply_overrides

__all__ = ["make_trainable", "REPORTED_METRIC", "TIMINGS_FILE"]

REPORTED_METRIC = "objective"  # Ray reads '/' in metric names as nesting, so the monitored metric is renamed
TIMINGS_FILE = "timings.json"  # in each attempt's folder: where the trial's seconds went


def _fit_only_report(metric: str, checkpoints: bool, on_stop: Callable[[], None]):
    """Ray's Lightning callback, silenced outside fit: the job's final validate/test calls would
    otherwise report extra iterations, and ASHA would stop a finished trial before it writes its version.
    `checkpoints` hands Tune a full Lightning checkpoint at every report (PBT and resuming mid-trial need
    one; it costs a write of weights plus optimizer state, three times the model's size, every validation).
    `on_stop` runs the moment Tune stops the trial (Ray's SystemExit out of the report), before Lightning
    unwinds: Ray ends a worker it does not reuse without waiting for the trial's thread (cleanup(timeout=0)),
    so whatever the trial must leave behind has to be written here (a CI run lost a timings.json so).
    """
    from ray.tune.integration.pytorch_lightning import TuneReportCheckpointCallback

    class FitOnlyReport(TuneReportCheckpointCallback):
        def _handle(self, trainer, pl_module) -> None:
            if trainer.state.fn == "fit" and not trainer.sanity_checking:
                try:
                    super()._handle(trainer, pl_module)
                except SystemExit:
                    on_stop()
                    raise

    return FitOnlyReport({REPORTED_METRIC: metric}, on="validation_end", save_checkpoints=checkpoints)


def _perturbed_optimizer_settings():
    """Restoring a checkpoint restores the optimizer's learning rate and weight decay with it, which would
    undo what PBT just changed: after the restore, set them (and the schedule's base) from this trial's
    config again. The warm-up/decay schedule keeps its place (step) in training."""
    from lightning.pytorch.callbacks import Callback

    class TakePerturbedSettings(Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            lr, weight_decay = pl_module.hparams.lr, pl_module.hparams.weight_decay
            for config in trainer.lr_scheduler_configs:
                scheduler = config.scheduler
                scheduler.base_lrs = [lr] * len(scheduler.base_lrs)
                for group, factor in zip(scheduler.optimizer.param_groups, scheduler.lr_lambdas, strict=True):
                    group["initial_lr"] = lr
                    group["lr"] = lr * factor(scheduler.last_epoch)
            for optimizer in trainer.optimizers:  # groups as refit.train.optim builds them: decayed first
                optimizer.param_groups[0]["weight_decay"] = weight_decay

    return TakePerturbedSettings()


def _phase_clock(marks: dict[str, float]):
    """Records when fit set up (data, tokeniser and model loaded), training started and ended."""
    from lightning.pytorch.callbacks import Callback

    class PhaseClock(Callback):
        def setup(self, trainer, pl_module, stage: str) -> None:
            if stage == "fit":
                marks["fit_setup"] = time.time()

        def on_train_start(self, trainer, pl_module) -> None:
            marks["train_start"] = time.time()

        def on_train_end(self, trainer, pl_module) -> None:
            marks["train_end"] = time.time()

    return PhaseClock()


def _borrow_idle_cpus(own: int, threads_used: set[int], every_s: float = 2.0):
    """On a machine Ray runs on alone (refit's own local Ray), a CPU trial's torch threads also take up the
    CPUs no trial holds at the moment, checked every `every_s` seconds of training. The last trials of a
    search (ASHA's survivors) would otherwise train on one core while the others idle; a lone MiniLM trial
    on 2 cores trains 1.4x faster with it (scripts/results/tune.md). Ray's reservation does not change; a trial
    that starts takes its CPUs back within `every_s` (for that long a core runs two threads). The thread
    counts used go into `threads_used`."""
    import os

    import ray
    import torch
    from lightning.pytorch.callbacks import Callback

    ceiling = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or own

    class BorrowIdleCpus(Callback):
        checked = -float("inf")

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            now = time.monotonic()
            if now - self.checked < every_s:
                return
            self.checked = now
            try:
                idle = int(ray.available_resources().get("CPU", 0))
            except Exception:  # a speed-up only: if Ray cannot say, train on the trial's own CPUs from here
                idle, self.checked = 0, float("inf")
            threads = max(1, min(ceiling, own + idle))
            if threads != torch.get_num_threads():
                torch.set_num_threads(threads)
            threads_used.add(threads)

    return BorrowIdleCpus()


def _write_timings(path: Path, marks: dict[str, float], threads_used: set[int], node_id: str) -> None:
    """Seconds per phase of one attempt, plus wall-clock marks (epoch seconds) and the worker process's id
    and start, so that a benchmark can line trials up and tell a worker's start and imports (its process
    start to its first trial) from the trial itself."""
    import os

    import psutil

    names = ("trial_start", "fit_setup", "train_start", "train_end", "trial_end")
    have = [n for n in names if n in marks]
    write_json(
        path,
        {
            "marks": {n: marks[n] for n in have},
            "phases_s": {f"{a}->{b}": round(marks[b] - marks[a], 2) for a, b in zip(have, have[1:])},
            # the node too: on a cluster, which machine (raylet) ran the attempt
            "worker": {"pid": os.getpid(), "started": psutil.Process().create_time(), "node_id": node_id},
            "torch_threads": sorted(threads_used),  # while training, with borrow_cpus
        },
    )


def make_trainable(
    base: dict,
    group: str,
    checkpoints: bool,
    runs_dir: str,
    borrow_cpus: int = 0,
) -> Callable[[dict], None]:
    """A function trainable closed over the base config (a plain dict, so Ray can ship it to workers).

    Each attempt of a trial writes RUNS_DIR/<trial id>/run-N (the search's own folder, on the storage path):
    Ray would otherwise stage it elsewhere and copy checkpoints and version into storage at the end, and a
    PBT-restarted trial's earlier attempts would be lost.

    A trial writes no checkpoints of its own for `--resume` (Tune restarts trials itself) and a weights-only
    best.ckpt; Tune gets one at every report where `checkpoints`. `borrow_cpus` (a trial's own CPUs; 0 =
    off): train on idle CPUs too (`_borrow_idle_cpus`).

    A trial Tune stops (ASHA) leaves Lightning through Ray's SystemExit, which the finetune job reports as
    RunInterrupted: the trial ends the way Ray expects (SystemExit(0)), so the worker is free for the next
    trial at once (`reuse_actors`) instead of being replaced by a fresh process that imports everything
    again.
    """

    def trainable(overrides: dict) -> None:
        marks, threads_used = {"trial_start": time.time()}, set()
        import ray
        from ray import tune

        # imported here, in the worker: the search's driver never loads Lightning or transformers (8 s here)
        from refit.train import run_finetune

        cfg = parse_config_dict(FinetuneConfig, apply_overrides(base, overrides), where="in the tuned config")
        trial_dir = Path(runs_dir) / tune.get_context().get_trial_id()
        node_id = ray.get_runtime_context().get_node_id()
        attempt = trial_dir / f"run-{len(list(trial_dir.glob('run-*')))}"
        resume_from = None
        checkpoint = tune.get_checkpoint()  # set when Tune restores or PBT exploits this trial
        if checkpoint is not None:
            attempt.mkdir(parents=True, exist_ok=True)
            with checkpoint.as_directory() as folder:
                resume_from = shutil.copy(Path(folder) / "checkpoint", attempt / "restored.ckpt")

        def write_timings() -> None:
            marks["trial_end"] = time.time()
            attempt.mkdir(parents=True, exist_ok=True)
            _write_timings(attempt / TIMINGS_FILE, marks, threads_used, node_id)

        # written when Tune stops the trial (its worker may end before the thread leaves Lightning), and
        # again when the trial's code ends, with the later trial_end, where the worker lets it get there
        callbacks = [_fit_only_report(cfg.trainer.monitor, checkpoints, write_timings), _phase_clock(marks)]
        if resume_from is not None:
            callbacks.append(_perturbed_optimizer_settings())
        if borrow_cpus:
            callbacks.append(_borrow_idle_cpus(borrow_cpus, threads_used))
        try:
            run_finetune(
                cfg.model,
                data=cfg.data,
                optim=cfg.optim,
                trainer=cfg.trainer,
                tracking=cfg.tracking,
                output_dir=attempt,
                parent=cfg.parent,
                config=config_to_dict(cfg),
                callbacks=callbacks,
                wandb_group=group,
                resume_from=resume_from,
                resumable=False,
            )
        except RunInterrupted:  # Tune stopped this trial (a trial thread never receives Ctrl-C itself)
            # Ray's own way to end a trial thread quietly; returning would make Ray report once more and
            # wait for an answer that never comes, so the worker could not take the next trial.
            raise SystemExit(0) from None
        finally:
            write_timings()

    return trainable
