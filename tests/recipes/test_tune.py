"""`refit tune` on a real local Ray (2 CPUs) with a tiny model: ASHA, PBT, Optuna, outputs, best config,
resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from refit.cli import main

pytest.importorskip("ray", reason="Ray Tune is an optional extra (refit-ml[tune])")


ASHA_RUNGS = (1, 2)  # grace_period 1, reduction_factor 2, four validations per trial: no rung at the last one


def _rows(out: Path) -> list[dict]:
    with (out / "results.csv").open() as f:
        return list(csv.DictReader(f))


def _config(tmp_path: Path, model: Path, data: dict, name: str, samples: int = 4, **search) -> Path:
    cfg = {
        "finetune": {
            "model": str(model),
            "data": {
                "train": str(data["train"]),
                "validation": str(data["validation"]),
                "test": str(data["test"]),
                "batch_size": 8,
                "max_length": 32,
                "reference_size": 16,
            },
            "trainer": {
                "max_epochs": 4,
                "early_stopping_patience": 0,
                "log_every_n_steps": 1,
                "monitor": "val/loss",
                "mode": "min",
            },
            "tracking": {"wandb": False},
        },
        "space": {"optim.lr": {"loguniform": [1e-6, 3e-3]}, "optim.warmup_ratio": {"uniform": [0.0, 0.2]}},
        "scheduler": "asha",
        "num_samples": samples,
        "max_concurrent_trials": 2,
        "max_t": 4,
        "grace_period": 1,
        "reduction_factor": 2,
        "storage_path": str(tmp_path / "tune"),
        "name": name,
        "ray_num_cpus": 2,
        "seed": 0,
        **search,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_asha_search_writes_results_best_config_and_version(tmp_path, tiny_model_dir, toy_data, capsys):
    assert main(["tune", "--config", str(_config(tmp_path, tiny_model_dir, toy_data, "asha"))]) == 0
    out = tmp_path / "tune" / "asha"
    rows = _rows(out)
    assert len(rows) == 4 and {"optim.lr", "optim.warmup_ratio"} <= set(rows[0])
    statuses = [r["status"] for r in rows]
    assert "finished" in statuses
    assert "stopped early" in statuses, f"ASHA stopped no trial: {statuses}"
    # ASHA decides only at its rungs, whatever the timing: a stopped trial's last report is a rung, never the
    # trial's last validation (stopping there would throw away a trained model); a finished trial reported
    # all four and has its version.
    for r in rows:
        expected = ASHA_RUNGS if r["status"] == "stopped early" else (4,)
        assert int(r["iterations"]) in expected, r
    finished = [r for r in rows if r["status"] == "finished"]
    assert len(list(out.glob("trials/*/run-*/version/refit.json"))) == len(finished)
    # trials write no --resume checkpoint of their own and a weights-only best.ckpt; Tune got no checkpoints
    assert not list(out.glob("trials/*/run-*/checkpoints/last.ckpt"))
    assert not list(out.glob("*/checkpoint_*"))
    best_ckpt = next(out.glob("trials/*/run-*/checkpoints/best.ckpt"))
    assert "optimizer_states" not in torch.load(best_ckpt, map_location="cpu", weights_only=True)
    assert "refit tune: 4 trials" in capsys.readouterr().out
    # every attempt says where its time went, in order; two workers ran all four trials (reused, not replaced)
    timings = [json.loads(p.read_text()) for p in out.glob("trials/*/run-*/timings.json")]
    assert len(timings) == 4
    for t in timings:
        marks = [t["marks"][k] for k in ("trial_start", "fit_setup", "train_start", "trial_end")]
        assert marks == sorted(marks), t
        assert t["worker"]["started"] <= t["marks"]["trial_start"]
    assert len({t["worker"]["pid"] for t in timings}) == 2
    search_clock = json.loads((out / "results.json").read_text())["timings"]
    assert search_clock["ray_init_s"] > 0 and search_clock["search_s"] > 0

    best = yaml.safe_load((out / "best.yaml").read_text())
    assert (out / "best.yaml").read_text().startswith("# refit finetune --config")
    # best_version is the finished trial with the lowest final val/loss (mode min), copied whole
    finals = [float(r["final val/loss"]) for r in rows if r["final val/loss"] not in ("", "None")]
    best_meta = json.loads((out / "best_version" / "refit.json").read_text())
    assert best_meta["metrics"]["validation"]["loss"] == pytest.approx(min(finals), rel=1e-6)
    assert 0.0 <= best_meta["metrics"]["validation"]["accuracy"] <= 1.0
    run = tmp_path / "from-best"
    assert (
        main(
            [
                "finetune",
                "--config",
                str(out / "best.yaml"),
                "--output_dir",
                str(run),
                "--trainer.max_epochs",
                "1",
            ]
        )
        == 0
    )
    assert (
        best["optim"]["lr"]
        == json.loads((run / "version" / "refit.json").read_text())["config"]["optim"]["lr"]
    )


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs: one held by the trial, one idle")
def test_a_trial_alone_on_the_local_ray_also_trains_on_the_idle_cpu(tmp_path, tiny_model_dir, toy_data):
    config = _config(tmp_path, tiny_model_dir, toy_data, "alone", samples=1, scheduler="fifo")
    cfg = yaml.safe_load(config.read_text())
    cfg["finetune"]["trainer"]["max_epochs"] = 1
    config.write_text(yaml.safe_dump(cfg))
    assert main(["tune", "--config", str(config)]) == 0
    (timings,) = (tmp_path / "tune" / "alone").glob("trials/*/run-0/timings.json")
    assert json.loads(timings.read_text())["torch_threads"] == [2]  # 1 CPU its own + 1 no trial held
    config.write_text(yaml.safe_dump({**cfg, "name": "alone-off", "borrow_idle_cpus": False}))
    assert main(["tune", "--config", str(config)]) == 0
    (timings,) = (tmp_path / "tune" / "alone-off").glob("trials/*/run-0/timings.json")
    assert json.loads(timings.read_text())["torch_threads"] == []


@pytest.mark.slow
def test_interrupted_search_resumes_without_rerunning_finished_trials(
    tmp_path, tiny_model_dir, toy_data, capsys
):
    config = _config(tmp_path, tiny_model_dir, toy_data, "resumable")
    cfg = yaml.safe_load(config.read_text())
    cfg["scheduler"], cfg["max_concurrent_trials"] = "fifo", 1
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "tune" / "resumable"
    proc = subprocess.Popen(
        [sys.executable, "-m", "refit", "tune", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
    )
    deadline = time.time() + 400
    finished: list[Path] = []
    while time.time() < deadline and proc.poll() is None and not finished:
        finished = list(out.glob("trials/*/run-*/version/refit.json"))
        time.sleep(1)
    assert finished, "no trial finished before the interruption"
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    first = {p: p.read_text() for p in out.glob("trials/*/run-*/version/refit.json")}

    capsys.readouterr()
    assert main(["tune", "--config", str(config), "--resume"]) == 0
    assert "TensorBoard" not in capsys.readouterr().out  # the restored search carries refit's loggers
    with (out / "results.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 4
    for path, text in first.items():
        assert path.read_text() == text, f"{path} was trained again"
    # Every trial has a version; a trial that ended its training but was not yet recorded as finished by
    # Tune when the interrupt came is run again as a new attempt (run-1), the earlier one left untouched.
    versions = list(out.glob("trials/*/run-*/version/refit.json"))
    trials = {p.parents[2].name for p in versions}
    assert len(trials) == 4
    with (out / "results.csv").open() as f:
        assert {row["trial"] for row in csv.DictReader(f)} == trials


def test_tune_errors_are_clear(tmp_path, tiny_model_dir, toy_data, capsys):
    config = _config(tmp_path, tiny_model_dir, toy_data, "bad")
    assert main(["tune", "--config", str(config), "--space", '{"optim.lr": {"uniform": [1, 0]}}']) == 2
    assert "wrong way round" in capsys.readouterr().err
    assert main(["tune", "--config", str(config), "--resume"]) == 2
    assert "no search to resume" in capsys.readouterr().err
    grid = '{"trainer.max_epochs": {"grid": [1, 2]}}'
    assert main(["tune", "--config", str(config), "--searcher", "optuna", "--space", grid]) == 2
    assert "'grid' cannot be used with searcher 'optuna'" in capsys.readouterr().err
    assert main(["tune", "--config", str(config), "--scheduler", "pbt", "--trial_checkpoints", "false"]) == 2
    assert "cannot be used with scheduler 'pbt'" in capsys.readouterr().err
    missing = str(tmp_path / "nosuch.jsonl")
    assert main(["tune", "--config", str(config), "--finetune.data.validation", missing]) == 2
    assert "Data file not found: 'data.validation'" in capsys.readouterr().err
    assert not (tmp_path / "tune" / "bad").exists()  # refused before Ray started any trial
    assert main(["tune", "--config", str(config), "--scheduler", "hyperband"]) == 2
    assert "Unknown 'scheduler' 'hyperband'; allowed: asha, pbt, fifo" in capsys.readouterr().err


@pytest.mark.slow
def test_pbt_restarts_the_worst_trial_from_a_better_ones_checkpoint(tmp_path, tiny_model_dir, toy_data):
    """PBT on a local Ray: trials hand Tune checkpoints, and an exploited trial is restarted from one.

    PBT exploits only between trials that are running at once (Ray ranks unfinished trials) and only at
    a perturbation point before a trial's last one: with three epochs, a loaded machine let one tiny
    trial finish before the other reported, and nothing was exploited (a CI run under load failed so;
    four trials at once on 2 cores failed too: Ray skips an exploit while the better trial's checkpoint
    is still being registered). Six epochs give each pair five chances to overlap."""
    pbt = _config(tmp_path, tiny_model_dir, toy_data, "pbt", scheduler="pbt", grace_period=1)
    cfg = yaml.safe_load(pbt.read_text())
    cfg["finetune"]["trainer"]["max_epochs"] = cfg["max_t"] = 6
    pbt.write_text(yaml.safe_dump(cfg))
    assert main(["tune", "--config", str(pbt)]) == 0
    out = tmp_path / "tune" / "pbt"
    assert len(_rows(out)) == 4
    assert list(out.glob("*/checkpoint_*/checkpoint")), "PBT trials handed Tune no checkpoints"
    exploits = (out / "pbt_global.txt").read_text().splitlines()  # Ray's log of PBT's exploit decisions
    assert exploits, "PBT exploited no trial"
    assert list(out.glob("trials/*/run-*/restored.ckpt")), "no trial was restarted from a checkpoint"
    assert (out / "best_version" / "refit.json").is_file()


@pytest.mark.slow
def test_optuna_searcher_samples_the_space_and_ends_with_a_best_version(tmp_path, tiny_model_dir, toy_data):
    opt = _config(
        tmp_path, tiny_model_dir, toy_data, "optuna", samples=2, scheduler="fifo", searcher="optuna"
    )
    cfg = yaml.safe_load(opt.read_text())
    cfg["finetune"]["trainer"]["max_epochs"] = 1
    opt.write_text(yaml.safe_dump(cfg))
    assert main(["tune", "--config", str(opt)]) == 0
    out = tmp_path / "tune" / "optuna"
    rows = _rows(out)
    assert len(rows) == 2 and all(r["status"] == "finished" for r in rows)
    lrs = [float(r["optim.lr"]) for r in rows]
    assert all(1e-6 <= lr <= 3e-3 for lr in lrs) and lrs[0] != lrs[1]
    assert (out / "best_version" / "refit.json").is_file()


def test_a_restored_trial_trains_with_its_own_new_learning_rate(tmp_path, tiny_model_dir, toy_data):
    """PBT hands a trial another trial's checkpoint with a changed lr; Lightning's restore would bring the
    old lr (and schedule base) back with the optimizer state unless the trial sets its own again."""
    from lightning.pytorch.callbacks import Callback

    from refit.settings import DataConfig, OptimConfig, TrackingConfig, TrainerConfig
    from refit.train import run_finetune
    from refit.tune.trial import _perturbed_optimizer_settings

    data = DataConfig(
        train=str(toy_data["train"]), validation=str(toy_data["validation"]), batch_size=8, max_length=32
    )
    trainer = TrainerConfig(max_epochs=1, early_stopping_patience=0)
    common = {"data": data, "trainer": trainer, "tracking": TrackingConfig(wandb=False)}
    run_finetune(str(tiny_model_dir), optim=OptimConfig(lr=1e-3), output_dir=tmp_path / "donor", **common)
    seen = {}

    class Probe(Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            seen["base_lrs"] = list(trainer.lr_scheduler_configs[0].scheduler.base_lrs)
            seen["decay"] = trainer.optimizers[0].param_groups[0]["weight_decay"]

    trainer2 = TrainerConfig(max_epochs=2, early_stopping_patience=0)
    run_finetune(
        str(tiny_model_dir),
        optim=OptimConfig(lr=2e-5, weight_decay=0.05),
        output_dir=tmp_path / "exploiter",
        resume_from=tmp_path / "donor" / "checkpoints" / "last.ckpt",
        callbacks=[_perturbed_optimizer_settings(), Probe()],
        resumable=False,
        **{**common, "trainer": trainer2},
    )
    assert seen["base_lrs"] == [2e-5, 2e-5] and seen["decay"] == 0.05


def test_resume_while_the_search_still_runs_is_refused(tmp_path, tiny_model_dir, toy_data, capsys):
    """`refit tune --resume` on a search another process is still running (a second terminal, a retried job)
    started a second Ray on the same folder; two fresh searches racing to create it did the same. Now the
    folder is held for the whole search, and the second is refused before Ray starts."""
    from refit.io import RUN_LOCK

    config = _config(tmp_path, tiny_model_dir, toy_data, "twice")
    out = tmp_path / "tune" / "twice"
    out.mkdir(parents=True)
    (out / "tuner.pkl").write_bytes(b"the running search's state")
    hold = (
        "import filelock, sys, time; lock = filelock.FileLock(sys.argv[1]); lock.acquire(); "
        "print('held', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(out / RUN_LOCK)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    try:
        assert main(["tune", "--config", str(config), "--resume"]) == 2
        assert "Another refit tune is writing" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


def test_a_search_stopped_before_ray_saved_it_is_not_a_dead_end(tmp_path, tiny_model_dir, toy_data, capsys):
    """A folder without tuner.pkl was refused as "already holds a search: continue it with --resume", and
    --resume then said "no search to resume": each message sent the user to the other."""
    config = _config(tmp_path, tiny_model_dir, toy_data, "early")
    (tmp_path / "tune" / "early" / "trials").mkdir(parents=True)
    assert main(["tune", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "stopped before Ray saved it (no tuner.pkl)" in err and "--resume" not in err
    assert main(["tune", "--config", str(config), "--resume"]) == 2
    assert "stopped before Ray saved it" in capsys.readouterr().err


@pytest.mark.parametrize("left", ["storage probe", "own-loggers mark"])
def test_a_file_left_by_a_driver_killed_before_ray_saved_does_not_make_the_folder_a_search(
    tmp_path, tiny_model_dir, toy_data, capsys, left
):
    """A driver killed during the cluster's storage check leaves `.refit-storage-probe`; the folder was
    then "a search stopped before Ray saved it" (remove it, or pick a new --name) instead of empty. The
    mark that refit passes its own loggers is written just before Ray's first save, and is no search either."""
    from refit.recipes.tune import OWN_LOGGERS
    from refit.tune.cluster import PROBE_FILE

    config = _config(tmp_path, tiny_model_dir, toy_data, "probe")
    (tmp_path / "tune" / "probe").mkdir(parents=True)
    (
        tmp_path / "tune" / "probe" / {"storage probe": PROBE_FILE, "own-loggers mark": OWN_LOGGERS}[left]
    ).write_text("token")
    assert main(["tune", "--config", str(config), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "no search to resume" in err and "stopped before Ray saved it" not in err, err


class _Planted:
    """A pickle that, when loaded, creates the file it names: proof of whether anything unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_resume_refuses_a_planted_state_file_before_unpickling_it(tmp_path, tiny_model_dir, toy_data, capsys):
    """Before: --resume passed a tuner.pkl anyone could write straight to Ray's pickle.loads."""
    import pickle

    config = _config(tmp_path, tiny_model_dir, toy_data, "planted")
    out = tmp_path / "tune" / "planted"
    out.mkdir(parents=True)
    marker = tmp_path / "unpickled"
    (out / "tuner.pkl").write_bytes(pickle.dumps(_Planted(marker)))
    (out / "tuner.pkl").chmod(0o666)
    assert main(["tune", "--config", str(config), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'tuner.pkl'} is writable by group and others (mode 0666)" in err, err
    assert "chmod go-w" in err and "Traceback" not in err
    assert not marker.exists(), "the planted state was unpickled"


def test_monitoring_auroc_on_a_one_class_validation_split_is_refused_before_ray_starts(
    tmp_path, tiny_model_dir, toy_data, capsys
):
    """The check `refit finetune` makes up front, made once by the driver: before, every trial's worker
    failed on it in turn (a Ray start and a worker start each, then a search with no result)."""
    import ray

    from tests.conftest import finetune_args, toy_rows, write_jsonl

    one_class = write_jsonl(
        tmp_path / "data" / "one-class.jsonl", [r for r in toy_rows(8, 1) if r["label"] == 0]
    )
    data = {**toy_data, "validation": one_class}
    config = _config(tmp_path, tiny_model_dir, data, "auroc")
    auroc = ["--finetune.trainer.monitor", "val/auroc", "--finetune.trainer.mode", "max"]
    assert main(["tune", "--config", str(config), *auroc]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert not ray.is_initialized() and not (tmp_path / "tune" / "auroc").exists()  # refused before Ray
    ft_args = finetune_args(tiny_model_dir, data, tmp_path / "ft", "--trainer.monitor", "val/auroc")
    assert main(ft_args) == 2
    finetune_err = capsys.readouterr().err
    message = next(x for x in finetune_err.splitlines() if "one class" in x).split(" error: ", 1)[1]
    assert str(one_class) in message and "'trainer.monitor' is 'val/auroc'" in message, finetune_err
    assert err.splitlines() == [f"refit tune: error: {message}"], err  # finetune's message, alone
    # a monitor that is defined on one class still searches as before: not refused up front
    assert "one class" not in _refusal(config, ["--finetune.trainer.monitor", "val/loss", "--resume"], capsys)


def _refusal(config: Path, args: list[str], capsys) -> str:
    assert main(["tune", "--config", str(config), *args]) == 2
    return capsys.readouterr().err


def test_tune_names_refits_results_not_rays_tensorboard_hint(tmp_path, tiny_model_dir, toy_data, capsys):
    """Ray printed "To visualize your results with TensorBoard, run: tensorboard --logdir /tmp/ray/...":
    its session staging, not refit's outputs. Its CSV/JSON loggers still run (the trial history is read)."""
    config = _config(tmp_path, tiny_model_dir, toy_data, "hint", samples=1, scheduler="fifo")
    assert main(["tune", "--config", str(config), "--finetune.trainer.max_epochs", "1"]) == 0
    out = tmp_path / "tune" / "hint"
    text = capsys.readouterr().out
    assert "TensorBoard" not in text and "tensorboard --logdir" not in text, text
    assert f"Results: {out / 'results.csv'}" in text and "Best version:" in text, text
    rows = _rows(out)
    assert len(rows) == 1 and rows[0]["status"] == "finished" and int(rows[0]["iterations"]) == 1, rows
    assert not list(out.rglob("events.out.tfevents*"))  # no TensorBoard logger wrote beside the trials
