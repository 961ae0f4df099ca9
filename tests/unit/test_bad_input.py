"""User mistakes across every recipe: exit code 2 (or the documented one), the offending key or path named,
never a traceback. Each case runs the real CLI entry point in-process and must fail before any training.

A case is (id, argv builder, expected fragments). The builder gets a `World` of real files made once per
module (a tiny version, toy data, a registry) and the test's own tmp folder, so that a case can also
write the broken file it is about (a bad labels.json, a truncated checkpoint, a corrupt registry.db).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from refit.cli import main
from tests.conftest import NEGATIVE, POSITIVE, write_jsonl


@dataclass
class World:
    """Real inputs shared by the cases (read-only: a case that breaks something copies it first)."""

    model: Path  # the tiny BERT (max_position_embeddings 128)
    version: Path  # a model version of it, with a drift reference
    data: dict[str, Path]
    registry: Path  # a registry holding `version`, promoted to champion
    tmp: Path  # this case's own folder

    def finetune(self, *extra: str) -> list[str]:
        return [
            "finetune",
            "--model",
            str(self.model),
            "--data.train",
            str(self.data["train"]),
            "--data.validation",
            str(self.data["validation"]),
            "--output_dir",
            str(self.tmp / "run"),
            "--tracking.wandb",
            "false",
            "--data.max_length",
            "32",
            *extra,
        ]

    def drift(self, *extra: str) -> list[str]:
        return [
            "drift",
            "--version",
            str(self.version),
            "--data",
            str(self.data["validation"]),
            "--output_dir",
            str(self.tmp / "drift"),
            "--tracking.wandb",
            "false",
            *extra,
        ]

    def registry_cmd(self, action: str, *extra: str) -> list[str]:
        tracking = ["--tracking.wandb", "false"] if action in ("promote", "rollback", "alias") else []
        return ["registry", action, "--root", str(self.registry), *tracking, *extra]


def _rows(n: int, offset: int = 0) -> list[dict]:
    out = []
    for i in range(n):
        j = (i + offset) % len(POSITIVE)
        out += [{"text": f"{POSITIVE[j]} ({i})", "label": 1}, {"text": f"{NEGATIVE[j]} ({i})", "label": 0}]
    return out


@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_model_dir) -> dict:
    """A version written by the library (no training: these cases never get that far) and a registry."""
    from refit.drift.reference import Reference, fit_states
    from refit.models import encode_texts, load_classifier, new_version_id, write_version
    from refit.registry import Registry

    root = tmp_path_factory.mktemp("bad-input")
    data = {
        s: write_jsonl(root / "data" / f"{s}.jsonl", _rows(n, k))
        for s, n, k in (("train", 24, 0), ("validation", 30, 1), ("test", 8, 2))
    }
    model, tokenizer, _ = load_classifier(str(tiny_model_dir), ["0", "1"])
    texts = [r["text"] for r in _rows(30, 1)]
    enc = encode_texts(model, tokenizer, texts, 16, 32)
    vid = new_version_id()
    meta = {
        "version_id": vid,
        "recipe": "finetune",
        "labels": ["0", "1"],
        "config": {
            "data": {k: str(v) for k, v in data.items()}
            | {"max_length": 32, "text_column": "text", "label_column": "label"}
        },
        "metrics": {"validation": {"accuracy": 0.5}},
    }
    reference = Reference(
        enc.embeddings,
        enc.probs,
        texts,
        {"split": "validation", "pooling": "mean", "layer": -1, "max_length": 32},
    )
    version = write_version(root / "version", model, tokenizer, meta, fit_states(reference, 0))
    registry = root / "registry"
    reg = Registry(registry)
    reg.register(version)
    reg.promote(vid, "test setup")
    return {"model": tiny_model_dir, "version": version, "data": data, "registry": registry}


@pytest.fixture
def world(shared, tmp_path) -> World:
    return World(shared["model"], shared["version"], shared["data"], shared["registry"], tmp_path)


def _file(w: World, name: str, text: str | bytes) -> Path:
    path = w.tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _yaml(w: World, text: str) -> str:
    return str(_file(w, "bad.yaml", text))


def _labels_json(w: World, content: str = "{not json") -> list[str]:
    train = write_jsonl(w.tmp / "d" / "train.jsonl", _rows(6))
    _file(w, "d/labels.json", content)
    return [*w.finetune("--data.train", str(train))]


def _single_class(w: World) -> list[str]:
    train = write_jsonl(w.tmp / "one.jsonl", [{"text": f"great {i}", "label": "pos"} for i in range(10)])
    return w.finetune("--data.train", str(train), "--data.validation", str(train))


def _truncated_ckpt(w: World) -> list[str]:
    ckpt = w.tmp / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes(b"PK\x03\x04 half a checkpoint")
    return w.finetune("--resume")


def _existing_run(w: World) -> list[str]:
    ckpt = w.tmp / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes(b"x")
    return w.finetune()


def _missing_accelerator() -> str:
    import torch

    return "mps" if torch.cuda.is_available() else "cuda"


def _corrupt_db(w: World) -> list[str]:
    root = w.tmp / "reg"
    root.mkdir(exist_ok=True)
    (root / "registry.db").write_bytes(b"this is not a database, it was overwritten" * 100)
    return ["registry", "list", "--root", str(root)]


def _registry_copy(w: World) -> Path:
    copy = w.tmp / "reg-copy"
    shutil.copytree(w.registry, copy, dirs_exist_ok=True)
    return copy


Case = tuple[str, Callable[[World], list[str]], list[str]]

CASES: list[Case] = [
    # --- the command itself -------------------------------------------------------------------------
    ("unknown command", lambda w: ["finetun"], ["finetun", "Did you mean 'finetune'"]),
    ("unknown command far off", lambda w: ["deploy"], ["deploy", "commands:"]),
    ("configs with an argument", lambda w: ["configs", "--bogus"], ["--bogus"]),
    # --- finetune: the tracebacks of issue #9 ----------------------------------------------------------
    ("accelerator tpu", lambda w: w.finetune("--trainer.accelerator", "tpu"), ["trainer.accelerator", "tpu"]),
    ("strategy foo", lambda w: w.finetune("--trainer.strategy", "foo"), ["trainer.strategy", "foo", "ddp"]),
    ("devices abc", lambda w: w.finetune("--trainer.devices", "abc"), ["trainer.devices", "abc"]),
    (
        "monitor val/foo",
        lambda w: w.finetune("--trainer.monitor", "val/foo"),
        ["trainer.monitor", "val/foo", "val/accuracy"],
    ),
    ("yaml trainer: 3", lambda w: w.finetune("--config", _yaml(w, "trainer: 3\n")), ["trainer", "bad.yaml"]),
    (
        "max_length above the model's",
        lambda w: w.finetune("--data.max_length", "1000"),
        ["data.max_length", "1000", "128"],
    ),
    ("bad labels.json", _labels_json, ["labels.json"]),
    ("truncated last.ckpt on resume", _truncated_ckpt, ["last.ckpt", "--resume"]),
    # --- finetune: keys and values ---------------------------------------------------------------------
    (
        "misspelt key",
        lambda w: w.finetune("--trainer.max_epoch", "2"),
        ["trainer.max_epoch", "trainer.max_epochs"],
    ),
    ("misspelt section", lambda w: w.finetune("--optimm.lr", "1e-3"), ["optimm.lr", "optim.lr"]),
    (
        "unknown key in yaml",
        lambda w: w.finetune("--config", _yaml(w, "optim:\n  learning_rate: 1\n")),
        ["optim.learning_rate", "bad.yaml", "lr"],
    ),
    (
        "yaml empty section",
        lambda w: w.finetune("--config", _yaml(w, "trainer:\n  # max_epochs: 3\n")),
        ["'trainer'", "empty section"],
    ),
    ("drift misspelt", lambda w: w.drift("--windo", "10"), ["windo", "Did you mean 'window'"]),
    ("export misspelt", lambda w: ["export", "--formt", "onnx"], ["formt", "Did you mean 'format'"]),
    ("compress misspelt", lambda w: ["compress", "--ammount", "0.3"], ["ammount", "Did you mean 'amount'"]),
    (
        "benchmark misspelt",
        lambda w: ["benchmark", "--format", "onnx"],
        ["'format'", "Did you mean 'formats'"],
    ),
    (
        "registry misspelt",
        lambda w: w.registry_cmd("alias", "--alais", "x"),
        ["alais", "Did you mean 'alias'"],
    ),
    ("tune misspelt", lambda w: ["tune", "--num_sample", "3"], ["num_sample", "Did you mean 'num_samples'"]),
    ("yaml not a mapping", lambda w: w.finetune("--config", _yaml(w, "- a\n- b\n")), ["bad.yaml", "mapping"]),
    ("yaml syntax", lambda w: w.finetune("--config", _yaml(w, "optim: {lr: [\n")), ["bad.yaml", "YAML"]),
    ("config file missing", lambda w: w.finetune("--config", "nope/missing.yaml"), ["nope/missing.yaml"]),
    ("lr negative", lambda w: w.finetune("--optim.lr", "-1"), ["optim.lr", "> 0"]),
    ("lr not a number", lambda w: w.finetune("--optim.lr", "fast"), ["optim.lr", "fast"]),
    ("section given a value", lambda w: w.finetune("--trainer", "3"), ["trainer"]),
    (
        "accelerator this machine lacks",
        lambda w: w.finetune("--trainer.accelerator", _missing_accelerator()),
        ["trainer.accelerator", "on this machine"],
    ),
    ("batch size zero", lambda w: w.finetune("--data.batch_size", "0"), ["data.batch_size", "> 0"]),
    (
        "eval batch size negative",
        lambda w: w.finetune("--data.eval_batch_size", "-3"),
        ["data.eval_batch_size"],
    ),
    (
        "warmup ratio above 1",
        lambda w: w.finetune("--optim.warmup_ratio", "1.5"),
        ["optim.warmup_ratio", "[0, 1]"],
    ),
    ("betas not a pair", lambda w: w.finetune("--optim.betas", "abc"), ["optim.betas"]),
    (
        "precision bf16",
        lambda w: w.finetune("--trainer.precision", "bf16"),
        ["trainer.precision", "bf16-mixed"],
    ),
    ("mode maximum", lambda w: w.finetune("--trainer.mode", "maximum"), ["trainer.mode", "'max'"]),
    (
        "monitor a training metric",
        lambda w: w.finetune("--trainer.monitor", "train/loss"),
        ["trainer.monitor"],
    ),
    ("max_steps below -1", lambda w: w.finetune("--trainer.max_steps", "-5"), ["trainer.max_steps"]),
    (
        "val_check_interval zero",
        lambda w: w.finetune("--trainer.val_check_interval", "0"),
        ["trainer.val_check_interval"],
    ),
    (
        "val_check_interval beyond the epoch",
        lambda w: w.finetune("--trainer.val_check_interval", "1000"),
        ["trainer.val_check_interval", "1000"],
    ),
    ("num_nodes zero", lambda w: w.finetune("--trainer.num_nodes", "0"), ["trainer.num_nodes"]),
    ("devices negative", lambda w: w.finetune("--trainer.devices", "-2"), ["trainer.devices", "-2"]),
    ("devices list of words", lambda w: w.finetune("--trainer.devices", "[a, b]"), ["trainer.devices"]),
    ("tracking mode", lambda w: w.finetune("--tracking.mode", "cloud"), ["tracking.mode", "offline"]),
    (
        "max_train_samples negative",
        lambda w: w.finetune("--data.max_train_samples", "-1"),
        ["data.max_train_samples"],
    ),
    (
        "dataset and files",
        lambda w: w.finetune("--data.dataset", "refit-demo"),
        ["data.dataset", "data.train"],
    ),
    # --- finetune: files --------------------------------------------------------------------------------
    ("train file missing", lambda w: w.finetune("--data.train", str(w.tmp / "nope.jsonl")), ["nope.jsonl"]),
    ("model folder missing", lambda w: w.finetune("--model", str(w.tmp / "no-model")), ["no-model"]),
    (
        "text column missing",
        lambda w: w.finetune("--data.text_column", "sentence"),
        ["'sentence'", "text_column"],
    ),
    ("label column missing", lambda w: w.finetune("--data.label_column", "y"), ["'y'", "label_column"]),
    (
        "train file invalid json",
        lambda w: w.finetune("--data.train", str(_file(w, "t.jsonl", '{"text": 1\n'))),
        ["t.jsonl", "line 1"],
    ),
    ("train file empty", lambda w: w.finetune("--data.train", str(_file(w, "e.jsonl", ""))), ["e.jsonl"]),
    (
        "train file type",
        lambda w: w.finetune("--data.train", str(_file(w, "t.txt", "hello\n"))),
        ["t.txt", ".jsonl"],
    ),
    ("single-class training data", _single_class, ["one.jsonl", "one label", "two classes"]),
    (
        "single-class integer labels",
        lambda w: w.finetune(
            "--data.train",
            str(write_jsonl(w.tmp / "ones.jsonl", [{"text": f"fine {i}", "label": 1} for i in range(8)])),
        ),
        ["ones.jsonl", "one label"],
    ),
    (
        "labels.json with a gap",
        lambda w: [*_labels_json(w, '{"0": "neg", "2": "pos"}')],
        ["labels.json", "gaps"],
    ),
    (
        "validation label unseen",
        lambda w: w.finetune(
            "--data.validation", str(write_jsonl(w.tmp / "v.jsonl", [{"text": "x", "label": 7}]))
        ),
        ["v.jsonl", "label 7"],
    ),
    ("resume without a checkpoint", lambda w: w.finetune("--resume"), ["--resume", "last.ckpt"]),
    ("existing run without resume", _existing_run, ["--resume", "--output_dir"]),
    # --- tune ----------------------------------------------------------------------------------------------
    ("tune scheduler", lambda w: ["tune", "--scheduler", "hyperband"], ["scheduler", "asha"]),
    ("tune searcher", lambda w: ["tune", "--searcher", "bayes"], ["searcher", "optuna"]),
    ("tune num_samples zero", lambda w: ["tune", "--num_samples", "0"], ["num_samples"]),
    (
        "tune unknown space key",
        lambda w: [
            "tune",
            "--space",
            '{"optim.lrr": {"loguniform": [1e-5, 1e-3]}}',
            "--storage_path",
            str(w.tmp),
        ],
        ["optim.lrr", "optim.lr"],
    ),
    (
        "tune unknown distribution",
        lambda w: ["tune", "--space", '{"optim.lr": {"normal": [0, 1]}}', "--storage_path", str(w.tmp)],
        ["optim.lr", "loguniform"],
    ),
    (
        "tune bad finetune key",
        lambda w: ["tune", "--finetune.trainer.accelerator", "tpu"],
        ["finetune.trainer.accelerator"],
    ),
    # --- compress ------------------------------------------------------------------------------------------
    ("compress no version", lambda w: ["compress"], ["--version"]),
    ("compress version missing", lambda w: ["compress", "--version", str(w.tmp / "gone")], ["gone"]),
    (
        "compress method",
        lambda w: ["compress", "--version", str(w.version), "--method", "lowrank"],
        ["method", "magnitude"],
    ),
    (
        "compress amount",
        lambda w: ["compress", "--version", str(w.version), "--amount", "1.5"],
        ["amount", "[0, 1]"],
    ),
    ("compress max drop", lambda w: ["compress", "--max_accuracy_drop", "-1"], ["max_accuracy_drop"]),
    (
        "compress validation missing",
        lambda w: [
            "compress",
            "--version",
            str(w.version),
            "--validation",
            str(w.tmp / "val.jsonl"),
            "--output_dir",
            str(w.tmp / "c"),
        ],
        ["val.jsonl"],
    ),
    # --- export --------------------------------------------------------------------------------------------
    (
        "export format",
        lambda w: ["export", "--version", str(w.version), "--format", "onnx2"],
        ["format", "onnx"],
    ),
    ("export version missing", lambda w: ["export", "--version", str(w.tmp / "gone")], ["gone"]),
    ("export quantize mode", lambda w: ["export", "--quantize.mode", "fast"], ["quantize.mode", "dynamic"]),
    (
        "export trt precision",
        lambda w: ["export", "--tensorrt.precision", "int4"],
        ["tensorrt.precision", "fp16"],
    ),
    ("export opset", lambda w: ["export", "--onnx.opset", "0"], ["onnx.opset"]),
    ("export device", lambda w: ["export", "--device", "tpu"], ["device", "cpu"]),
    (
        "export validation missing",
        lambda w: ["export", "--version", str(w.version), "--validation", str(w.tmp / "val.jsonl")],
        ["val.jsonl"],
    ),
    # --- benchmark -----------------------------------------------------------------------------------------
    (
        "benchmark format",
        lambda w: ["benchmark", "--version", str(w.version), "--formats", "[pytorch, onnx3]"],
        ["onnx3", "formats", "onnx-int8"],
    ),
    ("benchmark version missing", lambda w: ["benchmark", "--version", str(w.tmp / "gone")], ["gone"]),
    ("benchmark seq_len", lambda w: ["benchmark", "--seq_len", "0"], ["seq_len"]),
    ("benchmark no version", lambda w: ["benchmark"], ["--version"]),
    (
        "benchmark validation missing",
        lambda w: [
            "benchmark",
            "--version",
            str(w.version),
            "--validation",
            str(w.tmp / "val.jsonl"),
            "--tracking.wandb",
            "false",
        ],
        ["val.jsonl"],
    ),
    # --- drift ---------------------------------------------------------------------------------------------
    (
        "drift window 1 classifier",
        lambda w: w.drift("--window", "1", "--min_window", "1", "--tests", "[classifier]"),
        ["min_window", "classifier"],
    ),
    ("drift unknown test", lambda w: w.drift("--tests", "[mmd, foo]"), ["tests", "foo", "mmd"]),
    ("drift alpha", lambda w: w.drift("--alpha", "1.5"), ["alpha"]),
    ("drift data missing", lambda w: w.drift("--data", str(w.tmp / "prod.jsonl")), ["prod.jsonl"]),
    ("drift version missing", lambda w: w.drift("--version", str(w.tmp / "gone")), ["gone"]),
    ("drift no data", lambda w: ["drift", "--version", str(w.version)], ["--data"]),
    (
        "drift window and by_time",
        lambda w: w.drift("--window", "10", "--by_time", "day"),
        ["window", "by_time"],
    ),
    ("drift by_time year", lambda w: w.drift("--by_time", "year"), ["by_time", "day"]),
    ("drift text column", lambda w: w.drift("--text_column", "body"), ["'body'"]),
    ("drift empty file", lambda w: w.drift("--data", str(_file(w, "empty.jsonl", ""))), ["empty.jsonl"]),
    ("drift all windows too small", lambda w: w.drift("--min_window", "1000"), ["1000", "min_window"]),
    ("drift no tests", lambda w: w.drift("--tests", "[]"), ["tests"]),
    ("drift encoder missing", lambda w: w.drift("--encoder", str(w.tmp / "enc")), ["enc"]),
    (
        "finetune reference encoder missing",
        lambda w: w.finetune("--data.reference_encoder", str(w.tmp / "no-encoder")),
        ["no-encoder"],
    ),
    (
        "drift reference data missing",
        lambda w: w.drift("--refresh_reference", "--reference_data", str(w.tmp / "ref.jsonl")),
        ["ref.jsonl"],
    ),
    ("drift by_time without times", lambda w: w.drift("--by_time", "day"), ["timestamp", "by_time"]),
    ("drift permutations zero", lambda w: w.drift("--permutations", "0"), ["permutations"]),
    # --- maintain ------------------------------------------------------------------------------------------
    (  # an optional number out of range was reported as "got 'str'" (the type of the command-line text)
        "maintain optional number out of range",
        lambda w: ["maintain", "--once", "--gate.recent_alpha", "1.5"],
        ["gate.recent_alpha", "(0, 1) or null; got 1.5."],
    ),
    (
        "maintain no schedule",
        lambda w: ["maintain", "--registry.root", str(w.registry)],
        ["--once", "--every"],
    ),
    (
        "maintain every nonsense",
        lambda w: ["maintain", "--every", "soon", "--registry.root", str(w.registry)],
        ["every", "soon"],
    ),
    (
        "maintain unknown policy test",
        lambda w: ["maintain", "--once", "--policy.tests", "[mmd, foo]", "--registry.root", str(w.registry)],
        ["policy.tests", "foo"],
    ),
    (
        "maintain holdout fraction",
        lambda w: ["maintain", "--once", "--inbox.holdout_fraction", "2"],
        ["inbox.holdout_fraction"],
    ),
    (
        "maintain retrain key",
        lambda w: ["maintain", "--once", "--retrain.optim.lr", "-1"],
        ["retrain.optim.lr"],
    ),
    (
        "maintain misspelt",
        lambda w: ["maintain", "--once", "--polcy.alpha", "0.1"],
        ["polcy.alpha", "policy.alpha"],
    ),
    # --- registry ------------------------------------------------------------------------------------------
    ("registry action", lambda w: w.registry_cmd("delete"), ["action", "promote"]),
    (
        "registry alias with /",
        lambda w: [
            "registry",
            "alias",
            "--root",
            str(_registry_copy(w)),
            "--alias",
            "a/b",
            "--version",
            "champion",
            "--tracking.wandb",
            "false",
        ],
        ["alias", "a/b"],
    ),
    ("registry corrupt db", _corrupt_db, ["registry.db"]),
    ("registry show unknown", lambda w: w.registry_cmd("show", "--version", "nosuch"), ["nosuch"]),
    ("registry promote no version", lambda w: w.registry_cmd("promote"), ["version"]),
    (
        "registry register missing",
        lambda w: w.registry_cmd("register", "--version", str(w.tmp / "gone")),
        ["gone"],
    ),
    ("registry rollback nothing", lambda w: w.registry_cmd("rollback", "--alias", "staging"), ["staging"]),
    # --- serve ---------------------------------------------------------------------------------------------
    ("serve no registry", lambda w: ["serve", "--registry.root", str(w.tmp / "nowhere")], ["nowhere"]),
    ("serve missing version", lambda w: ["serve", "--version", str(w.tmp / "gone")], ["gone"]),
    (
        "serve backend",
        lambda w: ["serve", "--version", str(w.version), "--backend", "tpu"],
        ["backend", "tpu"],
    ),
    (
        "serve backend not exported",
        lambda w: ["serve", "--version", str(w.version), "--backend", "onnx-int8"],
        ["onnx-int8"],
    ),
    (
        "serve unknown alias",
        lambda w: ["serve", "--registry.root", str(w.registry), "--alias", "nosuch"],
        ["nosuch"],
    ),
    ("serve misspelt", lambda w: ["serve", "--batching.max_wait", "5"], ["batching.max_wait", "max_wait_ms"]),
    ("serve workers zero", lambda w: ["serve", "--workers", "0"], ["workers"]),
]


@pytest.mark.parametrize("build,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_user_mistake_exits_2_naming_the_problem(build, expected, world, capsys):
    argv = build(world)
    try:
        code = main(argv)
    except SystemExit as e:  # argparse-style exits must not escape main either
        pytest.fail(f"main({argv}) raised SystemExit({e.code}) instead of returning an exit code")
    out, err = capsys.readouterr()
    assert code == 2, f"exit code {code} for {argv}\nstdout: {out}\nstderr: {err}"
    assert "Traceback" not in out + err
    for fragment in expected:
        assert fragment in err, f"{fragment!r} missing from: {err}"
    assert not (world.tmp / "run" / "version").exists(), "nothing may be trained on bad input"


def test_the_table_is_large_and_covers_every_recipe(world):
    from refit.cli import RECIPES

    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)
    commands = {build(world)[0] for _, build, _ in CASES}
    assert set(RECIPES) | {"configs"} <= commands


def test_no_traceback_from_a_real_process(world):
    """The in-process cases stand in for the real command: check one through a subprocess too."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "refit", *world.finetune("--trainer.devices", "abc")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "trainer.devices" in proc.stderr


def test_monitor_names_match_the_metrics_training_logs():
    """settings.MONITOR_METRICS is checked at parse time; it must list exactly what the module logs."""
    from refit.evaluate import METRIC_NAMES
    from refit.settings import MONITOR_METRICS

    assert set(MONITOR_METRICS) == {"val/loss", *(f"val/{m}" for m in METRIC_NAMES)}
