"""Compare-and-swap alias moves: a promotion made against a stale champion is refused, never overwrites.

Also: a run's completion commits in the same SQLite transaction as the alias move and its audit row.
"""

from __future__ import annotations

import multiprocessing

import pytest

from refit.errors import VersionError
from refit.registry import CHALLENGER, CHAMPION, Registry, Superseded
from tests.conftest import registry_with


@pytest.fixture(scope="module")
def versions(tiny_versions):
    return tiny_versions[:4]


@pytest.fixture
def reg(tmp_path, versions):
    return registry_with(tmp_path / "reg", versions, ("v0", "initial"))


def test_promote_with_stale_expected_champion_is_superseded(reg):
    reg.promote("v1", "manual promotion during a cycle")  # someone else moves the champion
    before = reg.history()
    with pytest.raises(Superseded, match="now points at v1, not v0"):
        reg.promote("v2", "cycle's challenger", expected_champion="v0")
    assert reg.aliases()[CHAMPION] == "v1"
    assert reg.history() == before  # no audit row either


def test_promote_with_current_expected_champion_moves(reg):
    move = reg.promote("v2", "gated", {"golden": 0.9}, expected_champion="v0")
    assert (move.from_version, move.to_version, move.action) == ("v0", "v2", "promote")
    assert reg.aliases()[CHAMPION] == "v2"


def test_set_alias_compare_and_swap(reg):
    reg.set_alias(CHALLENGER, "v1", "first")
    with pytest.raises(Superseded):
        reg.set_alias(CHALLENGER, "v2", "stale", expected="v3")
    assert reg.aliases()[CHALLENGER] == "v1"
    reg.set_alias(CHALLENGER, "v2", "fresh", expected="v1")
    assert reg.aliases()[CHALLENGER] == "v2"


def test_promote_finishes_the_run_in_the_same_transaction(reg):
    run_id = reg.start_run("maintain", {"champion": "v0"})
    reg.promote("v1", "gated", expected_champion="v0", run=(run_id, "promoted", {"challenger": "v1"}))
    (run,) = reg.runs("maintain")
    assert run["status"] == "promoted" and run["details"] == {"challenger": "v1"} and run["finished_at"]


def test_superseded_promote_leaves_the_run_running(reg):
    run_id = reg.start_run("maintain", {"champion": "v0"})
    reg.promote("v2", "manual")
    with pytest.raises(Superseded):
        reg.promote("v1", "gated", expected_champion="v0", run=(run_id, "promoted", {}))
    assert reg.runs("maintain")[0]["status"] == "running"  # the caller records 'superseded' itself


def test_run_update_failure_rolls_back_the_alias_move(reg):
    """Proof that it is one transaction: when the run part fails, the alias and audit are untouched too."""
    before = (reg.aliases(), reg.history())
    with pytest.raises(VersionError, match="No run 999"):
        reg.promote("v1", "gated", run=(999, "promoted", {}))
    assert (reg.aliases(), reg.history()) == before


def _promote_racer(root: str, target: str, barrier, results) -> None:
    reg = Registry(root)
    barrier.wait()
    try:
        reg.promote(target, f"racer {target}", expected_champion="v0")
        results.put(("won", target))
    except Superseded:
        results.put(("superseded", target))


def test_two_processes_promoting_against_the_same_champion_exactly_one_wins(reg):
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [
        ctx.Process(target=_promote_racer, args=(str(reg.root), t, barrier, results))
        for t in ("v1", "v2", "v3")
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    winners = [t for status, t in outcomes if status == "won"]
    assert len(winners) == 1 and sorted(s for s, _ in outcomes) == ["superseded", "superseded", "won"]
    assert reg.aliases()[CHAMPION] == winners[0]
    promotions = [m for m in reg.history(CHAMPION) if m.reason and m.reason.startswith("racer")]
    assert [(m.from_version, m.to_version) for m in promotions] == [("v0", winners[0])]
