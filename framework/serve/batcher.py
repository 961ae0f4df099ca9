"""Dynamic micro-batching: one inference thread runs the texts of many concurrent requests together.

A text waits at most `max_wait_ms` for company. What has arrived by then (and whatever else is already
queued, up to a few batches' worth) is sorted by token length and cut into batches of at most
`max_batch_size`, so short texts are not padded to the length of a long one (length bucketing). Texts are
only batched with texts pinned to the same slot: a request that started before a hot swap finishes on the
model it started on.

One thread owns the predictors: ONNX Runtime and PyTorch already use every core inside one call, and a
single caller keeps the sessions free of concurrent use.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from itertools import groupby

import numpy as np

from refit.serve.slot import Slot, pad_batch

__all__ = ["MicroBatcher", "BatcherClosed", "BatcherBusy"]

log = logging.getLogger("refit.serve")


class BatcherClosed(RuntimeError):
    """The server is shutting down and takes no new work."""


class BatcherBusy(RuntimeError):
    """More texts are waiting than the server queues (max_pending): answer 503, the client retries.

    Without a bound a flood of requests queued without limit: memory grew and every answer came later,
    until clients timed out on work the server still did.
    """


@dataclass
class _Item:
    slot: Slot
    ids: Sequence[int]
    future: Future


class MicroBatcher:
    """Submit token ids, get a Future of (label id, probabilities)."""

    def __init__(
        self,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        bucket_batches: int = 4,
        on_batch: Callable[[int, float], None] | None = None,
        max_pending: int = 0,
    ) -> None:
        """max_pending: most texts waiting for inference (0 = no bound); a request over it is refused whole."""
        self.max_batch_size = max_batch_size
        self.max_pending = max_pending
        self.max_wait = max_wait_ms / 1000.0
        self.bucket_limit = max_batch_size * bucket_batches
        self._on_batch = on_batch or (lambda size, seconds: None)
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="refit-inference", daemon=True)
        self._thread.start()

    def submit(self, slot: Slot, ids: Sequence[int]) -> Future:
        return self.submit_many(slot, [ids])[0]

    def submit_many(self, slot: Slot, texts: Sequence[Sequence[int]]) -> list[Future]:
        """Queue the texts of one request: all of them, or none (BatcherBusy) when that would pass max_pending."""
        futures: list[Future] = []
        with self._lock:  # no item may slip in behind the shutdown marker
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            waiting = self._queue.qsize()
            if self.max_pending and waiting + len(texts) > self.max_pending:
                raise BatcherBusy(
                    f"{waiting} texts are already waiting for inference (batching.max_pending: "
                    f"{self.max_pending}); retry shortly."
                )
            for ids in texts:
                futures.append(Future())
                self._queue.put(_Item(slot, ids, futures[-1]))
        return futures

    def close(self, timeout: float = 60.0) -> None:
        """Stop taking work, answer everything already queued, then stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join(timeout)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    # --- inference thread --------------------------------------------------------------------------
    def _collect(self, first: _Item) -> tuple[list[_Item], bool]:
        """`first` plus what arrives within max_wait (up to a batch), plus what is already queued."""
        items, stop = [first], False
        deadline = time.monotonic() + self.max_wait
        while len(items) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if item is None:
                return items, True
            items.append(item)
        while len(items) < self.bucket_limit:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                stop = True
                break
            items.append(item)
        return items, stop

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                break
            items, stop = self._collect(first)
            self._process(items)
            if stop:
                break
        # Drain: anything queued before the marker is answered (close() takes the lock, so nothing after it).
        rest = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                rest.append(item)
        if rest:
            self._process(rest)

    def _process(self, items: list[_Item]) -> None:
        items.sort(key=lambda it: (id(it.slot), len(it.ids)))
        for _, same_slot in groupby(items, key=lambda it: id(it.slot)):
            group = list(same_slot)
            for start in range(0, len(group), self.max_batch_size):
                self._run_batch(group[start : start + self.max_batch_size])

    def _run_batch(self, batch: list[_Item]) -> None:
        slot = batch[0].slot
        started = time.perf_counter()
        try:
            ids, mask = pad_batch([it.ids for it in batch], slot.pad_id)
            probs = slot.probabilities(slot.predictor(ids, mask))
        except Exception as e:  # the requests in this batch fail; the server and the next batch do not
            log.exception("refit serve: inference failed on a batch of %d", len(batch))
            for it in batch:
                if not it.future.done():
                    it.future.set_exception(e)
            return
        self._on_batch(len(batch), time.perf_counter() - started)
        labels = np.argmax(probs, axis=-1)
        for it, label, p in zip(batch, labels, probs):
            if not it.future.done():
                it.future.set_result((int(label), p))
