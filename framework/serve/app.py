"""HTTP in front of a `Server`: FastAPI routes, Prometheus middleware, lifespan (start, drain on SIGTERM).

FastAPI is the `serve` extra, imported here only when an app is built, so `refit --help` and the rest of
the library work without it.

Endpoints: POST /predict, POST /feedback, GET /healthz, GET /readyz, GET /metrics, POST /admin/reload.
"""

# No `from __future__ import annotations` here: FastAPI reads the request models' annotations at run time.
import asyncio
import hmac
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from refit.errors import ConfigError, RefitError
from refit.serve.batcher import BatcherBusy, BatcherClosed
from refit.serve.metrics import CONTENT_TYPE_LATEST
from refit.serve.server import ADMIN_RELOAD_WAIT_S, FeedbackError, ServeOptions, Server

__all__ = ["build_app", "create_app_from_env", "run_server", "OPTIONS_ENV"]

log = logging.getLogger("refit.serve")
OPTIONS_ENV = (
    "REFIT_SERVE_OPTIONS"  # JSON of ServeOptions, for `--workers N` (each worker builds its own app)
)


def _missing_fastapi() -> RefitError:
    return RefitError(
        "refit serve needs FastAPI and uvicorn, which are not installed: `pip install refit-ml[serve]`."
    )


class _Metrics:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware): counts and times every request by route."""

    def __init__(self, app, get_server: Callable[[], Server | None]) -> None:
        self.app = app
        self.get_server = get_server

    async def __call__(self, scope, receive, send):
        server = self.get_server()
        if scope["type"] != "http" or server is None:
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_status(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = scope["path"] if scope["path"] in _ROUTES else "other"
            server.metrics.requests.labels(path, str(status["code"])).inc()
            server.metrics.latency.labels(path).observe(time.perf_counter() - started)


_ROUTES = {"/predict", "/feedback", "/healthz", "/readyz", "/metrics", "/admin/reload"}


class _BodyLimit:
    """Pure ASGI middleware: a request body over `limit` bytes is answered 413 before any of it is parsed.

    Without it a single 10 MB text took 7 s of the tokenizer's time (it tokenises everything, then
    truncates) and a 100 000-row feedback list filled the writer's queue. The body is read here (up to the
    limit, whether or not a Content-Length was sent) and handed on to the app unchanged.
    """

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"0")
        too_big = not declared.isdigit() or int(declared) > self.limit
        chunks, size, more = [], 0, True
        while more and not too_big:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                chunks.append(message)
                break
            size += len(message.get("body", b""))
            chunks.append(message)
            more = message.get("more_body", False)
            too_big = size > self.limit
        if too_big:
            await self._discard(receive, more)
            body = json.dumps(
                {
                    "detail": f"The request body is over {self.limit} bytes (batching.max_request_bytes); "
                    "send fewer or shorter texts per request."
                }
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
                }
            )
            return await send({"type": "http.response.body", "body": body})

        async def replay():
            return chunks.pop(0) if chunks else await receive()

        return await self.app(scope, replay, send)

    async def _discard(self, receive, more: bool) -> None:
        """Read and drop the rest of a refused body (up to 64x the limit), so the client gets the 413
        instead of a connection reset while it is still sending."""
        left = 64 * self.limit
        while more and left > 0:
            message = await receive()
            if message["type"] != "http.request":
                return
            left -= len(message.get("body", b""))
            more = message.get("more_body", False)


def _bad_text(texts: list[str]) -> str | None:
    """Why a text cannot be served, or None: JSON may carry lone surrogates (\\ud800), which are not Unicode
    text; the tokenizer raised a TypeError on them (a 500) and the capture writer could not hash them."""
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            return f"text {i} is not valid Unicode ({e.reason} at character {e.start}); send UTF-8 text."
    return None


def _feedback_rows(items: list) -> list[tuple[object, object]]:
    """(request id, label) of each posted feedback object, or a FeedbackError naming the row and the key.

    The body is read as plain JSON, not as a pydantic model of `{...} | [{...}]`: a row without its label
    got pydantic's errors for both alternatives ("Field required" and "Input should be a valid list")
    with no row number. The label stays any JSON value: the server's rule (refit.data.labels.feedback_label)
    refuses true, 1.0 and "1" for an id, naming the allowed labels."""
    rows = []
    for n, item in enumerate(items, 1):
        where = f"row {n} of {len(items)}: " if len(items) > 1 else ""
        if not isinstance(item, dict):
            raise FeedbackError(
                f'{where}a feedback row is a JSON object {{"request_id": ..., "label": ...}}, '
                f"not {type(item).__name__}."
            )
        missing = [key for key in ("request_id", "label") if key not in item]
        if missing:
            raise FeedbackError(
                f"{where}missing {' and '.join(repr(k) for k in missing)}; a feedback row is "
                '{"request_id": ..., "label": ...} (the request id /predict returned, the true label).'
            )
        if not isinstance(item["request_id"], str):
            raise FeedbackError(
                f"{where}request_id must be a string (32 hex characters, as /predict returned it)."
            )
        rows.append((item["request_id"], item["label"]))
    return rows


def build_app(options: ServeOptions | None = None, server: Server | None = None):
    """The FastAPI app. Give a ready `server` (the CLI builds it first, so a bad version is a clean exit 2)
    or `options` (the server is then built at startup, as each `--workers` process does)."""
    try:
        from fastapi import Body, FastAPI, HTTPException, Request
        from fastapi.responses import JSONResponse, Response
        from pydantic import BaseModel, Field
    except ImportError:
        raise _missing_fastapi() from None
    if server is None and options is None:
        raise ValueError("build_app needs options or a server")
    state: dict[str, Server | None] = {"server": server}

    @asynccontextmanager
    async def lifespan(app):
        if state["server"] is None:
            state["server"] = Server(options)
        srv = state["server"]
        # where the captures go: `refit maintain --inbox.windows` must read that folder (with --version it
        # is VERSION/../inbox, which a user driving the loop could not find from the README alone)
        capture = f"capturing to {srv.capture_dir}" if srv.feedback is not None else "capture off"
        log.info(
            "refit serve: serving %s (%s) from %s; %s",
            srv.slot.version_id,
            srv.slot.backend,
            srv.slot.path,
            capture,
        )
        try:
            yield
        finally:  # uvicorn has stopped accepting and waited for in-flight requests: drain and flush
            srv.close()

    app = FastAPI(title="refit serve", lifespan=lifespan)
    app.add_middleware(_BodyLimit, limit=(options or server.options).max_request_bytes)
    app.add_middleware(_Metrics, get_server=lambda: state["server"])  # added last: outermost, counts the 413s
    token = os.environ.get((options or server.options).admin_token_env) or None

    class PredictIn(BaseModel):
        text: str | None = Field(None, description="One text.")
        texts: list[str] | None = Field(None, description="Several texts (answered in order).")

    def srv() -> Server:
        return state["server"]

    @app.post("/predict")
    async def predict(body: PredictIn):
        s = srv()
        if (body.text is None) == (body.texts is None):
            raise HTTPException(422, "Send exactly one of 'text' (a string) or 'texts' (a list of strings).")
        texts = [body.text] if body.text is not None else body.texts
        if not texts or len(texts) > s.options.max_texts_per_request:
            raise HTTPException(
                422, f"'texts' must hold 1 to {s.options.max_texts_per_request} strings (got {len(texts)})."
            )
        if why := _bad_text(texts):
            raise HTTPException(422, why)
        try:
            out = await s.predict(texts)
        except BatcherClosed:
            raise HTTPException(503, "The server is shutting down.") from None
        except BatcherBusy as e:
            raise HTTPException(503, f"The server is overloaded: {e}", headers={"Retry-After": "1"}) from None
        return out[0] if body.text is not None else {"predictions": out, "version_id": out[0]["version_id"]}

    @app.post("/feedback")
    async def feedback(body: Annotated[Any, Body()]):
        items = body if isinstance(body, list) else [body]
        limit = srv().options.max_texts_per_request
        if not items or len(items) > limit:
            raise HTTPException(422, f"Send 1 to {limit} feedback rows per request (got {len(items)}).")
        try:
            accepted = srv().add_feedback(_feedback_rows(items))
        except FeedbackError as e:
            raise HTTPException(422, str(e)) from None
        return {"accepted": accepted, "dropped": len(items) - accepted}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        s = srv()
        body = {"ready": s.accepting, "version_id": s.slot.version_id, "backend": s.slot.backend}
        if s.refused:  # the alias points elsewhere, at a version this server refused: say so (why: the log)
            body["refused_version_id"] = s.refused
        if s.registry_problem:  # the alias cannot be read or disagrees with the audit log: the old serves on
            body["registry_problem"] = s.registry_problem
        if problem := s.capture_problem:  # predictions go on, their records do not: said, not only counted
            body["capture_problem"] = problem
        if dropped := s.capture_dropped:  # any loss since start, a full queue under overload included
            body["capture_dropped"] = dropped
        return JSONResponse(body, status_code=200 if s.accepting else 503)

    @app.get("/metrics")
    async def metrics():
        return Response(srv().metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload")
    async def reload(request: Request, force: bool = False):
        if token is None:
            raise HTTPException(403, f"Reload is disabled: set {srv().options.admin_token_env} to enable it.")
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(403, "Missing or wrong admin token (send 'Authorization: Bearer TOKEN').")
        try:
            return await asyncio.to_thread(srv().reload, force, lock_wait_s=ADMIN_RELOAD_WAIT_S)
        except RefitError as e:
            return JSONResponse({"detail": str(e), "version_id": srv().slot.version_id}, status_code=409)

    return app


def create_app_from_env():
    """uvicorn factory for `--workers N`: every worker process reads the options and builds its own server."""
    _log_to_stderr()  # a worker is a fresh (spawned) process: the parent's logging setup is not inherited
    return build_app(ServeOptions(**json.loads(os.environ[OPTIONS_ENV])))


def _check_port(host: str, port: int) -> None:
    """A taken port made uvicorn log its own line and exit 3 (refit's 'drift' code elsewhere) after a
    clean-looking shutdown: bind it here first, as uvicorn will (SO_REUSEADDR), for one clear error."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as e:
        raise ConfigError(f"Invalid value for 'host': cannot listen on {host!r} ({e.strerror}).") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            raise ConfigError(
                f"Cannot listen on {host}:{port} ({e.strerror}): is another server running there? "
                "Give a free one with --port, or stop the other server."
            ) from None


def run_server(
    options: ServeOptions,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    graceful_timeout_s: float = 30.0,
    log_level: str = "info",
    access_log: bool = True,
) -> int:
    """Serve until SIGTERM/SIGINT; then stop accepting, answer in-flight requests, flush capture, return 0.

    With one worker the server is built here first, so a bad version or registry is a clean RefitError
    before any port is opened. With `workers > 1` uvicorn starts N processes that each load the model and
    write their own capture files (names are unique per file, so they never collide); its supervisor
    returns normally after stopping them. Returns the exit code: 0 after a graceful stop, 130 when a second
    Ctrl-C forced it (in-flight requests cut off; the capture files are still finalised by the lifespan).
    """
    try:
        import uvicorn
    except ImportError:
        raise _missing_fastapi() from None
    common = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "timeout_graceful_shutdown": graceful_timeout_s,
        "access_log": access_log,
    }
    if workers == 1:
        app = build_app(server=Server(options))  # a bad version fails here, before logging is set up
        _check_port(host, port)
        _log_to_stderr()
        server = _graceful_server(uvicorn)(uvicorn.Config(app, **common))
        server.run()
        if not server.started:  # the port is taken or startup failed: uvicorn has logged why
            return 1
        return 130 if server.force_exit else 0
    _check_port(host, port)
    _log_to_stderr()
    os.environ[OPTIONS_ENV] = json.dumps(options.to_dict())
    uvicorn.run("refit.serve.app:create_app_from_env", factory=True, workers=workers, **common)
    return 0


def _log_to_stderr() -> None:
    """refit's own serve lines (serving, swapped, shut down) are INFO: show INFO and up on stderr.
    uvicorn configures only its own loggers; without this Python's fallback handler shows WARNING and up."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _graceful_server(uvicorn):
    """uvicorn's Server with one change: a stop signal ends in a normal return, not a re-raised signal.

    uvicorn handles SIGTERM/SIGINT by setting `should_exit` (a second Ctrl-C sets `force_exit`), shuts
    down gracefully (stop accepting, wait for in-flight requests, run the lifespan's shutdown, which drains
    the batcher and finalises the capture files), and then re-raises the signal so that the process dies
    by it: exit status 143, which systemd and Kubernetes may count as a failure. Here the signal has been
    handled in full once the shutdown is done, so it is not re-raised and `refit serve` exits 0.
    """

    class GracefulServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            else:
                self.should_exit = True

    return GracefulServer
