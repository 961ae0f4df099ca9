"""Run the whole maintenance loop THROUGH `refit serve`: served traffic, capture, late labels, cycles, hot swap.

    python scripts/simulate_maintenance.py [--train-rows 1000] [--window 150] [--windows 5]

A MiniLM champion is fine-tuned on ../shared/datasets/sst2 (movie-review sentences), exported to ONNX int8,
registered and promoted. `refit serve` then runs as a subprocess on a free 127.0.0.1 port, serving the
champion alias with ONNX Runtime, capturing every request into the registry inbox (rotating Parquet files,
rotated after `--rotate-seconds` so each window is finalised) and watching the alias every 2 s.
Each window of traffic (first sst2 test sentences, then tweets to US airlines: another domain, same labels)
is sent through POST /predict; the true labels of a window arrive LATE, through POST /feedback one window
later, by the request ids the server returned. After each window `refit maintain --once` reads the captured
files and the feedback, tests drift, retrains, exports and gates the challenger, and promotes it; the
script then waits (bounded) for the server to swap to the new champion on its own and records per window:
the version that served it, the served accuracy (served label vs true label), the cycle's decision, and
whether the server swapped. The server is stopped with SIGTERM at the end.
Writes scripts/results/maintenance.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
from _datasets import DATASETS  # noqa: E402

RESULTS = ROOT / "scripts" / "results"
_VERSION_INFO = re.compile(r'refit_serve_version_info\{[^}]*version_id="([^"]+)"')


def _rows(name: str, split: str) -> list[dict]:
    return [json.loads(line) for line in (DATASETS / name / f"{split}.jsonl").read_text().splitlines()]


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(
    registry: Path, inbox: Path, rotate_seconds: float, log_path: Path, timeout: float = 300.0
) -> tuple[subprocess.Popen, str]:
    """`refit serve` in its own process on a free loopback port, returned once /readyz answers 200."""
    import httpx

    port = _free_port()
    log = log_path.open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "refit",
            "serve",
            "--registry.root",
            str(registry),
            "--alias",
            "champion",
            "--port",
            str(port),
            "--capture.dir",
            str(inbox),
            "--capture.rotate_seconds",
            str(rotate_seconds),
            "--watch_interval_s",
            "2",
        ],
        env={**os.environ},
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(
                f"refit serve did not become ready; its log: {log_path}\n{log_path.read_text()[-3000:]}"
            )
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.5)


def _stop_server(proc: subprocess.Popen) -> int | None:
    """SIGTERM (drain, finalise capture), bounded; kill only if it does not stop."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def _served_version(client, base: str) -> str | None:
    match = _VERSION_INFO.search(client.get(f"{base}/metrics", timeout=10).text)
    return match.group(1) if match else None


def _serve_window(client, base: str, rows: list[dict], batch: int) -> list[dict]:
    """POST /predict in client batches; returns one {request_id, label_id, version_id} per row, in order."""
    out = []
    for i in range(0, len(rows), batch):
        r = client.post(
            f"{base}/predict", json={"texts": [row["text"] for row in rows[i : i + batch]]}, timeout=120
        )
        r.raise_for_status()
        out += r.json()["predictions"]
    return out


def _files(inbox: Path, kind: str) -> list[Path]:
    """The inbox's complete files of one kind, named as the server names them (refit.serve.capture)."""
    from refit.serve.capture import file_kind

    return [p for p in inbox.iterdir() if file_kind(p.name) == kind]


def _captured_ids(inbox: Path) -> set[str]:
    import pyarrow.parquet as pq

    from refit.serve.capture import CAPTURE

    ids: set[str] = set()
    for p in _files(inbox, CAPTURE):
        ids.update(pq.read_table(p, columns=["request_id"]).column("request_id").to_pylist())
    return ids


def _feedback_count(inbox: Path) -> int:
    import pyarrow.parquet as pq

    from refit.serve.capture import FEEDBACK

    return sum(pq.read_metadata(p).num_rows for p in _files(inbox, FEEDBACK))


def _wait_finalised(inbox: Path, request_ids: list[str], feedback_rows: int, timeout: float) -> float:
    """Wait until every request of the window sits in a finalised capture file and every feedback row sent so
    far in a finalised feedback file (the writer rotates them after rotate_seconds); returns seconds waited."""
    start = time.monotonic()
    want = set(request_ids)
    while time.monotonic() - start < timeout:
        if want <= _captured_ids(inbox) and _feedback_count(inbox) >= feedback_rows:
            return time.monotonic() - start
        time.sleep(0.5)
    raise RuntimeError(f"capture/feedback files were not finalised within {timeout} s in {inbox}")


def main() -> None:
    import httpx

    from refit.cli import main as refit
    from refit.registry import CHAMPION, Registry

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=1000)
    parser.add_argument("--window", type=int, default=150)
    parser.add_argument(
        "--windows", type=int, default=5, help="windows in all: the first is sst2, the rest tweets"
    )
    parser.add_argument("--sst2-windows", type=int, default=1)
    parser.add_argument(
        "--golden-rows", type=int, default=400, help="sst2 validation rows used as the golden set"
    )
    parser.add_argument("--retrain-epochs", type=int, default=1)
    parser.add_argument("--rotate-seconds", type=float, default=2.0)
    parser.add_argument("--swap-timeout", type=float, default=180.0, help="seconds to wait for the hot swap")
    parser.add_argument("--client-batch", type=int, default=16, help="texts per POST /predict")
    parser.add_argument("--keep", type=Path, help="keep the work folder here instead of a temporary one")
    args = parser.parse_args()
    rng = random.Random(0)
    work = args.keep or Path(tempfile.mkdtemp(prefix="refit-sim-"))
    sst2_train = _rows("sst2", "train")[: args.train_rows]
    sst2_test = _rows("sst2", "test")
    rng.shuffle(sst2_test)
    tweets = _rows("airline_tweets", "test") + _rows("airline_tweets", "validation")
    rng.shuffle(tweets)
    n_tweet = args.windows - args.sst2_windows
    stream = [("sst2", sst2_test[i * args.window : (i + 1) * args.window]) for i in range(args.sst2_windows)]
    stream += [("airline_tweets", tweets[i * args.window : (i + 1) * args.window]) for i in range(n_tweet)]
    golden = _write(work / "golden.jsonl", _rows("sst2", "validation")[: args.golden_rows])

    started = time.perf_counter()
    train = _write(work / "data" / "train.jsonl", sst2_train)
    (work / "data" / "labels.json").write_text(json.dumps({"0": "negative", "1": "positive"}))
    version_dir = work / "champion" / "version"
    assert (
        refit(
            [
                "finetune",
                "--model",
                "minilm",
                "--data.train",
                str(train),
                "--data.validation",
                str(golden),
                "--output_dir",
                str(work / "champion"),
                "--trainer.max_epochs",
                "1",
                "--data.max_length",
                "64",
                "--tracking.wandb",
                "false",
            ]
        )
        == 0
    )
    # Export before registering: the registered version carries its int8 artefact, so serve uses ONNX Runtime.
    assert refit(["export", "--version", str(version_dir), "--format", "onnx-int8"]) == 0
    registry = work / "registry"
    inbox = registry / "inbox"
    assert refit(["registry", "register", "--root", str(registry), "--version", str(version_dir)]) == 0
    reg = Registry(registry)
    reg.promote(reg.list_versions()[0].id, "initial champion")
    config = {
        "registry": {"root": str(registry)},
        "inbox": {"windows": str(inbox), "golden": str(golden), "replay_size": 300, "holdout_fraction": 0.3},
        "policy": {"tests": ["mmd", "ks"], "alpha": 0.05, "permutations": 500, "min_accuracy": 0.8},
        "retrain": {
            "data": {"max_length": 64, "batch_size": 32, "reference_size": 150},
            "optim": {"lr": 3e-5},
            "trainer": {"max_epochs": args.retrain_epochs},
            "tracking": {"wandb": False},
        },
        "gate": {
            "golden_tolerance": 2.0,
            "recent_margin": 0.5,
            "recent_alpha": None,
        },  # as its results were run
        "deploy": {"formats": ["onnx-int8"], "max_accuracy_drop": 1.0, "min_agreement": 0.97},
        "tracking": {"wandb": False},
    }
    config_path = work / "maintain.yaml"
    config_path.write_text(yaml.safe_dump(config))
    setup_s = time.perf_counter() - started

    proc, base = _start_server(registry, inbox, args.rotate_seconds, work / "serve.log")
    history: list[dict] = []
    pending: list[tuple[str, int]] = []  # (request id, true label) of the previous window: its late labels
    feedback_sent = 0
    try:
        with httpx.Client() as client:
            for k, (domain, rows) in enumerate(stream):
                t0 = time.perf_counter()
                answers = _serve_window(client, base, rows, args.client_batch)
                served_by = sorted({a["version_id"] for a in answers})
                correct = sum(int(a["label_id"]) == int(r["label"]) for a, r in zip(answers, rows))
                if pending:  # the previous window's labels, arriving one window late
                    r = client.post(
                        f"{base}/feedback",
                        json=[{"request_id": rid, "label": label} for rid, label in pending],
                        timeout=60,
                    )
                    r.raise_for_status()
                    feedback_sent += len(pending)
                labels_sent = len(pending)
                pending = [(a["request_id"], int(r["label"])) for a, r in zip(answers, rows)]
                _wait_finalised(inbox, [a["request_id"] for a in answers], feedback_sent, timeout=60)
                serve_s = time.perf_counter() - t0

                champion_before = reg.aliases()[CHAMPION]
                t1 = time.perf_counter()
                code = refit(["maintain", "--config", str(config_path), "--once"])
                cycle_s = time.perf_counter() - t1
                run = reg.runs("maintain")[-1]
                details = run["details"]
                champion_after = reg.aliases()[CHAMPION]
                swapped, swap_s = False, None
                if champion_after != champion_before:  # wait (bounded) for the server's watcher to swap
                    t2 = time.monotonic()
                    while time.monotonic() - t2 < args.swap_timeout:
                        if _served_version(client, base) == champion_after:
                            swapped, swap_s = True, round(time.monotonic() - t2, 1)
                            break
                        time.sleep(0.5)
                entry = {
                    "window": k,
                    "domain": domain,
                    "rows": len(rows),
                    "served_by": served_by,
                    "served_accuracy": correct / len(rows),
                    "late_labels_sent": labels_sent,
                    "cycle_exit": code,
                    "status": run["status"],
                    "drift_p": {
                        t: r["p_value"] for t, r in details.get("drift", {}).items() if isinstance(r, dict)
                    },
                    "champion_before": champion_before,
                    "champion_after": champion_after,
                    "server_swapped": swapped,
                    "swap_seconds": swap_s,
                    "served_version_after": _served_version(client, base),
                    "serve_seconds": round(serve_s, 1),
                    "cycle_seconds": round(cycle_s, 1),
                }
                history.append(entry)
                print(json.dumps(entry), flush=True)
            metrics_text = client.get(f"{base}/metrics", timeout=10).text
    finally:
        rc = _stop_server(proc)
    reloads = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'refit_serve_reloads_total\{result="(\w+)"\} ([0-9.e+]+)', metrics_text)
    }
    dropped = sum(
        float(m.group(1))
        for m in re.finditer(r"refit_serve_capture_rows_dropped_total\{[^}]*\} ([0-9.e+]+)", metrics_text)
    )

    result = {
        "machine": "2-core x86_64 CPU (shared with other engineers' jobs), no GPU",
        "seconds": round(time.perf_counter() - started),
        "setup_seconds": round(setup_s),
        "train_rows": args.train_rows,
        "window": args.window,
        "config": config,
        "server": {
            "backend": "auto (ONNX Runtime int8 export)",
            "watch_interval_s": 2,
            "rotate_seconds": args.rotate_seconds,
            "sigterm_returncode": rc,
            "reloads": reloads,
            "capture_rows_dropped": dropped,
        },
        "windows": history,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "maintenance.json").write_text(json.dumps(result, indent=2) + "\n")
    short = {
        v: f"v{i}"
        for i, v in enumerate(
            dict.fromkeys([h["champion_before"] for h in history] + [h["champion_after"] for h in history])
        )
    }
    lines = [
        f"# Maintenance simulation through `refit serve` ({result['machine']}, {result['seconds']} s)",
        "",
        f"MiniLM champion fine-tuned on {args.train_rows} sst2 rows (1 epoch), exported to ONNX int8 and served "
        f"by `refit serve` (ORT, capture rotated every {args.rotate_seconds:g} s, alias watched every 2 s). "
        f"Windows of {args.window} served requests; each window's true labels sent through POST /feedback one "
        f"window later; `refit maintain --once` after each window (retrain: {args.retrain_epochs} epoch).",
        "",
        "| window | domain | served by | served acc. | late labels | MMD p | KS p | cycle | champion after "
        "| server swapped |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for h in history:
        p = h["drift_p"]
        swap = (
            f"yes ({h['swap_seconds']} s)"
            if h["server_swapped"]
            else ("NO (timed out)" if h["champion_after"] != h["champion_before"] else "-")
        )
        lines.append(
            f"| {h['window']} | {h['domain']} | {', '.join(short.get(v, v) for v in h['served_by'])} "
            f"| {h['served_accuracy']:.3f} | {h['late_labels_sent']} "
            f"| {p.get('mmd', float('nan')):.3g} | {p.get('ks', float('nan')):.3g} | {h['status']} "
            f"| {short[h['champion_after']]} | {swap} |"
        )
    lines += [
        "",
        "Versions: " + ", ".join(f"{s} = `{v}`" for v, s in short.items()) + ".",
        f"Server: reloads {reloads or '{}'}, capture rows dropped "
        f"{result['server']['capture_rows_dropped']}, SIGTERM exit code {rc}.",
    ]
    (RESULTS / "maintenance.md").write_text("\n".join(lines) + "\n")
    _plot(history, RESULTS / "maintenance.png")
    print("\n".join(lines))


def _plot(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [h["window"] for h in history]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    a1.plot(xs, [h["served_accuracy"] for h in history], "o-", label="served accuracy (what users got)")
    for h in history:
        if h["server_swapped"]:
            a1.axvline(h["window"] + 0.5, color="g", ls=":", lw=1)
    a1.set_ylabel("accuracy")
    a1.set_title("dotted: server hot-swapped to a newly promoted champion", fontsize=8)
    a1.legend(fontsize=8)
    for test in ("mmd", "ks"):
        a2.semilogy(
            xs, [max(h["drift_p"].get(test, 1.0), 1e-4) for h in history], "o-", label=f"{test} p-value"
        )
    a2.axhline(0.05, color="r", ls="--", label="alpha")
    a2.set_xlabel("window (sst2 first, then airline tweets)")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
