"""`refit serve` on an alias row edited by hand: never served, at start-up or by the watcher (fail closed).

Before: Registry.resolve read the aliases table alone, so `champion -> a version never promoted` written into
registry.db with the sqlite3 module was loaded at start-up and hot-swapped in by the watcher within one
watch_interval_s. Now the alias must agree with the audit log's latest move of it: start-up exits 2 with the
reason, and a running server keeps its slot, says why once, and still follows a real promote afterwards.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi", reason="needs the [serve] extra")
pytest.importorskip("uvicorn", reason="needs the [serve] extra")
httpx = pytest.importorskip("httpx", reason="needs httpx (a FastAPI test dependency)")

from refit.registry import Registry  # noqa: E402
from tests.recipes.test_serve import _start_server, make_version  # noqa: E402


@pytest.fixture(scope="module")
def versions(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("alias-versions")
    return [make_version(root / f"v{i}", tiny_model_dir, seed=i) for i in range(3)]


@pytest.fixture
def registry(tmp_path, versions) -> tuple[Registry, list[str]]:
    """v0 champion; v1 and v2 registered, never promoted. Returns (registry, ids)."""
    reg = Registry(tmp_path / "registry")
    ids = [reg.register(v).id for v in versions]
    reg.promote(ids[0], "first champion")
    return reg, ids


def _edit_alias(reg: Registry, version_id: str) -> None:
    db = sqlite3.connect(reg.db_path)
    db.execute("UPDATE aliases SET version_id = ? WHERE name = 'champion'", (version_id,))
    db.commit()
    db.close()


def test_start_up_on_an_edited_champion_exits_2_naming_the_database(registry):
    """A real `refit serve` process (before, it started serving the edited alias's version: a timeout here)."""
    reg, ids = registry
    _edit_alias(reg, ids[1])
    cmd = [sys.executable, "-m", "refit", "serve", "--registry.root", str(reg.root), "--port", "0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 2, done.stderr
    err = done.stderr
    assert str(reg.db_path) in err and f"points at '{ids[1]}' but the audit log says '{ids[0]}'" in err, err
    assert "refit registry verify" in err and "Traceback" not in err


@pytest.mark.slow
def test_the_watcher_keeps_serving_through_an_edited_alias_and_follows_a_real_promote(registry, monkeypatch):
    reg, ids = registry
    monkeypatch.setenv("REFIT_SERVE_ADMIN_TOKEN", "s3cret")  # the server process inherits it
    proc, base = _start_server(reg, "--watch_interval_s", "0.2", timeout=120)
    try:
        _edit_alias(reg, ids[1])
        time.sleep(2)  # about ten polls
        ready = httpx.get(f"{base}/readyz", timeout=10).json()
        assert ready["version_id"] == ids[0] and "refused_version_id" not in ready, ready
        assert "but the audit log says" in ready["registry_problem"], ready  # the operator sees why
        answer = httpx.post(f"{base}/predict", json={"text": "still the champion?"}, timeout=30).json()
        assert answer["version_id"] == ids[0]
        reload = httpx.post(f"{base}/admin/reload", headers={"Authorization": "Bearer s3cret"}, timeout=30)
        assert reload.status_code == 409 and reload.json()["version_id"] == ids[0], reload.text
        assert "but the audit log says" in reload.json()["detail"], reload.text
        Registry(reg.root).promote(ids[2], "a real promote repairs the alias")
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}/readyz", timeout=10).json()["version_id"] != ids[2]:
            assert time.monotonic() < deadline, "the watcher never followed the real promote"
            time.sleep(0.2)
        assert "registry_problem" not in httpx.get(f"{base}/readyz", timeout=10).json()  # repaired
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    said = f"cannot use the registry alias 'champion'; still serving {ids[0]}"
    assert out.count(said) == 1, out  # said once, not every poll
    assert f"points at '{ids[1]}' but the audit log says '{ids[0]}'" in out and "Traceback" not in out, out
    assert f"swapped {ids[0]} -> {ids[2]}" in out, out
