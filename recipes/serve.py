"""refit serve: an HTTP server for a registry's champion (or one version folder), closing the loop.

    refit serve --config configs/serve/demo.yaml --registry.root registry
    refit serve --registry.root registry --alias champion --port 8000
    refit serve --version runs/demo/version --capture.store_texts false
    REFIT_SERVE_ADMIN_TOKEN=secret refit serve --registry.root registry --workers 2

POST /predict {"text": "..."} or {"texts": [...]} -> label, probabilities, version id and a request id per
text. POST /feedback {"request_id": ..., "label": ...} records a late true label. GET /healthz, /readyz,
/metrics (Prometheus). POST /admin/reload (header `Authorization: Bearer $REFIT_SERVE_ADMIN_TOKEN`).

The backend is the version's int8 or fp32 ONNX export when present (CPU), TensorRT when built (GPU),
PyTorch otherwise. Every input and prediction is captured to REGISTRY/inbox as rotating Parquet files for
`refit maintain`. When the alias moves (a promotion or a rollback) the new version is verified, warmed
up and parity-checked in a second slot, then swapped in; a version that fails is refused and the old one
keeps serving. SIGTERM or Ctrl-C stops accepting, answers in-flight requests, finalises the capture files
and exits 0 (a second Ctrl-C cuts in-flight requests off: exit 130).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from refit.serve.app import run_server
from refit.serve.server import ServeOptions
from refit.serve.slot import BACKENDS
from refit.settings import RegistryConfig


@dataclass
class BatchingConfig:
    """Dynamic micro-batching.

    Args:
        max_batch_size: Most texts run together in one inference call.
        max_wait_ms: Longest a text waits for others to join its batch (0 = run what is there).
        max_texts_per_request: Most texts one /predict call (or rows one /feedback call) may send.
        max_request_bytes: Largest request body accepted; larger ones are answered 413 unread.
        max_pending: Most texts waiting for inference; a request beyond it is answered 503 with
            Retry-After (0 = no bound).
    """

    max_batch_size: PositiveInt = 32
    max_wait_ms: NonNegativeFloat = 5.0
    max_texts_per_request: PositiveInt = 256
    max_request_bytes: PositiveInt = 4 * 1024 * 1024
    max_pending: NonNegativeInt = 4096


@dataclass
class CaptureConfig:
    """Request capture for the maintenance cycle (rotating Parquet files, written off the request path).

    Args:
        enabled: Capture every prediction and accept /feedback.
        dir: Capture folder (default REGISTRY/inbox, or inbox/ beside --version).
        store_texts: Keep the input texts; false keeps only their sha256 (privacy), so drift then needs
            embeddings computed elsewhere.
        queue_size: Rows buffered for the writer; beyond that rows are dropped and counted, never waited for.
        rotate_rows: Start a new file after this many rows.
        rotate_seconds: Start a new file after this many seconds.
    """

    enabled: bool = True
    dir: str | None = None
    store_texts: bool = True
    queue_size: PositiveInt = 20000
    rotate_rows: PositiveInt = 10000
    rotate_seconds: PositiveFloat = 300.0


@dataclass
class Config:
    """Serve a model version over HTTP.

    Args:
        registry: The registry whose alias is served and watched.
        alias: The alias to serve (champion by default); the server follows it as it moves.
        version: Serve this version folder instead of a registry alias (no watching).
        backend: auto (int8 ONNX, fp32 ONNX, then PyTorch on CPU; TensorRT first on CUDA) or one backend.
        device: cpu or cuda.
        threads: Inference threads (0 = PyTorch's default).
        max_length: Token limit per text (0 = the version's training max_length).
        probabilities: raw: the softmax as the model gives it; calibrated: the logits divided by the
            version's fitted temperature (calibration.json, fitted on its validation split) first, so a
            served 0.9 is right about 9 times in 10 on data like that split. Not the default: a validation
            split the model gets all right gives no bound on the temperature (the demo's fit 0.04, which
            serves 1 - 1e-15 on any input), and under drift a sharpened softmax is more wrong. The label is
            the same either way; each prediction says which it got ("calibrated").
        host: Address to listen on.
        port: Port to listen on.
        workers: uvicorn worker processes; each loads the model and writes its own capture files.
        watch_interval_s: Seconds between looks at the registry alias (0 = only POST /admin/reload).
        admin_token_env: Environment variable holding the token for POST /admin/reload (unset = disabled).
        graceful_timeout_s: On SIGTERM, longest wait for in-flight requests before closing connections.
        access_log: uvicorn's one line per request (off under heavy load saves CPU; /metrics counts anyway).
        batching: Micro-batching.
        capture: Request capture and feedback.
    """

    registry: RegistryConfig = field(default_factory=RegistryConfig)
    alias: str = "champion"
    version: str | None = None
    backend: Literal[("auto", *BACKENDS)] = "auto"  # type: ignore[valid-type]
    device: Literal["cpu", "cuda"] = "cpu"
    threads: NonNegativeInt = 0
    max_length: NonNegativeInt = 0
    probabilities: Literal["raw", "calibrated"] = "raw"
    host: str = "127.0.0.1"
    port: NonNegativeInt = 8000
    workers: PositiveInt = 1
    watch_interval_s: NonNegativeFloat = 5.0
    admin_token_env: str = "REFIT_SERVE_ADMIN_TOKEN"
    graceful_timeout_s: PositiveFloat = 30.0
    access_log: bool = True
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)


def options(cfg: Config) -> ServeOptions:
    """The recipe's config as the server's flat options (config objects stop at the recipe)."""
    b, c = cfg.batching, cfg.capture
    return ServeOptions(
        registry_root=None if cfg.version else cfg.registry.root,
        registry_db=cfg.registry.db,
        alias=cfg.alias,
        version=cfg.version,
        backend=cfg.backend,
        device=cfg.device,
        threads=cfg.threads,
        max_length=cfg.max_length,
        probabilities=cfg.probabilities,
        max_batch_size=b.max_batch_size,
        max_wait_ms=b.max_wait_ms,
        max_texts_per_request=b.max_texts_per_request,
        max_request_bytes=b.max_request_bytes,
        max_pending=b.max_pending,
        capture=c.enabled,
        capture_dir=c.dir,
        store_texts=c.store_texts,
        capture_queue=c.queue_size,
        rotate_rows=c.rotate_rows,
        rotate_seconds=c.rotate_seconds,
        watch_interval_s=cfg.watch_interval_s,
        admin_token_env=cfg.admin_token_env,
    )


def run(cfg: Config) -> int:
    return run_server(
        options(cfg), cfg.host, cfg.port, cfg.workers, cfg.graceful_timeout_s, access_log=cfg.access_log
    )
