# ruff: noqa: F811  (the fixtures loop and tiny are imported from the forget --retrain tests, then requested)
"""Chaos on the newest trust paths: `refit registry remove` and `refit maintain forget --retrain`, attacked as an
adversary and a crash would (real processes, real registry, SIGKILL through the REFIT_FAULT_AT test hook).
What was tried, what held and what was fixed: scripts/results/chaos_forget.md."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from refit.cli import main
from refit.maintain.scrub import FORGET_KIND
from refit.registry import Registry, apply_gc, plan_gc
from tests.conftest import backdate_registrations, registry_with
from tests.unit.test_maintain_forget_retrain import (  # noqa: F401  (loop, tiny: fixtures)
    SECRET,
    _argv,
    _champion_data,
    _loop_yaml,
    _rows,
    _version,
    loop,
    tiny,
)


def _cli(*argv: str, fault: str | None = None) -> subprocess.CompletedProcess:
    """`refit ARGV` in a real subprocess, SIGKILLed at the REFIT_FAULT_AT phase `fault` when given."""
    env = {k: v for k, v in os.environ.items() if k != "REFIT_FAULT_AT"} | {"PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "refit.cli", *argv],
        env={**env, **({"REFIT_FAULT_AT": fault} if fault else {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def reg(tmp_path, tiny_versions) -> Registry:
    """v0 <- v1 <- v2 registered; v2 is the champion, v0 and v1 former champions no alias points at."""
    return registry_with(tmp_path / "reg", tiny_versions[:3], ("v0", "a"), ("v1", "b"), ("v2", "c"))


def test_a_remove_killed_between_the_row_delete_and_the_folder_move_leaves_no_run_running(reg):
    """Killed after the row delete: the version is gone, its folder is an orphan that gc removes (never
    registered again), and the remove's run is not left 'running' for ever (before: it was)."""
    killed = _cli(
        "registry", "remove", "--root", str(reg.root), "--version", "v0", "--yes", fault="gc-row-removed"
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert "v0" not in {v.id for v in reg.list_versions()}
    assert (reg.versions_dir / "v0").is_dir()  # the orphan folder
    assert [r["status"] for r in reg.runs("remove")] == ["done"]
    backdate_registrations(reg)
    os.utime(
        reg.versions_dir / "v0", (0, 0)
    )  # gc leaves young folders alone (a registration may be under way)
    plan = plan_gc(reg, keep=5)
    assert [p.name for p in plan.orphans] == ["v0"] and plan.versions == []
    assert apply_gc(reg, plan) == ["v0"]
    assert not (reg.versions_dir / "v0").exists()
    assert _cli("registry", "verify", "--root", str(reg.root)).returncode == 0


def test_removing_one_version_twice_says_the_second_time_that_it_is_gone(reg):
    """Two removes racing past the same checks: the second deletes no row, so it must not report (and
    record) a removal it did not make (before: both said 'Removed' and both recorded a done run)."""
    reg.remove_version("v0")
    with pytest.raises(Exception, match="v0.*(no longer|not) in the registry"):
        reg.remove_version("v0")


def test_an_alias_moved_onto_the_version_during_its_remove_keeps_it_and_records_no_run(
    reg, monkeypatch, capsys
):
    """A cycle points `challenger` at v0 after `remove` checked that no alias does (a real alias move, let
    in just before the real Registry.remove_version): the transaction refuses, v0 stays whole, and no run
    is left behind (before: the remove's run was started first and stayed 'running')."""
    real = Registry.remove_version

    def alias_first(self, vid, *args, **kwargs):
        Registry(reg.root).set_alias("challenger", vid, "a cycle registered it")
        return real(self, vid, *args, **kwargs)

    monkeypatch.setattr(Registry, "remove_version", alias_first)
    assert main(["registry", "remove", "--root", str(reg.root), "--version", "v0", "--yes"]) == 2
    err = capsys.readouterr().err
    assert "pointed at by an alias" in err and "Traceback" not in err
    assert reg.runs("remove") == [] and reg.aliases()["challenger"] == "v0"
    reg.get("v0")  # still registered and whole (verified)


def test_an_alias_cannot_be_moved_onto_a_version_removed_after_its_check(reg, monkeypatch):
    """The other order: a real remove lands after a cycle's alias move verified v1 (the real Registry.get,
    wrapped to let it in) and before its transaction: the move refuses and no alias points at a gone one."""
    real = Registry.get

    def then_remove(self, ref, *args, **kwargs):
        out = real(self, ref, *args, **kwargs)
        if ref == "v1":
            Registry(reg.root).remove_version("v1")
        return out

    monkeypatch.setattr(Registry, "get", then_remove)
    with pytest.raises(Exception, match="v1 was removed from the registry"):
        reg.set_alias("challenger", "v1", "a cycle registered it")
    monkeypatch.setattr(Registry, "get", real)
    assert "challenger" not in reg.aliases()
    assert _cli("registry", "verify", "--root", str(reg.root)).returncode == 0


@pytest.mark.parametrize("ref", ["../x", "/etc", "v0/../v1", "..", "v0/", "~"])
def test_a_version_id_crafted_to_escape_the_registry_is_refused_and_nothing_is_deleted(reg, ref, capsys):
    before = sorted(p.name for p in reg.versions_dir.iterdir())
    assert main(["registry", "remove", "--root", str(reg.root), "--version", ref, "--yes"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip()
    assert sorted(p.name for p in reg.versions_dir.iterdir()) == before
    assert reg.runs("remove") == []


def test_a_symlinked_version_folder_is_never_followed_by_remove(reg, tmp_path):
    """versions/v0 replaced by a symlink to a folder outside the registry: remove deletes the row but never
    what the link points at."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    import shutil

    shutil.rmtree(reg.versions_dir / "v0")
    (reg.versions_dir / "v0").symlink_to(outside, target_is_directory=True)
    main(["registry", "remove", "--root", str(reg.root), "--version", "v0", "--yes"])
    assert (outside / "precious.txt").read_text() == "keep me"


# --- forget and forget --retrain on a registry that remove changed -----------------------------------


def test_a_removed_parent_makes_its_descendants_unknown_never_clean(loop, tiny, tiny_model_dir, capsys):
    """v1 learned SECRET, the champion v2 was warm-started from v1 on clean rows; v1 (a former champion)
    is removed. A later forget must call v2 tainted ("unknown": its ancestor is gone), never clean, and
    --retrain must name the removed ancestor as left out of its training data, not drop it in silence."""
    reg, inbox = loop
    _version(reg, tiny, "v1", None, [(SECRET, 0), *_rows(0, 6, "first")])
    _version(reg, tiny, "v2", "v1", _rows(0, 6, "second"))
    assert main(["registry", "remove", "--root", str(reg.root), "--version", "v1", "--yes"]) == 0
    config = _loop_yaml(reg, inbox, tiny_model_dir, golden_label=0)
    assert main(_argv(reg, inbox, config, "r0")) == 0
    out = capsys.readouterr().out
    run = reg.runs(FORGET_KIND)[-1]
    assert run["details"]["versions"]["unknown"] == ["v2"] and run["details"]["versions"]["learned"] == []
    assert "v2: its ancestor v1 is not in the registry" in out
    retrain = run["details"]["retrain"]
    assert retrain["status"] == "promoted" and reg.aliases()["champion"] == retrain["challenger"]
    assert any(line.startswith("v1: ") and "not in the registry" in line for line in retrain["left_out"])
    assert "retrain: training file left out: v1: " in out
    _, text = _champion_data(reg)
    assert SECRET not in text and "second" in text


def _forget_proc(reg, inbox, config, fault: str | None) -> subprocess.CompletedProcess:
    argv = _argv(reg, inbox, config, "r0")
    return _cli(*argv, fault=fault)


@pytest.mark.slow
def test_kills_at_every_step_of_forget_retrain_then_a_rerun_promote_exactly_once(loop, tiny, tiny_model_dir):
    """SIGKILL before training, before the export, before registering, after registering (before the gate's
    promote), inside the promote (after the target was verified, and just after the alias commit), each a
    real `refit maintain forget --retrain` process on one registry; then a clean rerun. Exactly one
    promotion away from the tainted champion, at most one clean challenger registered, no forget run left
    'running', no forgotten text in the champion's training/validation files or drift reference, and
    `refit registry verify` passes."""
    from refit.drift.reference import load_reference

    reg, inbox = loop
    _version(reg, tiny, "v1", None, [(SECRET, 0), *_rows(0, 6, "first")])
    config = _loop_yaml(reg, inbox, tiny_model_dir, golden_label=0)
    for fault in ("retrain", "export", "register", "promote", "alias-verified", "alias-moved"):
        killed = _forget_proc(reg, inbox, config, fault)
        assert killed.returncode == -9, (fault, killed.stdout[-2000:], killed.stderr[-2000:])
        if fault != "alias-moved":
            assert reg.aliases()["champion"] == "v1", fault  # the tainted champion serves until the commit
    last = _forget_proc(reg, inbox, config, None)
    assert last.returncode == 0, last.stdout[-2000:] + last.stderr[-2000:]
    assert "retrain: not needed" in last.stdout
    champion = reg.aliases()["champion"]
    assert champion != "v1"
    promotions = [m for m in reg.history("champion") if m.action == "promote" and m.from_version == "v1"]
    assert [m.to_version for m in promotions] == [champion]
    assert len(reg.list_versions()) == 2  # v1 and the one clean challenger: trained once it was registered
    statuses = [r["status"] for r in reg.runs(FORGET_KIND)]
    assert statuses == ["abandoned"] * 5 + ["done", "done"], statuses  # alias-moved: done in the commit
    _, text = _champion_data(reg)
    assert SECRET not in text
    assert SECRET not in load_reference(reg.get(champion).path, finite=False).texts
    assert _cli("registry", "verify", "--root", str(reg.root)).returncode == 0


@pytest.mark.slow
def test_a_cycle_started_while_forget_retrain_holds_the_lock_is_refused_never_interleaved(
    loop, tiny, tiny_model_dir
):
    """The forget is frozen (SIGSTOP) in the middle of its retrain, holding the maintenance lock; a
    `refit maintain --once` of the same loop is refused (exit 75) and changes nothing; the forget then
    finishes alone."""
    import signal
    import time

    reg, inbox = loop
    _version(reg, tiny, "v1", None, [(SECRET, 0), *_rows(0, 6, "first")])
    config = _loop_yaml(reg, inbox, tiny_model_dir, golden_label=0)
    env = {k: v for k, v in os.environ.items() if k != "REFIT_FAULT_AT"} | {"PYTHONUNBUFFERED": "1"}
    forget = subprocess.Popen(
        [sys.executable, "-m", "refit.cli", *_argv(reg, inbox, config, "r0")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 120
        while not any("retrain: training data:" in line for line in lines):
            assert time.monotonic() < deadline and forget.poll() is None, lines
            lines.append(forget.stdout.readline())
        forget.send_signal(signal.SIGSTOP)
        runs_before, aliases_before = reg.runs(), reg.aliases()
        cycle = _cli("maintain", "--config", str(config), "--once")
        assert cycle.returncode == 75, cycle.stdout[-2000:] + cycle.stderr[-2000:]
        assert "holds" in cycle.stderr + cycle.stdout and "Traceback" not in cycle.stderr
        assert reg.runs() == runs_before and reg.aliases() == aliases_before
        forget.send_signal(signal.SIGCONT)
        rest, _ = forget.communicate(timeout=240)
    finally:
        if forget.poll() is None:
            forget.send_signal(signal.SIGCONT)
            forget.kill()
            forget.wait()
    assert forget.returncode == 0, "".join(lines) + rest
    assert "retrain: promoted" in rest
    assert [r["status"] for r in reg.runs(FORGET_KIND)] == ["done"]


@pytest.mark.parametrize("where", ["registered", "version copy", "model folder copy"])
def test_a_base_model_that_is_the_model_folder_of_a_tainted_version_is_refused(
    loop, tiny, tiny_model_dir, capsys, where
):
    """retrain.model pointed at the `model/` folder inside a version (plain Hugging Face files, loadable by
    transformers: what a user copies from `refit registry show`) of the tainted champion: before, only a
    folder holding refit.json itself was checked, so the "clean" challenger was warm-started from the
    weights that learned the texts, and promoted."""
    import shutil

    reg, inbox = loop
    _version(reg, tiny, "v1", None, [(SECRET, 0), *_rows(0, 6, "first")], predicts=0)
    base = reg.get("v1").path / "model"
    if where == "version copy":  # an unregistered copy of the version, e.g. a run's finetune/version
        shutil.copytree(reg.get("v1").path, inbox.parent / "copy" / "version")
        base = inbox.parent / "copy" / "version" / "model"
    elif where == "model folder copy":  # its weights alone, copied elsewhere: known by their sha256
        base = Path(shutil.copytree(base, inbox.parent / "base-model"))
    config = _loop_yaml(reg, inbox, base, golden_label=0)
    assert main(_argv(reg, inbox, config, "r0")) == 1
    out = capsys.readouterr().out
    assert "retrain: REFUSED" in out and "v1" in out and "must not start from it" in out
    assert reg.aliases()["champion"] == "v1" and len(reg.list_versions()) == 1
    assert reg.runs(FORGET_KIND)[-1]["details"]["retrain"]["status"] == "refused"


@pytest.mark.slow
def test_a_server_running_during_the_repair_swaps_to_the_clean_champion_and_keeps_capturing(
    loop, tiny, tiny_model_dir
):
    """`refit serve` (its watcher polling the registry) serves the tainted v1 while forget --retrain runs
    in another process; it keeps answering throughout, swaps to the clean champion once promoted, and its
    capture goes on (rows captured after the swap)."""
    import time

    pytest.importorskip("fastapi", reason="needs the [serve] extra")
    pytest.importorskip("httpx", reason="needs httpx (a FastAPI test dependency)")
    from refit.serve.capture import CAPTURE
    from tests.recipes.test_serve import options, read_rows, serving

    reg, inbox = loop
    _version(reg, tiny, "v1", None, [(SECRET, 0), *_rows(0, 6, "first")])
    config = _loop_yaml(reg, inbox, tiny_model_dir, golden_label=0)
    served = inbox.parent / "served"
    with serving(options(reg, watch_interval_s=0.2, capture_dir=str(served))) as (client, server):
        assert server.slot.version_id == "v1"
        env = {k: v for k, v in os.environ.items() if k != "REFIT_FAULT_AT"}
        forget = subprocess.Popen(
            [sys.executable, "-m", "refit.cli", *_argv(reg, inbox, config, "r0")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        answered = 0
        try:
            while forget.poll() is None:  # the server answers all along the repair
                assert client.post("/predict", json={"text": f"during {answered}"}).status_code == 200
                answered += 1
                time.sleep(0.05)
        finally:
            if forget.poll() is None:
                forget.kill()
            out = forget.communicate()[0]
        assert forget.returncode == 0, out[-3000:]
        champion = reg.aliases()["champion"]
        assert champion != "v1"
        deadline = time.monotonic() + 60
        while server.slot.version_id != champion:
            assert time.monotonic() < deadline, "the server never swapped to the clean champion"
            time.sleep(0.1)
        after = client.post("/predict", json={"text": "after the swap"})
        assert after.status_code == 200 and after.json()["version_id"] == champion
    rows = read_rows(served, CAPTURE)
    assert answered > 0 and {r["text"] for r in rows} >= {"during 0", "after the swap"}
    assert any(r["version_id"] == champion and r["text"] == "after the swap" for r in rows)


@pytest.mark.slow
def test_removing_the_clean_ancestor_while_forget_retrain_trains_fails_closed(loop, tiny, tiny_model_dir):
    """`registry remove` takes no maintenance lock: the forget is frozen mid-retrain, the clean ancestor v1
    it will gate against (a former champion, no alias) is removed, and the forget goes on. It must not
    promote anything it cannot verify, must say why without a traceback, and must not leave its run
    'running'."""
    import signal
    import time

    reg, inbox = loop
    _version(reg, tiny, "v1", None, _rows(0, 6, "first"), predicts=1)
    _version(reg, tiny, "v2", "v1", [(SECRET, 0), *_rows(0, 6, "second")], predicts=0)
    config = _loop_yaml(reg, inbox, tiny_model_dir, golden_label=0)
    env = {k: v for k, v in os.environ.items() if k != "REFIT_FAULT_AT"} | {"PYTHONUNBUFFERED": "1"}
    forget = subprocess.Popen(
        [sys.executable, "-m", "refit.cli", *_argv(reg, inbox, config, "r0")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        deadline = time.monotonic() + 120
        while not any("retrain: training data:" in line for line in lines):
            assert time.monotonic() < deadline and forget.poll() is None, lines
            lines.append(forget.stdout.readline())
        forget.send_signal(signal.SIGSTOP)
        removed = _cli("registry", "remove", "--root", str(reg.root), "--version", "v1", "--yes")
        assert removed.returncode == 0, removed.stderr
        forget.send_signal(signal.SIGCONT)
        rest = forget.communicate(timeout=240)[0]
    finally:
        if forget.poll() is None:
            forget.send_signal(signal.SIGCONT)
            forget.kill()
            forget.wait()
    out = "".join(lines) + rest
    assert "Traceback" not in out and "is not a refit model version" not in out, out[-3000:]
    assert "the clean ancestor v1 is no longer in the registry" in out, out[-3000:]
    assert forget.returncode == 0, out[-3000:]
    retrain = reg.runs(FORGET_KIND)[-1]["details"]["retrain"]
    assert retrain["status"] == "promoted" and retrain["ancestor"] is None
    assert reg.aliases()["champion"] == retrain["challenger"] != "v2"
    assert [r["status"] for r in reg.runs(FORGET_KIND)] == ["done"]
    assert _cli("registry", "verify", "--root", str(reg.root)).returncode == 0


def test_a_promote_that_fails_records_its_challenger_and_the_rerun_gates_it_not_a_second(
    loop, tiny, tiny_model_dir, monkeypatch, capsys
):
    """The gate picks the clean ancestor v1; a real `registry remove` of v1 lands just before the promote
    (the real Registry.promote, wrapped to let it in), which then fails (VersionError). Before: the failed
    run recorded no challenger (an empty retrain record), and the rerun trained and registered a second
    clean challenger. Now the run names it and the rerun gates that one."""
    from refit.registry import Registry as RealRegistry

    reg, inbox = loop
    _version(reg, tiny, "v1", None, _rows(1, 6, "first"), predicts=0)  # right on the golden set: wins
    _version(reg, tiny, "v2", "v1", [(SECRET, 1), *_rows(1, 6, "second")], predicts=0)
    config = _loop_yaml(reg, inbox, tiny_model_dir, golden_label=0)
    real = RealRegistry.promote

    def remove_first(self, ref, *args, **kwargs):
        if ref == "v1":
            assert main(["registry", "remove", "--root", str(reg.root), "--version", "v1", "--yes"]) == 0
        return real(self, ref, *args, **kwargs)

    monkeypatch.setattr(RealRegistry, "promote", remove_first)
    assert main(_argv(reg, inbox, config, "r0")) != 0
    err = capsys.readouterr().err
    assert "v1" in err and "Traceback" not in err
    failed = reg.runs(FORGET_KIND)[-1]
    challenger = failed["details"]["retrain"]["challenger"]
    assert failed["status"] == "failed" and challenger and reg.aliases()["champion"] == "v2"

    monkeypatch.setattr(RealRegistry, "promote", real)
    assert main(_argv(reg, inbox, config, "r0")) == 0
    out = capsys.readouterr().out
    assert f"reusing the clean challenger {challenger}" in out
    assert reg.aliases()["champion"] == challenger
    assert len(reg.list_versions()) == 2  # v2 and the one clean challenger


def test_forget_then_forget_retrain_still_finds_the_text_in_your_own_data(
    loop, tiny, tiny_model_dir, tmp_path, capsys
):
    """A forget without --retrain first (the capture rows are deleted), then the same ids with --retrain:
    the texts can now be matched only by the inbox index's keyed hashes; your own training file that
    still holds one must still be refused, not trained on."""
    reg, inbox = loop
    own = tmp_path / "own-data" / "train.jsonl"
    _version(reg, tiny, "v1", None, [(SECRET, 0), *_rows(0, 6, "own")], own_file=own)
    _version(reg, tiny, "v2", "v1", [(SECRET, 0), *_rows(0, 6, "second")])
    config = _loop_yaml(reg, inbox, tiny_model_dir, golden_label=0)
    assert main(_argv(reg, inbox, None, "r0")) == 0  # plain forget: capture row gone, run file scrubbed
    capsys.readouterr()
    assert main(_argv(reg, inbox, config, "r0")) == 1
    out = capsys.readouterr().out
    assert "retrain: REFUSED: Refusing to train: 1 row(s)" in out
    assert reg.aliases()["champion"] == "v2" and len(reg.list_versions()) == 2


def test_removing_the_version_a_server_still_serves_keeps_it_answering_and_the_next_swap_works(
    tmp_path, tiny_model_dir, monkeypatch
):
    """The champion moved from v0 to v1 but the server (no watcher) still serves v0; v0 is removed. The
    server keeps answering from memory, and its next swap (to v1) does not need the removed folder."""
    pytest.importorskip("fastapi", reason="needs the [serve] extra")
    pytest.importorskip("httpx", reason="needs httpx (a FastAPI test dependency)")
    from refit.models import read_version
    from tests.recipes.test_serve import make_version, options, serving

    monkeypatch.setenv("REFIT_TEST_ADMIN_TOKEN", "s3cret")
    made = [make_version(tmp_path / "made" / f"v{i}", tiny_model_dir, seed=i) for i in range(2)]
    v0, v1 = (read_version(v)["version_id"] for v in made)
    reg = registry_with(tmp_path / "reg", made, (v0, "first"))
    auth = {"Authorization": "Bearer s3cret"}
    opts = options(reg, admin_token_env="REFIT_TEST_ADMIN_TOKEN", watch_interval_s=0)
    with serving(opts) as (client, server):
        assert server.slot.version_id == v0
        reg.promote(v1, "better")
        assert main(["registry", "remove", "--root", str(reg.root), "--version", v0, "--yes"]) == 0
        assert not (reg.versions_dir / v0).exists()
        during = client.post("/predict", json={"text": "still served from memory"})
        swap = client.post("/admin/reload", headers=auth)
        after = client.post("/predict", json={"text": "served by the new champion"})
    assert during.status_code == 200 and during.json()["version_id"] == v0
    assert swap.status_code == 200, swap.text
    assert after.status_code == 200 and after.json()["version_id"] == v1 == server.slot.version_id


def test_after_a_repair_no_rollback_or_promote_serves_the_tainted_champion_again(
    loop, tiny, tiny_model_dir, capsys
):
    """Before: the tainted champion stayed registered and was the rollback target, so one `refit registry
    rollback` served the forgotten texts' model again (the forget only warned). Now the forget withdraws
    the versions that learned them, in the transaction that starts its run: promote and rollback refuse
    them, and the cycle will not warm-start from a withdrawn champion."""
    from refit.errors import VersionError

    reg, inbox = loop
    _version(reg, tiny, "v1", None, [(SECRET, 0), *_rows(0, 6, "first")])
    config = _loop_yaml(reg, inbox, tiny_model_dir, golden_label=0)
    assert main(_argv(reg, inbox, config, "r0")) == 0
    out = capsys.readouterr().out
    assert "withdrawn by forget run" in out and "rollback and promote refuse it" in out
    assert "refit registry remove --version ID" in out
    clean = reg.aliases()["champion"]
    assert clean != "v1" and reg.get("v1", verify=False).withdrawn.startswith("forget run ")
    with pytest.raises(VersionError, match="v1 was withdrawn by forget run"):
        reg.rollback("an operator's rollback")
    with pytest.raises(VersionError, match="no alias can be moved to it again"):
        reg.promote("v1", "by hand")
    assert main(["registry", "rollback", "--root", str(reg.root), "--tracking.wandb", "false"]) == 2
    assert "was withdrawn" in capsys.readouterr().err
    assert reg.aliases()["champion"] == clean  # the clean version serves on
