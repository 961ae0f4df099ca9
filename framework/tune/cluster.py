"""Joining a user's Ray cluster for a search: the address checked first, the search folder checked on every node.

A search on a cluster is `RAY_ADDRESS=HEAD:PORT refit tune ...` (or `--ray_address`), run on a machine of
the cluster. Trials write their versions straight into the search folder and this process reads them back,
so that folder must be the same files on every node: one machine, or a shared filesystem (NFS, ...) mounted
at the same path everywhere. Ray itself would find out only at the end (no trial finished, as far as the
driver can see); `check_storage_on_nodes` finds out before the first trial.
"""

from __future__ import annotations

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


def _host_port(address: str, source: str) -> tuple[str, int]:
    if address.startswith("ray://"):
        raise ConfigError(
            f"{source} {address!r}: Ray Client (ray://) is not supported by refit tune: the search's "
            "driver must see the search folder the trials write (a Ray Client driver runs elsewhere, and "
            "the tune extra does not install ray[client]). Run refit tune on a machine of the cluster with "
            "RAY_ADDRESS=HEAD_HOST:GCS_PORT (6379 unless `ray start --head --port` said otherwise)."
        )
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(
            f"{source} {address!r}: expected HOST:PORT of a Ray cluster's head (its GCS port, 6379 unless "
            "`ray start --head --port` said otherwise), or 'auto' for the cluster started on this machine."
        )
    return host.strip("[]"), int(port)


def connect(address: str, source: str, runtime_env: dict | None) -> None:
    """ray.init on the cluster at ADDRESS; a wrong or unreachable address is a ConfigError naming it.

    Ray itself retries an address where nothing listens for minutes (2 min and more here) and then raises
    a ConnectionError with a traceback: the head's port is tried first, for CONNECT_TIMEOUT_S. `source` says
    where the address came from (--ray_address or $RAY_ADDRESS). 'auto' (a cluster started on this machine
    with `ray start`) goes to Ray as it is."""
    import ray

    if address != "auto":
        host, port = _host_port(address, source)
        try:
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as e:
            raise ConfigError(
                f"{source} {address!r}: no Ray cluster answers there ({e.strerror or e}). Start one with "
                "`ray start --head --port PORT` and give its HOST:PORT, or unset it to run Ray in this "
                "process."
            ) from None
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
        raise ConfigError(
            f"{source} {address!r}: could not join the Ray cluster there ({e}).{hint}"
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
