"""The serving process: the current slot, the micro-batcher, the capture writers and the registry watcher.

`Server` holds the state and does the work (predict, feedback, reload); `refit.serve.app` puts HTTP in
front of it. A hot swap builds a complete second slot off to the side and then replaces one reference, so
there is never a moment without a working model, and a version that fails verification, warm-up or parity
never becomes the served one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from refit.data import feedback_label
from refit.errors import ConfigError, DataError, RefitError, VersionError
from refit.io import private_dir
from refit.models.version import read_version
from refit.registry.store import NoRegistry, Registry, RegistryError
from refit.serve.batcher import MicroBatcher
from refit.serve.capture import (
    CAPTURE,
    CAPTURE_SCHEMA,
    FEEDBACK,
    FEEDBACK_SCHEMA,
    FeedbackClock,
    RotatingParquetWriter,
    capture_row,
    clean_abandoned,
    feedback_row,
    utc_now,
)
from refit.serve.metrics import ServeMetrics
from refit.serve.request_ids import RequestIds
from refit.serve.slot import Slot, load_slot

__all__ = ["ServeOptions", "Server", "FeedbackError"]

log = logging.getLogger("refit.serve")
_REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")


def _shown(value: object, limit: int = 80) -> str:
    """A client's value quoted for an error message: repr (a newline or control character shows as an
    escape, not as a line break in the log) and cut, so a 4 MB label is not echoed back whole."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


ADMIN_RELOAD_WAIT_S = 2.0  # POST /admin/reload waits at most this long for each lock, then answers 409


class ReloadBusy(RefitError):
    """A reload is already running (typically the watcher waiting for a locked registry)."""


class FeedbackError(RefitError):
    """A feedback row names a request id or a label the server does not accept."""


@dataclass
class ServeOptions:
    """Flat settings of one server process (JSON-serialisable: `--workers N` hands them to each worker)."""

    registry_root: str | None = None
    registry_db: str | None = None
    alias: str = "champion"
    version: str | None = None  # a version folder, instead of a registry alias
    backend: str = "auto"
    device: str = "cpu"
    threads: int = 0
    max_length: int = 0
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_texts_per_request: int = 256  # also the most feedback rows per /feedback call
    max_request_bytes: int = 4 * 1024 * 1024  # larger request bodies are answered 413 before parsing
    max_pending: int = 4096  # texts waiting for inference beyond which /predict answers 503 (0 = no bound)
    capture: bool = True
    capture_dir: str | None = None
    store_texts: bool = True
    capture_queue: int = 20000
    rotate_rows: int = 10000
    rotate_seconds: float = 300.0
    watch_interval_s: float = 5.0
    admin_token_env: str = "REFIT_SERVE_ADMIN_TOKEN"
    # or "calibrated": the version's temperature first (recipes/serve.py says why it is not the default)
    probabilities: str = "raw"

    def to_dict(self) -> dict:
        return asdict(self)


class Server:
    """One process's serving state. Thread-safe: requests read `slot`; only `reload` replaces it."""

    @staticmethod
    def _open_registry(options: ServeOptions) -> Registry:
        """The registry to serve from; a misspelt --registry.root is refused, never created empty."""
        try:
            return Registry(options.registry_root, options.registry_db, must_exist=True)
        except NoRegistry as e:
            raise NoRegistry(f"{e} Check --registry.root (and --registry.db).") from None

    def __init__(self, options: ServeOptions) -> None:
        if not options.version and not options.registry_root:
            raise ConfigError("refit serve needs --registry.root REG (with --alias) or --version DIR.")
        self.options = options
        self.metrics = ServeMetrics()
        self.registry = (
            self._open_registry(options) if options.registry_root and not options.version else None
        )
        self._reload_lock = threading.Lock()
        self._refused: str | None = None  # not retried while the alias stays on it (see _watch)
        self.last_error: str | None = None
        # the watcher's standing reason it cannot follow the alias (it disagrees with the audit log, or the
        # registry is locked or unreadable), for /readyz: a server still serving its old slot says why
        self.registry_problem: str | None = None
        self.slot: Slot = self._load(self._target())
        self.metrics.set_version(self.slot.version_id, self.slot.backend)
        # label list -> the first version served with it, by this process: an integer feedback label is an
        # index into the labels of the version that answered, which is no longer known once they differ
        self._label_lists: dict[tuple[str, ...], str] = {tuple(self.slot.labels): self.slot.version_id}
        self.batcher = MicroBatcher(
            options.max_batch_size,
            options.max_wait_ms,
            on_batch=self._observe_batch,
            max_pending=options.max_pending,
        )
        self.capture = self.feedback = None
        self._feedback_at = FeedbackClock()  # a later label for a request wins, even within one call
        self.request_ids = RequestIds(self._key_folder() if options.capture else None)
        if options.capture:
            self._clean_abandoned()
            self.capture = self._writer(CAPTURE, CAPTURE_SCHEMA)
            self.feedback = self._writer(FEEDBACK, FEEDBACK_SCHEMA)
        self.accepting = True
        self._stop = threading.Event()
        self._watcher = None
        if self.registry is not None and not options.version and options.watch_interval_s > 0:
            self._watcher = threading.Thread(target=self._watch, name="refit-registry-watch", daemon=True)
            self._watcher.start()

    # --- setup -------------------------------------------------------------------------------------
    @property
    def capture_dir(self) -> Path:
        if self.options.capture_dir:
            return Path(self.options.capture_dir)
        if self.registry is not None:
            return self.registry.root / "inbox"
        return Path(self.options.version).parent / "inbox"

    def _key_folder(self) -> Path | None:
        """The capture folder, created (owner-only) to hold the request-id key; None if it cannot be."""
        try:
            return private_dir(self.capture_dir)
        except OSError as e:  # the writer reports its own failures; ids then check in this process only
            log.warning("refit serve: cannot create the capture folder %s: %s", self.capture_dir, e)
            return None

    def _clean_abandoned(self) -> None:
        """Delete the unfinished capture files of killed servers of this host (user text; see capture.py)."""
        try:
            removed = clean_abandoned(self.capture_dir)
        except OSError as e:  # capture degrades, the server does not: the writer reports its own failures
            log.warning("refit serve: could not clean abandoned capture files in %s: %s", self.capture_dir, e)
            return
        for name, size in removed:
            log.warning(
                "refit serve: deleted %s (%d bytes), the unfinished capture file of a server that was killed",
                name,
                size,
            )

    def _writer(self, kind: str, schema) -> RotatingParquetWriter:
        writer = RotatingParquetWriter(
            self.capture_dir,
            kind,
            schema,
            max_queue=self.options.capture_queue,
            rotate_rows=self.options.rotate_rows,
            rotate_seconds=self.options.rotate_seconds,
            on_written=self.metrics.capture_written.labels(kind).inc,
            on_dropped=self.metrics.capture_dropped.labels(kind).inc,
        )
        self.metrics.watch_writer(kind, lambda: writer.backlog, lambda: writer.problem is not None)
        return writer

    def _target_id(self, registry: Registry | None = None) -> str:
        """The id (or folder name) of what should be served now: cheap, polled by the watcher. An alias that
        disagrees with the registry's audit log (a hand-edited row) is a RegistryError: at start-up nothing
        is served, later the current slot keeps serving (Registry.resolve checks only new audit rows)."""
        if self.options.version:
            return str(
                read_version(self.options.version).get("version_id") or Path(self.options.version).name
            )
        return (registry or self.registry).resolve(self.options.alias)

    def _target(self, version_id: str | None = None, registry: Registry | None = None) -> tuple[str, Path]:
        """(id, folder) of `version_id` (default: what the alias points at now), not yet verified: the
        registry's check runs inside load_slot's snapshot (see `_load`)."""
        if self.options.version:
            return self._target_id(), Path(self.options.version)
        registry = registry or self.registry
        version = registry.get(version_id or registry.resolve(self.options.alias), verify=False)
        return version.id, version.path

    def _load(self, target: tuple[str, Path], registry: Registry | None = None) -> Slot:
        o = self.options
        registry = registry or self.registry
        check = None if registry is None else (lambda: registry.verify(target[0]))
        return load_slot(
            target[1],
            o.backend,
            o.device,
            o.threads or None,
            o.max_length,
            check=check,
            calibrated=o.probabilities == "calibrated",
        )

    def _observe_batch(self, size: int, seconds: float) -> None:
        self.metrics.batch_size.observe(size)
        self.metrics.batch_latency.observe(seconds)

    # --- requests ----------------------------------------------------------------------------------
    async def predict(self, texts: list[str]) -> list[dict]:
        """Predictions in input order, each with its own request id; all from the slot current on arrival."""
        slot = self.slot
        ids = await asyncio.to_thread(slot.tokenize, texts)
        futures = [asyncio.wrap_future(f) for f in self.batcher.submit_many(slot, ids)]
        results = await asyncio.gather(*futures)
        at = utc_now()
        out, rows = [], []
        store = self.options.store_texts
        for text, (label_id, probs) in zip(texts, results):
            rid = self.request_ids.new()
            label = slot.label_of(label_id)
            out.append(
                {
                    "request_id": rid,
                    "label": label,
                    "label_id": label_id,
                    "probabilities": {slot.label_of(i): float(p) for i, p in enumerate(probs)},
                    "calibrated": slot.temperature is not None,
                    "version_id": slot.version_id,
                }
            )
            if self.capture is not None:  # the row is built on the writer thread (hashing is not free)
                rows.append(
                    lambda r=rid, t=text, li=label_id, lb=label, p=probs, v=slot.version_id: capture_row(
                        r, at, v, t, li, lb, p, store
                    )
                )
        self.metrics.texts.inc(len(texts))
        if rows:
            self.capture.put(rows)
        return out

    def add_feedback(self, items: list[tuple[str, object]]) -> int:
        """Validate every (request id, label) first, then queue them all: a bad row rejects the whole call.

        A label is read against the served version's label names by refit.data.labels' rule (a string is
        a name, an integer an id; true/false, 1.5 and "1" for an id are refused) and stored as the name,
        so the cycle that reads it later cannot take an id for a name or a stray value for a new class.
        Every call's rows are stored, stamped later than the rows before them (FeedbackClock): a later label
        for a request corrects an earlier one, and the same label again changes nothing (refit.maintain.inbox).
        Within one call only the last row per request id is stored, since it would supersede the others at
        once: one client posting 256 rows for one real id, call after call, stored 5 400 rows/s (107 520 in
        20 s) for the cycle to read back. Returns the rows honoured (the superseded ones included)."""
        if self.feedback is None:
            raise FeedbackError(
                "Feedback needs capture on (capture.enabled: true); this server stores nothing."
            )
        labels = self.slot.labels
        rows = []
        for n, (request_id, label) in enumerate(items, 1):
            where = f"row {n} of {len(items)}: " if len(items) > 1 else ""  # which of 256 rows to fix
            if not _REQUEST_ID.fullmatch(str(request_id)):  # match() let a trailing newline through
                raise FeedbackError(
                    f"{where}request_id {_shown(request_id)} is not a request id (32 hex characters, as "
                    "returned by /predict)."
                )
            if not self.request_ids.issued(request_id):
                raise FeedbackError(
                    f"{where}request_id {_shown(request_id)} was not issued by a refit server writing to "
                    "this capture folder (its last 12 characters check the first 20): feedback is taken "
                    "for requests /predict answered, by any worker or earlier run sharing the folder."
                )
            if isinstance(label, int) and not isinstance(label, bool) and len(self._label_lists) > 1:
                raise FeedbackError(f"{where}{self._ambiguous_id(label)}")
            try:
                name = feedback_label(label, labels)
            except DataError as e:
                raise FeedbackError(f"{where}{e}") from None
            rows.append((str(request_id), name))
        last = {rid: name for rid, name in rows}  # the last label per id (ids in their first-posted order)
        kept = [feedback_row(rid, name, self._feedback_at()) for rid, name in last.items()]
        posted = Counter(rid for rid, _ in rows)
        return sum(posted[row["request_id"]] for row in kept[: self.feedback.put(kept)])

    def _ambiguous_id(self, label: int) -> str:
        """Why an integer label is refused after a swap changed the label ids. Before: the id was read with
        the new version's names, so label 1 ("positive" in the old version's answer) was stored as
        "negative" once the new champion listed the same classes in the other order."""
        served = "; ".join(f"{v}: {', '.join(names)}" for names, v in self._label_lists.items())
        return (
            f"label {label} is an id, but the label ids changed at a hot swap while this server ran "
            f"({served}): an id cannot say which version's labels it means. Send the label's name as a "
            f"JSON string (the label /predict returned); names now: {', '.join(self.slot.labels)}."
        )

    @property
    def capture_problem(self) -> str | None:
        """Why capture is losing rows now (a writer cannot write), for /readyz; None while it works."""
        said = [
            f"{w.prefix}: {w.problem} ({w.dropped} rows dropped so far)"
            for w in (self.capture, self.feedback)
            if w is not None and w.problem is not None
        ]
        return "; ".join(said) or None

    @property
    def capture_dropped(self) -> dict[str, int]:
        """Rows dropped since start, per kind with any (a full queue or a failing writer), for /readyz."""
        return {w.prefix: w.dropped for w in (self.capture, self.feedback) if w is not None and w.dropped}

    @property
    def refused(self) -> str | None:
        """The version last refused since the last swap (the alias points at it, the old one serves)."""
        return self._refused

    # --- hot swap ----------------------------------------------------------------------------------
    def reload(self, force: bool = False, *, lock_wait_s: float | None = None) -> dict:
        """Serve what the alias (or folder) points at now, if it differs; refuse a bad version, keep the old.

        `lock_wait_s` bounds the wait for the registry database and for a reload already running (an
        HTTP request must answer promptly; the watcher, with None, waits the registry's default and
        simply tries again later). Returns {"version_id", "swapped", "previous"}; raises VersionError when
        the new version is refused, RegistryError when the registry stays locked, ReloadBusy.
        """
        registry = self.registry
        if lock_wait_s is not None and registry is not None:
            registry = registry.with_lock_timeout(lock_wait_s)
        if not self._reload_lock.acquire(timeout=-1 if lock_wait_s is None else lock_wait_s):
            raise ReloadBusy(
                f"Another reload has been running for over {lock_wait_s:g} s (the registry may be locked); "
                f"still serving {self.slot.version_id}. Try again later."
            )
        try:
            previous = self.slot.version_id
            target_id = self._target_id(registry)
            if target_id == previous and not force:
                self._refused = None  # the alias is back at what serves: no refusal stands (see _watch)
                return {"version_id": previous, "swapped": False, "previous": previous}
            try:  # second slot: verified, warmed up, parity-checked
                new = self._load(self._target(target_id, registry), registry)
            except RegistryError as e:
                if "locked" not in str(e):  # SQLite's "database is locked": busy, not wrong
                    raise
                self.last_error = str(e)
                log.warning(
                    "refit serve: the registry is locked; still serving %s, will retry: %s", previous, e
                )
                raise RegistryError(
                    f"The registry is locked by another process; still serving {previous}. The watcher "
                    f"retries; so can you. ({e})"
                ) from None
            except Exception as e:  # anything wrong with the new version: refuse it, keep the old one
                self._refuse(str(e), target_id)
                raise VersionError(f"Refused version {target_id}; still serving {previous}. {e}") from None
            if new.labels != self.slot.labels:
                log.warning(
                    "refit serve: %s labels its classes %s, %s labelled them %s: integer feedback labels are "
                    "refused from now on (send label names)",
                    new.version_id,
                    new.labels,
                    previous,
                    self.slot.labels,
                )
            self._label_lists.setdefault(tuple(new.labels), new.version_id)
            self.slot = new  # one reference assignment: requests that hold the old slot finish on it
            self._refused = None
            self.metrics.set_version(new.version_id, new.backend)
            self.metrics.reloads.labels("swapped").inc()
            log.info("refit serve: swapped %s -> %s (%s)", previous, new.version_id, new.backend)
            return {"version_id": new.version_id, "swapped": True, "previous": previous}
        finally:
            self._reload_lock.release()

    def _refuse(self, message: str, version_id: str) -> None:
        self._refused = version_id
        self.last_error = message
        self.metrics.reloads.labels("refused").inc()
        log.error(
            "refit serve: refused to swap to %s; still serving %s: %s",
            version_id,
            self.slot.version_id,
            message,
        )

    def _watch(self) -> None:
        # the problem last logged: an alias at odds with the audit log is said once, not at every poll
        said = None
        while not self._stop.wait(self.options.watch_interval_s):
            try:
                current = self.registry.resolve(self.options.alias)
            except Exception as e:  # unreadable, or disagrees with its audit log: keep serving, look again
                busy = not isinstance(e, RegistryError) or "locked" in str(e)
                # said on /readyz either way: a lock is only reported after the registry's whole wait (30 s
                # by default), and meanwhile the alias may have moved unseen. Before, a locked registry was
                # a log line only, and /readyz looked healthy while the server could not follow the alias.
                self.registry_problem = str(e)
                if str(e) != said:
                    said = self.last_error = str(e)
                    (log.warning if busy else log.error)(
                        "refit serve: cannot use the registry alias '%s'; still serving %s: %s",
                        self.options.alias,
                        self.slot.version_id,
                        e,
                    )
                continue
            said = self.registry_problem = None
            if current == self.slot.version_id:
                # the alias has left the refused version (rolled back): forget the refusal, so a repaired
                # version promoted again is tried. Before, it was skipped until a restart, and /readyz
                # named a refusal the alias no longer pointed at.
                self._refused = None
                continue
            if current == self._refused:
                continue
            with contextlib.suppress(RefitError):  # refused: logged and counted by reload
                self.reload()

    # --- shutdown ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop watching, answer every queued text, then finalise the capture files."""
        self.accepting = False
        self._stop.set()
        started = time.perf_counter()
        self.batcher.close()
        lost = []
        for writer in (self.capture, self.feedback):
            if writer is None:
                continue
            if not writer.close():
                lost.append(
                    f"the {writer.prefix} writer had not finished after 30 s: {writer.backlog} queued rows "
                    f"and {writer.in_open_file} in its open file are lost"
                )
            if writer.dropped:
                lost.append(
                    f"{writer.dropped} {writer.prefix} rows were dropped while serving (see /metrics)"
                )
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        took = time.perf_counter() - started
        if lost:  # before: "shut down cleanly" after a run on a full disk that kept none of its 500 rows
            log.error("refit serve: shut down in %.2f s, but capture lost rows: %s", took, "; ".join(lost))
        else:
            log.info("refit serve: shut down cleanly in %.2f s", took)
