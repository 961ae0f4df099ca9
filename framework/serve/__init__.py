"""Serving: `refit serve` (FastAPI + uvicorn) with micro-batching, request capture, feedback and hot swap.

The slot (one verified, warmed-up version and its backend) and the capture writer are owned here; the
maintenance cycle reads the capture files this package writes (see `refit.serve.capture` for the contract).
"""

from refit.serve.batcher import BatcherBusy, BatcherClosed, MicroBatcher
from refit.serve.capture import CAPTURE_SCHEMA, FEEDBACK_SCHEMA, RotatingParquetWriter
from refit.serve.server import FeedbackError, ServeOptions, Server
from refit.serve.slot import AUTO_ORDER, BACKENDS, Slot, Unavailable, load_slot

__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "BatcherBusy",
    "BatcherClosed",
    "CAPTURE_SCHEMA",
    "FEEDBACK_SCHEMA",
    "FeedbackError",
    "MicroBatcher",
    "RotatingParquetWriter",
    "ServeOptions",
    "Server",
    "Slot",
    "Unavailable",
    "load_slot",
]
