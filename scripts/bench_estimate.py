"""Label-free accuracy estimation on real text: CBPE, ATC and DoC against the true accuracy of windows.

    python scripts/bench_estimate.py [--version DIR] [--windows 25] [--pool 600]

The model: MiniLM fine-tuned here for one epoch on 2000 rows of ../shared/datasets/sst2 (max length 64),
cached under runs/bench-estimate/ with each domain's log-probabilities and embeddings (set REFIT_DATASETS
when the data sets are not in ../shared); fine-tuning stores its calibrator (temperature fitted on sst2
validation, refit.estimate). Besides the shipped estimators it evaluates candidate variants (class Variants).
Each domain's pool is up to --pool labelled rows (test split, plus validation where the test split is small;
sentiment140: only its hand-labelled test split; the three UCI sentence sets pooled into one domain). From a
pool, --windows windows of 200 rows are drawn (without replacement within a window) and each estimator is
compared with the window's true accuracy. Reported per domain: mean absolute error (points), the share of
windows whose true accuracy lies in the estimator's 95% bootstrap interval, and two baselines:
"no change" (validation accuracy as the estimate) and the "noise floor" (the MAE of an oracle that knows
the pool's accuracy exactly: a window of 200 is itself a noisy measurement of it, about 2 points).
Writes scripts/results/estimate.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
from _datasets import DATASETS, sst2_version  # noqa: E402

RESULTS = ROOT / "scripts" / "results"
CACHE = ROOT / "runs" / "bench-estimate"  # ignored folder: fine-tuned version and logits
DOMAINS = {  # name -> (data sets, splits)
    "sst2 (in-domain)": (["sst2"], ["test"]),
    "mr_rt_polarity": (["mr_rt_polarity"], ["test"]),
    "cr_customer_reviews": (["cr_customer_reviews"], ["test", "validation"]),
    "amazon_books": (["amazon_books"], ["test", "validation"]),
    "amazon_dvd": (["amazon_dvd"], ["test", "validation"]),
    "amazon_electronics": (["amazon_electronics"], ["test", "validation"]),
    "amazon_kitchen": (["amazon_kitchen"], ["test", "validation"]),
    "imdb_reviews": (["imdb_reviews"], ["test"]),
    "airline_tweets": (["airline_tweets"], ["test"]),
    "sentiment140": (["sentiment140"], ["test"]),
    "uci_sentences (amazon+imdb+yelp)": (
        ["uci_sentences_amazon", "uci_sentences_imdb", "uci_sentences_yelp"],
        ["test", "validation"],
    ),
}
N = 200
MAX_LENGTH = 64
_UCI, _AIR, _BOOKS, _S140 = (
    "uci_sentences (amazon+imdb+yelp)",
    "airline_tweets",
    "amazon_books",
    "sentiment140",
)


def _rows(names: list[str], splits: list[str]) -> list[dict]:
    return [
        json.loads(line)
        for n in names
        for s in splits
        for line in (DATASETS / n / f"{s}.jsonl").read_text().splitlines()
    ]


def _version(path: Path | None) -> Path:
    return path or sst2_version(CACHE, rows=2000, reference_size=256, max_length=MAX_LENGTH)


def _scores(version: Path, pool: int) -> dict[str, dict]:
    """Log-probabilities, mean-pooled last-layer embeddings and labels per domain pool, plus the version's
    validation split ("validation": what the importance-weighted variants re-weight), cached on disk:
    inference is the slow part, and every estimator then runs on index windows of these arrays."""
    from refit.models import encode_texts, load_version

    vid = json.loads((version / "refit.json").read_text())["version_id"]
    cache = CACHE / f"scores-{vid}-{pool}.pt"
    if cache.is_file():
        print(f"scores from cache {cache}")
        return torch.load(cache, weights_only=True)
    model, tokenizer, _ = load_version(version)
    out = {}
    for domain, (names, splits) in {"validation": (["sst2"], ["validation"]), **DOMAINS}.items():
        rows = _rows(names, splits)
        if domain != "validation":
            rows = random.Random(0).sample(rows, min(len(rows), pool))
        enc = encode_texts(model, tokenizer, [r["text"] for r in rows], 64, MAX_LENGTH)
        out[domain] = {
            "logits": enc.probs.double().clamp_min(1e-30).log(),  # log p: what the estimators take
            "embeddings": enc.embeddings,
            "labels": torch.tensor([r["label"] for r in rows]),
        }
        acc = (out[domain]["logits"].argmax(1) == out[domain]["labels"]).double().mean()
        print(f"scored {domain}: {len(rows)} rows, accuracy {acc:.3f}", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(out, cache)
    return out


class Variants:
    """Candidate estimators evaluated here before any of them earns a place in refit.estimate.ESTIMATORS:
    they need more than a calibrator (validation embeddings and correctness), so each is a point estimate
    from (window log-probs, window embeddings) given the version's validation split.

    - iw: importance-weighted validation accuracy. A domain classifier (logistic regression on a PCA of the
      embeddings, fitted on validation only, strongly regularised) tells validation rows from window rows;
      each validation row is weighted by its odds of being a window row, so validation rows that look like
      the window count more (covariate-shift correction; Sugiyama et al. 2007; Chen et al. 2021).
    - iw_doc: DoC on the re-weighted validation (weighted accuracy - weighted mean confidence + the window's
      mean confidence): the weights correct the part of the shift the validation rows cover, DoC the rest.
    - iw_cbpe: CBPE with the temperature refitted on the re-weighted validation rows.
    - atc_mc: ATC with max-probability instead of negative entropy as the score.
    - cbpe_doc: the mean of CBPE and DoC (their errors differ in sign on some domains).
    """

    names = ("iw", "iw_doc", "iw_cbpe", "atc_mc", "cbpe_doc")

    def __init__(self, validation: dict, cal, dims: int = 32, c: float = 0.05, clip: float = 20.0) -> None:
        from refit.estimate.calibration import atc_threshold

        self.cal, self.c, self.clip = cal, c, clip
        emb = validation["embeddings"].double().numpy()
        self.mean = emb.mean(0)
        _, _, vt = np.linalg.svd(emb - self.mean, full_matrices=False)
        self.basis = vt[:dims].T
        self.z_val = self._project(emb)
        logp = validation["logits"].double().numpy()
        self.logp_val = logp
        self.labels_val = validation["labels"].numpy()
        self.correct_val = (logp.argmax(1) == self.labels_val).astype(np.float64)
        self.conf_val = np.exp(logp).max(1)
        cal_probs = cal.calibrate(logp)
        self.mc_threshold = atc_threshold(cal_probs.max(1), cal.accuracy)

    def _project(self, emb: np.ndarray) -> np.ndarray:
        return (emb - self.mean) @ self.basis

    def weights(self, emb_window: np.ndarray) -> np.ndarray:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        z_win = self._project(emb_window)
        x = np.vstack([self.z_val, z_win])
        y = np.r_[np.zeros(len(self.z_val)), np.ones(len(z_win))]
        scaler = StandardScaler().fit(x)
        clf = LogisticRegression(C=self.c, class_weight="balanced", max_iter=500)
        clf.fit(scaler.transform(x), y)
        p = clf.predict_proba(scaler.transform(self.z_val))[:, 1]
        w = p / np.clip(1 - p, 1e-6, None)
        w = w / w.mean()
        w = np.minimum(w, self.clip)
        return w / w.sum()

    def _weighted_temperature(self, w: np.ndarray) -> float:
        """The T minimising the w-weighted validation NLL (bounded search on log T, as fit_temperature)."""
        from scipy.optimize import minimize_scalar

        from refit.estimate.calibration import log_probs

        rows = np.arange(len(self.labels_val))

        def nll(log_t: float) -> float:
            return float(-(w * log_probs(self.logp_val / np.exp(log_t))[rows, self.labels_val]).sum())

        return float(np.exp(minimize_scalar(nll, bounds=(-4, 4), method="bounded").x))

    def __call__(self, logp_window: np.ndarray, emb_window: np.ndarray) -> dict[str, float]:
        from refit.estimate.estimators import ESTIMATORS

        w = self.weights(emb_window)
        conf_win = np.exp(logp_window).max(1)
        iw_acc = float(w @ self.correct_val)
        t = self._weighted_temperature(w)
        cbpe = float(ESTIMATORS["cbpe"](logp_window, self.cal).mean())
        doc = float(ESTIMATORS["doc"](logp_window, self.cal).mean())
        from refit.estimate import apply_temperature

        out = {
            "iw": iw_acc,
            "iw_doc": iw_acc - float(w @ self.conf_val) + float(conf_win.mean()),
            "iw_cbpe": float(apply_temperature(logp_window, t).max(1).mean()),
            "atc_mc": float((self.cal.calibrate(logp_window).max(1) > self.mc_threshold).mean()),
            "cbpe_doc": (cbpe + doc) / 2,
        }
        return {k: min(1.0, max(0.0, v)) for k, v in out.items()}


def evaluate(data: dict[str, dict], cal, windows: int, seed: int, variants: Variants) -> dict:
    from sklearn.metrics import f1_score

    from refit.estimate import ESTIMATORS, estimate_accuracy, estimate_f1

    rng = np.random.default_rng(seed)
    per_domain = {}
    for domain, d in data.items():
        logits, labels = d["logits"].double().numpy(), d["labels"].numpy()
        f1_errors = []
        emb = d["embeddings"].double().numpy()
        correct = logits.argmax(1) == labels
        pool_acc = float(correct.mean())
        n = min(N, len(labels))
        errors = {m: [] for m in [*ESTIMATORS, *Variants.names, "no_change", "noise_floor"]}
        signed = {m: [] for m in [*ESTIMATORS, *Variants.names]}
        covered = {m: 0 for m in ESTIMATORS}
        for w in range(windows):
            idx = rng.choice(len(labels), size=n, replace=False)
            truth = float(correct[idx].mean())
            for m, e in estimate_accuracy(logits[idx], cal, seed=w).items():
                errors[m].append(abs(e.value - truth) * 100)
                signed[m].append((e.value - truth) * 100)
                covered[m] += e.low <= truth <= e.high
            for m, v in variants(logits[idx], emb[idx]).items():
                errors[m].append(abs(v - truth) * 100)
                signed[m].append((v - truth) * 100)
            truth_f1 = f1_score(labels[idx], logits[idx].argmax(1), average="macro")
            f1_errors.append(abs(estimate_f1(logits[idx], cal, bootstrap=20).value - truth_f1) * 100)
            errors["no_change"].append(abs(cal.accuracy - truth) * 100)
            errors["noise_floor"].append(abs(pool_acc - truth) * 100)
        per_domain[domain] = {
            "pool": len(labels),
            "window": n,
            "windows": windows,
            "pool_accuracy": round(pool_acc, 4),
            "mae": {m: round(float(np.mean(v)), 2) for m, v in errors.items()},
            "bias": {m: round(float(np.mean(v)), 2) for m, v in signed.items()},
            "coverage": {m: round(c / windows, 2) for m, c in covered.items()},
            "cbpe_f1_mae": round(float(np.mean(f1_errors)), 2),
            "pool_macro_f1": round(float(f1_score(labels, logits.argmax(1), average="macro")), 4),
            "whole_pool_estimate": {m: round(e.value, 4) for m, e in estimate_accuracy(logits, cal).items()},
        }
        print(domain, per_domain[domain]["mae"], flush=True)
    return per_domain


def triggers(data: dict[str, dict], cal, version: Path, windows: int, seed: int, margin: float) -> dict:
    """Which windows each retrain trigger would fire on (no retraining: a trigger-rate comparison only).

    drift-only: BBSD (KS on the model's probabilities vs its stored reference, alpha 0.05), the one drift test
    that needs no embeddings; harm-aware: the upper end of DoC's interval for the expected accuracy (what
    policy.min_estimated_accuracy reads) below validation accuracy - margin.
    A window is truly harmed when its realised accuracy is below that floor.
    """
    from refit.drift import DETECTORS
    from refit.drift.reference import load_reference
    from refit.estimate import PRIMARY, estimate_accuracy

    reference = load_reference(version)
    bbsd = DETECTORS["bbsd"]
    floor = cal.accuracy - margin
    rng = np.random.default_rng(seed + 1)
    counts = {
        "windows": 0,
        "harmed": 0,
        "drift_only": 0,
        "harm_aware": 0,
        "drift_only_missed": 0,
        "harm_aware_missed": 0,
        "drift_only_needless": 0,
        "harm_aware_needless": 0,
        "point": 0,
        "point_missed": 0,
        "point_needless": 0,
    }
    for d in data.values():
        logits, labels = d["logits"].double().numpy(), d["labels"].numpy()
        for w in range(windows):
            idx = rng.choice(len(labels), size=min(N, len(labels)), replace=False)
            harmed = float((logits[idx].argmax(1) == labels[idx]).mean()) < floor
            probs = torch.from_numpy(logits[idx]).float().softmax(-1)
            drift = bbsd.test(reference.state("bbsd"), reference.probs, probs, alpha=0.05, seed=w).drift
            est = estimate_accuracy(logits[idx], cal, methods=[PRIMARY], seed=w)[PRIMARY]
            hurt = est.ci_high < floor  # as refit.maintain.policy
            counts["windows"] += 1
            counts["harmed"] += harmed
            for name, fired in (("drift_only", drift), ("harm_aware", hurt), ("point", est.value < floor)):
                counts[name] += fired
                counts[f"{name}_missed"] += harmed and not fired
                counts[f"{name}_needless"] += fired and not harmed
    return {"floor": round(floor, 4), "margin_points": margin * 100, **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", type=Path)
    parser.add_argument("--windows", type=int, default=25)
    parser.add_argument("--pool", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", action="store_true", help="only rewrite estimate.md from estimate.json")
    args = parser.parse_args()
    if args.report:
        write_report(json.loads((RESULTS / "estimate.json").read_text()))
        return
    from refit.estimate import ESTIMATORS, load_calibration

    started = time.perf_counter()
    version = _version(args.version)
    cal = load_calibration(version)
    if cal is None:
        raise SystemExit(
            f"{version} has no calibration.json (made before refit.estimate): fine-tune it again."
        )
    scores = _scores(version, args.pool)
    validation = scores.pop("validation")
    data = scores
    per_domain = evaluate(data, cal, args.windows, args.seed, Variants(validation, cal))
    trig = triggers(data, cal, version, args.windows, args.seed, margin=0.05)
    methods = [*ESTIMATORS, *Variants.names, "no_change", "noise_floor"]
    overall = {m: round(float(np.mean([d["mae"][m] for d in per_domain.values()])), 2) for m in methods}
    shifted = [k for k in per_domain if not k.startswith("sst2")]
    overall_shifted = {
        m: round(float(np.mean([per_domain[k]["mae"][m] for k in shifted])), 2) for m in methods
    }
    # the harm case: domains where the model is worse than on validation (what a retrain trigger must see)
    harmed = [k for k, d in per_domain.items() if d["pool_accuracy"] < cal.accuracy]
    overall_harmed = {m: round(float(np.mean([per_domain[k]["mae"][m] for k in harmed])), 2) for m in methods}
    best = min([*ESTIMATORS, *Variants.names], key=lambda m: overall[m])
    best_shipped = min(ESTIMATORS, key=lambda m: overall[m])
    result = {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores (shared with other jobs), no GPU; "
        f"torch {torch.__version__}",
        "version": str(version),
        "calibration": {k: v for k, v in vars(cal).items()},
        "window": N,
        "windows_per_domain": args.windows,
        "pool": args.pool,
        "bootstrap": 200,
        "per_domain": per_domain,
        "mae_mean_over_domains": overall,
        "mae_mean_over_shifted_domains": overall_shifted,
        "harmed_domains": harmed,
        "mae_mean_over_harmed_domains": overall_harmed,
        "triggers": trig,
        "best": best,
        "best_shipped": best_shipped,
        "cbpe_f1_mae_mean": round(float(np.mean([d["cbpe_f1_mae"] for d in per_domain.values()])), 2),
        "seconds": round(time.perf_counter() - started),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "estimate.json").write_text(json.dumps(result, indent=2) + "\n")
    write_report(result)


def write_report(result: dict) -> None:
    """estimate.md from the figures in estimate.json (so the prose can be revised without re-scoring)."""
    from types import SimpleNamespace

    from refit.estimate import ESTIMATORS

    cal = SimpleNamespace(**result["calibration"])
    args = SimpleNamespace(windows=result["windows_per_domain"])
    per_domain, trig = result["per_domain"], result["triggers"]
    overall, overall_shifted = result["mae_mean_over_domains"], result["mae_mean_over_shifted_domains"]
    harmed, overall_harmed = result["harmed_domains"], result["mae_mean_over_harmed_domains"]
    best = result["best"]
    methods = [*ESTIMATORS, *Variants.names, "no_change", "noise_floor"]
    head = [
        "domain",
        "pool acc",
        *[f"{m} MAE" for m in methods],
        *[f"{m} cover" for m in ESTIMATORS],
        "pool macro-F1",
        "cbpe_f1 MAE",
    ]
    lines = [
        f"# Label-free accuracy estimation ({result['machine']})",
        "",
        f"MiniLM fine-tuned 1 epoch on 2000 sst2 rows; temperature {cal.temperature:.3f} fitted on sst2 "
        f"validation (n {cal.n}, accuracy {cal.accuracy:.3f}; ECE {cal.ece_before:.3f} -> "
        f"{cal.ece_after:.3f} out-of-fold). {args.windows} windows of {N} per domain (fewer rows: one window "
        f"of the pool); MAE in accuracy points vs the window's true accuracy; cover = share of windows whose "
        "true accuracy is inside the 95% bootstrap interval. `no_change` = validation accuracy as the "
        "estimate; `noise_floor` = an oracle that knows the pool's accuracy (sampling noise of a window).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for domain, d in per_domain.items():
        lines.append(
            f"| {domain} | {d['pool_accuracy']:.3f} | "
            + " | ".join(f"{d['mae'][m]:.2f}" for m in methods)
            + " | "
            + " | ".join(f"{d['coverage'][m]:.2f}" for m in ESTIMATORS)
            + f" | {d['pool_macro_f1']:.3f} | {d['cbpe_f1_mae']:.2f} |"
        )
    lines.append(
        "| **mean over domains** | | "
        + " | ".join(f"**{overall[m]:.2f}**" for m in methods)
        + " |"
        + " |" * (len(ESTIMATORS) + 2)
    )
    lines.append(
        "| mean over shifted domains | | "
        + " | ".join(f"{overall_shifted[m]:.2f}" for m in methods)
        + " |"
        + " |" * (len(ESTIMATORS) + 2)
    )
    lines.append(
        f"| mean over the {len(harmed)} domains where accuracy < validation's | | "
        + " | ".join(f"{overall_harmed[m]:.2f}" for m in methods)
        + " |"
        + " |" * (len(ESTIMATORS) + 2)
    )
    lines += [
        "",
        f"Best estimator: **{best}**, MAE {overall[best]:.2f} points averaged over domains "
        f"(goal <= 3: NOT met); {overall_harmed[best]:.2f} over the domains where the model is hurt "
        f"(accuracy below validation's: {', '.join(harmed)}). Took {result['seconds']} s "
        "(fine-tuning and scoring are cached under runs/bench-estimate/ by a first run: about 20 min for "
        "fine-tuning and 15 min for scoring on this machine shared with 5 other jobs, load 10-20, 2026-12-01).",
        "",
        "Candidate variants (class Variants in the script; point estimates, not shipped): `iw` importance-"
        "weighted validation accuracy (logistic domain classifier on a 32-d PCA of the version's mean-pooled "
        "embeddings, C 0.05, weights clipped at 20x the mean), `iw_doc` DoC on the re-weighted validation "
        "rows, `iw_cbpe` CBPE with the temperature refitted on the re-weighted rows, `atc_mc` ATC on "
        "max-probability (identical to `atc` here: with 2 classes max-probability and entropy order rows "
        "the same way), `cbpe_doc` the mean of the two. `cbpe_f1` is CBPE's expected macro-F1 "
        "(refit.estimate.estimate_f1) against the window's realised macro-F1.",
        "",
        "What the variants show:",
        "- Importance weighting fixes part of the failure on the short, easy inputs: uci_sentences "
        f"{per_domain[_UCI]['mae']['doc']:.1f} -> {per_domain[_UCI]['mae']['iw']:.1f} points (iw), "
        f"airline_tweets {per_domain[_AIR]['mae']['doc']:.1f} -> {per_domain[_AIR]['mae']['iw']:.1f}: the "
        "validation sentences that look like the window are the ones the model gets right more often. It "
        "breaks where the window has almost no look-alike among the validation rows (long Amazon reviews, "
        f"tweets: amazon_books {per_domain[_BOOKS]['mae']['doc']:.1f} -> "
        f"{per_domain[_BOOKS]['mae']['iw']:.1f}, sentiment140 {per_domain[_S140]['mae']['doc']:.1f} -> "
        f"{per_domain[_S140]['mae']['iw']:.1f}): presumably a few validation rows then carry most of the "
        f"weight (not measured here), so the estimate is their noisy accuracy. Averaged over domains no variant beats DoC "
        f"({', '.join(f'{m} {overall[m]:.2f}' for m in Variants.names)}).",
        "- So the gap to <= 3 points is not closed by re-weighting a 872-row validation set; it would need "
        "labelled examples closer to the production domains (or a few labels per window), not a cleverer "
        "use of the same confidences. This is one fine-tuned model (1 epoch, 2000 rows), 25 windows per "
        "domain, one seed.",
        f"- CBPE's expected macro-F1 errs like its accuracy where classes are balanced and more where the "
        f"prediction balance moves (mean {result['cbpe_f1_mae_mean']:.2f} points over domains; airline tweets, "
        "mostly negative, are the worst case).",
    ]
    lines += [
        "",
        f"Retrain triggers over the same {trig['windows']} windows (trigger rates only; the run with real retraining "
        f"and served accuracy is scripts/results/maintenance-triggers.md): floor = validation accuracy - 5 points = {trig['floor']:.3f}; {trig['harmed']} windows "
        "are truly below it.",
        "",
        "| trigger | fires | misses a harmed window | fires on an unharmed window |",
        "|---|---|---|---|",
        f"| drift-only (BBSD, alpha 0.05) | {trig['drift_only']} | {trig['drift_only_missed']} | "
        f"{trig['drift_only_needless']} |",
        f"| harm-aware (doc expected-accuracy upper bound < floor) | {trig['harm_aware']} | {trig['harm_aware_missed']} | "
        f"{trig['harm_aware_needless']} |",
        f"| point estimate (doc estimate < floor; not a shipped policy) | {trig['point']} | "
        f"{trig['point_missed']} | {trig['point_needless']} |",
        "",
        "The shipped rule reads the upper end of the 95% interval of the expected accuracy (row bootstrap; "
        "the realised-accuracy interval, wider by the binomial noise of a window, would need the estimate "
        "about 6 points under the floor at n = 200 and fired on 1 window of these, missing 98). Against "
        "drift-only it fires far less often and rarely needlessly, but it misses more truly harmed windows: "
        "at n = 200 it trades recall for precision. 'Truly harmed' is the window's realised accuracy, "
        "itself a noisy (about 2-3 points) measure of the domain's.",
    ]
    lines += [
        "",
        "Reading the table:",
        "- The goal (<= 3 points for the best estimator) is missed on the average over all domains and met "
        "(by doc) on the domains where the model is worse than on validation (the case a retrain trigger exists "
        "for; that subset is chosen with the labels, so it is a reading aid, not a held-out result).",
        "- All three under-estimate on domains the model finds easier but less familiar (short tweets and "
        "sentences: airline_tweets, uci_sentences): its confidence falls there while its accuracy rises, "
        "and no confidence-based estimator can tell the two apart. On these two the error is on the safe "
        "side for a retrain trigger (it over-states harm rather than hiding it), and it is why "
        "min_estimated_accuracy acts on the interval's upper end only.",
        "- ATC is badly off when the whole confidence distribution moves (long Amazon reviews truncated to 64 "
        "tokens: few inputs clear a threshold set on short SST sentences); CBPE and DoC, which average the "
        "confidences, degrade gracefully.",
        "- `cover` counts windows whose realised accuracy lies in the 95% interval; in-domain it is near "
        "0.95, under shift it falls with the estimator's bias, which the interval does not include.",
        "- The model is deliberately briefly trained (CPU shared): validation accuracy "
        f"{cal.accuracy:.3f}, and it was under-confident (T {cal.temperature:.2f} < 1) before calibration.",
    ]
    (RESULTS / "estimate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
