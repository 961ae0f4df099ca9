"""`refit serve`, second adversarial pass (s11): a full disk, a swap that reorders the labels, a refused
version repaired and promoted again. Each test failed open before its fix (the docstring says how).

Real uvicorn servers on 127.0.0.1 (in-process, or a `refit serve` subprocess), real registries, tiny random
versions (the helpers of test_serve.py). The figures behind these findings: scripts/results/serve_chaos.md.
"""

from __future__ import annotations

import logging
import resource
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="needs the [serve] extra")
pytest.importorskip("uvicorn", reason="needs the [serve] extra")
httpx = pytest.importorskip("httpx", reason="needs httpx (a FastAPI test dependency)")

from refit.registry import Registry  # noqa: E402
from tests.recipes.test_serve import LABELS, make_version, options, read_rows, serving  # noqa: E402


def _wait(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _version_labelled(dest: Path, model_dir: Path, seed: int, labels: list[str]) -> Path:
    """A tiny random version whose refit.json names its classes `labels` (in that order)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from refit.models import write_version

    torch.manual_seed(seed)
    config = AutoModelForSequenceClassification.from_pretrained(model_dir).config
    model = AutoModelForSequenceClassification.from_config(config)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    meta = {"recipe": "test", "labels": labels, "config": {"data": {"max_length": 32}}}
    return write_version(dest, model, tokenizer, meta)


@pytest.fixture(scope="module")
def versions(tmp_path_factory, tiny_model_dir) -> list[Path]:
    root = tmp_path_factory.mktemp("chaos-versions")
    return [make_version(root / f"v{i}", tiny_model_dir, seed=i) for i in range(2)]


@pytest.fixture
def registry(tmp_path, versions) -> Registry:
    reg = Registry(tmp_path / "registry")
    first = reg.register(versions[0])
    reg.register(versions[1])
    reg.promote(first.id, "first champion")
    return reg


# --- capture that cannot be written -------------------------------------------------------------------
def _metric(text: str, name: str, kind: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(f'{name}{{kind="{kind}"}}'))
    return float(line.rsplit(" ", 1)[1])


def test_capture_that_cannot_be_written_is_said_on_readyz_metrics_and_at_shutdown(registry, tmp_path, caplog):
    """Before: with capture failing (here the folder is a file; a full disk is the slow test below) every
    prediction got 200, /readyz said nothing, and the shutdown logged "shut down cleanly" after a run that
    kept none of its rows. Now /readyz names the failure and the dropped count, the gauge
    refit_serve_capture_failing is 1, and the shutdown line says rows were lost. The problem clears once
    a file is finalised again (the folder made writable), not at the first good write."""
    blocked = tmp_path / "inbox"
    blocked.write_text("a file where the capture folder should be")
    with (
        caplog.at_level(logging.INFO, logger="refit.serve"),
        serving(options(registry, capture_dir=str(blocked), rotate_seconds=0.5)) as (client, server),
    ):
        assert client.get("/readyz").json().get("capture_problem") is None  # nothing written yet
        assert client.post("/predict", json={"texts": ["one", "two", "three"]}).status_code == 200
        _wait(lambda: server.capture.dropped == 3, "the rows to be dropped")
        ready = client.get("/readyz")
        metrics = client.get("/metrics").text
        assert ready.status_code == 200 and ready.json()["ready"]  # predictions still work
        problem = ready.json()["capture_problem"]
        assert problem.startswith("capture: writing ") and "(3 rows dropped so far)" in problem, problem
        assert ready.json()["capture_dropped"] == {"capture": 3}
        assert _metric(metrics, "refit_serve_capture_failing", "capture") == 1.0
        assert _metric(metrics, "refit_serve_capture_failing", "feedback") == 0.0

        blocked.unlink()  # repaired: the writer creates the folder at its next file
        assert client.post("/predict", json={"text": "after the repair"}).status_code == 200
        _wait(lambda: server.capture.written == 1, "a finalised file after the repair")
        assert "capture_problem" not in client.get("/readyz").json()
        assert _metric(client.get("/metrics").text, "refit_serve_capture_failing", "capture") == 0.0
    assert [r["text"] for r in read_rows(blocked, "capture")] == ["after the repair"]
    assert "shut down cleanly" not in caplog.text
    assert "capture lost rows: 3 capture rows were dropped while serving" in caplog.text


@pytest.mark.slow
def test_a_full_disk_under_a_real_server_is_said_not_silent(registry):
    """A real `refit serve` whose files may not pass 16 KB (RLIMIT_FSIZE: the kernel answers EFBIG, as a
    full disk answers ENOSPC, at the same write): predictions still answer 200, and the loss is on
    /readyz, in /metrics and in the shutdown line; no dot-file is left behind."""
    from tests.recipes import test_serve

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))

    real = subprocess.Popen
    test_serve.subprocess.Popen = lambda *a, **k: real(*a, preexec_fn=small_files, **k)
    try:
        proc, base = test_serve._start_server(registry, "--capture.rotate_seconds", "1", timeout=120)
    finally:
        test_serve.subprocess.Popen = real
    try:
        texts = [secrets.token_hex(200) for _ in range(50)]  # 400 B each, incompressible: 20 KB a call
        codes = [
            httpx.post(f"{base}/predict", json={"texts": texts}, timeout=30).status_code for _ in range(4)
        ]
        _wait(lambda: "capture_problem" in httpx.get(f"{base}/readyz").json(), "the loss on /readyz")
        ready = httpx.get(f"{base}/readyz").json()
        metrics = httpx.get(f"{base}/metrics").text
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
    assert codes == [200] * 4
    assert "File too large" in ready["capture_problem"], ready
    dropped = _metric(metrics, "refit_serve_capture_rows_dropped_total", "capture")
    assert dropped > 0 and _metric(metrics, "refit_serve_capture_failing", "capture") == 1.0
    assert proc.returncode == 0 and "capture lost rows" in out and "shut down cleanly" not in out, out[-2000:]
    inbox = registry.root / "inbox"
    assert not [p.name for p in inbox.iterdir() if p.name.startswith(".")]


def test_rows_dropped_by_a_full_queue_are_counted_on_readyz(registry):
    """Before: rows dropped because the writer's queue was full (overload) were a counter and one log line;
    /readyz looked healthy. Now it says how many since start (not a capture_problem: the writer works)."""
    with serving(options(registry, capture_queue=2)) as (client, server):
        assert "capture_dropped" not in client.get("/readyz").json()
        assert client.post("/predict", json={"texts": [f"t {i}" for i in range(50)]}).status_code == 200
        ready = client.get("/readyz").json()
    assert ready["capture_dropped"]["capture"] == server.capture.dropped >= 40, ready
    assert "capture_problem" not in ready


# --- feedback across a swap ---------------------------------------------------------------------------
def test_an_integer_label_after_a_swap_that_reorders_the_labels_is_refused(tmp_path, tiny_model_dir):
    """Before: a request answered by v0 (labels negative, positive) got label_id 1, "positive"; after a
    hot swap to v1 (the same classes listed positive, negative) feedback label 1 for it was read with v1's
    names and stored as "negative", silently. Now an integer label is refused once the label ids have
    changed in this server's life, naming the versions; the name still works and is stored as sent."""
    reg = Registry(tmp_path / "registry")
    v0 = reg.register(_version_labelled(tmp_path / "v0", tiny_model_dir, 0, list(LABELS))).id
    v1 = reg.register(_version_labelled(tmp_path / "v1", tiny_model_dir, 1, LABELS[::-1])).id
    reg.promote(v0, "first champion")
    with serving(options(reg)) as (client, server):
        answer = client.post("/predict", json={"text": "a wonderful, warm film"}).json()
        rid = answer["request_id"]
        before = client.post("/feedback", json={"request_id": rid, "label": answer["label_id"]})
        reg.promote(v1, "the same classes, the other order")
        assert server.reload()["swapped"]
        by_id = client.post("/feedback", json={"request_id": rid, "label": answer["label_id"]})
        by_name = client.post("/feedback", json={"request_id": rid, "label": answer["label"]})
    assert before.status_code == 200  # no swap yet: the id is unambiguous
    assert by_id.status_code == 422, by_id.text
    detail = by_id.json()["detail"]
    assert "label ids changed at a hot swap" in detail and v0 in detail and v1 in detail
    assert by_name.status_code == 200
    stored = [(r["request_id"], r["label"]) for r in read_rows(server.capture_dir, "feedback")]
    assert stored == [(rid, answer["label"]), (rid, answer["label"])]


def test_a_feedback_call_stores_only_its_last_row_per_request(registry):
    """Before: one client posting 256 rows for one real request id, call after call, stored every row
    (107 520 rows in 20 s, 5 400/s, for every cycle to read back), though each row superseded the one
    before it at once. Now a call stores the last row per id; the answer still counts every row honoured,
    and the cycle's reader sees the same labels as before."""
    from refit.maintain.inbox import read_inbox

    with serving(options(registry)) as (client, server):
        a, b = (
            p["request_id"]
            for p in client.post("/predict", json={"texts": ["one", "two"]}).json()["predictions"]
        )
        flood = client.post("/feedback", json=[{"request_id": a, "label": i % 2} for i in range(256)])
        mixed = client.post(
            "/feedback",
            json=[
                {"request_id": b, "label": "positive"},
                {"request_id": a, "label": "positive"},
                {"request_id": b, "label": "negative"},  # b's last word in this call
            ],
        )
    assert flood.json() == {"accepted": 256, "dropped": 0} and mixed.json() == {"accepted": 3, "dropped": 0}
    rows = [(r["request_id"], r["label"]) for r in read_rows(server.capture_dir, "feedback")]
    assert rows == [(a, "positive"), (b, "negative"), (a, "positive")], rows
    batch = read_inbox(
        server.capture_dir, quarantined=set(), text_column="text", label_column="label", label_names=LABELS
    )
    assert sorted(batch.labelled) == [("one", 1), ("two", 0)], batch.labelled


# --- hot swap -----------------------------------------------------------------------------------------
def test_a_refused_version_repaired_and_promoted_again_is_served(registry):
    """Before: once the watcher refused a version (its weights altered), it skipped that version for the
    server's life: the alias rolled back and then moved to it again once repaired (the registered bytes
    restored) still served the old one, and /readyz kept naming a refusal the alias had left. Now the
    refusal is forgotten when the alias points back at what serves, and the re-promoted version is tried."""
    a = registry.aliases()["champion"]
    b = next(v.id for v in registry.list_versions() if v.id != a)
    weights = registry.get(b, verify=False).path / "model" / "model.safetensors"
    good = weights.read_bytes()
    with serving(options(registry, watch_interval_s=0.1)) as (client, server):
        # promote verifies the version, so it is altered just after (as a failing disk or a hand would),
        # with reloads held off meanwhile so that the watcher sees only the altered bytes
        with server._reload_lock:
            registry.promote(b, "better")
            weights.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))
        _wait(lambda: client.get("/readyz").json().get("refused_version_id") == b, "the refusal")
        weights.write_bytes(good)  # repaired: the very bytes registered
        registry.promote(a, "roll back")
        _wait(lambda: "refused_version_id" not in client.get("/readyz").json(), "the refusal to be forgotten")
        assert server.slot.version_id == a
        registry.promote(b, "repaired")
        _wait(lambda: server.slot.version_id == b, "the repaired version to be served")
        assert client.get("/readyz").json()["version_id"] == b


def test_a_registry_locked_past_its_wait_is_said_on_readyz_and_the_watcher_recovers(registry):
    """Before: while another process held the registry database locked past the registry's whole wait,
    the watcher logged a warning and /readyz looked healthy, though the server could not see whether the
    alias had moved. Now /readyz names the lock as registry_problem while predictions go on; once the lock
    goes the problem clears and a promotion made meanwhile is followed."""
    import sys

    a = registry.aliases()["champion"]
    b = next(v.id for v in registry.list_versions() if v.id != a)
    holder = None
    try:
        with serving(options(registry, watch_interval_s=0.1)) as (client, server):
            server.registry = server.registry.with_lock_timeout(0.5)  # the registry's own wait, shortened
            holder = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "import sqlite3, sys; db = sqlite3.connect(sys.argv[1], isolation_level=None); "
                    "db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.readline()",
                    str(registry.db_path),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert holder.stdout.readline().strip() == "locked"
            _wait(lambda: "registry_problem" in client.get("/readyz").json(), "the lock on /readyz")
            ready = client.get("/readyz")
            assert ready.status_code == 200 and "locked" in ready.json()["registry_problem"], ready.text
            assert client.post("/predict", json={"text": "still answered"}).status_code == 200
            holder.communicate("release\n", timeout=30)
            registry.promote(b, "promoted once the lock is gone")
            _wait(lambda: server.slot.version_id == b, "the promotion to be followed")
            _wait(lambda: "registry_problem" not in client.get("/readyz").json(), "the problem to clear")
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
            holder.wait()


# --- concurrency --------------------------------------------------------------------------------------
def test_concurrent_long_texts_are_all_cut_to_max_length(versions):
    """Before: requests are tokenised on worker threads at once, and a Hugging Face fast tokenizer keeps
    its truncation setting in shared state that each call sets: the long-text check's call (truncation
    off) let a concurrent request's texts through whole. 4 clients posting 256 texts of 16 KB each got a
    500 for a batch padded to 206 tokens (max_length 32; the model has 128 positions), and other clients'
    texts in that batch failed with it. Now a slot's tokenizer calls are serialised."""
    from concurrent.futures import ThreadPoolExecutor

    from refit.serve.slot import load_slot

    slot = load_slot(versions[0], "pytorch")
    texts = [("word " * 3200)[:16000] for _ in range(64)] + ["short one"] * 8

    def lengths(_):
        return max(len(ids) for ids in slot.tokenize(texts))

    with ThreadPoolExecutor(8) as pool:
        longest = max(pool.map(lengths, range(48)))
    assert longest == slot.max_length == 32
