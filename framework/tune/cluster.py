"""Joining a user's Ray cluster for a search: the address checked first, the search folder checked on every node.

A search on a cluster is `RAY_ADDRESS=HEAD:PORT refit tune ...` (or `--ray_address`), run on a machine of
the cluster. Trials write their versions straight into the search folder and this process reads them back,
so that folder must be the same files on every node: one machine, or a shared filesystem (NFS, ...) mounted
at the same path everywhere. Ray itself would find out only at the end (no trial finished, as far as the
driver can see); `check_storage_on_nodes` finds out before the first trial.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

from refit.errors import ConfigError

__all__ = ["connect", "check_storage_on_nodes", "check_storage_path", "PROBE_FILE"]

PROBE_FILE = ".refit-storage-probe"  # written by the driver in the search folder, read on every node
CONNECT_TIMEOUT_S = 5.0
PROBE_TIMEOUT_S = 120.0  # a node's first task may start a worker process; a node that never answers fails


def check_storage_path(storage_path: str) -> None:
    """A URI (s3://, gs://, ...) is refused: trials write their versions into the folder as files and
    this process reads them back, which Ray's syncing of checkpoints to object storage does not cover."""
    if "://" in storage_path:
        raise ConfigError(
            f"storage_path {storage_path!r}: refit tune needs a filesystem path, not a URI (trials write their "
            "versions straight into the search folder, and this process reads them back). On a cluster of "
            "several machines, use a shared filesystem mounted at the same path on every node."
        )


GCS_PORT = 6379  # `ray start --head` without --port
DASHBOARD_PORT = 8265  # the dashboard and Jobs API (`ray job submit --address http://HEAD:8265`)
RAY_CLIENT_PORT = 10001  # Ray Client (ray://HEAD:10001), in older docs given without the scheme
HTTP2_PREFACE = (
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
)  # + empty SETTINGS
GIVE_GCS = (
    "Give the HOST:PORT of the head's GCS instead: the port `ray start --head --port` was given, "
    f"{GCS_PORT} by default (e.g. RAY_ADDRESS=HEAD_HOST:{GCS_PORT})."
)


def _port_hint(port: int) -> str:
    """What a well-known port of Ray's that is not the GCS is, for the messages below."""
    if port == DASHBOARD_PORT:
        return f" {DASHBOARD_PORT} is the port of Ray's dashboard and Jobs API (for `ray job submit`)."
    if port == RAY_CLIENT_PORT:
        return f" {RAY_CLIENT_PORT} is the port of Ray Client (ray://), which refit tune does not use."
    return ""


def _host_port(address: str, source: str) -> tuple[str, int]:
    scheme, sep, _ = address.partition("://")
    if sep and scheme == "ray":
        raise ConfigError(
            f"{source} {address!r}: Ray Client (ray://) is not supported by refit tune: the search's "
            "driver must see the search folder the trials write (a Ray Client driver runs elsewhere, and "
            "the tune extra does not install ray[client]). Run refit tune on a machine of the cluster with "
            "RAY_ADDRESS=HEAD_HOST:GCS_PORT (6379 unless `ray start --head --port` said otherwise)."
        )
    if sep and scheme in ("http", "https"):
        raise ConfigError(
            f"{source} {address!r}: that is the address of Ray's dashboard and Jobs API (what `ray job "
            f"submit` takes), not of the cluster itself. {GIVE_GCS}"
        )
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not host or not port.isdigit():
        raise ConfigError(
            f"{source} {address!r}: expected HOST:PORT of a Ray cluster's head (its GCS port, 6379 unless "
            "`ray start --head --port` said otherwise), or 'auto' for the cluster started on this machine."
        )
    return host.strip("[]"), int(port)


def _check_gcs_answers(host: str, port: int, address: str, source: str) -> None:
    """Refuse, within seconds, an address where no Ray GCS listens.

    Ray itself retries such an address for minutes (a plain HTTP server: still retrying after 150 s here) before a
    ConnectionError with a traceback. The GCS is a gRPC server: to HTTP/2's client preface it answers
    with a SETTINGS frame at once; an HTTP/1 server (the dashboard) answers with HTTP/1 text, and a
    listener that is not a server of either kind answers nothing. (Ray Client's server is gRPC too:
    told apart only by its port, see `_port_hint`.) With RAY_USE_TLS on, the GCS expects a TLS handshake
    first, so only the TCP connect is checked there."""
    try:
        conn = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
    except OSError as e:
        raise ConfigError(
            f"{source} {address!r}: no Ray cluster answers there ({e.strerror or e}).{_port_hint(port)} "
            "Start one with `ray start --head --port PORT` and give its HOST:PORT (the GCS port, "
            f"{GCS_PORT} by default), or unset it to run Ray in this process."
        ) from None
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        conn.close()  # a TLS GCS answers a cleartext preface with nothing useful: the TCP connect must do
        return
    reply = b""
    with conn:
        try:
            conn.sendall(HTTP2_PREFACE)
            while len(reply) < 4:  # a frame header: 3 bytes length, 1 byte type (4: SETTINGS), ...
                chunk = conn.recv(9 - len(reply))
                if not chunk:
                    break
                reply += chunk
        except OSError:  # a timeout, or a reset
            pass
    if len(reply) >= 4 and reply[3] == 4:
        return
    what = (
        "an HTTP server answers there, not a Ray cluster's GCS"
        if reply.startswith(b"HTTP/") or reply.lstrip().startswith(b"<")
        else f"something listens there but it is not a Ray cluster's GCS (no gRPC answer within "
        f"{CONNECT_TIMEOUT_S:g} s)"
    )
    raise ConfigError(f"{source} {address!r}: {what}.{_port_hint(port)} {GIVE_GCS}")


def connect(address: str, source: str, runtime_env: dict | None) -> None:
    """ray.init on the cluster at ADDRESS; a wrong or unreachable address is a ConfigError naming it.

    Ray itself retries an address where no GCS answers for minutes (2 min and more here) and then raises
    a ConnectionError with a traceback: the head's port is asked first (`_check_gcs_answers`), within
    seconds. `source` says where the address came from (--ray_address or $RAY_ADDRESS). 'auto' (a cluster
    started on this machine with `ray start`) goes to Ray as it is: Ray finds it, or fails at once."""
    import ray

    if address != "auto":
        _check_gcs_answers(*_host_port(address, source), address, source)
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            runtime_env=runtime_env,
        )
    except (ConnectionError, RuntimeError) as e:
        cause = f"{e} {e.__cause__ or ''}"
        hint = (
            " The cluster uses token authentication: set RAY_AUTH_MODE=token and the cluster's token "
            "(RAY_AUTH_TOKEN, or the file ~/.ray/auth_token of the head) here."
            if "auth" in cause.lower()
            else ""
        )
        if address == "auto":
            raise ConfigError(
                f"{source} 'auto': no Ray cluster started on this machine by `ray start` could be joined "
                f"({e}). Start one with `ray start --head`, or give HOST:PORT of a cluster's head "
                f"({GCS_PORT} unless `ray start --head --port` said otherwise).{hint}"
            ) from None
        port_hint = _port_hint(_host_port(address, source)[1])
        raise ConfigError(
            f"{source} {address!r}: could not join the Ray cluster there ({e}).{hint}{port_hint}"
        ) from None


def check_storage_on_nodes(folder: Path) -> None:
    """Every alive node of the cluster must see FOLDER (the search folder) as this process does: a random
    token written here is read back by a zero-CPU task pinned to each node. A node that reads something
    else (its own local disk at that path), or does not answer within PROBE_TIMEOUT_S, is named, before any
    trial runs."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = secrets.token_hex(16)
    probe = folder / PROBE_FILE
    probe.write_text(token)

    @ray.remote(num_cpus=0, max_retries=0)
    def read(path: str) -> str | None:
        try:
            return Path(path).read_text()
        except OSError:
            return None

    nodes = [n for n in ray.nodes() if n["Alive"]]
    pending = [
        read.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
            str(probe)
        )
        for n in nodes
    ]
    try:
        ready, _ = ray.wait(pending, num_returns=len(pending), timeout=PROBE_TIMEOUT_S)
        seen = [ray.get(ref) if ref in ready else None for ref in pending]  # no answer: as good as blind
    finally:
        probe.unlink(missing_ok=True)
    blind = [n for n, got in zip(nodes, seen, strict=True) if got != token]
    if blind:
        names = ", ".join(f"{n['NodeManagerAddress']} (node {n['NodeID'][:8]})" for n in blind)
        raise ConfigError(
            f"storage_path: the search folder {folder} is not the same folder on every node of the cluster: "
            f"{names} cannot see it (or did not answer). Trials write their versions there and this process "
            "reads them back: put storage_path on a filesystem every node mounts at the same path (NFS or "
            "similar)."
        )
