"""Export benchmark: MiniLM fine-tuned on sst2, eager PyTorch fp32 vs ONNX Runtime fp32 / int8 on CPU.

Goals (issue #14): ORT int8 4x faster than eager fp32 at batch 1, seq 64, with at most 0.5 point accuracy
drop; ONNX fp32 argmax agreement >= 99.9% and max-abs logit diff <= 1e-4.

    python scripts/bench_export.py --data ../shared/datasets/sst2 [--version DIR] [--rows 3000]
        [--iters 200] [--rounds 5] [--stage all|prepare|time]

Steps: `refit finetune` (1 epoch on the first ROWS training rows; cached under --workdir), `refit export`
onnx and onnx-int8 (gated, parity on all 872 validation sentences), `refit benchmark` (the format table),
then the int8 recipe step by step (both exporters, fused fp32 with and without SkipLayerNormalization,
dynamic int8 per-channel / reduce-range / op-type variants, static Q/DQ int8 with s8/u8 activations and
MinMax/Percentile calibration, session options: threads, spinning, fixed shape, GELU approximation, memory
arena), each runner's latency timed in ROUNDS rounds interleaved with eager fp32 (the machine is shared:
interleaving keeps other load from favouring one side) and its accuracy on sst2 validation and test.
`--stage prepare` does the untimed part (exports, graphs, accuracy; cached), `--stage time` the timed
part, so only the latter needs the machine to itself. Writes scripts/results/export.{json,md}.
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
from _datasets import DATASETS  # noqa: E402

SST2 = DATASETS / "sst2"  # --data overrides
RESULTS = ROOT / "scripts" / "results"
SEQ = 64


def finetune(out: Path, rows: int, data: Path) -> Path:
    from refit.cli import main

    args = [
        "finetune",
        "--model",
        "minilm",
        "--data.train",
        str(data / "train.jsonl"),
        "--data.validation",
        str(data / "validation.jsonl"),
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
    if not (out / "version" / "refit.json").is_file():  # cached: fine-tuning is the slow part
        assert main(args) == 0
    return out / "version"


# ---- CPU int8 steps (issue #14): each step's effect, interleaved with eager fp32 in the same run ----

DEFAULT_GRAPH = "int8 fused (no SkipLayerNorm), per-channel, all ops (refit default)"
OLD_DEFAULT = "int8 fused with SkipLayerNorm, per-channel, all ops, SLN kept (previous default)"
DEFAULT_ROW = "refit default: OrtPredictor() on the installed model.int8.onnx"
EAGER_1T = "eager fp32, 1 thread"
DEFAULT_1T = "refit default, 1 thread (vs eager 1 thread)"
OLD_1T = "previous default, 1 thread (vs eager 1 thread)"
STATIC = "static int8 QDQ, fused without Attention, per-channel, s8 symmetric, MinMax"
SLN_OFF = ("SkipLayerNormFusion",)


def step_graphs(model, work: Path, calibration) -> tuple[dict[str, Path], dict, dict]:
    """Every graph of the recipe, step by step: export (both exporters), fused fp32 (with and without
    SkipLayerNormalization), dynamic int8 variants, static Q/DQ int8 variants.

    Cached in `work` (a graph is rebuilt only when its file is missing). Returns the graphs, the fused
    operator counts per export and, per graph, the ORT session (disabled fusions) it is meant to run in."""
    from refit.export.onnx import export_onnx, optimize_transformer
    from refit.export.quantize import dynamic_int8, static_int8

    fused_ops: dict[str, dict] = {}
    graphs: dict[str, Path] = {}
    for exporter in ("torchscript", "dynamo"):
        raw = work / exporter / "raw.onnx"
        if not raw.is_file():
            export_onnx(model, raw, exporter=exporter)
        fused = work / exporter / "fused.onnx"
        fused_ops[exporter] = optimize_transformer(raw, fused, model.config) or {}
        graphs[f"fp32 {exporter} export"] = raw
        graphs[f"fp32 {exporter} + fusions (no SkipLayerNorm)"] = fused
    ts_raw = graphs["fp32 torchscript export"]
    ts_fused = graphs["fp32 torchscript + fusions (no SkipLayerNorm)"]
    sln = work / "torchscript" / "fused-sln.onnx"
    fused_ops["torchscript, SkipLayerNorm on"] = optimize_transformer(
        ts_raw, sln, model.config, skip_layer_norm=True
    )
    noatt = work / "torchscript" / "fused-noattention.onnx"
    if not noatt.is_file():  # static Q/DQ needs the attention MatMuls visible (fused Attention hides them)
        from onnxruntime.transformers import optimizer
        from onnxruntime.transformers.fusion_options import FusionOptions

        fo = FusionOptions("bert")
        fo.enable_skip_layer_norm = fo.enable_attention = False
        cfg = model.config
        optimizer.optimize_model(
            str(ts_raw),
            model_type="bert",
            num_heads=cfg.num_attention_heads,
            hidden_size=cfg.hidden_size,
            optimization_options=fo,
        ).save_model_to_file(str(noatt))
    graphs["fp32 torchscript + fusions with SkipLayerNorm, SLN kept"] = sln
    dynamic = {
        # name: (source graph, per_channel, reduce_range, op types (None = all ORT can quantise))
        "int8 unfused, per-channel, all ops": (ts_raw, True, False, None),
        DEFAULT_GRAPH: (ts_fused, True, False, None),
        OLD_DEFAULT: (sln, True, False, None),
        "int8 fused, per-tensor, all ops": (ts_fused, False, False, None),
        "int8 fused, per-channel, reduce_range": (ts_fused, True, True, None),
        "int8 fused, per-channel, MatMul only": (ts_fused, True, False, ("MatMul",)),
        "int8 fused, per-channel, MatMul+Attention": (ts_fused, True, False, ("MatMul", "Attention")),
        "int8 dynamo fused, per-channel, all ops": (
            graphs["fp32 dynamo + fusions (no SkipLayerNorm)"],
            True,
            False,
            None,
        ),
    }
    for i, (name, (src, per_channel, reduce_range, ops)) in enumerate(dynamic.items()):
        dst = work / "int8" / f"v{i}.onnx"
        if not dst.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            dynamic_int8(src, dst, per_channel=per_channel, reduce_range=reduce_range, op_types=ops)
        graphs[name] = dst
    static = {
        # name: (source graph, activation type, symmetric activations, calibrator)
        "static int8 QDQ, unfused, per-channel, s8 symmetric, MinMax": (
            ts_raw,
            "int8",
            True,
            "minmax",
        ),
        STATIC: (noatt, "int8", True, "minmax"),
        "static int8 QDQ, fused without Attention, per-channel, u8 asymmetric, MinMax": (
            noatt,
            "uint8",
            False,
            "minmax",
        ),
        "static int8 QDQ, fused without Attention, per-channel, s8 symmetric, Percentile": (
            noatt,
            "int8",
            True,
            "percentile",
        ),
    }
    for i, (name, (src, act, symmetric, method)) in enumerate(static.items()):
        dst = work / "static" / f"s{i}.onnx"
        if not dst.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            static_int8(
                src,
                dst,
                calibration,
                activation_type=act,
                symmetric=symmetric,
                per_channel=True,
                method=method,
            )
        graphs[name] = dst
    # The graphs named "SLN kept" run as the previous default did (ORT free to fuse SkipLayerNorm).
    keep_sln = {name for name in graphs if "SLN kept" in name}
    return graphs, fused_ops, {name: () if name in keep_sln else SLN_OFF for name in graphs}


class _Session:
    """A bare ONNX Runtime session with explicit options, for the session-option steps."""

    def __init__(
        self,
        path: Path,
        *,
        threads=0,
        inter=0,
        spinning=True,
        level="all",
        io_binding=False,
        disabled=SLN_OFF,
        config=(),
        free_dims=(),
        arena=True,
        save_optimized: Path | None = None,
    ):
        import onnxruntime as ort

        from refit.inference import ORT_OPT_LEVELS

        o = ort.SessionOptions()
        o.intra_op_num_threads, o.inter_op_num_threads = threads, inter
        o.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_OPT_LEVELS[level])
        o.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        o.enable_cpu_mem_arena = arena
        for key, value in config:
            o.add_session_config_entry(key, value)
        for dim, value in free_dims:
            o.add_free_dimension_override_by_name(dim, value)
        if save_optimized:
            o.optimized_model_filepath = str(save_optimized)
        self.session = ort.InferenceSession(
            str(path), o, providers=["CPUExecutionProvider"], disabled_optimizers=list(disabled)
        )
        self.io_binding = io_binding
        self.name = str(path)

    def __call__(self, ids, mask):
        if not self.io_binding:
            return self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        b = self.session.io_binding()
        b.bind_cpu_input("input_ids", ids)
        b.bind_cpu_input("attention_mask", mask)
        b.bind_output("logits", "cpu")
        self.session.run_with_iobinding(b)
        return b.copy_outputs_to_cpu()[0]


def _op_counts(path: Path) -> dict[str, int]:
    import collections

    import onnx

    counts = collections.Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)
    return dict(counts.most_common())


def _accuracy(predictor, batches, labels, ref_pred) -> dict:
    from refit.inference import predict_logits

    pred = predict_logits(predictor, batches).argmax(-1)
    return {"accuracy": float((pred == labels).mean()), "agreement": float((pred == ref_pred).mean())}


def steps(version: Path, data: Path, work: Path, iters: int, rounds: int, prepare_only: bool = False) -> dict:
    """Latency (b1, seq 64), accuracy (sst2 validation + test) and agreement of every step's graph and of
    the session options, all in one run: ROUNDS rounds, each timing eager fp32 then every runner."""
    import numpy as np
    import torch

    from refit.evaluate import evaluation_texts
    from refit.export.onnx import onnx_files
    from refit.inference import OrtPredictor, TorchPredictor, encode, latency_ms, physical_cores
    from refit.models import load_version

    model, tok, meta = load_version(version)
    val_texts, _ = evaluation_texts(meta, "validation", override=str(data / "validation.jsonl"))
    # Static int8 calibrates on the first 256 validation inputs, padded to SEQ (histogram calibrators
    # need one shape); its test-split accuracy is the unbiased figure.
    calibration = encode(tok, val_texts[:256], SEQ, 8, pad_to_max=True)
    graphs, fused_ops, disabled = step_graphs(model, work, calibration)
    eager = TorchPredictor(model)
    splits = {}
    for split in ("validation", "test"):
        texts, labels = evaluation_texts(meta, split, override=str(data / f"{split}.jsonl"))
        batches = encode(tok, texts, SEQ, 64)
        splits[split] = (batches, np.asarray(labels))
    ref = {}
    for split, (batches, _) in splits.items():
        cache = work / f"eager-{split}.npy"
        if not cache.is_file():
            from refit.inference import predict_logits

            np.save(cache, predict_logits(eager, batches))
        ref[split] = np.load(cache).argmax(-1)
    quality = {
        "eager fp32": {
            s: {"accuracy": float((ref[s] == lab).mean()), "agreement": 1.0} for s, (_, lab) in splits.items()
        }
    }
    cores = physical_cores()
    session_ops: dict[str, dict] = {}
    optimized = work / "optimized"
    optimized.mkdir(exist_ok=True)
    # Validation for every graph; the (larger) test split for the default, fp32 and static graphs.
    # Each graph's session also saves the graph ORT optimised, whose operators say which kernels ran.
    # Cached in WORK/quality.json (untimed: `--stage prepare` fills it outside the benchmark lock).
    with_test = (DEFAULT_GRAPH, STATIC, "fp32 torchscript + fusions (no SkipLayerNorm)")
    cache = work / "quality.json"
    cached = json.loads(cache.read_text()) if cache.is_file() else {}
    for i, (name, path) in enumerate(graphs.items()):
        if name in cached:
            quality[name], session_ops[name] = cached[name]["quality"], cached[name]["ops"]
            continue
        opt_file = optimized / f"g{i}.onnx"
        session = _Session(path, threads=1, inter=1, disabled=disabled[name], save_optimized=opt_file)
        session_ops[name] = _op_counts(opt_file)
        wanted = splits if name in with_test else ["validation"]
        quality[name] = {s: _accuracy(session, *splits[s], ref[s]) for s in wanted}
        cached[name] = {"quality": quality[name], "ops": session_ops[name]}
        cache.write_text(json.dumps(cached, indent=1))

    # Graph rows: a session as OrtPredictor makes it (intra = cores, inter 1, spinning, ALL), with
    # SkipLayerNorm fusion off except for the "SLN kept" graphs (the previous default's behaviour).
    runners = {"eager fp32": eager}
    runners |= {
        name: _Session(path, threads=cores, inter=1, disabled=disabled[name]) for name, path in graphs.items()
    }
    best = version / "exports" / "model.int8.onnx"  # what `refit export --format onnx-int8` installed
    session_steps = {
        "ORT defaults (intra 0 = ORT's choice, inter 0, spinning, ALL)": dict(),
        f"intra {cores}, inter 1, no spinning": dict(threads=cores, inter=1, spinning=False),
        f"intra {cores}, inter 1, SkipLayerNorm fusion back on": dict(threads=cores, inter=1, disabled=()),
        f"intra {cores}, inter 1, fixed shape (free dims batch 1, sequence {SEQ})": dict(
            threads=cores, inter=1, free_dims=(("batch", 1), ("sequence", SEQ))
        ),
        f"intra {cores}, inter 1, GELU tanh approximation": dict(
            threads=cores, inter=1, config=(("optimization.enable_gelu_approximation", "1"),)
        ),
        f"intra {cores}, inter 1, CPU memory arena off": dict(threads=cores, inter=1, arena=False),
    }
    for k, v in session_steps.items():
        runners[f"session: {k}"] = _Session(best, **v)
    gelu = f"session: intra {cores}, inter 1, GELU tanh approximation"
    if gelu not in cached:
        cached[gelu] = {
            "quality": {"validation": _accuracy(runners[gelu], *splits["validation"], ref["validation"])}
        }
        cache.write_text(json.dumps(cached, indent=1))
    quality[gelu] = cached[gelu]["quality"]
    if prepare_only:
        return {}
    runners[DEFAULT_ROW] = OrtPredictor(best)

    batch = encode(tok, val_texts[:1], SEQ, 1, pad_to_max=True)[0]
    # Single-threaded pairs: no thread barriers, so far less sensitive to other jobs on the cores.
    runners[EAGER_1T] = eager
    runners[DEFAULT_1T] = OrtPredictor(best, threads=1)
    runners[OLD_1T] = _Session(graphs[OLD_DEFAULT], threads=1, inter=1, disabled=())
    p50s: dict[str, list[float]] = {k: [] for k in runners}
    loads = [os.getloadavg()[0]]
    threads = torch.get_num_threads()
    for _ in range(rounds):
        for name, runner in runners.items():
            torch.set_num_threads(1 if name == EAGER_1T else threads)
            p50s[name].append(latency_ms(runner, batch, warmup=20, iters=iters)[0])
        torch.set_num_threads(threads)
        loads.append(os.getloadavg()[0])
    out = {}
    for name, v in p50s.items():
        base = EAGER_1T if name in (EAGER_1T, DEFAULT_1T, OLD_1T) else "eager fp32"
        ratios = [e / x for e, x in zip(p50s[base], v, strict=True)]
        row = {
            "p50_ms": round(statistics.median(v), 3),
            "p50_ms_per_round": [round(x, 3) for x in v],
            "speedup_vs_eager": round(statistics.median(ratios), 2),
            "baseline": base,
        }
        src = name if name in quality else None
        if src:
            row["quality"] = quality[src]
        if name in graphs:
            row["size_mb"] = round(sum(f.stat().st_size for f in onnx_files(graphs[name])) / 1e6, 1)
            row["session_ops"] = session_ops[name]
        out[name] = row
    return {
        "fused_ops": fused_ops,
        "rows": out,
        "load_average_1m_per_round": [round(x, 2) for x in loads],
        "iters": iters,
        "rounds": rounds,
    }


def steps_markdown(res: dict) -> list[str]:
    rows = res["rows"]
    base = rows["eager fp32"]["quality"]

    def q(name, split, key):
        qq = rows[name].get("quality", {}).get(split)
        return "-" if qq is None else f"{qq[key]:.4f}"

    lines = [
        f"## CPU int8 step by step (issue #14): batch 1, seq {SEQ}",
        "",
        f"{res['rounds']} interleaved rounds x {res['iters']} calls per runner; p50 = median of round medians, "
        "speed-up = median over rounds of (eager p50 / runner p50) measured in the same round (the last two "
        "rows: against eager with torch at 1 thread, all single-threaded). 1-minute load "
        f"average at each round boundary: {', '.join(map(str, res['load_average_1m_per_round']))}. "
        "Accuracy on all 872 sst2 validation and 1821 test sentences; agreement = argmax equal to eager fp32's. "
        "Graph rows run in a session as refit's OrtPredictor makes it (intra-op = physical cores, inter-op 1, "
        "spinning, ORT_ENABLE_ALL, SkipLayerNorm fusion off; rows marked 'SLN kept' leave ORT free to fuse "
        "it, as before); session rows run the installed model.int8.onnx.",
        "",
        "Fused operators (ORT's transformer optimizer): "
        + "; ".join(f"{k}: {v or 'none'}" for k, v in res["fused_ops"].items())
        + ".",
        "",
        "Operators in the graph each session ran (ORT's own optimised graph, saved from the session):",
        "",
        *(
            f"- {name}: {rows[name]['session_ops']}"
            for name in (DEFAULT_GRAPH, OLD_DEFAULT, STATIC)
            if "session_ops" in rows.get(name, {})
        ),
        "",
        "| step | p50 ms | speed-up | val acc | val drop (pt) | val agree | test acc | test drop (pt) | test agree | MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        drops = []
        for split in ("validation", "test"):
            qq = r.get("quality", {}).get(split)
            drops.append("-" if qq is None else f"{100 * (base[split]['accuracy'] - qq['accuracy']):.2f}")
        lines.append(
            f"| {name} | {r['p50_ms']:.2f} | {r['speedup_vs_eager']:.2f}x | {q(name, 'validation', 'accuracy')} | "
            f"{drops[0]} | {q(name, 'validation', 'agreement')} | {q(name, 'test', 'accuracy')} | {drops[1]} | "
            f"{q(name, 'test', 'agreement')} | {r.get('size_mb', '-')} |"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--version", type=Path, help="reuse this fine-tuned version instead of fine-tuning")
    ap.add_argument("--data", type=Path, default=SST2, help="the sst2 folder (train/validation/test.jsonl)")
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--reuse_exports", action="store_true", help="keep exports/ and benchmark.json as they are"
    )
    ap.add_argument(
        "--reuse_steps",
        action="store_true",
        help="rewrite the report from WORKDIR/steps.json without re-timing",
    )
    ap.add_argument(
        "--stage",
        choices=("all", "prepare", "time"),
        default="all",
        help="prepare: exports, step graphs and their accuracy, untimed (run it outside the benchmark "
        "lock); time: the timed part only, reusing what prepare made; all: both",
    )
    ap.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench-export")
    args = ap.parse_args()
    if not (args.data / "test.jsonl").is_file():
        raise SystemExit(f"sst2 not found at {args.data}: pass --data DIR (the shared datasets' sst2 folder)")

    from refit.cli import main as refit
    from refit.export.benchmark import machine

    version = args.version or finetune(args.workdir / "finetune", args.rows, args.data)
    for fmt in () if args.reuse_exports or args.stage == "time" else ("onnx", "onnx-int8"):
        assert refit(["export", "--version", str(version), "--format", fmt]) == 0
    if args.stage == "prepare":
        steps(version, args.data, args.workdir / "steps", args.iters, args.rounds, prepare_only=True)
        return
    assert args.reuse_exports or (
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
    if args.reuse_steps:
        res = json.loads((args.workdir / "steps.json").read_text())
    else:
        res = steps(version, args.data, args.workdir / "steps", args.iters, args.rounds)
    (args.workdir / "steps.json").write_text(json.dumps(res, indent=2))
    meta = json.loads((version / "refit.json").read_text())
    fp32, int8 = parity["model.onnx"], parity["model.int8.onnx"]
    speedup = res["rows"][DEFAULT_ROW]["speedup_vs_eager"]
    default = res["rows"][DEFAULT_GRAPH]  # the same quantisation of the same graph as model.int8.onnx
    test_drop = 100 * (
        res["rows"]["eager fp32"]["quality"]["test"]["accuracy"] - default["quality"]["test"]["accuracy"]
    )
    goals = {
        "int8 speed-up >= 4x over eager fp32 (b1, seq 64, interleaved)": [speedup, speedup >= 4.0],
        "int8 validation accuracy drop <= 0.5 points (export gate)": [
            int8["accuracy_drop_points"],
            int8["accuracy_drop_points"] <= 0.5,
        ],
        "int8 test accuracy drop <= 0.5 points": [round(test_drop, 2), test_drop <= 0.5],
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
        "steps": res,
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
        f"jobs; torch {m['torch']}. Model fine-tuned 1 epoch on the first {args.rows} sst2 training rows "
        f"(validation accuracy {meta['metrics']['validation']['accuracy']:.4f}); export gate and parity on all "
        "872 validation sentences.",
        "",
        (exports / "benchmark.md").read_text().split("\n", 2)[2].strip(),
        "",
        *steps_markdown(res),
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
