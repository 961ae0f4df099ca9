"""Stream production windows through `refit maintain --once` and watch the loop detect, retrain, recover.

    python scripts/simulate_maintenance.py [--train-rows 2000] [--window 300]

A MiniLM champion is fine-tuned on ../shared/datasets/sst2 (movie-review sentences). Windows then arrive
in an inbox folder: first more sst2 (no drift), then tweets to US airlines (another domain, same labels).
Labels arrive one window late: each file holds the window's new inputs unlabelled plus the previous
window's inputs with their labels. After every cycle the champion is scored on sst2 test (must not lose
more than 2 points) and on the current window (should recover after the shift).
Writes scripts/results/maintenance.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
RESULTS = ROOT / "scripts" / "results"


def _rows(name: str, split: str) -> list[dict]:
    return [json.loads(line) for line in (DATASETS / name / f"{split}.jsonl").read_text().splitlines()]


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def main() -> None:
    from refit.cli import main as refit
    from refit.registry import CHAMPION, Registry
    from refit.train import evaluate_version

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--window", type=int, default=300)
    parser.add_argument("--keep", type=Path, help="keep the work folder here instead of a temporary one")
    args = parser.parse_args()
    rng = random.Random(0)
    work = args.keep or Path(tempfile.mkdtemp(prefix="refit-sim-"))
    sst2_train = _rows("sst2", "train")[: args.train_rows]
    sst2_test = _rows("sst2", "test")
    tweets = _rows("airline_tweets", "test") + _rows("airline_tweets", "validation")
    rng.shuffle(tweets)
    stream = [("sst2", sst2_test[i * args.window:(i + 1) * args.window]) for i in range(2)]
    stream += [("airline_tweets", tweets[i * args.window:(i + 1) * args.window]) for i in range(4)]
    golden = _write(work / "golden.jsonl", _rows("sst2", "validation"))

    started = time.perf_counter()
    train = _write(work / "data" / "train.jsonl", sst2_train)
    (work / "data" / "labels.json").write_text(json.dumps({"0": "negative", "1": "positive"}))
    assert refit(["finetune", "--model", "minilm", "--data.train", str(train), "--data.validation", str(golden),
                  "--output_dir", str(work / "champion"), "--trainer.max_epochs", "1", "--data.max_length", "64",
                  "--tracking.wandb", "false"]) == 0
    registry = work / "registry"
    refit(["registry", "register", "--root", str(registry), "--version", str(work / "champion" / "version")])
    reg = Registry(registry)
    reg.promote(reg.list_versions()[0].id, "initial champion")
    config = {
        "registry": {"root": str(registry)},
        "inbox": {"windows": str(work / "inbox"), "golden": str(golden), "replay_size": 600,
                  "holdout_fraction": 0.3},
        "policy": {"tests": ["mmd", "ks"], "alpha": 0.05, "permutations": 500, "min_accuracy": 0.8},
        "retrain": {"data": {"max_length": 64, "batch_size": 32, "reference_size": 300},
                    "optim": {"lr": 3e-5}, "trainer": {"max_epochs": 2}, "tracking": {"wandb": False}},
        "gate": {"golden_tolerance": 2.0, "recent_margin": 0.5},
        "deploy": {"formats": ["onnx-int8"], "max_accuracy_drop": 1.0, "min_agreement": 0.97},
        "tracking": {"wandb": False},
    }
    config_path = work / "maintain.yaml"
    config_path.write_text(yaml.safe_dump(config))

    history, previous = [], None
    for k, (domain, rows) in enumerate(stream):
        inputs = [{"text": r["text"]} for r in rows]
        labelled = [{"text": r["text"], "label": r["label"]} for r in previous[1]] if previous else []
        _write(work / "inbox" / f"window-{k:02d}.jsonl", inputs + labelled)
        champion_before = reg.aliases()[CHAMPION]
        window_acc_before = evaluate_version(reg.get(champion_before).path, [r["text"] for r in rows],
                                             [r["label"] for r in rows], max_length=64)["accuracy"]
        refit(["maintain", "--config", str(config_path), "--once"])
        run = reg.runs("maintain")[-1]
        champion = reg.get(CHAMPION)
        entry = {
            "window": k, "domain": domain, "status": run["status"],
            "drift_p": {t: r["p_value"] for t, r in run["details"].get("drift", {}).items() if isinstance(r, dict)},
            "champion_before": champion_before, "champion_after": champion.id,
            "window_accuracy_before": window_acc_before,
            "window_accuracy_after": evaluate_version(champion.path, [r["text"] for r in rows],
                                                      [r["label"] for r in rows], max_length=64)["accuracy"],
            "sst2_test_accuracy": evaluate_version(champion.path, [r["text"] for r in sst2_test],
                                                   [r["label"] for r in sst2_test], max_length=64)["accuracy"],
        }
        history.append(entry)
        print(json.dumps(entry))
        previous = (domain, rows)

    baseline = history[0]["sst2_test_accuracy"]
    result = {"machine": "2-core x86_64 CPU, no GPU", "seconds": round(time.perf_counter() - started),
              "train_rows": args.train_rows, "window": args.window, "config": config, "windows": history,
              "max_sst2_drop_points": round(max(0.0, (baseline - min(h["sst2_test_accuracy"] for h in history)) * 100), 2)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "maintenance.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Maintenance simulation ({result['machine']}, {result['seconds']} s)", "",
             f"MiniLM champion fine-tuned on {args.train_rows} sst2 rows; windows of {args.window} inputs, labels one "
             "window late.", "",
             "| window | domain | MMD p | KS p | cycle | window acc. before -> after | sst2 test acc. |",
             "|---|---|---|---|---|---|---|"]
    for h in history:
        p = h["drift_p"]
        lines.append(f"| {h['window']} | {h['domain']} | {p.get('mmd', float('nan')):.3g} | {p.get('ks', float('nan')):.3g} "
                     f"| {h['status']} | {h['window_accuracy_before']:.3f} -> {h['window_accuracy_after']:.3f} "
                     f"| {h['sst2_test_accuracy']:.3f} |")
    lines += ["", f"Largest drop on sst2 test vs the first window: {result['max_sst2_drop_points']} points (goal <= 2)."]
    (RESULTS / "maintenance.md").write_text("\n".join(lines) + "\n")
    _plot(history, RESULTS / "maintenance.png")
    print("\n".join(lines))


def _plot(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [h["window"] for h in history]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    a1.plot(xs, [h["window_accuracy_after"] for h in history], "o-", label="champion on the window (after cycle)")
    a1.plot(xs, [h["window_accuracy_before"] for h in history], "o--", label="champion on the window (before)")
    a1.plot(xs, [h["sst2_test_accuracy"] for h in history], "s-", label="champion on sst2 test")
    a1.set_ylabel("accuracy")
    a1.legend(fontsize=8)
    for test in ("mmd", "ks"):
        a2.semilogy(xs, [max(h["drift_p"].get(test, 1.0), 1e-4) for h in history], "o-", label=f"{test} p-value")
    a2.axhline(0.05, color="r", ls="--", label="alpha")
    a2.set_xlabel("window (0-1 sst2, 2-5 airline tweets)")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
