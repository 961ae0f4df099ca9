"""Timing helpers of refit.inference: a pair of models is timed in alternating rounds, never one after the
other (on a shared machine the load between two back-to-back measurements decides their ratio)."""

from __future__ import annotations

import time

import torch

from refit.inference import Batch, interleaved_p50_ms


def test_interleaved_timing_alternates_rounds_and_ranks_the_slower_model():
    calls: list[str] = []

    def runner(name: str, seconds: float):
        def run(input_ids, attention_mask):
            calls.append(name)
            time.sleep(seconds)
            return torch.zeros(len(input_ids), 2)

        return run

    batch = Batch(torch.ones(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.long))
    slow, fast = interleaved_p50_ms(
        [runner("slow", 0.004), runner("fast", 0.0)], batch, warmup=1, iters=3, rounds=3
    )
    assert slow > 3.5 > fast
    # each round runs each model's warm-up and timed calls in turn: slow, fast, slow, fast, slow, fast
    blocks = [calls[i] for i in range(0, len(calls), 4)]
    assert blocks == ["slow", "fast"] * 3 and len(calls) == 24
