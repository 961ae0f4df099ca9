"""#9.5 exactly-once cycles, proved by fault injection: a real `refit maintain --once` subprocess SIGKILLs itself
at a phase boundary (REFIT_FAULT_AT, the test hook of refit.maintain.faults); the registry must stay consistent
and the next `--once` must complete with exactly one promotion. The full 20-kill run is scripts/chaos_maintain.py;
this runs the same harness on the riskiest boundaries (just after the promote commit, mid-training, and just
after the inbox read was staged in the inbox index)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from refit.maintain import PHASES, fault_point

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "chaos_maintain.py"


def test_fault_point_is_inert_unless_named(monkeypatch):
    monkeypatch.delenv("REFIT_FAULT_AT", raising=False)
    for phase in PHASES:
        fault_point(phase)  # still alive
    monkeypatch.setenv("REFIT_FAULT_AT", "drift")
    fault_point("read")  # another phase: still alive
    with pytest.raises(ValueError, match="unknown fault phase"):
        fault_point("nope")


@pytest.mark.slow
def test_kills_after_the_promote_commit_and_mid_training_never_repeat_a_promotion(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--phases",
            "promoted,training,read",
            "--repeats",
            "1",
            "--no-corruption",
            "--formats",
            "",
            "--out",
            str(out),
            "--keep",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "reliability.json").read_text())
    cases = {c["phase"]: c for c in result["kills"]["cases"]}
    assert set(cases) == {"promoted", "training", "read"}
    for phase, case in cases.items():
        assert all(case["checks"].values()), (phase, case)
    # killed after the commit: the run was finished in the promotion's transaction, so the next cycle has
    # nothing to redo; killed mid-training: the run is abandoned and the next cycle does the work once
    assert cases["promoted"]["runs"] == ["promoted", "no_new_data"]
    assert cases["training"]["runs"] == ["abandoned", "promoted"]
    # killed just after the inbox read was staged in the index: nothing counts as used until a run is done
    assert cases["read"]["runs"] == ["abandoned", "promoted"]
    assert all(c["checks"]["window_rows_used_exactly_once"] for c in cases.values())
    assert result["kills"]["duplicate_promotions"] == 0
    assert "Kills survived: 3 / 3" in (out / "reliability.md").read_text()
