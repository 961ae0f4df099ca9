"""`refit maintain --once` end to end on a tiny model: promote (with gated exports and a refreshed reference),
refuse a worse challenger, survive SIGKILL and SIGTERM, lock, compare-and-swap against a manual promote,
quarantine bad inbox files, replay from the champion's own data, read served captures with late feedback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from refit.cli import main
from refit.data import demo_dir
from refit.registry import CHAMPION, Registry
from tests.conftest import write_jsonl


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (demo_dir() / f"{name}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def champion_registry(tmp_path_factory, tiny_model_dir) -> Path:
    """A registry whose champion is the tiny model fine-tuned on the demo reviews."""
    root = tmp_path_factory.mktemp("champion")
    out = root / "run"
    assert (
        main(
            [
                "finetune",
                "--model",
                str(tiny_model_dir),
                "--data.dataset",
                "refit-demo",
                "--output_dir",
                str(out),
                "--trainer.max_epochs",
                "3",
                "--data.batch_size",
                "16",
                "--data.max_length",
                "48",
                "--optim.lr",
                "2e-3",
                "--tracking.wandb",
                "false",
                "--data.reference_size",
                "100",
            ]
        )
        == 0
    )
    registry = root / "registry"
    assert main(["registry", "register", "--root", str(registry), "--version", str(out / "version")]) == 0
    vid = json.loads((out / "version" / "refit.json").read_text())["version_id"]
    assert (
        main(
            [
                "registry",
                "promote",
                "--root",
                str(registry),
                "--version",
                vid,
                "--reason",
                "first",
                "--tracking.wandb",
                "false",
            ]
        )
        == 0
    )
    # a second, never-promoted version: what a person might promote by hand during a cycle
    assert (
        main(
            [
                "finetune",
                "--model",
                str(tiny_model_dir),
                "--data.dataset",
                "refit-demo",
                "--output_dir",
                str(root / "spare"),
                "--trainer.max_steps",
                "2",
                "--data.max_length",
                "48",
                "--tracking.wandb",
                "false",
                "--data.reference_size",
                "20",
            ]
        )
        == 0
    )
    assert (
        main(["registry", "register", "--root", str(registry), "--version", str(root / "spare" / "version")])
        == 0
    )
    return registry


@pytest.fixture
def setup(tmp_path, champion_registry):
    """A copy of the champion registry, an inbox with chat-style (shifted) labelled rows and a config."""
    registry = tmp_path / "registry"
    shutil.copytree(champion_registry, registry)
    inbox = tmp_path / "production"
    write_jsonl(inbox / "2026-11-20.jsonl", _rows("shifted")[:200])
    golden = write_jsonl(tmp_path / "golden.jsonl", _rows("validation"))
    config = {
        "registry": {"root": str(registry)},
        "inbox": {"windows": str(inbox), "golden": str(golden), "replay_size": 400, "holdout_fraction": 0.3},
        "policy": {"tests": ["mmd", "ks"], "alpha": 0.05, "permutations": 200, "min_accuracy": 0.95},
        "retrain": {
            "data": {"max_length": 48, "batch_size": 16, "reference_size": 100},
            "optim": {"lr": 2e-3},
            "trainer": {"max_epochs": 3},
            "tracking": {"wandb": False},
        },
        # recent_alpha null: these tests need the cycle to promote a tiny model's challenger on 60 held-out rows,
        # a gain no significance test can confirm; the default (0.2) is tested in tests/unit/test_maintain_gate.py
        "gate": {"golden_tolerance": 5.0, "recent_margin": 0.0, "recent_alpha": None},
        "deploy": {"formats": []},
        "tracking": {"wandb": False},
    }
    path = tmp_path / "maintain.yaml"
    path.write_text(yaml.safe_dump(config))
    return {"registry": registry, "config": path, "inbox": inbox, "tmp": tmp_path}


def _champion(registry: Path) -> str:
    return Registry(registry).aliases()[CHAMPION]


def _edit(setup, **sections) -> None:
    cfg = yaml.safe_load(setup["config"].read_text())
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    setup["config"].write_text(yaml.safe_dump(cfg))


def test_shift_triggers_retrain_and_promotion(setup, capsys):
    _edit(setup, deploy={"formats": ["onnx-int8"], "max_accuracy_drop": 5.0, "min_agreement": 0.9})
    before = _champion(setup["registry"])
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    reg = Registry(setup["registry"])
    run = reg.runs("maintain")[-1]
    assert run["status"] == "promoted", run["details"]
    assert run["details"]["drift"]["drift"] is True
    after = reg.aliases()[CHAMPION]
    assert after != before and reg.get(after).parent == before
    ab = run["details"]["ab"]
    assert ab["challenger"]["recent"] >= ab["champion"]["recent"]
    # the gate's paired evidence sits beside the accuracies: same rows, so b and c give the accuracy gap
    paired = run["details"]["paired"]
    for rows in ("golden", "recent"):
        n, b, c = paired[rows]["n"], paired[rows]["b"], paired[rows]["c"]
        assert ab["challenger"][rows] - ab["champion"][rows] == pytest.approx((c - b) / n)
        assert 0 < paired[rows]["p_two_sided"] <= 1
    recent_reason = next(r for r in run["details"]["gate"] if r.startswith("recent window"))
    assert f"on {paired['recent']['n']} rows" in recent_reason and "McNemar p = " in recent_reason
    move = reg.history(CHAMPION)[-1]
    assert move.action == "promote" and "drift" in move.reason and move.metrics == ab
    # the new champion brings its own drift reference (from data that includes the new domain)
    assert (reg.get(after).path / "reference" / "embeddings.safetensors").is_file()
    # replay came from the demo-trained champion (bundled data, resolved by name) into the challenger's data
    assert run["details"]["replay"]["rows"] == 400
    train_rows = (Path(run["details"]["work_dir"]) / "data" / "train.jsonl").read_text().splitlines()
    demo_texts = {r["text"] for r in _rows("train")}
    assert sum(json.loads(line)["text"] in demo_texts for line in train_rows) > 200
    # the promoted champion carries gated exports; the report shows parity and size
    exports = reg.get(after).path / "exports"
    assert (exports / "model.int8.onnx").is_file() and (exports / "model.onnx").is_file()
    parity = json.loads((exports / "parity.json").read_text())
    assert (
        parity["model.int8.onnx"]["passed"] and parity["model.int8.onnx"]["parity"]["argmax_agreement"] >= 0.9
    )
    assert (
        run["details"]["exports"]["model.int8.onnx"]["bytes"] == (exports / "model.int8.onnx").stat().st_size
    )
    # a cycle keeps only what the version needs: no checkpoints left in the run folder
    assert not (Path(run["details"]["work_dir"]) / "finetune" / "checkpoints").exists()
    # promotion and the run's completion were one transaction: exactly one promote row for this challenger
    assert [m.to_version for m in reg.history(CHAMPION) if m.action == "promote"].count(after) == 1
    out = capsys.readouterr().out
    assert f"promoted; champion {after} (was {before})" in out  # not the new id twice
    html = (Path(run["details"]["work_dir"]) / "report.html").read_text()
    assert "promoted" in html and "Offline A/B" in html and "argmax agreement" in html and "MB" in html
    # the champion history draws this cycle once: its row, finished by the promotion, was drawn again as #N
    history = html.split("<h3>Champion history</h3>")[1].split("</table>")[0]
    assert history.count("<td>this</td>") == 1 and f"<td>#{run['id']}</td>" not in history, history
    # the same files are not processed twice
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    assert reg.runs("maintain")[-1]["status"] == "no_new_data"


def test_a_withdrawn_champion_is_not_warm_started_from(setup, capsys):
    """A champion a forget withdrew learned forgotten texts: a challenger warm-started from it carries them
    too. The cycle still tests drift, but does not retrain from it, and says how to repair."""
    reg = Registry(setup["registry"])
    champion = _champion(setup["registry"])
    run_id = reg.start_run("forget", {}, withdraw=[champion])
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    run = reg.runs("maintain")[-1]
    assert run["status"] == "no_action" and run["details"]["drift"]["drift"] is True, run["details"]
    assert not run["details"].get("challenger") and reg.aliases()[CHAMPION] == champion
    said = f"the champion {champion} was withdrawn by forget run {run_id}"
    assert any(said in r for r in run["details"]["reasons"]) and said in capsys.readouterr().out


def test_worse_challenger_is_not_promoted(setup, capsys):
    cfg = yaml.safe_load(setup["config"].read_text())
    cfg["retrain"]["optim"]["lr"] = 3.0  # a diverging retrain: the challenger comes out broken
    setup["config"].write_text(yaml.safe_dump(cfg))
    before = _champion(setup["registry"])
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    reg = Registry(setup["registry"])
    run = reg.runs("maintain")[-1]
    assert run["status"] == "rejected", run["details"]
    assert reg.aliases()[CHAMPION] == before
    assert reg.aliases()["challenger"] == run["details"]["challenger"]
    assert any("golden set" in line for line in run["details"]["gate"])
    challenger = run["details"]["challenger"]
    assert f"rejected; champion {before}; challenger {challenger} not promoted" in capsys.readouterr().out


def test_sigkill_during_retraining_leaves_champion_and_database_intact(setup):
    cfg = yaml.safe_load(setup["config"].read_text())
    cfg["retrain"]["trainer"].update(
        {"max_epochs": 200, "checkpoint_every_n_steps": 1, "early_stopping_patience": 0}
    )
    slow = setup["tmp"] / "slow.yaml"
    slow.write_text(yaml.safe_dump(cfg))
    before = _champion(setup["registry"])
    audit_before = len(Registry(setup["registry"]).history())
    proc = subprocess.Popen(
        [sys.executable, "-m", "refit", "maintain", "--config", str(slow), "--once"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
    )
    ckpt = setup["registry"] / "maintain" / "run-00001" / "finetune" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while time.time() < deadline and not ckpt.exists() and proc.poll() is None:
        time.sleep(0.5)
    assert ckpt.exists(), "retraining never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)

    db = sqlite3.connect(setup["registry"] / "registry.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    reg = Registry(setup["registry"])
    assert reg.aliases()[CHAMPION] == before and len(reg.history()) == audit_before
    assert reg.runs("maintain")[-1]["status"] == "running"  # died mid-cycle
    reg.get(CHAMPION)  # still verifies

    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    runs = reg.runs("maintain")
    assert runs[0]["status"] == "abandoned" and runs[-1]["status"] in ("promoted", "rejected")
    assert runs[-1]["details"]["files"] == runs[0]["details"]["files"]  # the killed cycle's files are retried
    assert not ckpt.parent.exists()  # the killed retrain's checkpoints are dropped (#9.13)


def test_second_cycle_is_refused_while_one_holds_the_lock(setup, capsys):
    from filelock import FileLock

    with FileLock(str(setup["registry"] / "maintain.lock")):
        assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 75
    assert "holds" in capsys.readouterr().err
    assert Registry(setup["registry"]).runs("maintain") == []


def test_no_champion_and_bad_schedule_are_clear_errors(tmp_path, setup, capsys):
    assert main(["maintain", "--registry.root", str(tmp_path / "nosuch"), "--once"]) == 2
    assert "No registry at" in capsys.readouterr().err
    assert not (tmp_path / "nosuch").exists()  # a misspelt root is refused, never created empty
    Registry(tmp_path / "empty")  # a registry with no champion yet
    assert main(["maintain", "--registry.root", str(tmp_path / "empty"), "--once"]) == 2
    assert "no champion" in capsys.readouterr().err
    assert main(["maintain", "--config", str(setup["config"]), "--every", "soon"]) == 2
    assert "30m, 6h or 1d" in capsys.readouterr().err
    assert main(["maintain", "--config", str(setup["config"])]) == 2
    assert "--once" in capsys.readouterr().err


def _cfg(setup):
    from refit.config import parse_config_dict
    from refit.recipes.maintain import Config

    return parse_config_dict(Config, yaml.safe_load(setup["config"].read_text()))


def test_manual_promote_during_a_cycle_wins_and_the_cycle_is_superseded(setup, capsys):
    """#9.4: the cycle's challenger was trained from and gated against the old champion; a person promoted
    another version meanwhile, so the cycle must not overwrite that (compare-and-swap)."""
    from refit.maintain import run_cycle

    cfg = _cfg(setup)
    reg = Registry(setup["registry"])
    before = reg.aliases()[CHAMPION]
    spare = next(v.id for v in reg.list_versions() if v.id != before)

    def log(line: str) -> None:  # a person promotes by hand while the cycle retrains
        if line.startswith("retrain because"):
            Registry(setup["registry"]).promote(spare, "hotfix by hand", actor="alice")

    report = run_cycle(
        reg,
        inbox=cfg.inbox,
        policy=cfg.policy,
        retrain=cfg.retrain,
        gate_cfg=cfg.gate,
        deploy=cfg.deploy,
        log=log,
    )
    assert report.status == "superseded" and report.challenger
    assert reg.aliases()[CHAMPION] == spare  # the manual promote stands
    assert [m.actor for m in reg.history(CHAMPION)][-1] == "alice"
    run = reg.runs("maintain")[-1]
    assert run["status"] == "superseded" and any("superseded" in n for n in run["details"]["notes"])
    # superseded files are not marked read: the next cycle retries them against the new champion
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    assert reg.runs("maintain")[-1]["status"] in ("promoted", "rejected")
    assert reg.runs("maintain")[-1]["details"]["champion"] == spare
    capsys.readouterr()


def test_bad_inbox_files_are_quarantined_and_do_not_block_valid_ones(setup, capsys):
    """#9.8: unreadable, missing text column, bad label: each quarantined with its reason, valid files read."""
    _edit(setup, policy={"min_new_labels": 100000})  # no retrain: this test is about reading
    inbox = setup["inbox"]
    (inbox / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    write_jsonl(inbox / "no-text.jsonl", [{"body": "hello", "label": "positive"}])
    write_jsonl(
        inbox / "bad-label.jsonl", [{"text": "fine", "label": "positive"}, {"text": "odd", "label": "maybe"}]
    )
    (inbox / ".capture-0001.tmp").write_bytes(b"partial")  # a writer's partial file: ignored, not quarantined
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    reg = Registry(setup["registry"])
    run = reg.runs("maintain")[-1]
    assert run["status"] == "no_action", run["details"]
    assert run["details"]["files"] == [str((inbox / "2026-11-20.jsonl").resolve())]
    reasons = {Path(q["file"]).name: q["reason"] for q in run["details"]["quarantined"]}
    assert set(reasons) == {"broken.parquet", "no-text.jsonl", "bad-label.jsonl"}
    assert "Parquet" in reasons["broken.parquet"] and "'text'" in reasons["no-text.jsonl"]
    assert "maybe" in reasons["bad-label.jsonl"] and "row 2" in reasons["bad-label.jsonl"]
    assert run["details"]["counts"]["inputs"] == 200
    out = capsys.readouterr().out
    assert "quarantined" in out and "bad-label.jsonl" in out
    html = (Path(run["details"]["work_dir"]) / "report.html").read_text()
    assert "Quarantined files" in html and "no-text.jsonl" in html
    # not retried forever: the next cycle sees nothing new ...
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    nxt = reg.runs("maintain")[-1]
    assert nxt["status"] == "no_new_data" and nxt["details"]["quarantined"] == []
    # ... until the file is fixed
    write_jsonl(inbox / "bad-label.jsonl", [{"text": "fine", "label": "positive"}])
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    assert reg.runs("maintain")[-1]["details"]["files"] == [str((inbox / "bad-label.jsonl").resolve())]


def test_a_registry_from_before_the_inbox_index_is_migrated_and_copies_add_nothing(setup, capsys):
    """A registry whose done cycles predate the inbox index (no record in their run rows, no index file):
    `refit maintain --once` builds the index once from the files those cycles read, so a copy of an already
    read file under a new name is not trained on again (before: read as new under its new name)."""
    _edit(setup, policy={"min_new_labels": 100000})  # no retrain: this test is about reading
    inbox, reg = setup["inbox"], Registry(setup["registry"])
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    db = sqlite3.connect(setup["registry"] / "registry.db")  # the previous format: details["files"] only
    for run_id, details in db.execute("SELECT id, details FROM runs WHERE kind = 'maintain'").fetchall():
        old = {k: v for k, v in json.loads(details).items() if k != "inbox_index"}
        db.execute("UPDATE runs SET details = ? WHERE id = ?", (json.dumps(old), run_id))
    db.commit()
    db.close()
    (setup["registry"] / "maintain" / "inbox-index.db").unlink()
    shutil.copy(inbox / "2026-11-20.jsonl", inbox / "2026-11-21.jsonl")
    capsys.readouterr()
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    run = reg.runs("maintain")[-1]
    assert run["details"]["counts"] == {"inputs": 0, "labelled": 0}, run["details"]
    assert run["details"]["files"] == [str((inbox / "2026-11-21.jsonl").resolve())]  # marked read
    assert run["details"]["inbox_index"]["base"] is True
    assert any("predate the inbox index" in n for n in run["details"]["notes"])
    assert "predate the inbox index" in capsys.readouterr().out
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    assert reg.runs("maintain")[-1]["status"] == "no_new_data"


def test_missing_inputs_and_bad_schedules_are_refused_before_any_work(setup, capsys):
    """#9.9/#9.11/#11.6: golden set and inbox checked first; --every < 1m, a bad --cron and unknown drift tests
    refused at parse time: exit 2, a message naming the key, and no cycle recorded."""
    reg = Registry(setup["registry"])
    cases = [
        (["--inbox.golden", str(setup["tmp"] / "nope.jsonl")], "inbox.golden"),
        (["--inbox.windows", str(setup["tmp"] / "nowhere")], "inbox.windows"),
        (["--every", "30s"], "1m"),
        (["--every", "0m"], "1m"),
        (["--cron", "every day please"], "cron"),
        (["--once", "--policy.tests", "[mmd,psi]"], "bbsd"),
        (["--once", "--deploy.formats", "[onnx-int9]"], "onnx-int8"),
    ]
    for extra, needle in cases:
        argv = ["maintain", "--config", str(setup["config"]), *extra]
        if not any(a in ("--every", "--cron", "--once") for a in extra):
            argv.append("--once")
        assert main(argv) == 2, extra
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, (extra, err)
    assert reg.runs("maintain") == []


@pytest.fixture(scope="module")
def file_champion_registry(tmp_path_factory, tiny_model_dir) -> tuple[Path, Path]:
    """A champion trained from a plain training file (not the bundled demo): (registry, that file)."""
    root = tmp_path_factory.mktemp("file-champion")
    train = write_jsonl(root / "data" / "train.jsonl", _rows("train"))
    (root / "data" / "labels.json").write_text((demo_dir() / "labels.json").read_text())
    val = write_jsonl(root / "data" / "validation.jsonl", _rows("validation"))
    assert (
        main(
            [
                "finetune",
                "--model",
                str(tiny_model_dir),
                "--data.train",
                str(train),
                "--data.validation",
                str(val),
                "--output_dir",
                str(root / "run"),
                "--trainer.max_steps",
                "3",
                "--data.max_length",
                "48",
                "--tracking.wandb",
                "false",
                "--data.reference_size",
                "50",
            ]
        )
        == 0
    )
    registry = root / "registry"
    assert (
        main(["registry", "register", "--root", str(registry), "--version", str(root / "run" / "version")])
        == 0
    )
    Registry(registry).promote(Registry(registry).list_versions()[0].id, "first")
    return registry, train


def test_replay_that_is_impossible_fails_loudly_or_warns_when_allowed(
    tmp_path, setup, file_champion_registry, capsys
):
    """#9.9: replay configured but the champion's training data changed or vanished: never a silent skip."""
    src, train = file_champion_registry
    registry = tmp_path / "reg"
    shutil.copytree(src, registry)
    moved = train.with_suffix(".bak")
    _edit(
        setup,
        registry={"root": str(registry)},
        policy={"min_accuracy": 0.99, "min_new_labels": 10},
        retrain={"trainer": {"max_steps": 2}},
    )
    try:
        train.rename(moved)
        assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 2
        err = capsys.readouterr().err
        assert "training data is gone" in err and str(train) in err and "replay_missing" in err
        assert Registry(registry).runs("maintain") == []  # refused before any work
        moved.write_text(moved.read_text().replace("a", "e", 1))  # same path, different content
        moved.rename(train)
        assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 2
        assert "changed since training" in capsys.readouterr().err
        # the user explicitly allows it: the cycle goes on, with a warning in the output, run and report
        assert (
            main(["maintain", "--config", str(setup["config"]), "--once", "--inbox.replay_missing", "warn"])
            == 0
        )
        assert "WITHOUT replay" in capsys.readouterr().out
        run = Registry(registry).runs("maintain")[-1]
        assert any("WITHOUT replay" in n for n in run["details"]["notes"])
        assert run["details"]["replay"]["source"] is None
    finally:
        train.write_text("".join(json.dumps(r) + "\n" for r in _rows("train")))


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and not path.exists() and proc.poll() is None:
        time.sleep(0.3)
    assert path.exists(), f"{path} never appeared (process exit code {proc.poll()})"


@pytest.mark.slow  # a subprocess that retrains until signalled
def test_sigterm_during_an_every_loop_retrain_records_interrupted_and_exits_nonzero(setup):
    """#9.12: SIGTERM mid-retrain under `--every`: the cycle is recorded as interrupted (not failed with
    advice to --resume, which maintain does not have) and the process exits 130, not 0."""
    _edit(
        setup,
        retrain={"trainer": {"max_epochs": 200, "checkpoint_every_n_steps": 1, "early_stopping_patience": 0}},
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "refit", "maintain", "--config", str(setup["config"]), "--every", "1h"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    _wait_for(setup["registry"] / "maintain" / "run-00001" / "finetune" / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)  # CycleInterrupted: the shell's code for a stop by signal
    assert "interrupted" in err and "--resume" not in err + out and "Traceback" not in err, err
    run = Registry(setup["registry"]).runs("maintain")[-1]
    assert run["status"] == "interrupted", run
    assert run["finished_at"] and _champion(setup["registry"]) == run["details"]["champion"]


def _parquet(path: Path, rows: list[dict]) -> Path:
    """A capture or feedback file in the schema `refit serve` writes (the inbox refuses any other)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from refit.serve.capture import CAPTURE_SCHEMA, FEEDBACK_SCHEMA

    path.parent.mkdir(parents=True, exist_ok=True)
    schema = CAPTURE_SCHEMA if path.name.startswith("capture-") else FEEDBACK_SCHEMA
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def _capture(rid: str, text: str | None) -> dict:
    """A capture row as `refit serve` writes it (the inbox tests' builder), at a fixed past time."""
    from tests.unit.test_maintain_inbox import _cap

    return _cap(rid, text, at="2026-11-22T10:00:00+00:00")


def test_served_captures_and_late_feedback_are_joined_exactly_once(setup, capsys):
    """#10: the cycle reads `refit serve` captures (capture-*.parquet) and late labels (feedback-*.parquet),
    joined by request id across files and cycles; partial dot-files are ignored; hidden texts are counted."""
    _edit(setup, policy={"min_new_labels": 100000})
    inbox = setup["inbox"]
    (inbox / "2026-11-20.jsonl").unlink()
    shifted = _rows("shifted")
    _parquet(
        inbox / "capture-0001.parquet", [_capture(f"r{i}", r["text"]) for i, r in enumerate(shifted[:100])]
    )
    _parquet(inbox / "capture-0002.parquet", [_capture(f"h{i}", None) for i in range(10)])  # texts not stored
    (inbox / ".capture-0003.parquet.tmp").write_bytes(b"partial")
    names = ["negative", "positive"]
    labels = {f"r{i}": names[int(r["label"])] for i, r in enumerate(shifted[:100])}
    # late labels as names, or as integer ids written as strings
    _parquet(
        inbox / "feedback-0001.parquet",
        [
            {
                "request_id": f"r{i}",
                "label": labels[f"r{i}"] if i % 2 else str(names.index(labels[f"r{i}"])),
                "at": "2026-11-22T11:00:00+00:00",
            }
            for i in range(60)
        ],
    )
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    reg = Registry(setup["registry"])
    run = reg.runs("maintain")[-1]
    assert run["details"]["counts"] == {"inputs": 100, "labelled": 60}, run["details"]
    assert len(run["details"]["files"]) == 3 and run["details"]["quarantined"] == []
    assert any("10 captured input(s) without a stored text" in n for n in run["details"]["notes"])
    assert run["details"]["drift"]["drift"] is True  # shifted inputs vs the champion's reference

    # labels arrive a cycle later for older requests (and one for a request not captured yet)
    _parquet(
        inbox / "feedback-0002.parquet",
        [
            {"request_id": f"r{i}", "label": labels[f"r{i}"], "at": "2026-11-23T09:00:00+00:00"}
            for i in range(60, 90)
        ]
        + [{"request_id": "later", "label": "positive", "at": "2026-11-23T09:00:00+00:00"}],
    )
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    run = reg.runs("maintain")[-1]
    assert run["details"]["counts"] == {"inputs": 0, "labelled": 30}, run["details"]
    assert any("match no captured request yet" in n for n in run["details"]["notes"])
    # ... and the capture of that request arrives after its label
    _parquet(inbox / "capture-0004.parquet", [_capture("later", "a late arrival, good")])
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    assert reg.runs("maintain")[-1]["details"]["counts"] == {"inputs": 1, "labelled": 1}
    # the capture file is deleted (a deletion request): its requests' late labels are counted, not used
    (inbox / "capture-0001.parquet").unlink()
    _parquet(
        inbox / "feedback-0003.parquet",
        [
            {"request_id": f"r{i}", "label": labels[f"r{i}"], "at": "2026-11-24T09:00:00+00:00"}
            for i in range(90, 100)
        ],
    )
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    run = reg.runs("maintain")[-1]
    assert run["details"]["counts"] == {"inputs": 0, "labelled": 0, "forgotten": 10}, run["details"]
    assert any("10 labelled requests whose capture was deleted" in n for n in run["details"]["notes"])
    capsys.readouterr()


def test_promoted_champion_reference_describes_the_accepted_shift(setup):
    """#10 reference refresh: after a promotion that accepted shifted data, more of the same shifted data is
    no longer drift (the new reference is built from held-out recent inputs), so it stops retraining."""
    inbox = setup["inbox"]
    shifted = _rows("shifted")
    write_jsonl(inbox / "2026-11-20.jsonl", shifted[:100] + [{"text": r["text"]} for r in shifted[100:150]])
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    reg = Registry(setup["registry"])
    first = reg.runs("maintain")[-1]
    assert first["status"] == "promoted" and first["details"]["drift"]["drift"] is True, first["details"]
    assert first["details"]["reference"]["recent"] >= 50
    write_jsonl(inbox / "2026-11-21.jsonl", [{"text": r["text"]} for r in shifted[150:200]])
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    second = reg.runs("maintain")[-1]
    assert second["details"]["drift"]["drift"] is False, second["details"]["drift"]
    assert second["status"] == "no_action"


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("tensorrt") is not None,
    reason="TensorRT is installed here, so a tensorrt export would build",
)
def test_challenger_whose_artefact_cannot_be_built_is_not_promoted(setup):
    """#10: deploy.formats names an artefact this machine cannot build (TensorRT, no GPU): the challenger is
    not deployable, so it is rejected and the champion stays."""
    _edit(setup, deploy={"formats": ["tensorrt"]})
    before = _champion(setup["registry"])
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    run = Registry(setup["registry"]).runs("maintain")[-1]
    assert run["status"] == "rejected" and _champion(setup["registry"]) == before
    assert any("could not be built" in line and "TensorRT" in line for line in run["details"]["gate"])


@pytest.mark.parametrize(("floor", "estimator"), [(1.0, "atc"), (0.0, "twoview")])
def test_min_estimated_accuracy_triggers_on_the_interval_and_records_estimate_vs_realised(
    setup, floor, estimator
):
    """Drift switched off (alpha 0), no labelled floor: only the label-free estimate can call for a retrain.
    Its interval's upper end is < 1 (a floor of 1.0 triggers) and >= 0 (0.0 never does); min_new_labels
    stops short of the retrain itself. Estimated vs realised accuracy are in the run details and report;
    twoview (which also reads the inputs' base-encoder embeddings) serves as the policy's estimator too."""
    _edit(
        setup,
        policy={
            "alpha": 0.0,
            "min_accuracy": None,
            "min_estimated_accuracy": floor,
            "estimator": estimator,
            "min_new_labels": 100000,
        },
    )
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    run = Registry(setup["registry"]).runs("maintain")[-1]
    details = run["details"]
    assert run["status"] == "no_action" and details["drift"]["drift"] is False
    est = details["estimate"]
    methods = ("cbpe", "atc", "doc", "cbpe_ls", "twoview")
    assert set(est) == {*methods, "realised"}
    assert all(0 <= est[m]["low"] <= est[m]["value"] <= est[m]["high"] <= 1 for m in methods)
    realised = est["realised"]
    assert realised["method"] == estimator and realised["n"] == 200  # every inbox row is labelled
    assert realised["error_points"] == pytest.approx(
        (est[estimator]["value"] - realised["accuracy"]) * 100, abs=0.01
    )
    triggered = [r for r in details["reasons"] if r.startswith("estimated accuracy")]
    assert bool(triggered) == (floor == 1.0)
    if triggered:
        assert estimator in triggered[0] and "not retraining" in details["reasons"][-1]
    html = (Path(details["work_dir"]) / "report.html").read_text()
    assert "Estimated accuracy of the champion" in html and "Realised accuracy on 200 labelled rows" in html


def test_harm_aware_policy_reports_drift_but_does_not_retrain_on_it(setup):
    """#12 policy.retrain_on_drift false: the shifted inbox still reads as drift (tested and recorded), but
    with no labelled floor and an estimated-accuracy floor of 0 nothing calls for a retrain: no_action, the
    champion stays. (The same inbox retrains under the default policy: test_shift_triggers_retrain_...)"""
    _edit(
        setup,
        policy={"min_accuracy": None, "retrain_on_drift": False, "min_estimated_accuracy": 0.0},
    )
    before = _champion(setup["registry"])
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    run = Registry(setup["registry"]).runs("maintain")[-1]
    assert run["details"]["drift"]["drift"] is True, run["details"]["drift"]
    assert run["status"] == "no_action" and run["details"]["reasons"] == []
    assert _champion(setup["registry"]) == before


def test_a_hostile_inbox_neither_crashes_the_cycle_nor_changes_what_it_reads(setup, capsys):
    """The crafted files of tests/unit/test_maintain_inbox.py through `refit maintain --once`: before, the
    nested JSON line crashed the cycle with a RecursionError traceback (every cycle, while it sat there),
    the symbolic link was followed outside the inbox and the FIFO blocked the cycle. Now the cycle ends
    normally on exactly the valid file's rows, with every refusal recorded, logged and counted."""
    _edit(setup, policy={"min_new_labels": 100000})  # no retrain: this test is about reading
    inbox = setup["inbox"]
    outside = write_jsonl(setup["tmp"] / "elsewhere.jsonl", [{"text": "not for training", "label": 1}])
    (inbox / "linked.jsonl").symlink_to(outside)
    os.mkfifo(inbox / "pipe.jsonl")
    (inbox / "nested.jsonl").write_text('{"text": ' + "[" * 100_000 + "\n")
    future = "2099-01-01T00:00:00+00:00"
    _parquet(inbox / "feedback-0001.parquet", [{"request_id": "r0", "label": "positive", "at": future}])
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    run = Registry(setup["registry"]).runs("maintain")[-1]
    assert run["status"] == "no_action", run["details"]
    assert run["details"]["counts"] == {"inputs": 200, "labelled": 200}
    assert sorted(Path(f).name for f in run["details"]["files"]) == [
        "2026-11-20.jsonl",
        "feedback-0001.parquet",
    ]
    assert [Path(q["file"]).name for q in run["details"]["quarantined"]] == ["nested.jsonl"]
    notes = " ".join(run["details"]["notes"])
    assert (
        "skipped 2 entries that are not readable regular files" in notes
        and "skipped 1 feedback rows" in notes
    )
    out = capsys.readouterr().out
    assert "inbox: skipped 2 entries" in out and "quarantined" in out and "nested.jsonl" in out


@pytest.mark.slow  # two retrains
def test_a_forgotten_text_leaves_the_run_folder_and_the_next_retrain_replays_without_it(setup, capsys):
    """Before: `refit maintain forget` removed the capture rows only; the text a cycle had trained on stayed
    in its run folder's train.jsonl, and the next retrain replayed it from the champion's training file.
    Scrubbing that file must not break replay: its sha256 is sealed in the champion's refit.json. The
    champion that learned it is withdrawn, so the next retrain is the forget's repair, from the base model."""
    _edit(setup, policy={"always_retrain": True}, gate={"golden_tolerance": 100.0, "recent_margin": -100.0})
    inbox = setup["inbox"]
    (inbox / "2026-11-20.jsonl").unlink()
    shifted = _rows("shifted")
    names = ["negative", "positive"]
    _parquet(
        inbox / "capture-0001.parquet", [_capture(f"r{i}", r["text"]) for i, r in enumerate(shifted[:120])]
    )
    at = "2026-11-22T11:00:00+00:00"
    fb = [
        {"request_id": f"r{i}", "label": names[int(r["label"])], "at": at}
        for i, r in enumerate(shifted[:120])
    ]
    _parquet(inbox / "feedback-0001.parquet", fb)
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    reg = Registry(setup["registry"])
    first = reg.runs("maintain")[-1]
    assert first["status"] == "promoted", first["details"]
    train = Path(first["details"]["work_dir"]) / "data" / "train.jsonl"
    trained = {json.loads(line)["text"] for line in train.read_text().splitlines()}
    rid = next(f"r{i}" for i, r in enumerate(shifted[:120]) if r["text"] in trained)
    secret = shifted[int(rid[1:])]["text"]

    ids = setup["tmp"] / "ids.txt"
    ids.write_text(rid + "\n")
    forget = ["maintain", "forget", "--ids", str(ids), "--registry.root", str(setup["registry"])]
    capsys.readouterr()
    assert main([*forget, "--inbox", str(inbox)]) == 0
    said = capsys.readouterr().out
    assert "1 of the 1 request(s) had already been used by earlier cycles" in said, said
    assert "NOT removed: what models trained on these 1 request(s) learned from them" in said, said
    kept = len(train.read_text().splitlines())
    assert secret not in {json.loads(line)["text"] for line in train.read_text().splitlines()}

    # the champion learned the text, so the forget withdrew it: the next cycle does not warm-start from it
    _parquet(
        inbox / "capture-0002.parquet", [_capture(f"s{i}", r["text"]) for i, r in enumerate(shifted[120:200])]
    )
    fb2 = [
        {"request_id": f"s{i}", "label": names[int(r["label"])], "at": at}
        for i, r in enumerate(shifted[120:200])
    ]
    _parquet(inbox / "feedback-0002.parquet", fb2)
    assert main(["maintain", "--config", str(setup["config"]), "--once"]) == 0
    second = reg.runs("maintain")[-1]
    assert second["status"] == "no_action" and not second["details"]["challenger"], second["details"]
    assert any("withdrawn by forget run" in r for r in second["details"]["reasons"])
    # the repair retrains from the base model on the lineage's training files: the scrubbed one (its sealed
    # sha256 no longer matches) is accepted in the state the forget run recorded, not left out
    capsys.readouterr()
    main([*forget, "--inbox", str(inbox), "--retrain", "--loop", str(setup["config"])])
    repair = reg.runs("forget")[-1]["details"]["retrain"]
    assert repair["files"] >= 1 and not [x for x in repair["left_out"] if str(train.resolve()) in x], repair
    assert repair["rows"] >= min(kept, 1) and repair["challenger"], repair
    again = reg.root.resolve() / "maintain" / f"run-forget-{reg.runs('forget')[-1]['id']:05d}"
    assert sorted(p.name for p in again.rglob("*.jsonl") if p.name in ("train.jsonl", "validation.jsonl"))
    for name in ("train.jsonl", "validation.jsonl"):
        for path in again.rglob(name):
            assert secret not in {json.loads(line)["text"] for line in path.read_text().splitlines()}
    capsys.readouterr()
