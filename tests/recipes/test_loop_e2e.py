"""The whole loop as a README reader drives it: init, serve, predict, late labels, a cycle on the captures
that promotes, the running server swapping to the new champion, forget, and a cycle that counts the
forgotten labels instead of training on them. Tiny random BERT, real CLI, real uvicorn on loopback.

Each step was tested in its own area; this checks that today's changes agree with each other (feedback
stored as names and read by the cycle, signed ids across two server runs, forget against the index), and
that the commands `refit maintain init` prints run as written.
"""

from __future__ import annotations

import json
import shlex
import signal
import time

import pytest

pytest.importorskip("fastapi", reason="needs the [serve] extra")
pytest.importorskip("uvicorn", reason="needs the [serve] extra")
httpx = pytest.importorskip("httpx", reason="needs httpx (a FastAPI test dependency)")

from refit.cli import main  # noqa: E402
from refit.data import demo_dir  # noqa: E402
from refit.registry import CHAMPION, Registry  # noqa: E402
from tests.recipes.test_maintain_init import TINY  # noqa: E402
from tests.recipes.test_serve import _start_server  # noqa: E402

# the tiny model learns little from 40 rows: the gate is opened so that the cycle promotes, which is what
# the loop after it (hot swap, forget) needs (recent_alpha null too: the default 0.2 would ask 12 held-out
# rows for a significant win); the gate itself is tested in test_maintain.py and test_maintain_gate.py
FORCE = [
    "--policy.always_retrain",
    "true",
    "--gate.recent_margin",
    "-100",
    "--gate.golden_tolerance",
    "100",
    "--gate.recent_alpha",
    "null",
]


def _printed_command(out: str, *words: str) -> list[str]:
    """The argv of the command `refit maintain init` printed that contains all of `words`."""
    lines = [line.strip() for line in out.splitlines() if line.strip().startswith("refit ")]
    found = [line for line in lines if all(w in line for w in words)]
    assert len(found) == 1, lines
    return shlex.split(found[0])[1:]


def _wait_for_version(base: str, version_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        ready = httpx.get(f"{base}/readyz", timeout=5).json()
        if ready["version_id"] == version_id or time.monotonic() > deadline:
            return ready
        time.sleep(0.2)


def _feedback(base: str, rows: list[dict]) -> None:
    r = httpx.post(f"{base}/feedback", json=rows, timeout=30)
    assert r.json() == {"accepted": len(rows), "dropped": 0}, r.text


def _files_holding(folder, texts: list[str]) -> list[str]:
    wanted = [t.encode() for t in texts]
    return [str(p) for p in folder.rglob("*") if p.is_file() and any(t in p.read_bytes() for t in wanted)]


@pytest.mark.slow
def test_the_loop_from_init_to_forget_through_the_printed_commands(tmp_path, tiny_model_dir, capsys):
    """About 50 s on 2 CPU cores: one fine-tune, two cycles with retrain and int8 export, one server."""
    loop = tmp_path / "loop"
    assert main(["maintain", "init", "--dir", str(loop), "--model", str(tiny_model_dir), *TINY]) == 0
    out = capsys.readouterr().out
    serve_args = _printed_command(out, "refit serve")
    cycle_on_captures = _printed_command(out, "refit maintain", "--inbox.windows")
    registry = Registry(loop / "registry")
    first = registry.get(CHAMPION).id

    proc, base = _start_server(registry, *serve_args[1:], "--watch_interval_s", "0.5", timeout=60)
    try:
        rows = [json.loads(line) for line in (demo_dir() / "shifted.jsonl").read_text().splitlines()][:60]
        texts = [r["text"] for r in rows]
        answer = httpx.post(f"{base}/predict", json={"texts": texts}, timeout=60).json()["predictions"]
        ids = [a["request_id"] for a in answer]
        names = ["negative", "positive"]
        # late labels for 40 of them: 20 by name, 20 by id (the server stores both as the name)
        _feedback(base, [{"request_id": i, "label": names[r["label"]]} for i, r in zip(ids[:20], rows)])
        _feedback(base, [{"request_id": i, "label": r["label"]} for i, r in zip(ids[20:40], rows[20:40])])
        # the server keeps serving; its capture rotates only on shutdown, so restart it as an operator would
        proc.send_signal(signal.SIGTERM)
        log = proc.communicate(timeout=30)[0]
        assert proc.returncode == 0, log[-2000:]
        assert f"capturing to {registry.root / 'inbox'}" in log  # the folder --inbox.windows must name
        proc, base = _start_server(registry, *serve_args[1:], "--watch_interval_s", "0.5", timeout=60)

        # --- the printed cycle on the captures: 40 labelled requests joined, retrained, promoted ---------
        assert main([*cycle_on_captures, *FORCE]) == 0
        run = registry.runs("maintain")[-1]
        assert run["status"] == "promoted", run["details"]
        assert run["details"]["counts"]["labelled"] == 40, run["details"]["counts"]
        second = registry.get(CHAMPION).id
        assert second != first
        # --- the running server swaps to the new champion by itself and serves it -------------------------
        assert _wait_for_version(base, second)["version_id"] == second
        assert httpx.post(f"{base}/predict", json={"text": "ok"}, timeout=30).json()["version_id"] == second
        # late labels for the other 20, posted to this later run (the ids are signed by the folder's key)
        _feedback(base, [{"request_id": i, "label": names[r["label"]]} for i, r in zip(ids[40:], rows[40:])])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.communicate()[0][-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # --- forget 5 of the late-labelled requests: the next cycle counts them, trains on the other 15 -------
    forgotten = ids[40:45]
    (tmp_path / "ids.txt").write_text("\n".join(forgotten) + "\n")
    # exit 1: the new champion's drift reference (sealed) was drawn from the served inputs and holds
    # some of those texts: named, not scrubbed (that would break its seal), and not silently left
    assert (
        main(
            ["maintain", "forget", "--ids", str(tmp_path / "ids.txt"), "--registry.root", str(registry.root)]
        )
        == 1
    )
    said = capsys.readouterr().out
    assert "forgot 5 of 5" in said and f"NOT removed (sealed into the version): {second}" in said, said
    assert main([*cycle_on_captures, *FORCE]) == 0
    run = registry.runs("maintain")[-1]
    counts = run["details"]["counts"]
    assert (counts["labelled"], counts["forgotten"]) == (15, 5), run["details"]
    run_folder = registry.root / "maintain" / f"run-{run['id']:05d}"
    assert run_folder.is_dir()
    forgotten_texts = texts[40:45]
    assert _files_holding(run_folder, forgotten_texts) == []
    assert _files_holding(registry.root / "inbox", forgotten_texts) == []
    assert main(["registry", "verify", "--root", str(registry.root)]) == 0
