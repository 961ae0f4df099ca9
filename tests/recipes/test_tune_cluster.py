"""`refit tune` on a real Ray cluster started with `ray start`, as a user would: a head and a second node
(a second raylet on this machine, the closest thing to a second machine here), each with one CPU.

The second node runs in its own mount namespace with an empty tmpfs over one folder (`hidden`): to it that
folder is a different disk, as a folder on the driver's local disk is to another machine of a real cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml

from refit.cli import main
from refit.errors import ConfigError

pytest.importorskip("ray", reason="Ray Tune is an optional extra (refit-ml[tune])")

RAY = str(Path(sys.executable).with_name("ray"))
REFIT = str(Path(sys.executable).with_name("refit"))


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _node_ports() -> list[str]:
    """Every port a node opens, free ones: other engineers' Rays run on this machine with Ray's defaults."""
    names = (
        "--node-manager-port",
        "--object-manager-port",
        "--metrics-export-port",
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--runtime-env-agent-port",
    )
    return [
        arg for name, port in zip(names, _free_ports(len(names)), strict=True) for arg in (name, str(port))
    ]


def _cluster_processes(root: Path) -> list[psutil.Process]:
    """The processes of the cluster under ROOT: those whose command line names ROOT (gcs_server, raylets,
    monitors, the dashboard) and all their descendants (agents and workers retitle themselves `ray::...`)."""
    found: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline"]):
        if str(root) in " ".join(p.info["cmdline"] or ()):
            found[p.pid] = p
            with_children = p.children(recursive=True) if p.is_running() else []
            found.update({c.pid: c for c in with_children})
    return list(found.values())


STATE = (  # printed by a driver joined to the cluster
    "import json; print(json.dumps({'nodes': sorted(n['NodeID'] for n in ray.nodes() if n['Alive']),"
    "'cpus': ray.available_resources().get('CPU', 0)}))"
)


class Cluster:
    """A running cluster: its address, the environment a driver needs (its auth token), its nodes."""

    def __init__(self, root: Path, address: str, env: dict[str, str], hidden: Path | None) -> None:
        self.root, self.address, self.env, self.hidden = root, address, env, hidden

    def state(self) -> dict:
        """Alive node ids and available CPUs, asked by a separate driver (this test process stays off Ray)."""
        code = f"import ray; ray.init(address={self.address!r}, log_to_driver=False);" + STATE
        out = subprocess.run(
            [sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=60, check=True
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    def wait_idle(self, timeout_s: float = 60) -> dict:
        """The state once every CPU is free again (a search's trial workers gone), or the last one seen."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.state()
            if state["cpus"] == 2 or time.monotonic() > deadline:
                return state
            time.sleep(2)


@pytest.fixture(scope="module")
def ray_cluster():
    """A head and a second node started by `ray start`, stopped at the end whatever happened.

    Own temp dir (in /tmp: Ray's socket paths must stay short), own free ports, own auth token
    (RAY_AUTH_MODE=token with RAY_AUTH_TOKEN, so ~/.ray/auth_token is neither read nor written). It is
    stopped by PID, not by `ray stop`: `ray stop` without flags stops every Ray process of this user,
    other engineers' too. The PIDs are the processes whose command line names this cluster's temp dir plus
    all their descendants (`_cluster_processes`): SIGTERM, then SIGKILL after 5 s; none may be left.
    With root and `unshare`, the second node gets a private tmpfs over `hidden` (see the module doc).
    """
    root = Path(tempfile.mkdtemp(prefix="refit-rc-", dir="/tmp"))
    hidden = root / "hidden"
    hidden.mkdir()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    port, dashboard_port = _free_ports(2)
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus", "1", "--temp-dir", str(root / "ray"), "--disable-usage-stats"]
    head = [RAY, "start", "--head", "--port", str(port), "--include-dashboard", "false"]
    head += ["--dashboard-port", str(dashboard_port), *common, *_node_ports()]
    worker = [RAY, "start", "--address", address, *common, *_node_ports()]
    isolate = os.geteuid() == 0 and shutil.which("unshare")
    if isolate:
        mount = f"mount -t tmpfs tmpfs {hidden} && exec " + " ".join(worker)
        worker = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount]
    try:
        for cmd in (head, worker):
            subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=True)
        cluster = Cluster(root, address, env, hidden if isolate else None)
        cluster.nodes = cluster.state()["nodes"]
        assert len(cluster.nodes) == 2, cluster.nodes
        yield cluster
    finally:
        procs = _cluster_processes(root)
        for p in procs:
            with_suppress(p.terminate)
        _, alive = psutil.wait_procs(procs, timeout=5)
        for p in alive:
            with_suppress(p.kill)
        psutil.wait_procs(alive, timeout=5)
        left = [p.pid for p in _cluster_processes(root)]
        if isolate:
            subprocess.run(["umount", str(hidden)], capture_output=True)  # only in the node's namespace
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"Ray processes of the test cluster left running: {left}"


def with_suppress(fn) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        fn()


def _config(
    tmp_path: Path, model: Path, data: dict, storage: Path, name: str, samples: int, epochs: int
) -> Path:
    cfg = {
        "finetune": {
            "model": str(model),
            "data": {
                **{k: str(v) for k, v in data.items()},
                "batch_size": 8,
                "max_length": 32,
                "reference_size": 16,
            },
            "trainer": {
                "max_epochs": epochs,
                "early_stopping_patience": 0,
                "monitor": "val/loss",
                "mode": "min",
            },
            "tracking": {"wandb": False},
        },
        "space": {"optim.lr": {"loguniform": [1e-5, 3e-3]}},
        "scheduler": "fifo",
        "num_samples": samples,
        "max_concurrent_trials": 2,
        "storage_path": str(storage),
        "name": name,
        "seed": 0,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# `refit tune` in a process of its own that then says whether it is still connected to Ray. Not in this
# test process: Ray reads RAY_AUTH_MODE/RAY_AUTH_TOKEN once per process, when it is first used.
DRIVER = (
    "import sys, ray; from refit.cli import main; code = main(sys.argv[1:]);"
    "print('ray still initialized:', ray.is_initialized()); sys.exit(code)"
)


def _refit_tune(cluster: Cluster, config: Path) -> subprocess.CompletedProcess:
    env = {**cluster.env, "RAY_ADDRESS": cluster.address}
    args = [sys.executable, "-c", DRIVER, "tune", "--config", str(config)]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.slow
def test_search_runs_on_both_nodes_and_leaves_the_cluster_up(ray_cluster, tmp_path, tiny_model_dir, toy_data):
    storage = tmp_path / "tune"
    config = _config(tmp_path, tiny_model_dir, toy_data, storage, "c", 2, 2)
    local = {**yaml.safe_load(config.read_text()), "ray_num_cpus": 8}  # a YAML written for local runs
    config.write_text(yaml.safe_dump(local))
    done = _refit_tune(ray_cluster, config)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ray_num_cpus 8 is ignored on a cluster" in done.stderr, done.stderr[-3000:]  # said, not silent
    out = storage / "c"
    # outputs where the user asked for them
    assert (out / "best.yaml").is_file() and (out / "best_version" / "refit.json").is_file()
    results = json.loads((out / "results.json").read_text())
    assert [t["status"] for t in results["trials"]] == ["finished", "finished"]
    # the trials ran on the cluster's nodes (not on a Ray started here), one on each
    nodes = {json.loads(p.read_text())["worker"]["node_id"] for p in out.glob("trials/*/run-*/timings.json")}
    assert nodes == set(ray_cluster.nodes)
    # the driver let go of the cluster (a later search in that process must not join it by accident) ...
    assert "ray still initialized: False" in done.stdout
    # ... and the cluster is still up, with every CPU free
    assert ray_cluster.wait_idle() == {"nodes": ray_cluster.nodes, "cpus": 2}


def _stop_once_a_trial_starts(cmd: list[str], env: dict, out: Path, sig: signal.Signals) -> None:
    """Run `refit tune` until one more trial attempt has started on the cluster, then send it SIG."""
    before = len(list(out.glob("trials/*/run-*")))
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while len(list(out.glob("trials/*/run-*"))) <= before and driver.poll() is None:
            assert time.monotonic() < deadline, "no trial started on the cluster"
            time.sleep(0.5)
        assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
    finally:
        driver.send_signal(sig)
        driver.wait(timeout=60)  # a driver that hangs on Ctrl-C fails here
        driver.stderr.close()


@pytest.mark.slow
def test_ctrl_c_or_a_killed_driver_leaves_the_cluster_healthy_and_resume_finishes(
    ray_cluster, tmp_path, tiny_model_dir, toy_data
):
    out = tmp_path / "tune" / "k"
    config = _config(tmp_path, tiny_model_dir, toy_data, out.parent, "k", 2, 8)
    env = {**ray_cluster.env, "RAY_ADDRESS": ray_cluster.address}
    search = [REFIT, "tune", "--config", str(config)]
    for cmd, sig in ((search, signal.SIGINT), ([*search, "--resume"], signal.SIGKILL)):
        _stop_once_a_trial_starts(cmd, env, out, sig)
        assert not (out / "results.json").exists()  # stopped mid-search
        # Ray ends the stopped driver's trial workers; the cluster keeps both nodes and frees every CPU
        assert ray_cluster.wait_idle() == {"nodes": ray_cluster.nodes, "cpus": 2}, sig
    done = subprocess.run([*search, "--resume"], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert len(results["trials"]) == 2 and (out / "best_version" / "refit.json").is_file()
    assert ray_cluster.wait_idle() == {"nodes": ray_cluster.nodes, "cpus": 2}


@pytest.mark.slow
def test_a_search_folder_one_node_cannot_see_is_refused_before_any_trial(
    ray_cluster, tmp_path, tiny_model_dir, toy_data
):
    if ray_cluster.hidden is None:
        pytest.skip("needs root and unshare(1) to give the second node a folder of its own")
    storage = ray_cluster.hidden / "tune"
    done = _refit_tune(ray_cluster, _config(tmp_path, tiny_model_dir, toy_data, storage, "h", 2, 2))
    assert done.returncode == 2, done.stderr[-3000:]
    assert "not the same folder on every node" in done.stderr and "NFS" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (storage / "h" / "trials").exists()
    assert "ray still initialized: False" in done.stdout


@pytest.mark.slow
def test_a_wrong_auth_token_fails_with_a_hint(ray_cluster, tmp_path, tiny_model_dir, toy_data):
    config = _config(tmp_path, tiny_model_dir, toy_data, tmp_path / "tune", "t", 2, 2)
    env = {**ray_cluster.env, "RAY_ADDRESS": ray_cluster.address, "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env["RAY_gcs_server_port_wait_time_s"] = "3"  # Ray's tries to reach the GCS (1 s each; 20 by default)
    done = subprocess.run(
        [REFIT, "tune", "--config", str(config)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert ray_cluster.address in done.stderr and "RAY_AUTH_MODE=token" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("how", ["flag", "env"])
def test_an_unreachable_address_fails_at_once_naming_it(how, tmp_path, tiny_model_dir, toy_data):
    """Ray alone retried such an address for more than 2 minutes here, then printed a traceback."""
    (port,) = _free_ports(1)  # nothing listens there now
    address = f"127.0.0.1:{port}"
    config = _config(tmp_path, tiny_model_dir, toy_data, tmp_path / "tune", "u", 2, 2)
    args, env = (
        [REFIT, "tune", "--config", str(config)],
        {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
    )
    if how == "flag":
        args += ["--ray_address", address]
    else:
        env["RAY_ADDRESS"] = address
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)  # a hang fails here
    assert done.returncode == 2, done.stderr[-3000:]
    assert address in done.stderr and ("--ray_address" if how == "flag" else "$RAY_ADDRESS") in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "tune" / "u").exists()  # nothing written


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("--ray_address", "ray://127.0.0.1:10001", "Ray Client (ray://) is not supported"),
        ("--ray_address", "head-without-port", "expected HOST:PORT"),
        ("--storage_path", "s3://bucket/searches", "needs a filesystem path, not a URI"),
    ],
)
def test_addresses_and_storage_refit_cannot_use_are_refused(
    key, value, expected, tmp_path, tiny_model_dir, toy_data, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    config = _config(tmp_path, tiny_model_dir, toy_data, tmp_path / "tune", "r", 2, 2)
    assert main(["tune", "--config", str(config), key, value]) == 2
    err = capsys.readouterr().err
    assert expected in err and value in err
    assert not list(tmp_path.glob("s3*")) and not (tmp_path / "tune" / "r").exists()


def _refused(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """`refit tune ARGS` in its own process, which must give up by itself: Ray alone retried the addresses
    below for minutes (an HTTP server: still retrying after 150 s here), so a hang fails at the timeout."""
    done = subprocess.run([REFIT, "tune", *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return done


def _env_without_ray() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


def test_the_dashboard_and_jobs_address_is_refused_naming_the_gcs_port(
    tmp_path, tiny_model_dir, toy_data, monkeypatch, capsys
):
    """What `ray start --head` prints for `ray job submit` (refused before anything is asked)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    config = _config(tmp_path, tiny_model_dir, toy_data, tmp_path / "tune", "d", 2, 2)
    assert main(["tune", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "$RAY_ADDRESS 'http://127.0.0.1:8265'" in err and "dashboard and Jobs API" in err
    assert "6379" in err and not (tmp_path / "tune" / "d").exists()


def test_a_port_where_an_http_server_listens_is_refused_at_once(tmp_path, tiny_model_dir, toy_data):
    """HOST:8265 without the scheme is the dashboard, an HTTP server: `python -m http.server` stands in for it
    (this fixture's heads run without a dashboard, which needs ray[default])."""
    (port,) = _free_ports(1)
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:  # until it listens
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert time.monotonic() < deadline and server.poll() is None, "http.server did not start"
            time.sleep(0.2)
        config = _config(tmp_path, tiny_model_dir, toy_data, tmp_path / "tune", "w", 2, 2)
        done = _refused(["--config", str(config), "--ray_address", f"127.0.0.1:{port}"], _env_without_ray())
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert f"--ray_address '127.0.0.1:{port}': an HTTP server answers there" in done.stderr
    assert "6379" in done.stderr and not (tmp_path / "tune" / "w").exists()


def test_a_port_where_something_else_listens_is_refused_within_seconds(tmp_path, tiny_model_dir, toy_data):
    """A listener that accepts and never answers (as a service of another protocol may)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        config = _config(tmp_path, tiny_model_dir, toy_data, tmp_path / "tune", "l", 2, 2)
        env = {**_env_without_ray(), "RAY_ADDRESS": address}
        done = _refused(["--config", str(config)], env)
    assert (
        f"$RAY_ADDRESS {address!r}: something listens there but it is not a Ray cluster's GCS" in done.stderr
    )
    assert "6379" in done.stderr and not (tmp_path / "tune" / "l").exists()


def test_with_tls_on_only_the_tcp_connect_is_checked(monkeypatch):
    """A GCS with RAY_USE_TLS expects a TLS handshake first and answers a cleartext HTTP/2 preface with
    nothing useful: the probe must not refuse it (a silent listener stands in, as a TLS server would be)."""
    from refit.tune.cluster import _check_gcs_answers

    monkeypatch.setenv("RAY_USE_TLS", "1")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        started = time.monotonic()
        _check_gcs_answers("127.0.0.1", port, f"127.0.0.1:{port}", "--ray_address")  # no ConfigError
        assert time.monotonic() - started < 2  # and no 5 s wait for an answer
    monkeypatch.setenv("RAY_USE_TLS", "0")
    with socket.socket() as listener, pytest.raises(ConfigError, match="not a Ray cluster's GCS"):
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        _check_gcs_answers("127.0.0.1", port, f"127.0.0.1:{port}", "--ray_address")


def test_the_ray_client_port_without_its_scheme_is_named(tmp_path, tiny_model_dir, toy_data):
    """`HOST:10001`, from older docs: whatever answers there here (nothing, or not a GCS), the message says
    that 10001 is Ray Client's port and which port to give."""
    config = _config(tmp_path, tiny_model_dir, toy_data, tmp_path / "tune", "p", 2, 2)
    done = _refused(["--config", str(config), "--ray_address", "127.0.0.1:10001"], _env_without_ray())
    assert "--ray_address '127.0.0.1:10001'" in done.stderr
    assert "10001 is the port of Ray Client (ray://)" in done.stderr and "6379" in done.stderr


def test_auto_without_a_cluster_on_this_machine_is_a_clear_error(tmp_path, tiny_model_dir, toy_data):
    """Not tried with this module's cluster: Ray's 'auto' looks for a cluster in /tmp/ray and in the
    machine's process table, where other users' Ray clusters are too (the fixture's, started with its own
    --temp-dir, is found only there). So `refit tune` runs in namespaces of its own: a process table with
    only itself, and an empty /tmp/ray (a tmpfs over it, seen by that process alone)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to hide this machine's other Ray clusters from 'auto'")
    config = _config(tmp_path, tiny_model_dir, toy_data, tmp_path / "tune", "a", 2, 2)
    cmd = f"{REFIT} tune --config {config} --ray_address auto"
    script = f"if [ -d /tmp/ray ]; then mount -t tmpfs tmpfs /tmp/ray; fi && exec {cmd}"
    args = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc"]
    done = subprocess.run(
        [*args, "sh", "-c", script], env=_env_without_ray(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "--ray_address 'auto': no Ray cluster started on this machine" in done.stderr
    assert "ray start --head" in done.stderr and not (tmp_path / "tune" / "a").exists()
