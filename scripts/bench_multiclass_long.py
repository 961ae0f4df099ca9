"""Do long inputs (20newsgroups posts, up to 2,000 characters) cost `refit serve` more than short ones?

    python scripts/bench_multiclass_long.py --version runs/mc/ag/version --rounds 15

Starts `refit serve --version VERSION` on loopback, then posts batches of 32 short texts (trec6 questions)
and 32 long ones (the longest 20newsgroups test posts), interleaved round by round so that a loaded machine
slows both alike, and prints the median latency of each and their ratio, as JSON. Every answer is checked
to hold one probability per label of the version. Run it under the machine-wide benchmark lock.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _datasets import read_rows  # noqa: E402


def _texts(name: str, n: int, longest: bool) -> list[str]:
    rows = [r["text"] for r in read_rows(name, "test")]
    return sorted(rows, key=len, reverse=True)[:n] if longest else rows[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    labels = json.loads((Path(args.version) / "refit.json").read_text())["labels"]
    sets = {"short": _texts("trec6", args.batch, False), "long": _texts("20newsgroups", args.batch, True)}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refit = Path(sys.executable).with_name("refit")
    proc = subprocess.Popen(
        [str(refit), "serve", "--version", args.version, "--port", str(port), "--capture.enabled", "false"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the server did not become ready")
            time.sleep(0.5)
        ready = httpx.get(f"{base}/readyz", timeout=5).json()
        times: dict[str, list[float]] = {k: [] for k in sets}
        with httpx.Client(base_url=base, timeout=120) as client:
            for r in range(args.rounds + 1):  # round 0 warms up, not counted
                for name in sets if r % 2 else reversed(list(sets)):  # alternate which goes first
                    started = time.perf_counter()
                    answer = client.post("/predict", json={"texts": sets[name]})
                    elapsed = time.perf_counter() - started
                    predictions = answer.json()["predictions"]
                    assert len(predictions) == len(sets[name])
                    assert all(list(p["probabilities"]) == labels for p in predictions)
                    if r:
                        times[name].append(elapsed * 1000)
    finally:
        proc.terminate()
        proc.wait(30)
    median = {k: statistics.median(v) for k, v in times.items()}
    print(
        json.dumps(
            {
                "version": args.version,
                "backend": ready.get("backend"),
                "labels": len(labels),
                "batch": args.batch,
                "rounds": args.rounds,
                "chars_mean": {k: round(statistics.mean(map(len, v)), 1) for k, v in sets.items()},
                "median_ms": {k: round(v, 1) for k, v in median.items()},
                "long_over_short": round(median["long"] / median["short"], 3),
                "all_ms": {k: [round(x, 1) for x in v] for k, v in times.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
