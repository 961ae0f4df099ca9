"""Every stage of refit, through its CLI, on a tiny random model of each architecture users bring from the hub.

    REFIT_DATASETS=/path/to/datasets python scripts/check_architectures.py [--arch roberta ...]

For each architecture of refit.models.tiny.TINY_ARCHS (BERT, DistilBERT, ELECTRA, RoBERTa, XLM-R,
DeBERTa-v2, ModernBERT: random weights, hidden 32, 2 layers, an offline tokenizer of the family's kind)
it runs finetune (1 epoch on the first 300 sst2 training rows) and finetune --resume, compress with every
method, export onnx and onnx-int8, benchmark, drift and a /predict through the serving app, and records
each stage as works (exit 0, with what it measured), refused (exit 2 and its message) or broken (a
traceback). Correctness only: the models are random, so no accuracy here means anything. Results go to
scripts/results/architectures.{json,md}; models and runs to runs/architectures/ (ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import subprocess
import time
import traceback
from pathlib import Path

from _datasets import DATASETS, read_rows
from _results import write_keeping_notes

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "architectures"
RESULTS = ROOT / "scripts" / "results"
COMPRESS = ("magnitude", "2:4", "heads", "ffn", "fp16", "bf16")
MARKER = "<!-- above: scripts/check_architectures.py; below: notes -->"


def _data() -> dict[str, Path]:
    """The first rows of the sst2 splits, written under WORK (never into the repository)."""
    out = {}
    for split, n in (("train", 300), ("validation", 100), ("test", 100)):
        path = WORK / "data" / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in read_rows("sst2", split)[:n]))
        out[split] = path
    window = WORK / "data" / "window.jsonl"
    window.write_text("".join(json.dumps(r) + "\n" for r in read_rows("sst2", "test")[100:300]))
    out["window"] = window
    return out


def _cli(*argv: str, ok: tuple[int, ...] = (0,)) -> dict:
    """Run `refit ARGV` in this process: works (an exit code in `ok`) / refused (exit 2, the message) /
    broken (any other exit, or a traceback)."""
    from refit.cli import main

    err, out = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = main(list(argv))
    except Exception as e:  # a crash is what this script is here to find
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return {
            "status": "broken",
            "error": f"{type(e).__name__}: {str(e)[:300]} (at {Path(tb.filename).name}:{tb.lineno})",
        }
    seconds = round(time.perf_counter() - start, 1)
    if rc in ok:
        return {"status": "works", "exit": rc, "seconds": seconds, "stdout_tail": out.getvalue()[-400:]}
    lines = [line for line in err.getvalue().splitlines() if "error" in line.lower()]
    message = " ".join(lines or err.getvalue().strip().splitlines()[-1:])[:700]
    return {"status": "refused" if rc == 2 else "broken", "exit": rc, "error": message}


def _finetune(model: Path, data: dict[str, Path], out: Path, *extra: str) -> dict:
    return _cli(
        "finetune", "--model", str(model), "--output_dir", str(out),
        "--data.train", str(data["train"]), "--data.validation", str(data["validation"]),
        "--data.test", str(data["test"]), "--data.max_length", "64", "--data.batch_size", "16",
        "--data.reference_size", "100", "--trainer.max_epochs", "1", "--optim.lr", "1e-3",
        "--tracking.wandb", "false", *extra,
    )  # fmt: skip


def _parity(version: Path) -> dict:
    records = json.loads((version / "exports" / "parity.json").read_text())
    return {
        name: {
            "max_abs_diff": r["parity"]["max_abs_diff"],
            "argmax_agreement": r["parity"]["argmax_agreement"],
            "fused": (r.get("info") or {}).get("fused_ops"),
        }
        for name, r in records.items()
    }


def _serve(version: Path) -> dict:
    """POST /predict through the serving app (its lifespan loads, verifies, warms and parity-checks)."""
    from fastapi.testclient import TestClient

    from refit.serve import ServeOptions, Server
    from refit.serve.app import build_app

    try:
        server = Server(ServeOptions(version=str(version), capture=False, watch_interval_s=0))
        with TestClient(build_app(server=server)) as client:
            r = client.post("/predict", json={"texts": ["a warm , clever film", "dull and far too long"]})
        if r.status_code != 200:
            return {"status": "broken", "error": f"HTTP {r.status_code}: {r.text[:300]}"}
        return {
            "status": "works",
            "backend": server.slot.backend,
            "labels": [p["label"] for p in r.json()["predictions"]],
        }
    except Exception as e:
        return {"status": "broken", "error": f"{type(e).__name__}: {str(e)[:300]}"}


def check(arch: str, data: dict[str, Path]) -> dict[str, dict]:
    from refit.models.tiny import save_tiny_arch

    base = WORK / arch
    shutil.rmtree(base, ignore_errors=True)
    model = save_tiny_arch(arch, base / "model")
    stages: dict[str, dict] = {}
    stages["finetune"] = _finetune(model, data, base / "ft")
    version = base / "ft" / "version"
    if stages["finetune"]["status"] != "works":
        return stages
    # --resume: a 2-epoch run continued from the 1-epoch run's last checkpoint
    shutil.copytree(base / "ft", base / "resume", ignore=shutil.ignore_patterns("version"))
    stages["finetune --resume"] = _finetune(
        model, data, base / "resume", "--trainer.max_epochs", "2", "--resume", "--resume_with_changes"
    )
    for method in COMPRESS:
        stages[f"compress {method}"] = _cli(
            "compress", "--version", str(version), "--method", method, "--amount", "0.5", "--output_dir", str(base / f"c-{method}"),
            "--max_accuracy_drop", "100", "--importance_samples", "64", "--tracking.wandb", "false",
        )  # fmt: skip
    for fmt in ("onnx", "onnx-int8", "edge", "tensorrt"):  # tensorrt: refused here (no GPU, no TensorRT)
        stages[f"export {fmt}"] = _cli(
            "export", "--version", str(version), "--format", fmt, "--max_accuracy_drop", "100"
        )
        if stages[f"export {fmt}"]["status"] == "works" and fmt.startswith("onnx"):
            stages[f"export {fmt}"]["parity"] = _parity(version)
    heads = base / "c-heads" / "version"
    if (heads / "refit.json").is_file():
        stages["export onnx (head-pruned)"] = _cli(
            "export", "--version", str(heads), "--format", "onnx", "--max_accuracy_drop", "100"
        )
        if stages["export onnx (head-pruned)"]["status"] == "works":
            stages["export onnx (head-pruned)"]["parity"] = _parity(heads)
    stages["benchmark"] = _cli(
        "benchmark", "--version", str(version), "--formats", "[pytorch,pytorch-int8,onnx,onnx-int8]",
        "--iters", "3", "--tracking.wandb", "false", "--output_dir", str(base / "bench"),
    )  # fmt: skip
    # exit 3: a window drifted, a finding, not a failure
    stages["drift"] = _cli(
        "drift", "--version", str(version), "--data", str(data["window"]), "--window", "100",
        "--tests", "[mmd,ks,bbsd]", "--permutations", "100", "--output_dir", str(base / "drift"), ok=(0, 3),
    )  # fmt: skip
    # the other drift reference: the version's own hidden layers instead of the base model's last one
    stages["finetune (reference: own layers)"] = _finetune(
        model, data, base / "ft-own", "--data.reference_encoder", "version"
    )
    stages["drift (own layers)"] = _cli(
        "drift", "--version", str(base / "ft-own" / "version"), "--data", str(data["window"]), "--window", "100",
        "--tests", "[mmd,ks]", "--permutations", "100", "--output_dir", str(base / "drift-own"), ok=(0, 3),
    )  # fmt: skip
    stages["serve /predict"] = _serve(version)
    return stages


def _markdown(report: dict) -> str:
    stages = list(dict.fromkeys(s for r in report["architectures"].values() for s in r))
    mark = {"works": "works", "refused": "refused", "broken": "**broken**"}
    lines = [
        "# Stages x architectures (tiny random models)",
        "",
        f"Machine: {report['machine']}. Made by `scripts/check_architectures.py` on {report['date']}: each",
        "architecture a random tiny model (hidden 32, 2 layers) with an offline tokenizer of its family's kind,",
        "1 epoch on 300 sst2 rows. Correctness only: random weights, so no accuracy here means anything.",
        f"Load average (uptime) before: {report['load_before'].split('load average:')[-1].strip()}; after: "
        f"{report['load_after'].split('load average:')[-1].strip()}. Stage times are not benchmarks.",
        "",
        "| stage | " + " | ".join(report["architectures"]) + " |",
        "|---|" + "---|" * len(report["architectures"]),
    ]
    for stage in stages:
        cells = []
        for r in report["architectures"].values():
            s = r.get(stage)
            cells.append("-" if s is None else mark[s["status"]])
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines += ["", "ONNX parity (max-abs logit diff vs PyTorch on 100 validation inputs):", ""]
    for arch, r in report["architectures"].items():
        for stage in ("export onnx", "export onnx-int8", "export onnx (head-pruned)"):
            for name, p in (r.get(stage, {}).get("parity") or {}).items():
                if (stage == "export onnx-int8") != name.endswith("int8.onnx"):
                    continue  # onnx-int8 rebuilds model.onnx too: listed once, under export onnx
                fused = (
                    ""
                    if name.endswith("int8.onnx")
                    else f"; ORT fusions: {p['fused'] or 'optimizer not run'}"
                )
                lines.append(
                    f"- {arch}, {stage}, {name}: {p['max_abs_diff']:.1e}, argmax agreement "
                    f"{p['argmax_agreement']:.2f}{fused}"
                )
    served = ", ".join(
        f"{a} {r['serve /predict'].get('backend', '-')}" for a, r in report["architectures"].items()
    )
    lines += ["", f"`/predict` backend chosen (auto): {served}."]
    lines += ["", "Refused or broken, with the message:", ""]
    for arch, r in report["architectures"].items():
        for stage, s in r.items():
            if s["status"] != "works":
                lines.append(f"- {arch}, {stage}: {s['status']}: {s['error']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    from refit.models.tiny import TINY_ARCHS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="*", default=list(TINY_ARCHS), choices=list(TINY_ARCHS))
    ap.add_argument("--no-write", action="store_true", help="print, do not write scripts/results")
    args = ap.parse_args()
    if not (DATASETS / "sst2" / "train.jsonl").is_file():
        raise SystemExit(f"needs the shared datasets at {DATASETS} (set REFIT_DATASETS)")
    data = _data()
    import torch
    import transformers

    report = {
        "machine": f"{platform.node() or 'host'}: {os.cpu_count()} CPU cores, no GPU, torch {torch.__version__}, "
        f"transformers {transformers.__version__}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_before": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "architectures": {},
    }
    for arch in args.arch:
        report["architectures"][arch] = check(arch, data)
        print(arch, {k: v["status"] for k, v in report["architectures"][arch].items()}, flush=True)
    report["load_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    if args.no_write:
        print(json.dumps(report, indent=1))
        return
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "architectures.json").write_text(json.dumps(report, indent=1) + "\n")
    write_keeping_notes(RESULTS / "architectures.md", _markdown(report), MARKER)


if __name__ == "__main__":
    main()
