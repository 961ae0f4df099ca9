"""Label-free accuracy estimation on real text: CBPE, ATC, DoC, cbpe_ls, twoview against windows' true accuracy.

    python scripts/bench_estimate.py [--version DIR] [--windows 25] [--pool 600] [--source sst2]

The model: MiniLM fine-tuned here for one epoch on 2000 rows of ../shared/datasets/sst2 (max length 64),
cached under runs/bench-estimate/ with each domain's log-probabilities and embeddings (set REFIT_DATASETS
when the data sets are not in ../shared); fine-tuning stores its calibrator (temperature fitted on sst2
validation, refit.estimate; a calibrator from before format /2 gets its confusion table from the cached
validation scores, one from before /3 its twoview probe from the cached base-encoder embeddings of the training
rows). Besides the shipped estimators (cbpe, atc, doc, cbpe_ls, twoview) it evaluates candidate variants
(classes Variants, BaseView) and AutoEval-style meta-regressions (class Meta: leave-one-domain-out, and fitted on
synthetic shifts of validation only).
Each domain's pool is up to --pool labelled rows (test split, plus validation where the test split is small;
sentiment140: only its hand-labelled test split; the three UCI sentence sets pooled into one domain). From a
pool, --windows windows of 200 rows are drawn (without replacement within a window) and each estimator is
compared with the window's true accuracy. Reported per domain: mean absolute error (points), the share of
windows whose true accuracy lies in the estimator's 95% bootstrap interval, and two baselines:
"no change" (validation accuracy as the estimate) and the "noise floor" (the MAE of an oracle that knows
the pool's accuracy exactly: a window of 200 is itself a noisy measurement of it, about 2 points). The
--seed windows are the development draw; doc, cbpe_ls and twoview are also scored on FRESH_SEEDS draws.
Writes scripts/results/estimate.{json,md}.

--source NAME (the out-of-sample check of twoview, chosen on the sst2 model): the same recipe fine-tuned on
NAME instead (its validation split for calibration and the probe, cached under runs/bench-estimate/NAME-minilm),
NAME's test split as the in-domain pool, sst2 test as a shifted domain, the other domains as for sst2; the
estimators are refit.estimate's, unchanged. Writes scripts/results/estimate-NAME.{json,md} (no probe-sensitivity
table: that question is settled on sst2; no Meta variants: their synthetic windows need a larger validation split).
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
from _datasets import DATASETS, minilm_version  # noqa: E402

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
TRAIN_ROWS = 2000  # source rows the benchmark's version is fine-tuned on
TRIGGER_ESTIMATORS = ("doc", "cbpe_ls", "twoview")
FRESH_SEEDS = (101, 102, 103)  # window draws never looked at while twoview was developed (on seed 0)
SOURCE_READINGS = {  # --source NAME: the reading of estimate-NAME.md, written after its figures were seen
    "cr_customer_reviews": (
        "twoview's advantage holds on a model it was not chosen on, but its figure does not: the rule, "
        "unchanged, is again the best estimator (on the development draw also the best of every variant in "
        "this script), by about as much as on the sst2 model, and it is not carried by one domain (without "
        "airline_tweets, where doc fails, it still leads); the issue's goal (<= 3 points) is NOT met on this "
        "model. Expect about 3.5 points, not estimate.md's 2.8, on a model nobody tuned the rule on. What "
        "costs most here: sentiment140 (every estimator under-states it by 7-10 points; no_change is better) "
        "and amazon_electronics (over-stated by every estimator, the unsafe direction; twoview the least). "
        "twoview over-states imdb_reviews more than doc does. As an alarm (harm-aware, upper bound < floor) "
        "twoview and cbpe_ls fire on nearly the same windows (all but 2 of 275 agree: equal counts are not a "
        "copy), fewer needless alarms than doc for one more miss. One second model and one source domain: "
        "this is evidence, not proof, of transfer; cr's in-domain pool is its 376-row test split, so its "
        "windows overlap and its noise floor is low."
    ),
}
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


def _domains(source: str) -> dict[str, tuple[list[str], list[str]]]:
    """The pools for a version fine-tuned on `source`: its test split in-domain, sst2 test as one more shifted
    domain, every other domain as for sst2 (DOMAINS itself for sst2)."""
    if source == "sst2":
        return DOMAINS
    others = {k: v for k, v in DOMAINS.items() if source not in v[0] and not k.startswith("sst2")}
    return {f"{source} (in-domain)": ([source], ["test"]), "sst2": (["sst2"], ["test"]), **others}


def _version(path: Path | None, source: str = "sst2") -> Path:
    """The benchmark's version: `path`, else _datasets.minilm_version's recipe fine-tuned on `source` (sst2's is
    shared with the drift benchmarks)."""
    return path or minilm_version(
        CACHE, rows=TRAIN_ROWS, reference_size=256, max_length=MAX_LENGTH, source=source
    )


def _scores(version: Path, pool: int, source: str = "sst2") -> dict[str, dict]:
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
    for domain, (names, splits) in {"validation": ([source], ["validation"]), **_domains(source)}.items():
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


def _lengths(version: Path, pool: int, vid: str, source: str = "sst2") -> dict[str, np.ndarray]:
    """Untruncated token count of every row of every pool (same rows and order as _scores), cached: a
    window-level feature of the meta-regression variants (long reviews are truncated at MAX_LENGTH)."""
    cache = CACHE / f"lengths-{vid}-{pool}.npz"
    keys = ["validation", *_domains(source)]
    if cache.is_file():
        z = np.load(cache)
        return {k: z[f"d{i}"] for i, k in enumerate(keys)}
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(version / "model")
    out = {}
    for domain, (names, splits) in {"validation": ([source], ["validation"]), **_domains(source)}.items():
        rows = _rows(names, splits)
        if domain != "validation":
            rows = random.Random(0).sample(rows, min(len(rows), pool))
        out[domain] = np.array([len(tokenizer(r["text"])["input_ids"]) for r in rows])
    np.savez(cache, **{f"d{i}": out[k] for i, k in enumerate(keys)})
    return out


def _base_embeddings(pool: int, vid: str, source: str = "sst2") -> dict[str, np.ndarray]:
    """Every pool's rows (same rows and order as _scores), sst2 validation and the version's 2000 training rows
    embedded by the BASE encoder (pre-trained MiniLM, mean-pooled last layer, max length MAX_LENGTH: how a
    version's drift reference is embedded with data.reference_encoder base), cached: the label-blind second
    view of the inputs that the base-embedding variants (class BaseView) read."""
    cache = CACHE / f"base-embeddings-{vid}-{pool}.npz"
    keys = ["train", "validation", *_domains(source)]
    if cache.is_file():
        z = np.load(cache)
        return {**{k: z[f"d{i}"] for i, k in enumerate(keys)}, "train_labels": z["train_labels"]}
    from refit.drift.embed import ENCODER_LAYER, ENCODER_POOLING, load_encoder
    from refit.models import encode_texts

    model, tokenizer, _ = load_encoder("minilm")
    out = {}
    groups = {"train": ([source], ["train"]), "validation": ([source], ["validation"]), **_domains(source)}
    for domain, (names, splits) in groups.items():
        rows = _rows(names, splits)
        if domain == "train":
            rows = rows[
                :TRAIN_ROWS
            ]  # the rows the version was fine-tuned on (max_train_samples keeps the first)
        elif domain != "validation":
            rows = random.Random(0).sample(rows, min(len(rows), pool))
        texts = [r["text"] for r in rows]
        emb = encode_texts(model, tokenizer, texts, 64, MAX_LENGTH, ENCODER_POOLING, ENCODER_LAYER, "cpu")
        out[domain] = emb.embeddings.numpy()
        out[f"{domain}/labels"] = np.array([r["label"] for r in rows])
        print(f"base-embedded {domain}: {len(rows)} rows", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **{f"d{i}": out[k] for i, k in enumerate(keys)}, train_labels=out["train/labels"])
    return {**{k: out[k] for k in keys}, "train_labels": out["train/labels"]}


def _with_confusion(cal, validation: dict):
    """A calibrator from before format /2 (no confusion table) completed from the cached validation scores:
    the same rows it was fitted on, so this is what fine-tuning now stores."""
    import dataclasses

    from refit.estimate import fit_calibration

    if cal.confusion is not None:
        return cal
    fitted = fit_calibration(validation["logits"].double().numpy(), validation["labels"].numpy())
    return dataclasses.replace(cal, confusion=fitted.confusion, class_prior=fitted.class_prior)


def _with_probe(cal, validation: dict, base: dict[str, np.ndarray]):
    """A calibrator from before format /3 (no probe) completed from the cached base embeddings of the training
    rows and validation: the same fit (refit.estimate.fit_probe) fine-tuning now stores."""
    import dataclasses

    from refit.estimate import fit_probe

    if cal.probe is not None:
        return cal
    probe = fit_probe(
        base["train"],
        base["train_labels"],
        base["validation"],
        validation["logits"].double().numpy(),
        validation["labels"].numpy(),
    )
    return dataclasses.replace(cal, probe=probe, no_probe="")


class Meta:
    """AutoEval-style meta-regression (Deng & Zheng, CVPR 2021; Guillory et al.'s DoC regression): a ridge
    regression from label-free window features to the window's accuracy, fitted on LABELLED windows.

    It predicts the residual of a base estimator (doc or cbpe_ls), so strong regularisation falls back to the
    base. Features (each window of n rows, relative to the version's validation split where it matters):
    the shipped estimators' values and their differences, mean entropy, predicted-positive share and its
    shift, BBSE's prior shift, mean log token length and share truncated at MAX_LENGTH, distance between
    the window's and validation's mean (normalised) embedding, mean nearest-validation-neighbour cosine,
    the sd of max-probability and its KS distance to validation's. Alpha is chosen by cross-validation over
    groups of the training windows (leave one domain, or one synthetic shift family, out).

    Two ways to get labelled windows:
    - lodo: every other domain's windows plus random validation windows (what late production labels give
      an estimator once it has seen other shifts); the held-out domain never reaches its fit.
    - synth: no external labels at all, only synthetic shifts of the version's own validation split
      (random, length-stratified and class-rebalanced subsamples): what a new version has.
    """

    names = ("meta_doc_lodo", "meta_ls_lodo", "meta_doc_synth", "meta_ls_synth")
    alphas = (0.1, 1.0, 10.0, 100.0, 1000.0)

    def __init__(self, validation: dict, lengths: np.ndarray, cal) -> None:
        self.cal = cal
        emb = validation["embeddings"].double().numpy()
        self.emb_val = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        self.mean_val = self.emb_val.mean(0)
        self.logp_val = validation["logits"].double().numpy()
        self.labels_val = validation["labels"].numpy()
        self.len_val = lengths
        self.conf_val = np.sort(np.exp(self.logp_val).max(1))
        self.pos_val = float(self.logp_val.argmax(1).mean())
        self.loglen_val = float(np.log(lengths).mean())

    def features(self, logp: np.ndarray, emb: np.ndarray, lengths: np.ndarray) -> dict[str, float]:
        from refit.estimate import ESTIMATORS, window_prior
        from refit.estimate.calibration import neg_entropy

        emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        conf = np.exp(logp).max(1)
        est = {m: float(ESTIMATORS[m](logp, self.cal).mean()) for m in ("cbpe", "atc", "doc", "cbpe_ls")}
        pos = float(logp.argmax(1).mean())
        grid = np.sort(np.r_[conf, self.conf_val])
        cdf = lambda a: np.searchsorted(np.sort(a), grid, side="right") / len(a)  # noqa: E731
        return {
            "doc": est["doc"],
            "cbpe_ls": est["cbpe_ls"],
            "cbpe-doc": est["cbpe"] - est["doc"],
            "atc-doc": est["atc"] - est["doc"],
            "ls-doc": est["cbpe_ls"] - est["doc"],
            "entropy": float(-neg_entropy(self.cal.calibrate(logp)).mean()),
            "pos_shift": pos - self.pos_val,
            "abs_pos_shift": abs(pos - self.pos_val),
            "prior_shift": float(window_prior(logp, self.cal)[-1] - self.cal.class_prior[-1]),
            "loglen_shift": float(np.log(lengths).mean()) - self.loglen_val,
            "truncated": float((lengths > MAX_LENGTH).mean()),
            "emb_dist": float(np.linalg.norm(emb.mean(0) - self.mean_val)),
            "nn_cos": float((emb @ self.emb_val.T).max(1).mean()),
            "conf_sd": float(conf.std()),
            "conf_ks": float(np.abs(cdf(conf) - cdf(self.conf_val)).max()),
        }

    def synthetic_windows(self, seed: int, per: int = 10) -> tuple[list[dict], list[float], list[str]]:
        """(features, accuracy, family) of validation subsamples of N rows under synthetic shifts."""
        rng = np.random.default_rng(seed)
        correct = (self.logp_val.argmax(1) == self.labels_val).astype(np.float64)
        rows = np.arange(len(correct))
        by_len = rows[np.argsort(self.len_val, kind="stable")]
        thirds = np.array_split(by_len, 3)
        pools = {"random": [rows]}
        pools["length"] = thirds + [np.r_[thirds[0], thirds[1]], np.r_[thirds[1], thirds[2]]]
        pos, neg = rows[self.labels_val == 1], rows[self.labels_val == 0]
        feats, accs, fams = [], [], []
        for family, subsets in pools.items():
            for sub in subsets:
                for _ in range(per):
                    idx = rng.choice(sub, size=min(N, len(sub)), replace=False)
                    feats.append(self._row_features(idx))
                    accs.append(float(correct[idx].mean()))
                    fams.append(family)
        for share in (0.1, 0.25, 0.4, 0.6, 0.75, 0.9):
            for _ in range(per):
                k = int(round(share * N))
                idx = np.r_[rng.choice(pos, k, replace=False), rng.choice(neg, N - k, replace=False)]
                feats.append(self._row_features(idx))
                accs.append(float(correct[idx].mean()))
                fams.append(f"balance {share}")
        return feats, accs, fams

    def _row_features(self, idx: np.ndarray) -> dict[str, float]:
        emb = self.emb_val[idx]
        return self.features(self.logp_val[idx], emb, self.len_val[idx])

    @classmethod
    def fit_predict(
        cls, train: list[dict], truth: list[float], groups: list[str], test: list[dict], base: str
    ):
        """Ridge on the residual truth - base, alpha by leave-one-group-out; predictions for `test`."""
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        cols = [c for c in train[0] if c not in ("doc", "cbpe_ls")] + ["doc"]
        x = np.array([[f[c] for c in cols] for f in train])
        y = np.array(truth) - np.array([f[base] for f in train])
        g = np.array(groups)

        def model(alpha: float):
            return make_pipeline(StandardScaler(), Ridge(alpha=alpha))

        def cv_error(alpha: float) -> float:
            errs = []
            for held in np.unique(g):
                m = model(alpha).fit(x[g != held], y[g != held])
                errs.append(np.abs(m.predict(x[g == held]) - y[g == held]).mean())
            return float(np.mean(errs))

        alpha = min(cls.alphas, key=cv_error)
        m = model(alpha).fit(x, y)
        xt = np.array([[f[c] for c in cols] for f in test])
        pred = np.array([f[base] for f in test]) + m.predict(xt)
        return np.clip(pred, 0.0, 1.0), alpha


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


class BaseView:
    """Variants on the base encoder's embeddings that did not become twoview (point estimates, not shipped),
    kept so the log in estimate.md can be re-measured; twoview's own parts are refit.estimate's.

    - iw_base / iw_doc_base: Variants' iw and iw_doc with the domain classifier on the base encoder's
      embeddings instead of the version's.
    - stack_doc: DoC on the stacked (version + probe) max-probability, never label-shift corrected.
    - stack_ls: the stack re-weighted by the version's BBSE prior, always (twoview without its gate).
    - gate_doc_ls: twoview's gate choosing between the shipped doc and cbpe_ls (no stack).
    """

    names = ("iw_base", "iw_doc_base", "stack_doc", "stack_ls", "gate_doc_ls")

    def __init__(self, validation: dict, base_validation: np.ndarray, cal) -> None:
        self.cal = cal
        self.iw = Variants({**validation, "embeddings": torch.from_numpy(base_validation)}, cal)

    def __call__(self, logp: np.ndarray, base: np.ndarray) -> dict[str, float]:
        from refit.estimate import ESTIMATORS, window_prior
        from refit.estimate.estimators import _at, _bbse, _shift

        cal, probe = self.cal, self.cal.probe
        prior = np.asarray(cal.class_prior)
        w = self.iw.weights(base)
        iw_acc = float(w @ self.iw.correct_val)
        second = probe.logits(base)
        stacked = probe.stack(logp, second)
        version_prior = window_prior(logp, cal)
        probe_prior = _bbse(second.argmax(-1), np.asarray(probe.confusion), prior)
        agree = float((version_prior - prior) @ (probe_prior - prior)) > 0
        out = {
            "iw_base": iw_acc,
            "iw_doc_base": iw_acc - float(w @ self.iw.conf_val) + float(np.exp(logp).max(1).mean()),
            "stack_doc": float(cal.accuracy - probe.stack_mean_confidence + stacked.max(-1).mean()),
            "stack_ls": float(_at(_shift(stacked, version_prior, prior), logp.argmax(-1)).mean()),
            "gate_doc_ls": float(ESTIMATORS["cbpe_ls" if agree else "doc"](logp, cal).mean()),
        }
        return {k: min(1.0, max(0.0, v)) for k, v in out.items()}


def evaluate(
    data: dict[str, dict],
    cal,
    windows: int,
    seed: int,
    variants: Variants,
    base_view: BaseView,
    meta: Meta | None,
    lengths: dict[str, np.ndarray],
) -> dict:
    from sklearn.metrics import f1_score

    from refit.estimate import ESTIMATORS, estimate_accuracy, estimate_f1

    rng = np.random.default_rng(seed)
    per_domain = {}
    window_features: dict[str, list[tuple[dict, float]]] = {}  # domain -> (features, truth) per window
    for domain, d in data.items():
        logits, labels = d["logits"].double().numpy(), d["labels"].numpy()
        f1_errors = []
        emb = d["embeddings"].double().numpy()
        correct = logits.argmax(1) == labels
        pool_acc = float(correct.mean())
        n = min(N, len(labels))
        errors = {m: [] for m in [*ESTIMATORS, *Variants.names, *BaseView.names, "no_change", "noise_floor"]}
        window_features[domain] = []
        signed = {m: [] for m in [*ESTIMATORS, *Variants.names, *BaseView.names]}
        covered = {m: 0 for m in ESTIMATORS}
        for w in range(windows):
            idx = rng.choice(len(labels), size=n, replace=False)
            truth = float(correct[idx].mean())
            for m, e in estimate_accuracy(logits[idx], cal, seed=w, embeddings=d["base"][idx]).items():
                errors[m].append(abs(e.value - truth) * 100)
                signed[m].append((e.value - truth) * 100)
                covered[m] += e.low <= truth <= e.high
            if meta is not None:
                window_features[domain].append(
                    (meta.features(logits[idx], emb[idx], lengths[domain][idx]), truth)
                )
            for m, v in {**variants(logits[idx], emb[idx]), **base_view(logits[idx], d["base"][idx])}.items():
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
    if meta is not None:
        _meta_errors(per_domain, window_features, meta, seed)
    return per_domain


def _meta_errors(per_domain: dict, window_features: dict, meta: Meta, seed: int) -> None:
    """The Meta variants' MAE and bias per domain: lodo fits on every OTHER domain's windows plus random
    validation windows; synth on synthetic validation windows only (one fit serves every domain)."""
    synth_x, synth_y, synth_g = meta.synthetic_windows(seed)
    val_x = [f for f, g in zip(synth_x, synth_g) if g == "random"]
    val_y = [y for y, g in zip(synth_y, synth_g) if g == "random"]
    for domain, wins in window_features.items():
        test, truth = [f for f, _ in wins], np.array([t for _, t in wins])
        train_x, train_y, train_g = list(val_x), list(val_y), ["validation"] * len(val_x)
        for other, ows in window_features.items():
            if other != domain:  # the held-out domain's windows never reach its fit
                train_x += [f for f, _ in ows]
                train_y += [t for _, t in ows]
                train_g += [other] * len(ows)
        d = per_domain[domain]
        d.setdefault("meta_alpha", {})
        for base, tag in (("doc", "doc"), ("cbpe_ls", "ls")):
            for kind, (x, y, g) in (
                ("lodo", (train_x, train_y, train_g)),
                ("synth", (synth_x, synth_y, synth_g)),
            ):
                pred, alpha = Meta.fit_predict(x, y, g, test, base)
                name = f"meta_{tag}_{kind}"
                d["mae"][name] = round(float(np.mean(np.abs(pred - truth))) * 100, 2)
                d["bias"][name] = round(float(np.mean(pred - truth)) * 100, 2)
                d["meta_alpha"][name] = alpha
        print(domain, {m: d["mae"][m] for m in Meta.names}, flush=True)


def other_window_seeds(data: dict[str, dict], cal, windows: int, seeds: tuple[int, ...]) -> dict:
    """MAE of doc, cbpe_ls and twoview on fresh window draws (same model, same pools): the mean over domains
    per seed, and per domain averaged over the seeds (with the signed error: + is over-stated accuracy)."""
    from refit.estimate import estimate_accuracy

    means, per = {}, {k: {m: [] for m in TRIGGER_ESTIMATORS} for k in data}
    signed = {k: {m: [] for m in TRIGGER_ESTIMATORS} for k in data}
    for seed in seeds:
        rng, mae = np.random.default_rng(seed), {m: [] for m in TRIGGER_ESTIMATORS}
        for k, d in data.items():
            logits, labels = d["logits"].double().numpy(), d["labels"].numpy()
            errs = {m: [] for m in mae}
            for w in range(windows):
                idx = rng.choice(len(labels), size=min(N, len(labels)), replace=False)
                truth = float((logits[idx].argmax(1) == labels[idx]).mean())
                est = estimate_accuracy(
                    logits[idx], cal, methods=list(mae), bootstrap=2, seed=w, embeddings=d["base"][idx]
                )
                for m in mae:
                    errs[m].append((est[m].value - truth) * 100)
            for m in mae:
                mae[m].append(float(np.mean(np.abs(errs[m]))))
                per[k][m].append(float(np.mean(np.abs(errs[m]))))
                signed[k][m].append(float(np.mean(errs[m])))
        means[str(seed)] = {m: round(float(np.mean(v)), 2) for m, v in mae.items()}
    per_domain = {
        k: {
            "mae": {m: round(float(np.mean(v)), 2) for m, v in per[k].items()},
            "bias": {m: round(float(np.mean(v)), 2) for m, v in signed[k].items()},
        }
        for k in data
    }
    return {"seeds": means, "per_domain": per_domain}


def probe_sensitivity(
    data: dict[str, dict], cal, validation: dict, base: dict, windows: int, seeds: tuple
) -> dict:
    """twoview's mean MAE over domains (point estimates) with its probe refitted at other regularisations and
    on fewer training rows: how much the result rests on the shipped defaults (C 1, data.probe_rows 2000 rows). Not a
    search: the shipped values were fixed before this was measured, and are not changed by it."""
    import dataclasses

    import refit.estimate.probe as probe_module
    from refit.estimate import ESTIMATORS, fit_probe

    shipped_c, out = probe_module.PROBE_C, {}
    logits_val, labels_val = validation["logits"].double().numpy(), validation["labels"].numpy()
    try:
        for c in (0.3, 1.0, 3.0, 10.0):
            probe_module.PROBE_C = c
            for rows in (500, 1000, TRAIN_ROWS):
                fitted = fit_probe(
                    base["train"][:rows],
                    base["train_labels"][:rows],
                    base["validation"],
                    logits_val,
                    labels_val,
                )
                variant = dataclasses.replace(cal, probe=fitted, no_probe="")
                means = []
                for seed in seeds:
                    rng, per = np.random.default_rng(seed), []
                    for d in data.values():
                        logits, labels = d["logits"].double().numpy(), d["labels"].numpy()
                        errs = []
                        for _ in range(windows):
                            idx = rng.choice(len(labels), size=min(N, len(labels)), replace=False)
                            truth = float((logits[idx].argmax(1) == labels[idx]).mean())
                            second = fitted.logits(d["base"][idx])
                            value = float(
                                np.clip(ESTIMATORS["twoview"](logits[idx], variant, second).mean(), 0, 1)
                            )
                            errs.append(abs(value - truth) * 100)
                        per.append(float(np.mean(errs)))
                    means.append(float(np.mean(per)))
                out[f"C {c:g}, {rows} rows"] = {str(s): round(m, 2) for s, m in zip(seeds, means)}
    finally:
        probe_module.PROBE_C = shipped_c
    return out


def triggers(data: dict[str, dict], cal, version: Path, windows: int, seed: int, margin: float) -> dict:
    """Which windows each retrain trigger would fire on (no retraining: a trigger-rate comparison only).

    drift-only: BBSD (KS on the model's probabilities vs its stored reference, alpha 0.05), the one drift test
    that needs no embeddings; harm-aware: the upper end of an estimator's interval for the expected accuracy
    (what policy.min_estimated_accuracy reads) below validation accuracy - margin, for doc, cbpe_ls and
    twoview.
    A window is truly harmed when its realised accuracy is below that floor.
    """
    from refit.drift import DETECTORS
    from refit.drift.reference import load_reference
    from refit.estimate import estimate_accuracy

    reference = load_reference(version)
    bbsd = DETECTORS["bbsd"]
    floor = cal.accuracy - margin
    rng = np.random.default_rng(seed + 1)
    rules = ["drift_only", *(f"{k}_{m}" for m in TRIGGER_ESTIMATORS for k in ("harm_aware", "point"))]
    counts = {"windows": 0, "harmed": 0}
    widths = {m: [] for m in TRIGGER_ESTIMATORS}
    for r in rules:
        counts.update({r: 0, f"{r}_missed": 0, f"{r}_needless": 0})
    for d in data.values():
        logits, labels = d["logits"].double().numpy(), d["labels"].numpy()
        for w in range(windows):
            idx = rng.choice(len(labels), size=min(N, len(labels)), replace=False)
            harmed = float((logits[idx].argmax(1) == labels[idx]).mean()) < floor
            probs = torch.from_numpy(logits[idx]).float().softmax(-1)
            fired = {
                "drift_only": bbsd.test(
                    reference.state("bbsd"), reference.probs, probs, alpha=0.05, seed=w
                ).drift
            }
            est = estimate_accuracy(
                logits[idx], cal, methods=list(TRIGGER_ESTIMATORS), seed=w, embeddings=d["base"][idx]
            )
            for m in TRIGGER_ESTIMATORS:
                widths[m].append((est[m].ci_high - est[m].ci_low) * 100)
                fired[f"harm_aware_{m}"] = est[m].ci_high < floor  # as refit.maintain.policy
                fired[f"point_{m}"] = est[m].value < floor
            counts["windows"] += 1
            counts["harmed"] += harmed
            for name, f in fired.items():
                counts[name] += bool(f)
                counts[f"{name}_missed"] += harmed and not f
                counts[f"{name}_needless"] += bool(f) and not harmed
    mean_width = {m: round(float(np.mean(v)), 2) for m, v in widths.items()}
    return {"floor": round(floor, 4), "margin_points": margin * 100, **counts, "ci_width_points": mean_width}


def probe_cost(version: Path, repeats: int = 2) -> dict:
    """Wall time of what fine-tuning adds for twoview (a timed run: take the machine-wide bench lock): load the
    base encoder and fingerprint it, embed TRAIN_ROWS training rows and sst2 validation (max length
    MAX_LENGTH), fit_probe. The first repeat includes cold file reads."""
    from _datasets import read_rows

    from refit.drift.embed import ENCODER_LAYER, ENCODER_POOLING, fingerprint, load_encoder
    from refit.estimate import fit_probe
    from refit.models import encode_texts

    vid = json.loads((version / "refit.json").read_text())["version_id"]
    logp = torch.load(CACHE / f"scores-{vid}-600.pt", weights_only=True)["validation"]["logits"]
    train, val = read_rows("sst2", "train")[:TRAIN_ROWS], read_rows("sst2", "validation")
    out = {"load_before": os.getloadavg(), "threads": torch.get_num_threads(), "rows": len(train) + len(val)}
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model, tokenizer, _ = load_encoder("minilm")
        fingerprint(model)
        t1 = time.perf_counter()
        emb = [
            encode_texts(
                model,
                tokenizer,
                [r["text"] for r in rows],
                64,
                MAX_LENGTH,
                ENCODER_POOLING,
                ENCODER_LAYER,
                "cpu",
            ).embeddings.numpy()
            for rows in (train, val)
        ]
        t2 = time.perf_counter()
        labels = [np.array([r["label"] for r in rows]) for rows in (train, val)]
        fit_probe(emb[0], labels[0], emb[1], logp.double().numpy(), labels[1])
        runs.append(
            {"load_s": t1 - t0, "embed_s": time.perf_counter() - t1 - 0, "fit_s": time.perf_counter() - t2}
        )
        runs[-1]["embed_s"] = t2 - t1
    out["runs"] = [{k: round(v, 2) for k, v in r.items()} for r in runs]
    out["load_after"] = os.getloadavg()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", type=Path)
    parser.add_argument("--windows", type=int, default=25)
    parser.add_argument("--pool", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--source",
        default="sst2",
        help="data set the version is fine-tuned on (sst2: estimate.md; another: estimate-SOURCE.md)",
    )
    parser.add_argument("--report", action="store_true", help="only rewrite estimate.md from estimate.json")
    parser.add_argument(
        "--probe-cost",
        action="store_true",
        help="time what fine-tuning adds for twoview (run under the bench lock), into estimate.json, and rewrite",
    )
    args = parser.parse_args()
    stem = "estimate" if args.source == "sst2" else f"estimate-{args.source}"
    if args.source != "sst2" and args.probe_cost:
        parser.error("--probe-cost is measured on the sst2 version only")
    if args.report and args.source != "sst2":
        write_source_report(json.loads((RESULTS / f"{stem}.json").read_text()))
        return
    if args.report or args.probe_cost:
        result = json.loads((RESULTS / "estimate.json").read_text())
        if args.probe_cost:
            result["probe_cost"] = probe_cost(_version(args.version))
            (RESULTS / "estimate.json").write_text(json.dumps(result, indent=2) + "\n")
        write_report(result)
        return
    from refit.estimate import ESTIMATORS, load_calibration

    started = time.perf_counter()
    load_before = os.getloadavg()
    version = _version(args.version, args.source)
    cal = load_calibration(version)
    if cal is None:
        raise SystemExit(
            f"{version} has no calibration.json (made before refit.estimate): fine-tune it again."
        )
    scores = _scores(version, args.pool, args.source)
    validation = scores.pop("validation")
    cal = _with_confusion(cal, validation)
    vid = json.loads((version / "refit.json").read_text())["version_id"]
    lengths = _lengths(version, args.pool, vid, args.source)
    base = _base_embeddings(args.pool, vid, args.source)
    cal = _with_probe(cal, validation, base)
    data = scores
    for domain, d in data.items():
        d["base"] = base[domain]
    # Meta's synthetic validation windows need more validation rows than a small source has (376 for cr)
    meta = Meta(validation, lengths["validation"], cal) if args.source == "sst2" else None
    meta_names = Meta.names if meta is not None else []
    base_view = BaseView(validation, base["validation"], cal)
    per_domain = evaluate(
        data, cal, args.windows, args.seed, Variants(validation, cal), base_view, meta, lengths
    )
    trig = triggers(data, cal, version, args.windows, args.seed, margin=0.05)
    fresh = other_window_seeds(data, cal, args.windows, FRESH_SEEDS)
    sensitivity = (
        probe_sensitivity(data, cal, validation, base, args.windows, (args.seed, *FRESH_SEEDS))
        if args.source == "sst2"
        else {}
    )
    methods = [*ESTIMATORS, *Variants.names, *BaseView.names, *meta_names, "no_change", "noise_floor"]
    overall = {m: round(float(np.mean([d["mae"][m] for d in per_domain.values()])), 2) for m in methods}
    shifted = [k for k in per_domain if not k.endswith("(in-domain)")]
    overall_shifted = {
        m: round(float(np.mean([per_domain[k]["mae"][m] for k in shifted])), 2) for m in methods
    }
    # the harm case: domains where the model is worse than on validation (what a retrain trigger must see)
    harmed = [k for k, d in per_domain.items() if d["pool_accuracy"] < cal.accuracy]
    overall_harmed = {m: round(float(np.mean([per_domain[k]["mae"][m] for k in harmed])), 2) for m in methods}
    best = min([*ESTIMATORS, *Variants.names, *BaseView.names, *meta_names], key=lambda m: overall[m])
    best_shipped = min(ESTIMATORS, key=lambda m: overall[m])
    result = {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores (shared with other jobs), no GPU; "
        f"torch {torch.__version__}",
        "version": str(version),
        "source": args.source,
        "calibration": {k: v for k, v in vars(cal).items() if k != "probe"},
        "probe": {k: v for k, v in cal.probe.to_dict().items() if k not in ("coef", "intercept")},
        "development_seed": args.seed,
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
        "fresh_seeds": fresh["seeds"],
        "fresh_per_domain": fresh["per_domain"],
        "probe_sensitivity": sensitivity,
        "best": best,
        "best_shipped": best_shipped,
        "cbpe_f1_mae_mean": round(float(np.mean([d["cbpe_f1_mae"] for d in per_domain.values()])), 2),
        "seconds": round(time.perf_counter() - started),
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }
    previous = RESULTS / "estimate.json"
    if args.source == "sst2" and previous.is_file() and "probe_cost" in json.loads(previous.read_text()):
        result["probe_cost"] = json.loads(previous.read_text())[
            "probe_cost"
        ]  # timed separately (--probe-cost)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (write_report if args.source == "sst2" else write_source_report)(result)


def sensitivity_lines(result: dict) -> list[str]:
    """The probe-sensitivity table (probe_sensitivity's figures), or nothing when it was not measured."""
    sens = result.get("probe_sensitivity")
    if not sens:
        return []
    seeds = list(next(iter(sens.values())))
    dev = str(result["development_seed"])
    lines = [
        "How much the result rests on the probe's shipped settings (C 1, all 2000 training rows; fixed before "
        "this was measured, not changed by it): twoview's mean MAE over the 11 domains with the probe refitted "
        f"at other settings, on the development draw (seed {dev}) and the fresh ones:",
        "",
        "| probe | "
        + " | ".join(f"seed {s}{' (dev)' if s == dev else ''}" for s in seeds)
        + " | fresh mean |",
        "|---|" + "---|" * (len(seeds) + 1),
    ]
    for name, v in sens.items():
        fresh = np.mean([v[s] for s in seeds if s != dev])
        lines.append(f"| {name} | " + " | ".join(f"{v[s]:.2f}" for s in seeds) + f" | {fresh:.2f} |")
    fresh_all = {k: float(np.mean([v[s] for s in seeds if s != dev])) for k, v in sens.items()}
    under = [k for k, m in fresh_all.items() if m <= 3]
    rest = [m for m in fresh_all.values() if m > 3]
    ls = np.mean([v["cbpe_ls"] for v in result["fresh_seeds"].values()])
    lines += [
        "",
        f"At or under 3 on the fresh draws: {'; '.join(under) or 'none'}; the other {len(rest)} from "
        f"{min(rest, default=0):.2f} to {max(rest, default=0):.2f}, "
        f"{'every one' if max(fresh_all.values()) < ls else 'not all'} below cbpe_ls ({ls:.2f}). So the goal is met only with "
        "the probe fitted on all 2000 training rows at moderate regularisation: a probe on fewer rows is "
        "weaker and its stack helps less, and at C 10 the gate misses airline_tweets more often. A version "
        "trained on fewer rows than this should not expect the benchmark's figure.",
        "",
    ]
    return lines


def probe_cost_text(cost: dict) -> str:
    """One sentence of the probe's fine-tune-time cost (probe_cost's figures)."""
    runs = cost["runs"]
    total = " / ".join(f"{r['load_s'] + r['embed_s'] + r['fit_s']:.1f}" for r in runs)
    embed = " / ".join(f"{r['embed_s']:.1f}" for r in runs)
    return (
        f"loading and fingerprinting the base encoder, embedding {cost['rows']} rows (training sample and "
        f"validation, max length {MAX_LENGTH}) and fitting the probe took {total} s "
        f"in {len(runs)} repeats (embedding {embed} s; the first "
        f"repeat reads the files cold), {cost['threads']} threads, a timed run under the machine-wide lock, load "
        f"average before {tuple(round(x, 1) for x in cost['load_before'])}, after "
        f"{tuple(round(x, 1) for x in cost['load_after'])}; this version's 1-epoch fine-tune on 2000 rows took "
        "1039 s (refit.json, another run and load)."
    )


def fresh_table(per_domain: dict, mean: dict, per_seed: dict) -> list[str]:
    """Markdown rows: MAE and bias of TRIGGER_ESTIMATORS per domain on the fresh draws, their mean, per seed."""
    cols, blank = TRIGGER_ESTIMATORS, " |" * len(TRIGGER_ESTIMATORS)
    return [
        "| domain | "
        + " | ".join(f"{m} MAE" for m in cols)
        + " | "
        + " | ".join(f"{m} bias" for m in cols)
        + " |",
        "|---|" + "---|" * (2 * len(cols)),
        *(
            f"| {k} | "
            + " | ".join(f"{v['mae'][m]:.2f}" for m in cols)
            + " | "
            + " | ".join(f"{v['bias'][m]:+.2f}" for m in cols)
            + " |"
            for k, v in per_domain.items()
        ),
        "| **mean over domains** | " + " | ".join(f"**{mean[m]:.2f}**" for m in cols) + " |" + blank,
        *(
            f"| seed {s} | " + " | ".join(f"{v[m]:.2f}" for m in cols) + " |" + blank
            for s, v in per_seed.items()
        ),
    ]


def trigger_table(trig: dict) -> list[str]:
    """The retrain-trigger table (triggers' counts) with its one-line heading."""
    rows = [("drift-only (BBSD, alpha 0.05)", "drift_only")]
    for m in TRIGGER_ESTIMATORS:
        rows += [
            (f"harm-aware ({m} expected-accuracy upper bound < floor)", f"harm_aware_{m}"),
            (f"point estimate ({m} estimate < floor; not a shipped policy)", f"point_{m}"),
        ]
    return [
        f"Retrain triggers over the same {trig['windows']} windows (trigger rates only; the run with real "
        "retraining and served accuracy is scripts/results/maintenance-triggers.md): floor = validation "
        f"accuracy - 5 points = {trig['floor']:.3f}; {trig['harmed']} windows are truly below it.",
        "",
        "| trigger | fires | misses a harmed window | fires on an unharmed window |",
        "|---|---|---|---|",
        *(f"| {label} | {trig[k]} | {trig[f'{k}_missed']} | {trig[f'{k}_needless']} |" for label, k in rows),
    ]


def write_source_report(result: dict) -> None:
    """estimate-SOURCE.md (the out-of-sample check, --source) from its json: the shipped estimators only, next
    to the sst2 model's figures from estimate.json, with the reading first."""
    source, cal, probe = result["source"], result["calibration"], result["probe"]
    per_domain, fresh, fresh_pd = result["per_domain"], result["fresh_seeds"], result["fresh_per_domain"]
    overall, harmed, trig = result["mae_mean_over_domains"], result["harmed_domains"], result["triggers"]
    fresh_mean = {m: float(np.mean([v[m] for v in fresh.values()])) for m in TRIGGER_ESTIMATORS}
    fresh_overall = {m: float(np.mean([d["mae"][m] for d in fresh_pd.values()])) for m in TRIGGER_ESTIMATORS}
    ref = RESULTS / "estimate.json"
    sst2 = json.loads(ref.read_text()) if ref.is_file() else None
    probe_acc = sum(probe["confusion"][k][k] for k in range(len(probe["confusion"])))
    cols = ["doc", "cbpe_ls", "twoview", "no_change", "noise_floor"]
    over_dev = {m: max(per_domain[k]["bias"][m] for k in harmed) for m in TRIGGER_ESTIMATORS}
    over_fresh = {m: max(fresh_pd[k]["bias"][m] for k in harmed) for m in TRIGGER_ESTIMATORS}
    ranked = sorted(TRIGGER_ESTIMATORS, key=lambda m: fresh_mean[m])
    load = ", ".join(f"{w} {tuple(round(x, 1) for x in result[f'load_{w}'])}" for w in ("before", "after"))
    per_seed = " / ".join(f"{v['twoview']:.2f}" for v in fresh.values())
    wins = {m: sum(d["mae"]["twoview"] < d["mae"][m] for d in fresh_pd.values()) for m in ("cbpe_ls", "doc")}
    no_air = {
        m: float(np.mean([d["mae"][m] for k, d in fresh_pd.items() if k != _AIR])) for m in TRIGGER_ESTIMATORS
    }
    lines = [
        f"# twoview out of sample: MiniLM fine-tuned on {source} ({result['machine']})",
        "",
        "Reading: " + SOURCE_READINGS.get(source, "(not written yet)"),
        "",
        f"Figures: mean MAE over the {len(per_domain)} domains, fresh draws (development draw): "
        + ", ".join(f"{m} {fresh_mean[m]:.2f} ({overall[m]:.2f})" for m in ranked)
        + f"; no_change {overall['no_change']:.2f}, noise floor {overall['noise_floor']:.2f} (development draw)."
        + (
            " On the sst2 model, where twoview was chosen: "
            + ", ".join(f"{m} {np.mean([v[m] for v in sst2['fresh_seeds'].values()]):.2f}" for m in ranked)
            + " (fresh draws)."
            if sst2
            else ""
        )
        + f" twoview per seed: {per_seed}; lower than "
        f"cbpe_ls on {wins['cbpe_ls']} and than doc on {wins['doc']} of the {len(fresh_pd)} domains (fresh); "
        "without airline_tweets: "
        + ", ".join(f"{m} {no_air[m]:.2f}" for m in ranked)
        + "."
        + f" twoview's largest over-statement on the {len(harmed)} harmed domains (pool accuracy below "
        f"validation's): {over_fresh['twoview']:+.1f} points on the fresh draws, {over_dev['twoview']:+.1f} on "
        f"the development draw (cbpe_ls {over_fresh['cbpe_ls']:+.1f} / {over_dev['cbpe_ls']:+.1f}, doc "
        f"{over_fresh['doc']:+.1f} / {over_dev['doc']:+.1f}).",
        "",
        f"Setup: the same recipe as estimate.md's model (1 epoch, the first {TRAIN_ROWS} training rows of "
        f"{source}, max length {MAX_LENGTH}, lr 5e-5, the default seed); temperature {cal['temperature']:.3f} "
        f"fitted on {source} validation (n {cal['n']}, accuracy {cal['accuracy']:.3f}; ECE "
        f"{cal['ece_before']:.3f} -> {cal['ece_after']:.3f} out-of-fold). twoview's probe (as shipped, nothing "
        f"changed in refit.estimate): logistic regression on the base MiniLM's embeddings of the same "
        f"{probe['train_rows']} training rows (validation accuracy {probe_acc:.3f}), stacked on validation "
        f"(weights {probe['stack_weights'][0]:.2f} version, {probe['stack_weights'][1]:.2f} probe). In-domain "
        f"pool: {source} test; sst2 test is a shifted domain; the other domains as in estimate.md. "
        f"{result['windows_per_domain']} windows of {N} per domain (fewer rows: one window of the pool); MAE "
        "in accuracy points; bias = mean signed error, + = accuracy over-stated (the unsafe direction). "
        f"Harmed domains: {', '.join(harmed)}. Fine-tune, pool scoring and embedding ran under the "
        "machine-wide bench lock (2 threads); evaluation took {result['seconds']} s from cached scores "
        f"(load average {load}; an untimed accuracy run).",
        "",
        f"Development draw (seed {result['development_seed']}; the seed twoview was chosen on, for the sst2 "
        "model):",
        "",
        "| domain | pool acc | " + " | ".join(f"{m} MAE" for m in cols) + " | doc bias | cbpe_ls bias | "
        "twoview bias |",
        "|---" * (len(cols) + 5) + "|",
        *(
            f"| {k} | {d['pool_accuracy']:.3f} | "
            + " | ".join(f"{d['mae'][m]:.2f}" for m in cols)
            + " | "
            + " | ".join(f"{d['bias'][m]:+.2f}" for m in TRIGGER_ESTIMATORS)
            + " |"
            for k, d in per_domain.items()
        ),
        "| **mean over domains** | | " + " | ".join(f"**{overall[m]:.2f}**" for m in cols) + " | | | |",
        "| mean over shifted domains | | "
        + " | ".join(f"{result['mae_mean_over_shifted_domains'][m]:.2f}" for m in cols)
        + " | | | |",
        f"| mean over the {len(harmed)} harmed domains | | "
        + " | ".join(f"{result['mae_mean_over_harmed_domains'][m]:.2f}" for m in cols)
        + " | | | |",
        "",
        f"Fresh window draws (seeds {', '.join(fresh)}, {result['windows_per_domain']} windows per domain each; "
        "MAE and bias averaged over the three draws):",
        "",
        *fresh_table(fresh_pd, fresh_overall, fresh),
        "",
        *trigger_table(trig),
        "",
        "Mean width of the 95% interval of the expected accuracy over those windows: "
        + ", ".join(f"{m} {w:.1f} points" for m, w in trig["ci_width_points"].items())
        + ".",
    ]
    (RESULTS / f"estimate-{source}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def out_of_sample_lines() -> list[str]:
    """estimate.md's closing pointer to each --source check (estimate-NAME.json), with its headline figures."""
    lines = []
    for path in sorted(RESULTS.glob("estimate-*.json")):
        r = json.loads(path.read_text())
        mean = {m: float(np.mean([v[m] for v in r["fresh_seeds"].values()])) for m in TRIGGER_ESTIMATORS}
        lines += [
            "",
            f"Out of sample ({path.with_suffix('.md').name}): the same recipe fine-tuned on {r['source']} instead, "
            "twoview unchanged, mean MAE over the 11 domains on the fresh draws: "
            + ", ".join(f"{m} {mean[m]:.2f}" for m in sorted(mean, key=mean.get))
            + f" (development draw: twoview {r['mae_mean_over_domains']['twoview']:.2f}). "
            + (
                "twoview is again the best, "
                if r["best_shipped"] == "twoview"
                else "twoview is NOT the best, "
            )
            + (
                "and within the goal there."
                if mean["twoview"] <= 3
                else "but above the goal (3 points) there."
            ),
        ]
    return lines


def write_report(result: dict) -> None:
    """estimate.md from the figures in estimate.json (so the prose can be revised without re-scoring)."""
    from types import SimpleNamespace

    from refit.estimate import ESTIMATORS

    cal = SimpleNamespace(**result["calibration"])
    per_domain, trig = result["per_domain"], result["triggers"]
    overall, overall_shifted = result["mae_mean_over_domains"], result["mae_mean_over_shifted_domains"]
    harmed, overall_harmed = result["harmed_domains"], result["mae_mean_over_harmed_domains"]
    best, windows = result["best"], result["windows_per_domain"]
    fresh, fresh_pd = result["fresh_seeds"], result["fresh_per_domain"]
    fresh_mean = {m: float(np.mean([v[m] for v in fresh.values()])) for m in TRIGGER_ESTIMATORS}
    methods = [*ESTIMATORS, *Variants.names, *BaseView.names, *Meta.names, "no_change", "noise_floor"]
    pd = {k: d["mae"] for k, d in per_domain.items()}
    probe = result["probe"]
    probe_acc = sum(probe["confusion"][k][k] for k in range(len(probe["confusion"])))
    met = fresh_mean["twoview"] <= 3 and overall["twoview"] <= 3
    head = [
        "domain",
        "pool acc",
        *[f"{m} MAE" for m in methods],
        *[f"{m} cover" for m in ESTIMATORS],
        "pool macro-F1",
        "cbpe_f1 MAE",
    ]
    load = ", ".join(
        f"{w} {tuple(round(x, 1) for x in result[f'load_{w}'])}"
        for w in ("before", "after")
        if f"load_{w}" in result
    )
    seeds = ", ".join(fresh)
    per_seed_twoview = " / ".join(f"{v['twoview']:.2f}" for v in fresh.values())
    lines = [
        f"# Label-free accuracy estimation ({result['machine']})",
        "",
        f"MiniLM fine-tuned 1 epoch on 2000 sst2 rows; temperature {cal.temperature:.3f} fitted on sst2 "
        f"validation (n {cal.n}, accuracy {cal.accuracy:.3f}; ECE {cal.ece_before:.3f} -> "
        f"{cal.ece_after:.3f} out-of-fold). twoview's probe: logistic regression on the pre-trained MiniLM's "
        f"mean-pooled embeddings of the same {probe['train_rows']} training rows (validation accuracy "
        f"{probe_acc:.3f}), stacked with the version on validation (weights {probe['stack_weights'][0]:.2f} "
        f"version, {probe['stack_weights'][1]:.2f} probe). {windows} windows of {N} per domain (fewer rows: "
        "one window of the pool); MAE in accuracy points vs the window's true accuracy; cover = share of "
        "windows whose true accuracy is inside the 95% bootstrap interval. `no_change` = validation accuracy "
        "as the estimate; `noise_floor` = an oracle that knows the pool's accuracy (sampling noise of a "
        f"window). This table's windows are the DEVELOPMENT draw (seed {result['development_seed']}): every "
        f"variant below was compared on them; the fresh draws (seeds {seeds}) are in the next table. "
        f"Evaluation took {result['seconds']} s from cached scores and base embeddings (load average 1/5/15 "
        f"min: {load}; an untimed accuracy run, one thread).",
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
    for label, figures, bold in (
        ("**mean over domains**", overall, True),
        ("mean over shifted domains", overall_shifted, False),
        (f"mean over the {len(harmed)} domains where accuracy < validation's", overall_harmed, False),
    ):
        cells = [f"**{figures[m]:.2f}**" if bold else f"{figures[m]:.2f}" for m in methods]
        lines.append(f"| {label} | | " + " | ".join(cells) + " |" + " |" * (len(ESTIMATORS) + 2))
    lines += [
        "",
        f"Fresh window draws (seeds {seeds}: {windows} windows per domain each, never looked at while the "
        "variants were compared; MAE averaged over the three draws, bias = mean signed error, + = accuracy "
        "over-stated, the unsafe direction for a retrain trigger):",
        "",
        *fresh_table(fresh_pd, fresh_mean, fresh),
        "",
        f"Best estimator: **{best}**, MAE {overall[best]:.2f} points averaged over the {len(per_domain)} "
        f"domains on the development windows and {fresh_mean['twoview']:.2f} on the fresh draws "
        f"({per_seed_twoview}); cbpe_ls {fresh_mean['cbpe_ls']:.2f}, "
        f"doc {fresh_mean['doc']:.2f} there; noise floor {overall['noise_floor']:.2f}. The goal (<= 3 points) "
        + ("is met on this benchmark" if met else "is NOT met")
        + ", with the caveat below: the domains were known while twoview was chosen.",
        "",
        "`twoview` (shipped in refit.estimate, not the default): two views of each input. The version's "
        "logits, and a probe, a logistic regression (sklearn's default C 1, not tuned) on the base encoder's "
        "embeddings (the pre-trained MiniLM that embeds the version's drift reference), fitted on the "
        "version's training rows; it never saw fine-tuning, so it errs differently. On validation the two are "
        "stacked (softmax(a log p_version + b log p_probe + c), fitted by NLL) and the probe's confusion table "
        "is kept. On a window: the class prior is estimated by BBSE from each view; label shift is believed "
        "only where both move the prior the same way (the dot product of the two prior shifts is positive: "
        "no threshold) and then the stacked probabilities are re-weighted by the version's prior and averaged "
        "at the version's predicted class, as cbpe_ls does; otherwise DoC on the stack (validation accuracy "
        "minus the drop of the stack's mean confidence). Why it works here: a true change of the label "
        "balance moves both views' predictions (airline_tweets: both predict fewer positives; "
        f"{pd[_AIR]['twoview']:.1f} points as cbpe_ls), a lean the domain gives the fine-tuned model does not "
        f"move the probe's (amazon_electronics: the version predicts 27% of the pool positive, the probe 67%: no correction, "
        f"{pd['amazon_electronics']['twoview']:.1f} points vs cbpe_ls {pd['amazon_electronics']['cbpe_ls']:.1f}); "
        "and the stack keeps the probe's confidence on short easy sentences where the version's falls "
        f"(uci_sentences {pd[_UCI]['doc']:.1f} -> {pd[_UCI]['twoview']:.1f}: still the worst domain, still "
        "under-estimated). Stored at fine-tune time in calibration.json (format /3, key "
        "`probe`: coefficients, stack, confusion; refit.estimate.probe) when the reference is embedded by a "
        "fixed encoder (data.reference_encoder base, the default); needs the window's embeddings from that "
        "encoder (`estimate_accuracy(..., embeddings=...)`), so it is left out where a caller passes none and "
        "refused by name for versions without a probe (calibration.json /1, /2 still load).",
        *(
            [f"What it adds to a fine-tune: {probe_cost_text(result['probe_cost'])}", ""]
            if "probe_cost" in result
            else [""]
        ),
        "Selection bias, plainly: twoview is the last of about 50 variants (log below), all compared on the "
        f"seed-{result['development_seed']} windows of these same 11 domains, and its gate was designed after "
        "seeing each view's BBSE prior per domain. The fresh draws rule out the luck of one draw of windows, "
        "NOT the choice of a rule that suits these domains; no domain was held out, and there is one "
        "fine-tuned model. What limits the risk: nothing in it is fitted on a domain or tuned (probe at its "
        "default C, stack and confusion on validation, a sign test with no threshold). The out-of-sample "
        "check, a second model fine-tuned on another source with the rule unchanged (`--source`), is at the "
        "end of this page: twoview stays the best estimator there, but above 3 points.",
        "",
        *sensitivity_lines(result),
        "Variant log (mean MAE over the 11 domains on the development windows; `*` = in this script's table, "
        "the rest exploratory, measured with the same windows and cached scores, not in this script):",
        "- length: temperature as a function of log token length (fitted on validation) 8.63 for cbpe, 5.55 "
        "with the label-shift correction (it extrapolates to long reviews); length-binned temperatures "
        "(2/3/4 validation quantile bins, last bin open) cbpe_ls 3.81/3.76/4.00, cbpe 5.7-6.3.",
        "- a switch or blend of doc and cbpe_ls by the predicted-class share's z-test against validation's: "
        "z > 1.96 3.75, z > 3 3.80, weighted by 1 - p 3.80, the plain mean 4.08.",
        f"- importance weighting on the base embeddings* (domain classifier validation vs window, PCA 32, C "
        f"0.05, clip 20): iw_base {overall['iw_base']:.2f}, iw_doc_base {overall['iw_doc_base']:.2f} (fixes "
        f"uci_sentences, {pd[_UCI]['iw_doc_base']:.1f}, breaks airline_tweets {pd[_AIR]['iw_doc_base']:.1f} and "
        f"sentiment140 {pd[_S140]['iw_doc_base']:.1f}); with the label-shift correction from the weighted "
        "confusion table 6.82; PCA 16: 6.25 / 4.22 / 6.54; C 0.5: 9.19 / 6.35 / 9.40; the same on the "
        "version's own embeddings 5.54 / 4.93 / 5.62.",
        "- the probe alone: its calibrated probability of the version's prediction 7.85; agreement in probit "
        "space (ALine with one pair and slope 1: validation accuracy shifted by the agreement's probit shift) "
        "9.35.",
        f"- the stack without the gate: stack_cbpe 5.00, stack_ls* {overall['stack_ls']:.2f} (uci "
        f"{pd[_UCI]['stack_ls']:.1f}), stack_doc* {overall['stack_doc']:.2f} (airline {pd[_AIR]['stack_doc']:.1f}); "
        "with log length (clamped at validation's maximum) in the stack 5.03 / 4.33; the mean of the two "
        "calibrated probabilities instead of a stack 6.43, with the prior 4.11.",
        "- other priors: BBSE from the probe alone 8.85 (stack 8.16), from the joint 4-cell table of both "
        "predictions 4.27 (stack 4.04), the mean of the two priors 4.07 (stack 3.85); DoC plus cbpe_ls's "
        "correction term (cbpe_ls - cbpe) 3.95 (on the stack 5.55).",
        f"- the gate on other pairs: gate_doc_ls* (doc or cbpe_ls) {overall['gate_doc_ls']:.2f}; stack_doc or "
        "cbpe_ls 3.14; stack_doc or the stack at the joint prior 3.48; stack_doc or the stack at the "
        f"version's prior = twoview {overall['twoview']:.2f}.",
        "",
        "`cbpe_ls` (shipped, not the default): CBPE corrected for label shift. The window's class prior is "
        "estimated by BBSE (validation's confusion table [predicted][true], stored in calibration.json, solved "
        "against the window's share of each predicted class; Lipton et al. 2018), the calibrated "
        "probabilities are re-weighted by the prior ratio (Saerens et al. 2002) and averaged at the predicted "
        f"class. It fixes airline_tweets ({pd[_AIR]['doc']:.1f} -> {pd[_AIR]['cbpe_ls']:.1f} points) but "
        "reads the lean a domain gives the model as a prior: amazon_electronics "
        f"{pd['amazon_electronics']['doc']:.1f} -> {pd['amazon_electronics']['cbpe_ls']:.1f} (bias "
        f"{per_domain['amazon_electronics']['bias']['cbpe_ls']:+.1f}, over-stated). twoview is cbpe_ls with "
        "that ambiguity settled by the second view.",
        "",
        "Meta-regression (`meta_*`, class Meta; AutoEval, Deng & Zheng 2021; not shipped): a ridge regression "
        "of the window's accuracy minus a base estimator (doc or cbpe_ls) on 15 label-free window features, "
        "alpha by leave-one-group-out. `*_lodo`: fitted on the 10 OTHER domains' windows plus validation "
        "windows; `*_synth`: on synthetic shifts of validation only. Neither beats its base: meta_doc_lodo "
        f"{overall['meta_doc_lodo']:.2f}, meta_ls_lodo {overall['meta_ls_lodo']:.2f}, meta_doc_synth "
        f"{overall['meta_doc_synth']:.2f}, meta_ls_synth {overall['meta_ls_synth']:.2f}: the two domains "
        "that dominate the error are each unlike every other, so a fit on the others does not transfer.",
        "",
        "Older variants (class Variants; not shipped): `iw` importance-weighted validation accuracy on the "
        "version's own embeddings, `iw_doc`, `iw_cbpe` (temperature refitted on the re-weighted rows), "
        "`atc_mc` (identical to `atc` with 2 classes), `cbpe_doc` the mean of the two. `cbpe_f1` is CBPE's "
        f"expected macro-F1 against the window's realised macro-F1: mean {result['cbpe_f1_mae_mean']:.2f} "
        "points.",
    ]
    width = trig["ci_width_points"]
    lines += [
        "",
        *trigger_table(trig),
        "",
        "The shipped rule reads the upper end of the 95% interval of the expected accuracy (row bootstrap); "
        f"its mean width over the {trig['windows']} windows: doc {width['doc']:.1f} points, cbpe_ls "
        f"{width['cbpe_ls']:.1f}, twoview {width['twoview']:.1f} (both re-estimate the prior in every "
        "replicate, and twoview's gate can flip between replicates). With doc (the default, "
        "refit.estimate.PRIMARY) it fires far less often than drift-only and rarely needlessly, but misses "
        "more truly harmed windows. With cbpe_ls it almost never fires (its over-statement on the Amazon "
        f"domains and its wide interval). With twoview it fires {trig['harm_aware_twoview']} times, misses "
        f"{trig['harm_aware_twoview_missed']} harmed windows (doc {trig['harm_aware_doc_missed']}) and fires "
        f"needlessly {trig['harm_aware_twoview_needless']} times (doc {trig['harm_aware_doc_needless']}): as "
        "an alarm it trades a few more misses for fewer false alarms, so it is not better than doc on both "
        "counts and the default stays doc (PRIMARY, policy.estimator). As a point estimate against the floor "
        f"twoview misses {trig['point_twoview_missed']} and fires needlessly "
        f"{trig['point_twoview_needless']} times (doc {trig['point_doc_missed']} / "
        f"{trig['point_doc_needless']}). 'Truly harmed' is the window's realised accuracy, itself a noisy "
        "(about 2-3 points) measure of the domain's.",
        "",
        "Reading the tables:",
        f"- twoview is the best estimate ({overall['twoview']:.2f} on the development windows, "
        f"{fresh_mean['twoview']:.2f} on fresh ones) and does not make the unsafe direction worse than cbpe_ls: "
        f"on the {len(harmed)} domains where the model is hurt its largest over-statement on the fresh draws is "
        + f"{max(fresh_pd[k]['bias']['twoview'] for k in harmed):+.1f} points (cbpe_ls "
        + f"{max(fresh_pd[k]['bias']['cbpe_ls'] for k in harmed):+.1f}, doc "
        + f"{max(fresh_pd[k]['bias']['doc'] for k in harmed):+.1f}); it over-states more than doc on "
        f"cr_customer_reviews ({fresh_pd['cr_customer_reviews']['bias']['twoview']:+.1f} vs "
        f"{fresh_pd['cr_customer_reviews']['bias']['doc']:+.1f}) and sentiment140 "
        f"({fresh_pd[_S140]['bias']['twoview']:+.1f} vs {fresh_pd[_S140]['bias']['doc']:+.1f}).",
        "- What is left is uci_sentences (short, easy sentences: the version's confidence falls while its "
        f"accuracy rises; twoview {pd[_UCI]['twoview']:.1f}, under-estimated) and imdb_reviews (long reviews "
        f"truncated at 64 tokens, over-stated by every estimator: twoview {pd['imdb_reviews']['twoview']:.1f}).",
        "- ATC is badly off when the whole confidence distribution moves (long reviews truncated to 64 "
        "tokens); CBPE and DoC, which average the confidences, degrade gracefully.",
        "- `cover` counts windows whose realised accuracy lies in the 95% interval; in-domain it is near "
        "0.95, under shift it falls with the estimator's bias, which the interval does not include.",
        "- The model is deliberately briefly trained (CPU shared): validation accuracy "
        f"{cal.accuracy:.3f} (the probe on the frozen base encoder reaches {probe_acc:.3f}), and it was "
        f"under-confident (T {cal.temperature:.2f} < 1) before calibration.",
    ]
    lines += out_of_sample_lines()
    (RESULTS / "estimate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
