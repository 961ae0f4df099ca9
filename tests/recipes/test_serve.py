"""`refit serve` end to end: a real uvicorn server on 127.0.0.1 (a free port), real versions in a real registry.

The in-process tests run uvicorn in a thread of the test process (so a test can look at the server's state);
the SIGTERM test runs `python -m refit serve` as a subprocess and signals it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="needs the [serve] extra")
pytest.importorskip("uvicorn", reason="needs the [serve] extra")
httpx = pytest.importorskip("httpx", reason="needs httpx (a FastAPI test dependency)")
pq = pytest.importorskip("pyarrow.parquet")

from refit.cli import main  # noqa: E402
from refit.registry import Registry  # noqa: E402
from refit.serve import CAPTURE_SCHEMA, FEEDBACK_SCHEMA, ServeOptions, Server  # noqa: E402
from refit.serve.app import build_app  # noqa: E402
from refit.serve.request_ids import RequestIds  # noqa: E402

LABELS = ["negative", "positive"]
TEXTS = [
    "a wonderful, warm film",
    "a dull, lifeless mess",
    "ok",
    "the worst thing i have seen this year " * 3,
]


def make_version(dest: Path, model_dir: Path, seed: int, data: dict | None = None) -> Path:
    """A tiny random BERT written as a model version (different seed, different weights and version id)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from refit.models import write_version

    torch.manual_seed(seed)
    config = AutoModelForSequenceClassification.from_pretrained(model_dir).config
    model = AutoModelForSequenceClassification.from_config(config)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return write_version(
        dest,
        model,
        tokenizer,
        {"recipe": "test", "labels": LABELS, "config": {"data": {"max_length": 32, **(data or {})}}},
    )


@pytest.fixture(scope="module")
def versions(tmp_path_factory, tiny_model_dir) -> list[Path]:
    root = tmp_path_factory.mktemp("serve-versions")
    return [make_version(root / f"v{i}", tiny_model_dir, seed=i) for i in range(2)]


@pytest.fixture
def registry(tmp_path, versions) -> Registry:
    reg = Registry(tmp_path / "registry")
    first = reg.register(versions[0])
    reg.register(versions[1])
    reg.promote(first.id, "first champion")
    return reg


@contextmanager
def serving(options: ServeOptions):
    """uvicorn on 127.0.0.1 with a socket bound to a free port by the test; stopped (and drained) on exit."""
    import uvicorn

    server = Server(options)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(build_app(server=server), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client, server
    finally:
        uv.should_exit = True
        thread.join(30)
        sock.close()


def options(registry: Registry, **kw) -> ServeOptions:
    return ServeOptions(
        **{"registry_root": str(registry.root), "backend": "pytorch", "watch_interval_s": 0, **kw}
    )


def read_rows(folder: Path, prefix: str) -> list[dict]:
    files = sorted(folder.glob(f"{prefix}-*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


# --- predict, feedback, metrics, capture ---------------------------------------------------------------
def test_predict_one_text_and_a_list(registry, versions):
    from refit.inference import TorchPredictor, encode
    from refit.models import load_version

    with serving(options(registry)) as (client, server):
        one = client.post("/predict", json={"text": TEXTS[0]})
        many = client.post("/predict", json={"texts": TEXTS})
        both = client.post("/predict", json={"text": "x", "texts": ["y"]})
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz").json()
    assert one.status_code == 200 and many.status_code == 200
    assert both.status_code == 422 and "exactly one" in both.text
    champion = registry.aliases()["champion"]
    single = one.json()
    assert single["version_id"] == champion and ready["version_id"] == champion
    assert single["label"] in LABELS and len(single["request_id"]) == 32
    preds = many.json()["predictions"]
    assert len(preds) == len(TEXTS) and len({p["request_id"] for p in preds}) == len(TEXTS)
    # The served probabilities are the version's own model's, text by text (batching and padding change nothing).
    model, tokenizer, _ = load_version(versions[0])
    batch = encode(tokenizer, TEXTS, 32, len(TEXTS))[0]
    logits = TorchPredictor(model)(batch.input_ids, batch.attention_mask)
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    served = np.array([[p["probabilities"][name] for name in LABELS] for p in preds])
    np.testing.assert_allclose(served, expected, atol=1e-4)
    assert [p["label"] for p in preds] == [LABELS[i] for i in expected.argmax(-1)]


def test_capture_and_feedback_files_follow_the_contract(registry):
    inbox = registry.root / "inbox"
    with serving(options(registry, rotate_rows=3)) as (client, server):
        preds = client.post("/predict", json={"texts": TEXTS * 2}).json()["predictions"]
        ok = client.post("/feedback", json={"request_id": preds[0]["request_id"], "label": "positive"})
        by_id = client.post("/feedback", json=[{"request_id": preds[1]["request_id"], "label": 0}])
        unknown = client.post("/feedback", json={"request_id": preds[2]["request_id"], "label": "neutral"})
        bad_id = client.post("/feedback", json={"request_id": "../../etc", "label": "positive"})
        # an id no server made (refused), and one another worker on this capture folder made (taken)
        made_up = client.post("/feedback", json={"request_id": "ab" * 16, "label": "positive"})
        other_worker = RequestIds(inbox).new()
        shared = client.post("/feedback", json={"request_id": other_worker, "label": "negative"})
        # the wrong kind of label for this version: an id as a string, true for 1, a fraction
        wrong = {
            v: client.post("/feedback", json={"request_id": preds[3]["request_id"], "label": v})
            for v in ("1", True, 1.5, 2)
        }
    for v, r in wrong.items():
        assert r.status_code == 422 and "allowed labels: negative, positive" in r.json()["detail"], (
            v,
            r.text,
        )
    assert "JSON integer" in wrong["1"].json()["detail"]
    assert made_up.status_code == 422 and "was not issued by a refit server" in made_up.json()["detail"]
    assert shared.status_code == 200, shared.text
    assert ok.status_code == 200 and ok.json() == {"accepted": 1, "dropped": 0} and by_id.status_code == 200
    assert unknown.status_code == 422 and "allowed labels: negative, positive" in unknown.json()["detail"]
    assert bad_id.status_code == 422 and "request_id" in bad_id.json()["detail"]
    # After shutdown every file has its final name (rotation by rows made several), none is left as a dot-file.
    assert not [p for p in inbox.iterdir() if p.name.startswith(".")]
    files = sorted(inbox.glob("capture-*.parquet"))
    assert len(files) >= 3
    for f in files:
        stamp, suffix = f.stem.split("-")[1:]
        assert len(stamp) == 16 and stamp.endswith("Z") and len(suffix) == 6 and int(suffix, 16) >= 0
        assert pq.read_schema(f).remove_metadata().equals(CAPTURE_SCHEMA)
    by_id = {r["request_id"]: r for r in read_rows(inbox, "capture")}
    assert sorted(by_id) == sorted(p["request_id"] for p in preds)  # each row once, across the files
    for pred, text in zip(preds, TEXTS * 2):
        row = by_id[pred["request_id"]]
        assert row["text"] == text and row["text_sha256"] == hashlib.sha256(text.encode()).hexdigest()
        assert row["label"] == pred["label"] and row["prediction"] == pred["label_id"]
        assert row["version_id"] == pred["version_id"] and row["at"].endswith("+00:00")
        np.testing.assert_allclose(row["probs"], [pred["probabilities"][n] for n in LABELS], atol=1e-6)
    feedback = read_rows(inbox, "feedback")
    assert pq.read_schema(next(inbox.glob("feedback-*.parquet"))).remove_metadata().equals(FEEDBACK_SCHEMA)
    assert [(r["request_id"], r["label"]) for r in feedback] == [
        (preds[0]["request_id"], "positive"),
        (preds[1]["request_id"], "negative"),  # an id is stored as its name: no id/name mix-up later
        (other_worker, "negative"),
    ]


def test_feedback_posted_again_corrects_or_changes_nothing_as_the_cycle_reads_it(registry, tmp_path):
    """The promise of POST /feedback, checked through the cycle's own reader of the files the server wrote:
    a later label for a request corrects an earlier one (even within one call: before, both rows had the
    same millisecond stamp, the cycle saw a tie and dropped the request), and the same label posted again
    is one labelled row."""
    from refit.maintain.inbox import read_inbox

    folder = tmp_path / "capture"
    with serving(options(registry, capture_dir=str(folder))) as (client, _):
        corrected, repeated = client.post("/predict", json={"texts": TEXTS[:2]}).json()["predictions"]
        posts = [
            [{"request_id": corrected["request_id"], "label": "negative"}],
            [
                {"request_id": corrected["request_id"], "label": "negative"},
                {"request_id": corrected["request_id"], "label": "positive"},  # the last word, same call
                {"request_id": repeated["request_id"], "label": "positive"},
            ],
            [{"request_id": repeated["request_id"], "label": "positive"}],  # a client's retry
        ]
        answers = [client.post("/feedback", json=body) for body in posts]
    assert [a.json() for a in answers] == [{"accepted": len(b), "dropped": 0} for b in posts]
    batch = read_inbox(
        folder, quarantined=set(), text_column="text", label_column="label", label_names=LABELS
    )
    assert sorted(batch.labelled) == sorted([(TEXTS[0], 1), (TEXTS[1], 1)]), batch.labelled
    assert batch.skipped == {}, batch.skipped


def test_store_texts_false_keeps_no_text_and_no_hash_of_it(registry, tmp_path):
    folder = tmp_path / "elsewhere"
    with serving(options(registry, store_texts=False, capture_dir=str(folder))) as (client, _):
        assert client.post("/predict", json={"texts": TEXTS}).status_code == 200
    rows = read_rows(folder, "capture")
    assert len(rows) == len(TEXTS) and all(r["text"] is None for r in rows)
    assert all(r["text_sha256"] is None for r in rows)  # a plain sha256 of a short text is guessable
    assert not (registry.root / "inbox").exists()  # the configured folder, not the default


def test_metrics_report_requests_batches_capture_and_version(registry):
    with serving(options(registry)) as (client, server):
        for text in TEXTS:
            client.post("/predict", json={"text": text})
        client.post("/predict", json={"texts": TEXTS})
        client.post("/predict", json={})
        server.capture.close()  # everything written: the counters below are final
        text = client.get("/metrics").text
    champion = registry.aliases()["champion"]
    assert 'refit_serve_requests_total{endpoint="/predict",status="200"} 5.0' in text
    assert 'refit_serve_requests_total{endpoint="/predict",status="422"} 1.0' in text
    assert 'refit_serve_request_latency_seconds_count{endpoint="/predict"} 6.0' in text
    assert "refit_serve_texts_total 8.0" in text
    assert "refit_serve_batch_size_sum 8.0" in text
    assert 'refit_serve_capture_rows_written_total{kind="capture"} 8.0' in text
    assert 'refit_serve_capture_rows_dropped_total{kind="capture"} 0.0' in text
    assert 'refit_serve_capture_backlog{kind="capture"} 0.0' in text
    assert f'refit_serve_version_info{{backend="pytorch",version_id="{champion}"}} 1.0' in text


def test_capture_writer_failure_never_fails_predictions(registry, tmp_path, caplog):
    """The capture 'folder' is a file (as unwritable as a full disk): every row is dropped, counted and
    logged once, and every prediction still succeeds. Then a real folder removed mid-run: same."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("x")
    with serving(options(registry, capture_dir=str(blocked))) as (client, server):
        codes = [client.post("/predict", json={"texts": TEXTS}).status_code for _ in range(5)]
        deadline = time.monotonic() + 10
        while server.capture.dropped < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        text = client.get("/metrics").text
    assert codes == [200] * 5
    assert (
        server.capture.dropped == 20 and 'refit_serve_capture_rows_dropped_total{kind="capture"} 20.0' in text
    )
    assert sum("capture rows are being dropped" in r.getMessage() for r in caplog.records) == 1

    import shutil

    folder = tmp_path / "removed"
    with serving(options(registry, capture_dir=str(folder), rotate_rows=4)) as (client, server):
        assert client.post("/predict", json={"texts": TEXTS}).status_code == 200
        time.sleep(1.5)
        shutil.rmtree(folder)
        folder.write_text("now a file")  # the writer cannot recreate it
        codes = [client.post("/predict", json={"texts": TEXTS}).status_code for _ in range(3)]
    assert codes == [200] * 3 and server.capture.dropped >= 12


# --- hot swap -------------------------------------------------------------------------------------------
def test_hot_swap_under_load_has_no_failed_requests(registry):
    v1, v2 = (
        registry.aliases()["champion"],
        next(v.id for v in registry.list_versions() if v.id != registry.aliases()["champion"]),
    )
    with serving(options(registry, watch_interval_s=0.2, max_wait_ms=2)) as (client, server):
        stop = threading.Event()
        results: list[tuple[int, str | None, float]] = []

        def hammer():
            with httpx.Client(base_url=str(client.base_url), timeout=30) as c:
                while not stop.is_set():
                    r = c.post("/predict", json={"texts": TEXTS[:2]})
                    vid = r.json()["version_id"] if r.status_code == 200 else None
                    results.append((r.status_code, vid, time.monotonic()))

        with ThreadPoolExecutor(6) as pool:
            for _ in range(6):
                pool.submit(hammer)
            time.sleep(1.0)
            registry.promote(v2, "better")
            deadline = time.monotonic() + 30
            while server.slot.version_id != v2 and time.monotonic() < deadline:
                time.sleep(0.05)
            swapped_at = time.monotonic()
            time.sleep(1.0)
            registry.rollback("back again")  # rollback swaps back the same way
            while server.slot.version_id != v1 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)
            stop.set()
        metrics = client.get("/metrics").text
    codes = [c for c, _, _ in results]
    assert len(codes) > 30 and set(codes) == {200}, f"failed requests during the swap: {set(codes)}"
    seen = [v for _, v, _ in results]
    assert v1 in seen and v2 in seen and seen[-1] == v1
    assert all(v == v2 for _, v, t in results if swapped_at + 0.5 < t < swapped_at + 1.0)
    assert 'refit_serve_reloads_total{result="swapped"} 2.0' in metrics


def test_corrupt_new_version_is_refused_and_the_old_one_keeps_serving(registry, monkeypatch):
    monkeypatch.setenv("REFIT_TEST_ADMIN_TOKEN", "s3cret")
    v1 = registry.aliases()["champion"]
    v2 = next(v for v in registry.list_versions() if v.id != v1)
    with serving(options(registry, admin_token_env="REFIT_TEST_ADMIN_TOKEN")) as (client, server):
        registry.promote(v2.id, "looks better")
        weights = v2.path / "model" / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF  # one flipped byte, after the promotion checked it
        weights.write_bytes(bytes(data))
        assert client.post("/admin/reload").status_code == 403
        assert client.post("/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code == 403
        refused = client.post("/admin/reload", headers={"Authorization": "Bearer s3cret"})
        after = client.post("/predict", json={"text": "still here?"})
        metrics = client.get("/metrics").text
    assert refused.status_code == 409 and v2.id in refused.json()["detail"] and "corrupt" in refused.text
    assert refused.json()["version_id"] == v1
    assert after.status_code == 200 and after.json()["version_id"] == v1
    assert 'refit_serve_reloads_total{result="refused"} 1.0' in metrics
    assert f'version_id="{v1}"' in metrics


def test_admin_reload_is_disabled_without_a_token(registry, monkeypatch):
    monkeypatch.delenv("REFIT_SERVE_ADMIN_TOKEN", raising=False)
    with serving(options(registry)) as (client, _):
        r = client.post("/admin/reload", headers={"Authorization": "Bearer anything"})
    assert r.status_code == 403 and "disabled" in r.json()["detail"]


def test_serve_onnx_int8_export_by_default(tmp_path, tiny_model_dir):
    """A version with an int8 ONNX export is served by ONNX Runtime (auto backend), parity-checked against
    its parity.json; a foreign export dropped into exports/ is refused by the exports manifest, and even when sealed, by
    the parity check."""
    pytest.importorskip("onnxruntime", reason="needs the [export] extra")
    from refit.errors import VersionError
    from refit.serve.slot import load_slot
    from tests.conftest import write_jsonl

    val = write_jsonl(
        tmp_path / "val.jsonl", [{"text": t, "label": LABELS[i % 2]} for i, t in enumerate(TEXTS * 4)]
    )
    data = {"train": str(val), "validation": str(val)}
    version = make_version(tmp_path / "v", tiny_model_dir, seed=3, data=data)
    assert (
        main(
            [
                "export",
                "--version",
                str(version),
                "--format",
                "onnx-int8",
                "--validation",
                str(val),
                "--max_accuracy_drop",
                "100",
                "--quantize.calibration_size",
                "8",
            ]
        )
        == 0
    )
    slot = load_slot(version)
    assert slot.backend == "onnx-int8" and slot.parity["source"] == "parity.json"
    assert slot.parity["max_abs_diff"] <= slot.parity["allowed_max_abs_diff"]

    other = make_version(tmp_path / "other", tiny_model_dir, seed=4, data=data)
    assert (
        main(
            [
                "export",
                "--version",
                str(other),
                "--format",
                "onnx",
                "--validation",
                str(val),
                "--max_accuracy_drop",
                "100",
            ]
        )
        == 0
    )
    (version / "exports" / "model.int8.onnx").write_bytes((other / "exports" / "model.onnx").read_bytes())
    with pytest.raises(VersionError, match="model.int8.onnx"):  # the exports manifest refuses it first
        load_slot(version)
    from refit.models import update_exports_manifest

    update_exports_manifest(
        version, ["model.int8.onnx"]
    )  # sealed as if refit wrote it: parity still refuses it
    with pytest.raises(VersionError, match="does not reproduce its PyTorch model"):
        load_slot(version)


# --- the CLI process ------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(registry, *args: str, timeout: float) -> tuple[subprocess.Popen, str]:
    """`refit serve` in its own process on a free loopback port, once /readyz answers: (process, base url)."""
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "refit",
            "serve",
            "--registry.root",
            str(registry.root),
            "--port",
            str(port),
            "--backend",
            "pytorch",
            "--watch_interval_s",
            "0",
            *args,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"server did not start: {proc.communicate()[0][-2000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_stop_signal_drains_in_flight_requests_finalises_capture_and_exits_0(registry, stop):
    """systemd/Kubernetes stop with SIGTERM, a terminal with Ctrl-C: both are a clean stop, exit status 0
    (uvicorn alone re-raises the signal after its graceful shutdown: status 143 / 130)."""
    proc, base = _start_server(
        registry, "--batching.max_wait_ms", "1000", "--capture.rotate_seconds", "3600", timeout=120
    )
    try:
        with ThreadPoolExecutor(8) as pool:
            # Each waits up to 1 s for batch company, so all are in flight when SIGTERM lands.
            futures = [
                pool.submit(httpx.post, f"{base}/predict", json={"text": f"text {i}"}, timeout=30)
                for i in range(8)
            ]
            time.sleep(0.5)
            proc.send_signal(stop)
            answers = [f.result() for f in futures]
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert [a.status_code for a in answers] == [200] * 8
    inbox = registry.root / "inbox"
    assert not [p.name for p in inbox.iterdir() if p.name.startswith(".")]
    rows = read_rows(inbox, "capture")
    assert sorted(r["request_id"] for r in rows) == sorted(a.json()["request_id"] for a in answers)
    assert "INFO refit.serve: refit serve: shut down cleanly" in out, out  # shown, and at its true level
    assert "WARNING refit.serve" not in out, out


def test_cli_refuses_missing_registry_with_a_message(tmp_path, capsys):
    assert main(["serve", "--registry.root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "No registry at" in err and "Traceback" not in err
    assert "Check --registry.root (and --registry.db)" in err  # serve's own flag
    assert not (tmp_path / "nowhere").exists()


def test_shipped_serve_config_parses(capsys):
    from refit.config import build_parser, parse_config
    from refit.recipes import serve

    cfg = parse_config(
        build_parser(serve.Config, "t", ""),
        serve.Config,
        [
            "--config",
            str(Path(__file__).parents[2] / "configs/serve/demo.yaml"),
            "--capture.store_texts",
            "false",
        ],
    )
    opts = serve.options(cfg)
    assert opts.registry_root == "registry" and opts.store_texts is False and opts.max_batch_size == 32
    assert json.loads(json.dumps(opts.to_dict())) == opts.to_dict()  # what --workers hands each worker


def test_cli_refuses_a_backend_the_version_lacks(versions, capsys):
    assert main(["serve", "--version", str(versions[0]), "--backend", "onnx-int8", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "onnx-int8: no exports/model.int8.onnx" in err and "Traceback" not in err


@pytest.mark.slow
def test_workers_write_their_own_capture_files(registry):
    """`--workers 2`: two uvicorn processes, each with its own model and capture writer; every row lands once."""
    proc, base = _start_server(registry, "--workers", "2", "--access_log", "false", timeout=180)
    try:
        time.sleep(3)  # the second worker may still be loading; both share the port
        with ThreadPoolExecutor(4) as pool:
            answers = list(
                pool.map(
                    lambda i: httpx.post(f"{base}/predict", json={"text": f"t {i}"}, timeout=60), range(20)
                )
            )
            # late labels land on either worker: each takes the ids the other issued (one key, one folder)
            feedback = list(
                pool.map(
                    lambda a: httpx.post(
                        f"{base}/feedback",
                        json={"request_id": a.json()["request_id"], "label": 1},
                        timeout=60,
                    ),
                    answers,
                )
            )
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [a.status_code for a in answers] == [200] * 20, out
    assert [f.status_code for f in feedback] == [200] * 20, [f.text for f in feedback if f.status_code != 200]
    assert proc.returncode == 0, out  # uvicorn's supervisor stops its workers and returns normally
    inbox = registry.root / "inbox"
    assert not [p.name for p in inbox.iterdir() if p.name.startswith(".")]
    rows = read_rows(inbox, "capture")
    assert sorted(r["request_id"] for r in rows) == sorted(a.json()["request_id"] for a in answers)
    labels = {r["request_id"]: r["label"] for r in read_rows(inbox, "feedback")}
    assert labels == {a.json()["request_id"]: "positive" for a in answers}
    assert out.count("shut down cleanly") == 2  # both workers drained and closed their files


def test_served_probabilities_are_calibrated_by_the_versions_temperature(tmp_path, tiny_model_dir):
    """A short fine-tune's softmax is far from calibrated (ECE 0.30-0.41 on the multi-class sets) while its
    version carries the temperature fitted on validation, which serve could not use. `probabilities:
    calibrated` divides the logits by it (the label unchanged); the default stays the raw softmax (a
    perfectly classified validation split leaves the temperature unbounded); each prediction says which."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from refit.estimate import Calibration
    from refit.inference import TorchPredictor, encode
    from refit.models import load_version, write_version

    torch.manual_seed(7)
    model = AutoModelForSequenceClassification.from_config(
        AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).config
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    calibration = Calibration(0.25, 100, 0.8, 0.6, -0.5, 0.2, 0.05)  # T < 1: the raw softmax is too flat
    version = write_version(
        tmp_path / "v",
        model,
        tokenizer,
        {"recipe": "test", "labels": LABELS, "config": {"data": {"max_length": 32}}},
        calibration=calibration,
    )
    reg = Registry(tmp_path / "registry")
    reg.promote(reg.register(version).id, "calibrated champion")
    loaded, tok, _ = load_version(version)
    batch = encode(tok, TEXTS, 32, len(TEXTS))[0]
    logits = TorchPredictor(loaded)(batch.input_ids, batch.attention_mask).astype(np.float64)
    served = {}
    for kind in ("calibrated", "raw"):
        with serving(options(reg, probabilities=kind, capture=False)) as (client, _):
            served[kind] = client.post("/predict", json={"texts": TEXTS}).json()["predictions"]
    with serving(options(reg, capture=False)) as (client, _):
        default = client.post("/predict", json={"texts": TEXTS}).json()["predictions"]
    assert [p["probabilities"] for p in default] == [p["probabilities"] for p in served["raw"]]
    for kind, scale in (("calibrated", 0.25), ("raw", 1.0)):
        z = logits / scale
        expected = np.exp(z - z.max(-1, keepdims=True))
        expected /= expected.sum(-1, keepdims=True)
        got = np.array([[p["probabilities"][name] for name in LABELS] for p in served[kind]])
        np.testing.assert_allclose(got, expected, atol=1e-4)
        assert all(p["calibrated"] is (kind == "calibrated") for p in served[kind])
    assert [p["label"] for p in served["calibrated"]] == [p["label"] for p in served["raw"]]
    assert not np.allclose(
        [p["probabilities"][LABELS[0]] for p in served["calibrated"]],
        [p["probabilities"][LABELS[0]] for p in served["raw"]],
        atol=1e-3,
    )
