"""Export benchmark: MiniLM fine-tuned briefly on sst2, then PyTorch eager fp32 vs ONNX Runtime fp32 / int8.

Goals (issue P3): ORT int8 at least 2x faster than eager fp32 at batch 1, seq 64, with at most 0.5 point
validation accuracy drop; ONNX fp32 argmax agreement >= 99.9% and max-abs logit diff <= 1e-4.

    python scripts/bench_export.py [--version DIR] [--rows 2000] [--iters 100] [--rounds 3]

Steps: `refit finetune` (1 epoch on the first ROWS training rows, through run_finetune), `refit export`
onnx and onnx-int8 (gated, parity on all 872 validation sentences), `refit benchmark` (the format table),
then ROUNDS interleaved latency rounds of eager fp32 vs ORT int8 (the machine is shared: interleaving
keeps other load from favouring one side). Writes scripts/results/export.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "datasets" / "sst2"
RESULTS = ROOT / "scripts" / "results"
SEQ = 64


def finetune(out: Path, rows: int) -> Path:
    from refit.cli import main

    args = [
        "finetune",
        "--model",
        "minilm",
        "--data.train",
        str(SST2 / "train.jsonl"),
        "--data.validation",
        str(SST2 / "validation.jsonl"),
        "--data.max_train_samples",
        str(rows),
        "--data.max_length",
        str(SEQ),
        "--data.reference_size",
        "64",
        "--trainer.max_epochs",
        "1",
        "--tracking.wandb",
        "false",
        "--output_dir",
        str(out),
    ]
    assert main(args) == 0
    return out / "version"


def interleaved(version: Path, iters: int, rounds: int) -> dict:
    """p50 at batch 1 / seq 64 of eager fp32 and ORT int8, measured in alternating rounds."""
    from refit.evaluate import evaluation_texts
    from refit.inference import OrtPredictor, TorchPredictor, encode, latency_ms
    from refit.models import load_version

    model, tok, meta = load_version(version)
    texts, _ = evaluation_texts(meta)
    batch = encode(tok, texts[:1], SEQ, 1, pad_to_max=True)[0]
    runners = {
        "pytorch": TorchPredictor(model),
        "onnx-int8": OrtPredictor(version / "exports" / "model.int8.onnx"),
        "onnx": OrtPredictor(version / "exports" / "model.onnx"),
    }
    p50s: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            p50s[name].append(latency_ms(runner, batch, warmup=20, iters=iters)[0])
    return {
        k: {"p50_ms_per_round": [round(x, 3) for x in v], "p50_ms": round(statistics.median(v), 3)}
        for k, v in p50s.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--version", type=Path, help="reuse this fine-tuned version instead of fine-tuning")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench-export")
    args = ap.parse_args()

    from refit.cli import main as refit
    from refit.export.benchmark import machine

    version = args.version or finetune(args.workdir / "finetune", args.rows)
    for fmt in ("onnx", "onnx-int8"):
        assert refit(["export", "--version", str(version), "--format", fmt]) == 0
    assert (
        refit(
            [
                "benchmark",
                "--version",
                str(version),
                "--seq_len",
                str(SEQ),
                "--iters",
                str(args.iters),
                "--tracking.wandb",
                "false",
                "--output_dir",
                str(args.workdir / "benchmark"),
            ]
        )
        == 0
    )
    exports = version / "exports"
    parity = json.loads((exports / "parity.json").read_text())
    table = json.loads((exports / "benchmark.json").read_text())
    lat = interleaved(version, args.iters, args.rounds)
    meta = json.loads((version / "refit.json").read_text())
    fp32, int8 = parity["model.onnx"], parity["model.int8.onnx"]
    speedup = lat["pytorch"]["p50_ms"] / lat["onnx-int8"]["p50_ms"]
    goals = {
        "int8 speed-up >= 2x (b1, seq 64)": [round(speedup, 2), speedup >= 2.0],
        "int8 accuracy drop <= 0.5 points": [
            int8["accuracy_drop_points"],
            int8["accuracy_drop_points"] <= 0.5,
        ],
        "onnx fp32 argmax agreement >= 99.9%": [
            fp32["parity"]["argmax_agreement"],
            fp32["parity"]["argmax_agreement"] >= 0.999,
        ],
        "onnx fp32 max-abs logit diff <= 1e-4": [
            fp32["parity"]["max_abs_diff"],
            fp32["parity"]["max_abs_diff"] <= 1e-4,
        ],
    }
    result = {
        "machine": machine(),
        "model": "all-MiniLM-L6-v2 + 2-class head",
        "finetune": {
            "rows": args.rows,
            "epochs": 1,
            "seconds": meta.get("training", {}).get("seconds"),
            "validation": meta["metrics"].get("validation"),
        },
        "parity": {"model.onnx": fp32, "model.int8.onnx": int8},
        "interleaved_latency": lat,
        "table": table["rows"],
        "goals": goals,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "export.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    m = result["machine"]
    lines = [
        "# Export benchmark: MiniLM on sst2",
        "",
        f"Machine: {m['cpu']}, {m['cores']} CPU cores ({m['torch_threads']} threads), no GPU, shared with other "
        f"jobs (timings vary 10-20% between runs); torch {m['torch']}. Model fine-tuned 1 epoch on the first "
        f"{args.rows} sst2 training rows (validation accuracy {meta['metrics']['validation']['accuracy']:.4f}); "
        "accuracy and parity on all 872 validation sentences.",
        "",
        (exports / "benchmark.md").read_text().split("\n", 2)[2].strip(),
        "",
        f"Interleaved p50 at batch 1, seq {SEQ} ({args.rounds} rounds x {args.iters} calls, median of round medians):",
        "",
        "| runtime | p50 ms | per round |",
        "|---|---|---|",
        *(
            f"| {k} | {v['p50_ms']:.2f} | {', '.join(f'{x:.2f}' for x in v['p50_ms_per_round'])} |"
            for k, v in lat.items()
        ),
        "",
        "| goal | measured | met |",
        "|---|---|---|",
        *(f"| {k} | {v[0]} | {'yes' if v[1] else 'NO'} |" for k, v in goals.items()),
        "",
        "TensorRT was not measured: no GPU here, and TensorRT cannot be installed on this machine.",
    ]
    (RESULTS / "export.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
