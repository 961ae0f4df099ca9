"""Kill `refit maintain --once` at every phase boundary, and corrupt every file of the champion; count survivals.

    python scripts/chaos_maintain.py                      # 10 phases x 2 kills + the corruption matrix
    python scripts/chaos_maintain.py --phases promoted,training --repeats 1 --no-corruption --out /tmp/chaos

Kills: for each phase (file read, drift, retrain start, mid-training, export, register, gate, promote, after
the promote commit, report), a fresh copy of a registry whose champion is a tiny BERT gets an inbox of shifted
labelled rows and a real `refit maintain --once` subprocess that SIGKILLs itself at that boundary (the
REFIT_FAULT_AT test hook of refit.maintain.faults). Then: SQLite `PRAGMA integrity_check` is ok, the champion
is unchanged or the challenger that passed the gate, no challenger was promoted twice, and the next `--once`
(no fault) completes and leaves exactly one promotion for the inbox's files. The gate is set to always pass,
so every cycle reaches the promote phase.

Corruption matrix: every file of the champion version is altered (one byte appended) or removed in turn, then
`refit maintain --once` runs; a refusal (non-zero exit, champion unchanged, nothing promoted) counts as caught.
It measures the registry's load-time verification (a manifest of every file, see refit.registry).

Writes scripts/results/reliability.{json,md} (or --out DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]


def _rows(name: str) -> list[dict]:
    from refit.data import demo_dir

    return [json.loads(line) for line in (demo_dir() / f"{name}.jsonl").read_text().splitlines()]


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _base(work: Path) -> tuple[Path, Path]:
    """A registry with a promoted tiny champion (trained on the bundled demo data), and a golden set."""
    from refit.cli import main as refit
    from refit.models.tiny import save_tiny_bert
    from refit.registry import Registry

    model = save_tiny_bert(work / "tiny")
    out = work / "champion"
    assert (
        refit(
            [
                "finetune",
                "--model",
                str(model),
                "--data.dataset",
                "refit-demo",
                "--output_dir",
                str(out),
                "--trainer.max_epochs",
                "2",
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
    registry = work / "base-registry"
    reg = Registry(registry)
    version = reg.register(out / "version")
    reg.promote(version.id, "initial champion")
    return registry, _write(work / "golden.jsonl", _rows("validation"))


def _config(case: Path, registry: Path, golden: Path, formats: list[str]) -> Path:
    config = {
        "registry": {"root": str(registry)},
        "inbox": {
            "windows": str(case / "inbox"),
            "golden": str(golden),
            "replay_size": 200,
            "holdout_fraction": 0.3,
        },
        "policy": {"tests": ["mmd", "ks"], "permutations": 100, "always_retrain": True, "min_new_labels": 10},
        "retrain": {
            "data": {"max_length": 48, "batch_size": 16, "reference_size": 60},
            "optim": {"lr": 2e-3},
            "trainer": {"max_epochs": 1},
            "tracking": {"wandb": False},
        },
        "gate": {
            "golden_tolerance": 100.0,
            "recent_margin": -100.0,
            "recent_alpha": None,
        },  # always passes: every cycle reaches promote
        "deploy": {"formats": formats, "max_accuracy_drop": 100.0, "min_agreement": 0.0},
        "tracking": {"wandb": False},
    }
    path = case / "maintain.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _maintain(config: Path, fault: str | None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "REFIT_FAULT_AT"}
    if fault:
        env["REFIT_FAULT_AT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "refit", "maintain", "--config", str(config), "--once"],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def _state(registry: Path) -> dict:
    """What the checks look at: integrity, champion, promote rows, run statuses."""
    from refit.registry import CHAMPION, Registry

    db = sqlite3.connect(registry / "registry.db")
    try:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()
    reg = Registry(registry)
    promotes = [m.to_version for m in reg.history(CHAMPION) if m.action == "promote"]
    champion = reg.aliases().get(CHAMPION)
    try:
        reg.get(CHAMPION)
        champion_ok = True
    except Exception:  # noqa: BLE001 - any refusal to load counts as a broken champion here
        champion_ok = False
    return {
        "integrity": integrity,
        "champion": champion,
        "champion_loads": champion_ok,
        "promotes": promotes,
        "runs": [r["status"] for r in reg.runs("maintain")],
        "challengers": [m.to_version for m in reg.history("challenger")],
        "index_rows": sum(  # dropped rows staged by done runs: what the inbox index counts as used
            r["details"].get("inbox_index", {}).get("counts", {}).get("rows", 0)
            for r in reg.runs("maintain")
            if r["status"] in ("no_action", "promoted", "rejected")
        ),
    }


def kill_case(work: Path, base: Path, golden: Path, phase: str, repeat: int, formats: list[str]) -> dict:
    """One kill at `phase`, the checks, the recovery cycle and the checks again."""
    case = work / f"kill-{phase}-{repeat}"
    registry = case / "registry"
    shutil.copytree(base, registry)
    shifted = _rows("shifted")
    window = shifted[repeat * 60 : (repeat * 60 + 120)] or shifted[:120]
    _write(case / "inbox" / "window.jsonl", window)
    config = _config(case, registry, golden, formats)
    before = _state(registry)
    started = time.perf_counter()
    killed = _maintain(config, phase)
    after_kill = _state(registry)
    new_promotes = after_kill["promotes"][len(before["promotes"]) :]
    checks = {
        "killed_by_sigkill": killed.returncode == -9,
        "integrity_ok_after_kill": after_kill["integrity"] == "ok",
        "champion_unchanged_or_gated": after_kill["champion"] in (before["champion"], *new_promotes)
        and after_kill["champion_loads"],
        "no_duplicate_promotion_after_kill": len(new_promotes) == len(set(new_promotes)) <= 1,
    }
    recovered = _maintain(config, None)
    final = _state(registry)
    all_new = final["promotes"][len(before["promotes"]) :]
    checks |= {
        "next_once_completes": recovered.returncode == 0 and final["runs"][-1] in ("promoted", "no_new_data"),
        "integrity_ok_after_recovery": final["integrity"] == "ok",
        "exactly_one_promotion_in_total": len(all_new) == 1
        and final["champion"] == all_new[0]
        and final["champion_loads"],
        # the window's rows count once in the inbox index, staged by the one done run (refit.maintain.index)
        "window_rows_used_exactly_once": final["index_rows"]
        == len({(r["text"], r.get("label")) for r in window}),
    }
    record = {
        "phase": phase,
        "repeat": repeat,
        "seconds": round(time.perf_counter() - started, 1),
        "survived": all(checks.values()),
        "checks": checks,
        "runs": final["runs"],
        "promotions": len(all_new),
    }
    if not record["survived"]:
        record["kill_stderr"] = killed.stderr[-2000:]
        record["recovery_output"] = (recovered.stdout + recovered.stderr)[-2000:]
    shutil.rmtree(case, ignore_errors=True)
    return record


def corruption_case(work: Path, base: Path, golden: Path, rel: str, how: str) -> dict:
    """Alter or remove one file of the champion version, then run a cycle: was it refused?"""
    from refit.registry import CHAMPION, Registry

    case = work / f"corrupt-{how}-{rel.replace('/', '_')}"
    registry = case / "registry"
    shutil.copytree(base, registry)
    (case / "inbox").mkdir(parents=True)  # no new data: the cycle only has to load and verify the champion
    config = _config(case, registry, golden, [])
    reg = Registry(registry)
    before = reg.aliases()[CHAMPION]
    target = reg.get(CHAMPION, verify=False).path / rel
    if how == "removed":
        target.unlink()
    else:
        with target.open("ab") as f:
            f.write(b"\0")
    result = _maintain(config, None)
    refused = result.returncode != 0 and Registry(registry).aliases()[CHAMPION] == before
    message = next((line for line in result.stderr.splitlines() if "error" in line), "")
    shutil.rmtree(case, ignore_errors=True)
    return {
        "file": rel,
        "how": how,
        "refused": refused,
        "exit_code": result.returncode,
        "message": message[:300],
    }


def main() -> None:
    from refit.maintain import PHASES
    from refit.registry import CHAMPION, Registry

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--formats", default="onnx-int8", help="deploy.formats of the cycles ('' = none)")
    parser.add_argument("--no-corruption", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "scripts" / "results")
    parser.add_argument("--keep", type=Path, help="work folder (default: a temporary one, removed)")
    args = parser.parse_args()
    phases = [p for p in args.phases.split(",") if p]
    formats = [f for f in args.formats.split(",") if f]
    work = args.keep or Path(tempfile.mkdtemp(prefix="refit-chaos-"))
    started = time.perf_counter()
    base, golden = _base(work)

    kills = []
    for repeat in range(args.repeats):
        for phase in phases:
            kills.append(kill_case(work, base, golden, phase, repeat, formats))
            print(json.dumps({k: v for k, v in kills[-1].items() if k != "checks"}), flush=True)
    corruptions = []
    if not args.no_corruption:
        version = Registry(base).get(CHAMPION).path
        files = sorted(str(p.relative_to(version)) for p in version.rglob("*") if p.is_file())
        for rel in files:
            for how in ("altered", "removed"):
                corruptions.append(corruption_case(work, base, golden, rel, how))
                print(json.dumps(corruptions[-1]), flush=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)

    previous = _previous(args.out / "reliability.json")
    result = {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores (shared), no GPU; {platform.platform()}",
        "seconds": round(time.perf_counter() - started),
        "kills": {
            "total": len(kills),
            "survived": sum(k["survived"] for k in kills),
            "duplicate_promotions": sum(
                not k["checks"]["no_duplicate_promotion_after_kill"] or k["promotions"] > 1 for k in kills
            ),
            "cases": kills,
        },
        "corruptions": {
            "total": len(corruptions),
            "refused": sum(c["refused"] for c in corruptions),
            "cases": corruptions,
        },
    }
    # a run of only one part (--repeats 0, or --no-corruption) keeps the other part of the previous results
    if not kills and previous.get("kills"):
        result["kills"] = previous["kills"]
    if args.no_corruption and previous.get("corruptions"):
        result["corruptions"] = previous["corruptions"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reliability.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "reliability.md").write_text(_markdown(result, phases, args.repeats, formats))
    print(_markdown(result, phases, args.repeats, formats))


def _previous(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _markdown(result: dict, phases: list[str], repeats: int, formats: list[str]) -> str:
    k, c = result["kills"], result["corruptions"]
    lines = [
        f"# Reliability of `refit maintain` ({result['machine']}, {result['seconds']} s)",
        "",
        "Produced by `python scripts/chaos_maintain.py` (tiny random BERT champion, demo data; "
        f"deploy.formats={formats}).",
        "",
        "## Kills (SIGKILL at a phase boundary, then the next `--once`)",
        "",
        f"**Kills survived: {k['survived']} / {k['total']}; duplicate promotions: {k['duplicate_promotions']}.**",
        "",
        "A kill survives when: the process died by SIGKILL at that phase; `PRAGMA integrity_check` is ok; "
        "the champion is unchanged or the gated challenger and still verifies; no challenger was promoted "
        "twice; the next `--once` completes; and after it exactly one promotion exists for the inbox's files.",
        "",
        "| phase | repeat | survived | run statuses (killed -> recovery) | promotions | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for case in k["cases"]:
        failed = [name for name, ok in case["checks"].items() if not ok]
        lines.append(
            f"| {case['phase']} | {case['repeat']} | {'yes' if case['survived'] else 'NO: ' + ', '.join(failed)} "
            f"| {' -> '.join(case['runs'])} | {case['promotions']} | {case['seconds']} |"
        )
    if c["total"]:
        lines += [
            "",
            "## Corruption matrix (one file of the champion altered or removed, then `--once`)",
            "",
            f"**Corruptions refused: {c['refused']} / {c['total']}.**",
            "",
            "| file | how | refused | exit | message |",
            "|---|---|---|---|---|",
        ]
        for case in c["cases"]:
            lines.append(
                f"| {case['file']} | {case['how']} | {'yes' if case['refused'] else 'NO'} | "
                f"{case['exit_code']} | {case['message'].replace('|', '/')} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
