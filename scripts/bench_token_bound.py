"""How far word-level statistics get on the word-level shifts of bench_drift_power.py (issue #15).

    python scripts/bench_token_bound.py [--trials 500]

The 1% word shifts touch about one sentence in six, by one word. Before asking an embedding test for 0.9
power there, this asks what the words themselves allow: a per-sentence score (words unseen in a vocabulary
table; the mean or the max of a word's surprisal under a smoothed unigram model of the table) averaged
over a window of 200 sst2 test sentences, judged against an ORACLE null: the 95th percentile of the same
statistic over 2000 unshifted windows of the same pool (no refit detector has that; a real test must
estimate its null from a reference, so it can only do worse). Tables: 512 sst2 validation sentences (the
drift reference), all 872, or all 6909 training sentences. Writes scripts/results/drift_token_bound.{json,md}.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import platform
import random
from pathlib import Path

import numpy as np
from _datasets import DATASETS, read_rows
from bench_drift_power import COHERENT, DOMAIN, FEW_WORDS, _vocabulary, shift_words

RESULTS = Path(__file__).resolve().parents[1] / "scripts" / "results"
N, ALPHA = 200, 0.05


def scorer(table: collections.Counter, kind: str):
    total, types = sum(table.values()), len(table) + 1

    def surprisal(w: str) -> float:
        return -math.log((table[w] + 0.5) / (total + 0.5 * types))

    def score(text: str) -> float:
        words = text.lower().split()
        if kind == "unseen words":
            return sum(table[w] == 0 for w in words)
        values = [surprisal(w) for w in words]
        return max(values) if kind == "max surprisal" else sum(values) / len(values)

    return score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    args = parser.parse_args()
    if not DATASETS.is_dir():
        raise SystemExit(f"{DATASETS} is absent: this benchmark needs the shared labelled data sets.")
    test = [r["text"] for r in read_rows("sst2", "test")]
    validation = [r["text"] for r in read_rows("sst2", "validation")]
    vocab = {"replace": _vocabulary("sst2"), "insert": _vocabulary("airline_tweets")}
    few = random.Random(0).sample(vocab["insert"], FEW_WORDS)
    shifted = {
        "replace 1%": [shift_words(t, "replace", 0.01, vocab["replace"], "power") for t in test],
        "insert 1%": [shift_words(t, "insert", 0.01, vocab["insert"], "power") for t in test],
        "delete 1%": [shift_words(t, "delete", 0.01, [], "power") for t in test],
        COHERENT: [shift_words(t, "replace", 0.01, few, "power") for t in test],
    }
    domain = [r["text"] for s in ("validation", "test") for r in read_rows(DOMAIN, s)]
    tables = {
        "sst2 validation, 512 (the reference)": random.Random(0).sample(validation, 512),
        "sst2 validation, 872": validation,
        "sst2 train, 6909": [r["text"] for r in read_rows("sst2", "train")],
    }
    rng = np.random.default_rng(0)
    rows = []
    for table_name, source in tables.items():
        table = collections.Counter(w for t in source for w in t.lower().split())
        for kind in ("unseen words", "mean surprisal", "max surprisal"):
            score = scorer(table, kind)
            base = np.array([score(t) for t in test])
            null = [base[rng.choice(len(test), N, replace=False)].mean() for _ in range(2000)]
            threshold = float(np.quantile(null, 1 - ALPHA))
            power = {}
            for name, texts in shifted.items():
                s = np.array([score(t) for t in texts])
                power[name] = float(
                    np.mean(
                        [
                            s[rng.choice(len(test), N, replace=False)].mean() > threshold
                            for _ in range(args.trials)
                        ]
                    )
                )
            d = np.array([score(t) for t in domain])
            k = N // 10
            power[f"{DOMAIN} 10%"] = float(
                np.mean(
                    [
                        np.concatenate(
                            [
                                base[rng.choice(len(test), N - k, replace=False)],
                                d[rng.choice(len(d), k, replace=False)],
                            ]
                        ).mean()
                        > threshold
                        for _ in range(args.trials)
                    ]
                )
            )
            rows.append({"table": table_name, "score": kind, "power": power})
            print(table_name, kind, power, flush=True)
    shifts = list(rows[0]["power"])
    result = {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, no GPU",
        "n": N,
        "alpha": ALPHA,
        "trials": args.trials,
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "drift_token_bound.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Word-level statistics on the word-level shifts, oracle null ({result['machine']})",
        "",
        f"Made by `python scripts/bench_token_bound.py`: windows of n = {N} sst2 test sentences, one-sided at "
        f"alpha {ALPHA} against the 95th percentile of 2000 unshifted windows of the same pool (an oracle "
        f"null no detector has), {args.trials} shifted windows per cell. Shifts as in bench_drift_power.py.",
        "",
        f"| vocabulary table | per-sentence score | {' | '.join(shifts)} |",
        "|---|---|" + "---|" * len(shifts),
    ]
    lines += [
        f"| {r['table']} | {r['score']} | " + " | ".join(f"{r['power'][s]:.2f}" for s in shifts) + " |"
        for r in rows
    ]
    (RESULTS / "drift_token_bound.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
