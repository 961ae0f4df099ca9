"""refit tune: search finetune hyper-parameters with Ray Tune; end with the best config and version.

    refit tune --config configs/tune/demo.yaml
    refit tune --config configs/tune/minilm-sst2.yaml --num_samples 16 --scheduler asha
    RAY_ADDRESS=head:6379 refit tune --config my-search.yaml --gpus_per_trial 0.5   # on a Ray cluster
    refit tune --config configs/tune/demo.yaml --resume          # continue an interrupted search

Every trial runs the same Lightning code as `refit finetune` and reports the monitored validation metric
at each validation, so ASHA can stop bad trials early. Outputs in STORAGE_PATH/NAME: results.csv/json,
best.yaml (run it with `refit finetune --config .../best.yaml`) and best_version/ (a model version).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from refit import report
from refit.config import config_to_dict
from refit.data import check_data_file, load_splits
from refit.errors import ConfigError
from refit.io import RUN_LOCK, atomic_write_text, hold_folder
from refit.settings import FinetuneConfig
from refit.tune import (
    REPORTED_METRIC,
    SCHEDULERS,
    SEARCHERS,
    check_resumable,
    collect_trials,
    make_scheduler,
    make_searcher,
    make_trainable,
    owner_only_writes,
    to_ray,
    validate_space,
    write_outputs,
)
from refit.tune.cluster import PROBE_FILE, check_storage_on_nodes, check_storage_path, connect

# Ray adds its CSV, JSON and TensorBoard loggers unless told not to; refit passes the first two itself
_NO_AUTO_LOGGERS = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
# Marks a search that passes Ray's CSV and JSON loggers itself, so that Ray's automatic ones (TensorBoard's
# among them) may stay off when it resumes. A search started before refit passed them has no mark and
# resumes with Ray's automatic loggers, which its trials' history is read from. Refit's own file, because
# Ray has no public getter for a restored Tuner's RunConfig.
OWN_LOGGERS = ".refit-own-loggers"


@dataclass
class Config:
    """A Ray Tune search over the finetune config.

    Args:
        finetune: The base finetune config every trial starts from (same keys as `refit finetune`).
        space: {dotted finetune key: {loguniform|uniform|randint: [low, high]} or {choice|grid: [values]}}.
        scheduler: 'asha' (stops bad trials early), 'pbt' or 'fifo'.
        searcher: 'random' or 'optuna' (TPE, seeded; in the tune extra; no grid values).
        num_samples: Trials to sample (each grid value is crossed with these).
        max_concurrent_trials: Trials running at once (0 = as many as resources allow).
        time_budget_s: Stop the search after this many seconds (0 = no limit).
        max_t: ASHA: most validations a trial may run (its rungs all fall before the last one).
        grace_period: ASHA: validations before a trial can be stopped (PBT: perturbation interval).
            A trial reports at every validation: set finetune.trainer.val_check_interval (a share of an
            epoch, or every N batches) so that it reports several times and ASHA can stop it early.
        reduction_factor: ASHA: keep the best 1/reduction_factor at each rung.
        reuse_actors: Run the next trial in the finished (or stopped) trial's worker process, which has
            imported torch, transformers and Lightning already (about 10 s per trial saved here).
        trial_checkpoints: Hand Tune a full checkpoint at every validation so that trials can be restored
            mid-run. Default (unset): only for PBT, which needs them to exploit; without them `--resume`
            keeps finished trials and restarts unfinished ones from the start.
        cpus_per_trial: CPUs reserved per trial.
        borrow_idle_cpus: With the Ray started here and CPU trials, a trial also trains on the CPUs no
            trial holds at the moment (the last trials of a search would leave cores idle); a trial that
            starts takes its CPUs back within 2 s.
        gpus_per_trial: GPUs per trial; fractions share a GPU (0.5 = two trials per GPU).
        storage_path: Where searches are stored.
        name: This search's folder under storage_path (a fixed name makes --resume find it).
        ray_address: A Ray cluster to join, HOST:PORT of its head (default $RAY_ADDRESS; unset starts Ray
            in this process). storage_path must then be the same folder on every node (checked).
        ray_num_cpus: CPUs of the in-process Ray (default: all).
        resume: Continue the interrupted search STORAGE_PATH/NAME without re-running finished trials.
        seed: Seed of the searcher.
    """

    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    space: dict[str, dict[str, Any]] = field(default_factory=dict)
    scheduler: str = "asha"
    searcher: str = "random"
    num_samples: PositiveInt = 8
    max_concurrent_trials: NonNegativeInt = 0
    time_budget_s: NonNegativeFloat = 0
    max_t: PositiveInt = 10
    grace_period: PositiveInt = 1
    reduction_factor: PositiveFloat = 2
    reuse_actors: bool = True
    trial_checkpoints: bool | None = None
    cpus_per_trial: PositiveFloat = 1
    borrow_idle_cpus: bool = True
    gpus_per_trial: NonNegativeFloat = 0
    storage_path: str = "runs/tune"
    name: str = "search"
    ray_address: str | None = None
    ray_num_cpus: int | None = None
    resume: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        # checked here, not by a Literal, so that a registered scheduler or searcher is a choice
        for key, table in (("scheduler", SCHEDULERS), ("searcher", SEARCHERS)):
            if getattr(self, key) not in table:
                raise ValueError(f"Unknown {key!r} {getattr(self, key)!r}; allowed: {', '.join(table)}.")


def _absolute_paths(base: dict) -> dict:
    """Trials run in other folders (and on other machines): pin every local path."""
    for key in ("train", "validation", "test"):
        if base["data"].get(key):
            base["data"][key] = str(Path(base["data"][key]).resolve())
    if Path(base["model"]).exists():
        base["model"] = str(Path(base["model"]).resolve())
    return base


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    """These environment variables set for the duration (the local Ray's processes start with them)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _print_table(rows, monitor: str) -> None:
    table = report.table(
        f"refit tune: {len(rows)} trials",
        ("trial", "status", "config", f"best {monitor}", "validations", "seconds"),
    )
    for r in rows:
        conf = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.overrides.items()
        )
        table.add_row(
            r.trial,
            r.status,
            conf,
            "-" if r.best is None else f"{r.best:.4f}",
            str(r.iterations),
            f"{r.seconds:.0f}",
        )
    report.console().print(table)


def run(cfg: Config) -> int:
    with contextlib.ExitStack() as stack:  # holds the search folder from its checks to the end
        return _run(cfg, stack)


def _run(cfg: Config, stack: contextlib.ExitStack) -> int:
    # --- setup -------------------------------------------------------------------------------------
    started_at = time.time()  # where the search's own seconds go, into results.json
    clock = [("start", time.perf_counter())]
    try:
        import ray
        from ray import tune
        from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    except ImportError:
        raise ConfigError("refit tune needs Ray Tune: `pip install refit-ml[tune]`.") from None
    space = validate_space(cfg.space)
    if cfg.searcher == "optuna" and any(kind == "grid" for kind, _ in space.values()):
        grids = [key for key, (kind, _) in space.items() if kind == "grid"]
        raise ConfigError(
            f"space.{grids[0]}: 'grid' cannot be used with searcher 'optuna' (Optuna samples every value); "
            "use {choice: [...]} or searcher 'random'."
        )
    checkpoints = cfg.scheduler == "pbt" if cfg.trial_checkpoints is None else cfg.trial_checkpoints
    if cfg.scheduler == "pbt" and not checkpoints:
        raise ConfigError(
            "trial_checkpoints: false cannot be used with scheduler 'pbt', which restores trials."
        )
    data = cfg.finetune.data
    if not data.dataset:  # before Ray starts: otherwise every trial fails on the same missing file
        for split in ("train", "validation", "test"):
            if getattr(data, split):
                check_data_file(split, getattr(data, split))
    monitor, mode = cfg.finetune.trainer.monitor, cfg.finetune.trainer.mode
    if monitor.endswith("/auroc"):  # finetune's own up-front check, once here rather than in every trial
        from refit.train import check_monitor_defined  # here: refit.train imports Lightning

        splits = load_splits(
            data.train,
            data.validation,
            data.test,
            data.dataset,
            data.dataset_config,
            data.text_column,
            data.label_column,
            data.max_train_samples,
        )
        check_monitor_defined(monitor, splits, data.validation)
    base = _absolute_paths(config_to_dict(cfg.finetune))
    check_storage_path(cfg.storage_path)
    storage = Path(cfg.storage_path).resolve()
    out = storage / cfg.name
    saved = (out / "tuner.pkl").is_file()
    # the run lock, and the cluster's storage probe of a driver killed while it checked the nodes
    held = (
        [p for p in out.iterdir() if p.name not in (RUN_LOCK, PROBE_FILE, OWN_LOGGERS)]
        if out.is_dir()
        else []
    )
    unsaved = (
        " It holds a search stopped before Ray saved it (no tuner.pkl), which cannot be resumed: remove "
        f"{out}, or pick a new --name."
    )
    if cfg.resume and not saved:
        raise ConfigError(f"--resume: no search to resume at {out}." + (unsaved if held else ""))
    if not cfg.resume and held:
        raise ConfigError(
            f"{out} already holds a search: continue it with --resume, or pick a new --name."
            if saved
            else f"{out} is not empty.{unsaved}"
        )
    # what this search writes is its owner's alone, whatever the umask: --resume refuses anything else
    stack.enter_context(owner_only_writes())
    # one process per search folder: a second `refit tune` (fresh or --resume) on it is refused here
    stack.enter_context(hold_folder(out, "refit tune"))
    if cfg.resume:  # Ray unpickles the folder's state: only from a folder no one else could have written
        check_resumable(out, skip=frozenset({RUN_LOCK}))
    address = cfg.ray_address or os.environ.get("RAY_ADDRESS")
    source = "--ray_address" if cfg.ray_address else "$RAY_ADDRESS"
    clock.append(("checks", time.perf_counter()))
    # A reused worker waits for the stopped trial's thread to leave Lightning before it takes the next
    # trial; Ray's default of 2 s is too short on a loaded CPU and each miss costs a fresh worker.
    worker_env = {"TUNE_FUNCTION_THREAD_TIMEOUT_S": os.environ.get("TUNE_FUNCTION_THREAD_TIMEOUT_S", "60")}
    owned = not ray.is_initialized()  # a caller's own ray.init is used as it is, and left to the caller
    if (
        owned and address and cfg.ray_num_cpus is not None
    ):  # said, not refused: a YAML may set it for local runs
        print(
            f"refit tune: ray_num_cpus {cfg.ray_num_cpus} is ignored on a cluster ({source} {address}): each "
            "node's CPUs are what its `ray start --num-cpus` gave; cpus_per_trial sizes the trials.",
            file=sys.stderr,
        )
    if owned and address:
        # A cluster's workers get the setting through the job's runtime environment.
        connect(address, source, runtime_env={"env_vars": worker_env})
        try:
            check_storage_on_nodes(out)  # trials write where this process reads: one filesystem on all nodes
        except BaseException:
            ray.shutdown()
            raise
    elif owned:
        with _environment(worker_env):
            # The Ray started here passes this process's environment on to its workers: a job runtime_env
            # would keep trials off the workers Ray starts ahead at init (3-4 s more per trial worker here).
            ray.init(
                num_cpus=cfg.ray_num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
    clock.append(("ray_init", time.perf_counter()))
    trainable = tune.with_resources(
        make_trainable(
            base,
            group=cfg.name,
            checkpoints=checkpoints,
            runs_dir=str(out / "trials"),
            # only where refit's own Ray has the machine and trials are CPU-bound (a cluster's free CPUs
            # are on other nodes; a GPU trial's speed is not its CPU threads)
            borrow_cpus=max(1, int(cfg.cpus_per_trial))
            if cfg.borrow_idle_cpus and not address and not cfg.gpus_per_trial
            else 0,
        ),
        {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial},
    )

    # --- run ---------------------------------------------------------------------------------------
    try:
        if cfg.resume:
            tuner = tune.Tuner.restore(str(out), trainable, resume_unfinished=True, resume_errored=True)
        else:
            ray_space = to_ray(space)
            tuner = tune.Tuner(
                trainable,
                param_space=ray_space,
                tune_config=tune.TuneConfig(
                    metric=REPORTED_METRIC,
                    mode=mode,
                    num_samples=cfg.num_samples,
                    scheduler=make_scheduler(
                        cfg.scheduler,
                        max_t=cfg.max_t,
                        grace_period=cfg.grace_period,
                        reduction_factor=cfg.reduction_factor,
                        space=ray_space,
                    ),
                    search_alg=make_searcher(
                        cfg.searcher,
                        metric=REPORTED_METRIC,
                        mode=mode,
                        seed=cfg.seed,
                        max_concurrent=cfg.max_concurrent_trials,
                    ),
                    time_budget_s=cfg.time_budget_s or None,
                    reuse_actors=cfg.reuse_actors,
                ),
                run_config=tune.RunConfig(
                    name=cfg.name,
                    storage_path=str(storage),
                    verbose=1,
                    # Ray's CSV and JSON loggers (its results read them), not its TensorBoard one: that one
                    # made Ray print "To visualize your results with TensorBoard, run: tensorboard --logdir
                    # /tmp/ray/..." pointing at its session staging, not at refit's outputs (printed below)
                    callbacks=[CSVLoggerCallback(), JsonLoggerCallback()],
                    # the latest few per trial, not one per validation: a restore reads the last one; PBT
                    # may exploit one a little older (Ray warns below 3)
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=4 if cfg.scheduler == "pbt" else 2),
                ),
            )
            atomic_write_text(out / OWN_LOGGERS, "refit passes Ray's CSV and JSON loggers to this search\n")
        # read by the driver only, when fit() sets up the loggers
        with _environment(_NO_AUTO_LOGGERS if (out / OWN_LOGGERS).is_file() else {}):
            results = tuner.fit()
        clock.append(("search", time.perf_counter()))
    finally:
        if owned:  # on a cluster: disconnects this driver only, the cluster stays up for the next search
            ray.shutdown()
    clock.append(("ray_shutdown", time.perf_counter()))

    # --- report ------------------------------------------------------------------------------------
    rows = collect_trials(results, REPORTED_METRIC, monitor, mode, out / "trials")
    _print_table(rows, monitor)
    clock.append(("collect", time.perf_counter()))
    timings = {"started_at": started_at}
    timings |= {f"{name}_s": round(t - clock[i][1], 2) for i, (name, t) in enumerate(clock[1:])}
    best_yaml, best_version, best = write_outputs(rows, base, out, mode, monitor, timings)
    print(f"Best trial {best.trial}: {monitor} {best.final:.4f}")
    print(f"Best config: {best_yaml}   (refit finetune --config {best_yaml})")
    print(f"Best version: {best_version}   Results: {out / 'results.csv'}")
    return 0
