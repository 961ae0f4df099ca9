"""Drift-only vs harm-aware retrain triggers, with real retraining: the same stream of windows through
`refit maintain --once`, once per policy, with retrain counts and served accuracy per window.

    python scripts/simulate_triggers.py [--window 200] [--replay 300]

The champion is the MiniLM version scripts/bench_estimate.py fine-tunes on 2000 sst2 rows (cached under
runs/bench-estimate/, so both benchmarks read the same model and calibrator). For each policy a fresh
registry gets that champion, and the stream of windows arrives one file per cycle in its inbox: sst2 test
sentences (in-domain), then domains where the inputs move but the sst2 model is as good or better (airline
tweets, UCI sentences), then one where it is hurt (Amazon electronics reviews). Each window's labels come
with it (training data for a retrain); neither policy reads them to decide, so the comparison is between
the triggers alone:

- drift-only: retrain when MMD or KS on the champion's embeddings fires (alpha 0.05, Bonferroni);
- harm-aware: the same tests, reported only (policy.retrain_on_drift: false); retrain when the upper end
  of the DoC estimate's 95% interval for the expected accuracy is below the floor (policy.min_estimated_
  accuracy = the champion's validation accuracy - 5 points).

Served accuracy of a window is the accuracy of the champion that held the alias when the window arrived,
on that window's labels (the cycle records it as estimate.realised before it decides): what users got.
Writes scripts/results/maintenance-triggers.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import time
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
from _datasets import DATASETS  # noqa: E402

RESULTS = ROOT / "scripts" / "results"
WORK = ROOT / "runs" / "simulate-triggers"
STREAM = [  # (domain label, data sets, splits, windows)
    ("sst2", ["sst2"], ["test"], 1),
    ("airline_tweets", ["airline_tweets"], ["test"], 2),
    ("uci_sentences", ["uci_sentences_amazon", "uci_sentences_imdb", "uci_sentences_yelp"], ["test"], 1),
    ("amazon_electronics", ["amazon_electronics"], ["test", "validation", "train"], 2),
]
POLICIES = ("drift-only", "harm-aware")
MARGIN = 0.05  # floor = champion validation accuracy - 5 points, as bench_estimate.triggers


def _rows(names: list[str], splits: list[str]) -> list[dict]:
    return [
        json.loads(line)
        for n in names
        for s in splits
        for line in (DATASETS / n / f"{s}.jsonl").read_text().splitlines()
    ]


def _stream(window: int) -> list[tuple[str, list[dict]]]:
    out = []
    for domain, names, splits, k in STREAM:
        rows = _rows(names, splits)
        random.Random(0).shuffle(rows)
        if len(rows) < k * window:
            raise SystemExit(f"{domain}: {len(rows)} rows, fewer than {k} windows of {window}")
        out += [(domain, rows[i * window : (i + 1) * window]) for i in range(k)]
    return out


def _policy(name: str, floor: float) -> dict:
    common = {"tests": ["mmd", "ks"], "alpha": 0.05, "permutations": 500, "min_new_labels": 20}
    if name == "drift-only":
        return common
    return {
        **common,
        "retrain_on_drift": False,
        "min_estimated_accuracy": round(floor, 4),
        "estimator": "doc",
    }


def _run_policy(name: str, champion: Path, stream, floor: float, args) -> list[dict]:
    from refit.cli import main as refit
    from refit.registry import CHAMPION, Registry

    work = WORK / name
    shutil.rmtree(work, ignore_errors=True)
    inbox = work / "inbox"
    inbox.mkdir(parents=True)
    golden = work / "golden.jsonl"
    golden.write_text("".join(json.dumps(r) + "\n" for r in _rows(["sst2"], ["validation"])[: args.golden]))
    registry = work / "registry"
    assert refit(["registry", "register", "--root", str(registry), "--version", str(champion)]) == 0
    reg = Registry(registry)
    reg.promote(reg.list_versions()[0].id, "initial champion")
    config = {
        "registry": {"root": str(registry)},
        "inbox": {"windows": str(inbox), "golden": str(golden), "replay_size": args.replay},
        "policy": _policy(name, floor),
        "retrain": {
            "data": {"max_length": 64, "batch_size": 32, "reference_size": 150},
            "optim": {"lr": 3e-5},
            "trainer": {"max_epochs": 1},
            "tracking": {"wandb": False},
        },
        "gate": {
            "golden_tolerance": 2.0,
            "recent_margin": 0.0,
            "recent_alpha": None,
        },  # as its results were run
        "deploy": {"formats": []},  # export is not what is compared here (it costs minutes per retrain)
        "tracking": {"wandb": False},
    }
    config_path = work / "maintain.yaml"
    config_path.write_text(yaml.safe_dump(config))
    history = []
    for k, (domain, rows) in enumerate(stream):
        (inbox / f"window-{k:03d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        before = reg.aliases()[CHAMPION]
        t0 = time.perf_counter()
        code = refit(["maintain", "--config", str(config_path), "--once"])
        run = reg.runs("maintain")[-1]
        d = run["details"]
        est = d.get("estimate", {})
        history.append(
            {
                "window": k,
                "domain": domain,
                "served_by": before,
                "served_accuracy": est.get("realised", {}).get("accuracy"),
                "estimate_doc": est.get("doc", {}).get("value"),
                "estimate_doc_ci_high": est.get("doc", {}).get("ci_high"),
                "drift": bool(d.get("drift", {}).get("drift")),
                "drift_p": {t: r["p_value"] for t, r in d.get("drift", {}).items() if isinstance(r, dict)},
                "retrained": d.get("challenger") is not None,
                "status": run["status"],
                "exit": code,
                "reasons": d.get("reasons", []),
                "gate": d.get("gate", []),
                "champion_after": reg.aliases()[CHAMPION],
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        print(name, json.dumps(history[-1]), flush=True)
        (WORK / f"{name}.json").write_text(json.dumps(history, indent=2) + "\n")  # partial results survive
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--replay", type=int, default=150, help="sst2 training rows replayed per retrain")
    parser.add_argument("--golden", type=int, default=200, help="sst2 validation rows as the golden set")
    parser.add_argument(
        "--policy",
        choices=[*POLICIES, "both"],
        default="both",
        help="run one policy (two processes can run side by side); the report is written once both ran",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="only write the report from the saved histories (the windows both policies completed)",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_estimate import _version

    from refit.estimate import load_calibration

    champion = _version(None)
    cal = load_calibration(champion)
    floor = cal.accuracy - MARGIN
    stream = _stream(args.window)
    for name in [] if args.report else POLICIES if args.policy == "both" else [args.policy]:
        _run_policy(name, champion, stream, floor, args)
    if not all((WORK / f"{name}.json").is_file() for name in POLICIES):
        return
    runs = {name: json.loads((WORK / f"{name}.json").read_text()) for name in POLICIES}
    done = min(len(h) for h in runs.values())  # compare the windows both policies completed
    runs = {name: h[:done] for name, h in runs.items()}
    stream = stream[:done]
    summary = {}
    for name, h in runs.items():
        served = [x["served_accuracy"] for x in h]
        summary[name] = {
            "retrains": sum(x["retrained"] for x in h),
            "promotions": sum(x["status"] == "promoted" for x in h),
            "mean_served_accuracy": round(sum(served) / len(served), 4),
            "served_correct": round(sum(s * args.window for s in served)),
        }
    d, h = summary["drift-only"], summary["harm-aware"]
    result = {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores (shared with other engineers' jobs), no GPU",
        "champion": str(champion),
        "validation_accuracy": cal.accuracy,
        "floor": round(floor, 4),
        "window": args.window,
        "replay": args.replay,
        "golden": args.golden,
        "stream": [dom for dom, _ in stream],
        "windows_completed": f"{done} of {len(_stream(args.window))}",
        "summary": summary,
        "retrain_reduction": round(1 - h["retrains"] / d["retrains"], 3) if d["retrains"] else None,
        "served_accuracy_change_points": round(
            (h["mean_served_accuracy"] - d["mean_served_accuracy"]) * 100, 2
        ),
        "runs": runs,
        "seconds": {n: round(sum(x["seconds"] for x in h)) for n, h in runs.items()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "maintenance-triggers.json").write_text(json.dumps(result, indent=2) + "\n")
    short: dict[str, str] = {}
    for hist in runs.values():
        for x in hist:
            for v in (x["served_by"], x["champion_after"]):
                short.setdefault(v, f"v{len(short)}")
    lines = [
        f"# Drift-only vs harm-aware retrain triggers, real retraining ({result['machine']}, "
        f"cycles took {result['seconds']['drift-only']} s and {result['seconds']['harm-aware']} s)",
        "",
        f"Champion: MiniLM fine-tuned on 2000 sst2 rows (validation accuracy {cal.accuracy:.3f}); the same "
        f"{len(stream)} windows of {args.window} labelled rows through `refit maintain --once`, once per "
        f"policy (fresh registry each). Retrain: warm start, 1 epoch on the window's labelled rows (70%) + "
        f"{args.replay} replayed sst2 rows; gate: golden ({args.golden} sst2 validation rows) tolerance 2 "
        "points, recent margin 0; no export. Harm-aware floor: "
        f"{floor:.3f} (validation - 5 points) on the upper end of DoC's 95% interval. Windows completed by "
        f"both runs: {result['windows_completed']}.",
        "",
        "| window | domain | drift-only: served by | served acc. | drift | retrained | status "
        "| harm-aware: served by | served acc. | DoC est. [hi] | retrained | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a, b in zip(runs["drift-only"], runs["harm-aware"]):
        lines.append(
            f"| {a['window']} | {a['domain']} | {short[a['served_by']]} | {a['served_accuracy']:.3f} | "
            f"{'yes' if a['drift'] else 'no'} | {'yes' if a['retrained'] else '-'} | {a['status']} | "
            f"{short[b['served_by']]} | {b['served_accuracy']:.3f} | {b['estimate_doc']:.3f} "
            f"[{b['estimate_doc_ci_high']:.3f}] | {'yes' if b['retrained'] else '-'} | {b['status']} |"
        )
    lines += [
        "",
        "| policy | retrains | promotions | mean served accuracy |",
        "|---|---|---|---|",
        *[
            f"| {n} | {s['retrains']} | {s['promotions']} | {s['mean_served_accuracy']:.4f} |"
            for n, s in summary.items()
        ],
        "",
        f"Harm-aware retrained {result['retrain_reduction'] * 100:.0f}% less often (goal >= 50%); mean served "
        f"accuracy {result['served_accuracy_change_points']:+.2f} points vs drift-only (goal: no loss). "
        "'retrained' = a challenger was trained in that cycle, whether the gate then promoted or rejected it "
        "(status); 'served acc.' = the accuracy of the champion holding the alias when the window arrived, on "
        "its labels. Gate reasons per cycle are in maintenance-triggers.json (runs.*.gate). "
        "One run, one seed; a window of "
        f"{args.window} rows has about {100 * (0.8 * 0.2 / args.window) ** 0.5:.1f} points of sampling sd.",
    ]
    (RESULTS / "maintenance-triggers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
