"""Micro-batching: concurrent texts share batches, batches are length-bucketed and never mix slots, the
answers equal one-at-a-time inference, and shutdown answers everything already queued."""

from __future__ import annotations

import time

import numpy as np
import pytest

from refit.inference import TorchPredictor
from refit.serve.batcher import BatcherClosed, MicroBatcher
from refit.serve.slot import Slot, softmax


class Recording:
    """A real PyTorch predictor that also records the shape of every batch it is given."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.shapes = inner, "recording", []

    def __call__(self, input_ids, attention_mask):
        self.shapes.append(input_ids.shape)
        return self.inner(input_ids, attention_mask)


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return (
        AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval(),
        AutoTokenizer.from_pretrained(tiny_model_dir),
    )


def make_slot(model_and_tokenizer, vid: str = "v1") -> Slot:
    model, tokenizer = model_and_tokenizer
    return Slot(
        vid,
        None,
        "pytorch",
        Recording(TorchPredictor(model)),
        tokenizer,
        ["neg", "pos"],
        64,
        tokenizer.pad_token_id,
    )


def test_concurrent_texts_share_length_bucketed_batches(model_and_tokenizer):
    slot = make_slot(model_and_tokenizer)
    short = [[101, 2000 + i, 102] for i in range(24)]
    long = [[101, *range(3000, 3040 + i % 3), 102] for i in range(24)]
    mixed = [x for pair in zip(short, long) for x in pair]
    batcher = MicroBatcher(max_batch_size=24, max_wait_ms=300)
    futures = [batcher.submit(slot, ids) for ids in mixed]
    results = [f.result(timeout=30) for f in futures]
    batcher.close()
    shapes = slot.predictor.shapes
    assert len(shapes) == 2 and all(s[0] == 24 for s in shapes)  # batched, within max_batch_size
    assert sorted(s[1] for s in shapes) == [3, 44]  # short texts were not padded to the long ones' length
    for ids, (label, probs) in zip(mixed, results):  # same answers as one text at a time
        arr = np.array([ids])
        alone = softmax(slot.predictor.inner(arr, np.ones_like(arr)))[0]
        np.testing.assert_allclose(probs, alone, atol=1e-5)
        assert label == int(alone.argmax())


def test_batches_never_mix_slots(model_and_tokenizer):
    old, new = make_slot(model_and_tokenizer, "old"), make_slot(model_and_tokenizer, "new")
    batcher = MicroBatcher(max_batch_size=32, max_wait_ms=300)
    futures = [batcher.submit(old if i % 2 else new, [101, 2000 + i, 102]) for i in range(10)]
    for f in futures:
        f.result(timeout=30)
    batcher.close()
    assert old.predictor.shapes == [(5, 3)] and new.predictor.shapes == [(5, 3)]


def test_close_answers_queued_work_then_refuses(model_and_tokenizer):
    slot = make_slot(model_and_tokenizer)
    batcher = MicroBatcher(max_batch_size=4, max_wait_ms=500)
    futures = [batcher.submit(slot, [101, 2000 + i, 102]) for i in range(10)]
    batcher.close()
    assert all(f.done() and f.exception() is None for f in futures)
    with pytest.raises(BatcherClosed):
        batcher.submit(slot, [101, 102])


def test_a_failing_batch_fails_its_requests_only(model_and_tokenizer):
    slot = make_slot(model_and_tokenizer)
    batcher = MicroBatcher(max_batch_size=8, max_wait_ms=1)
    bad = batcher.submit(slot, [101, 10**9, 102])  # token id outside the vocabulary: the model raises
    with pytest.raises(Exception):  # noqa: B017 - whatever torch raises, it reaches the request
        bad.result(timeout=30)
    good = batcher.submit(slot, [101, 2000, 102]).result(timeout=30)
    batcher.close()
    assert good[0] in (0, 1)


def test_a_request_over_max_pending_is_refused_whole_and_the_queue_still_drains(model_and_tokenizer):
    """Before: the queue had no bound, so a flood of requests grew memory and latency without limit.
    Now a request that would pass max_pending is refused whole (nothing of it queued) with the reason."""
    import threading

    from refit.serve.batcher import BatcherBusy

    slot = make_slot(model_and_tokenizer)
    release = threading.Event()
    inner = slot.predictor

    def blocked(ids, mask):  # the inference thread is busy until released
        release.wait(30)
        return inner(ids, mask)

    slot.predictor = blocked
    batcher = MicroBatcher(max_batch_size=2, max_wait_ms=1, max_pending=6)
    first = batcher.submit(slot, [101, 2000, 102])  # taken by the inference thread, which then blocks
    time.sleep(0.2)
    queued = batcher.submit_many(slot, [[101, 2001 + i, 102] for i in range(5)])
    with pytest.raises(BatcherBusy, match="max_pending: 6"):
        batcher.submit_many(slot, [[101, 2010, 102], [101, 2011, 102]])
    assert batcher.pending == 5  # the refused request left nothing behind
    more = batcher.submit(slot, [101, 2012, 102])  # exactly at the bound: accepted
    release.set()
    assert all(f.result(timeout=30)[1].shape == (2,) for f in [first, *queued, more])
    batcher.close()
