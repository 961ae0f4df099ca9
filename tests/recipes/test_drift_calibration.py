"""Drift tests on real text with MiniLM embeddings: few false alarms without drift, detection of a real shift.

A smaller version of scripts/bench_drift.py (which runs 200+ trials and writes the numbers)."""

from __future__ import annotations

import json

import pytest
import torch

from refit.drift import DETECTORS
from refit.models import encode_texts, load_classifier
from tests.conftest import shared_dataset


@pytest.fixture(scope="module")
def embedded():
    sst2, tweets = shared_dataset("sst2"), shared_dataset("airline_tweets")
    model, tok, _ = load_classifier("minilm", ["negative", "positive"])
    texts = {
        "sst2": [json.loads(line)["text"] for line in (sst2 / "test.jsonl").read_text().splitlines()[:800]],
        "tweets": [
            json.loads(line)["text"] for line in (tweets / "test.jsonl").read_text().splitlines()[:200]
        ],
    }
    return {
        name: encode_texts(model, tok, t, batch_size=64, max_length=64).embeddings
        for name, t in texts.items()
    }


@pytest.mark.slow
@pytest.mark.parametrize("detector", ["mmd", "ks", "classifier"])
def test_false_alarms_stay_near_alpha_and_a_new_domain_is_found(embedded, detector):
    pool, n, trials = embedded["sst2"], 200, 40
    alarms = 0
    for t in range(trials):
        perm = torch.randperm(len(pool), generator=torch.Generator().manual_seed(t))
        ref, cur = pool[perm[:n]], pool[perm[n : 2 * n]]
        d = DETECTORS[detector]
        alarms += d.test(d.fit(ref, seed=t), ref, cur, alpha=0.05, seed=t, permutations=200).drift
    assert alarms / trials <= 0.15, f"{detector}: {alarms}/{trials} false alarms at alpha 0.05"
    ref = pool[:n]
    d = DETECTORS[detector]
    shifted = d.test(d.fit(ref, seed=0), ref, embedded["tweets"], alpha=0.05, seed=0, permutations=200)
    assert shifted.drift and shifted.p_value < 0.01
