"""Prometheus metrics of one server process, in a registry of its own (no process-global state).

With `--workers N` every worker process has its own metrics; scrape each (or run one worker per pod).
"""

from __future__ import annotations

from collections.abc import Callable

from refit.errors import RefitError
from refit.serve.capture import CAPTURE, FEEDBACK

try:  # the `serve` extra; the rest of the library (and `refit serve --help`) works without it
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST
except ImportError:  # pragma: no cover - exercised only without the extra
    CollectorRegistry = None
    CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"

__all__ = ["ServeMetrics", "CONTENT_TYPE_LATEST"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    def __init__(self) -> None:
        if CollectorRegistry is None:
            raise RefitError(
                "refit serve needs prometheus-client, which is not installed: `pip install refit-ml[serve]`."
            )
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "refit_serve_requests",
            "HTTP requests by endpoint and status code",
            ["endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "refit_serve_request_latency_seconds",
            "Request latency by endpoint",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.texts = Counter("refit_serve_texts", "Texts predicted", registry=r)
        self.batch_size = Histogram(
            "refit_serve_batch_size", "Texts per inference batch", buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_latency = Histogram(
            "refit_serve_batch_seconds", "Inference time per batch", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.capture_backlog = Gauge(
            "refit_serve_capture_backlog", "Rows waiting for the writer", ["kind"], registry=r
        )
        self.capture_written = Counter(
            "refit_serve_capture_rows_written",
            "Rows in finalised Parquet files (visible to the maintenance cycle)",
            ["kind"],
            registry=r,
        )
        self.capture_dropped = Counter(
            "refit_serve_capture_rows_dropped",
            "Rows dropped (queue full or writer failing)",
            ["kind"],
            registry=r,
        )
        self.capture_failing = Gauge(
            "refit_serve_capture_failing",
            "1 while the writer cannot write (disk full, folder gone) until a file is finalised again, else 0",
            ["kind"],
            registry=r,
        )
        self.version = Gauge(
            "refit_serve_version_info",
            "The version being served (value 1)",
            ["version_id", "backend"],
            registry=r,
        )
        self.reloads = Counter(
            "refit_serve_reloads", "Hot-swap attempts by result (swapped, refused)", ["result"], registry=r
        )
        for kind in (CAPTURE, FEEDBACK):  # the writers' kinds (refit.serve.capture names the files)
            self.capture_written.labels(kind)
            self.capture_dropped.labels(kind)
        for result in ("swapped", "refused"):
            self.reloads.labels(result)

    def watch_writer(self, kind: str, backlog: Callable[[], int], failing: Callable[[], bool]) -> None:
        """The writer's backlog and whether it is failing, read at each scrape."""
        self.capture_backlog.labels(kind).set_function(backlog)
        self.capture_failing.labels(kind).set_function(lambda: float(failing()))

    def set_version(self, version_id: str, backend: str) -> None:
        self.version.clear()
        self.version.labels(version_id, backend).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
