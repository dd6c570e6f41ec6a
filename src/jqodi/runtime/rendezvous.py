"""Rendezvous: how the cloud, edge and end processes find each other.

The cloud hosts a torch.distributed ``TCPStore`` on the configured ``host:port`` (its listening
socket is bound by us to exactly that address, never to all interfaces) and publishes the job
(the plan and everything the roles need) under ``job``. An edge or end process needs only the
address: it reads the job from the store, finds its rank from its role name, and all processes
build one gloo process group whose sockets are bound to each process's own address
(``bind_host``; loopback when the store is on loopback). Every step has an explicit timeout
(torch's default is 30 minutes): the **start-up** timeout (``Job.startup_timeout_s``, ``--startup-timeout``),
not the failure-detection one (``Job.timeout_s``, ``--timeout``). Forming the group waits for the
slowest role to import torch and load its model, which takes far longer than the few seconds of
silence after which a running peer counts as failed.

The cloud also publishes its model format version (:data:`FORMAT_KEY`); a role of another version
stops with one line naming both versions. Ranks: cloud 0, end 1, edges 2.. in the order of ``job["edges"]``.
"""
from __future__ import annotations

import ipaddress
import json
import socket
from datetime import timedelta

from jqodi.errors import RuntimeFailure

__all__ = ["role_ranks", "connect", "local_address"]

#: Store key of the cloud's :data:`jqodi.core.quant.MODEL_FORMAT_VERSION`: packed models carry no
#: header, so the roles compare the format once, here, instead of misreading a payload.
FORMAT_KEY = "model_format_version"


def role_ranks(edges: list[str]) -> dict[str, int]:
    ranks = {"cloud": 0, "end": 1}
    for i, e in enumerate(edges):
        ranks[f"edge:{e}"] = 2 + i
    return ranks


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def local_address(store_host: str) -> str:
    """The address this machine uses to reach ``store_host`` (loopback stays loopback)."""
    if _is_loopback(store_host):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((store_host, 9))  # no packet is sent for UDP connect
        return s.getsockname()[0]


def _listen(host: str, port: int) -> socket.socket:
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        raise RuntimeFailure(f"cloud: cannot listen on {host}:{port}: {e.strerror or e}", peer="cloud") from e
    return sock


def connect(role: str, host: str, port: int, startup_timeout_s: float, *, job: dict | None = None,
            bind_host: str | None = None):
    """Join the run at ``host:port`` as ``role`` ("cloud", "end" or "edge:NAME").

    ``startup_timeout_s`` bounds reaching the store and forming the process group. The cloud
    passes ``job``; the others receive it. Returns ``(pg, ranks, job, store)``.
    """
    import torch.distributed as dist

    from jqodi.core.quant import MODEL_FORMAT_VERSION

    timeout = timedelta(seconds=startup_timeout_s)
    listener = None
    cloud_version = MODEL_FORMAT_VERSION
    try:
        if role == "cloud":
            if job is None:
                raise RuntimeFailure("cloud: no job to publish", peer="cloud")
            listener = _listen(host, port)
            store = dist.TCPStore(host, port, None, True, timeout, wait_for_workers=False,
                                  master_listen_fd=listener.fileno(), use_libuv=True)
            store.set(FORMAT_KEY, str(MODEL_FORMAT_VERSION))  # before the job: a role that sees the job sees it
            store.set("job", json.dumps(job))
        else:
            store = dist.TCPStore(host, port, None, False, timeout)
            job = json.loads(store.get("job"))
            cloud_version = int(store.get(FORMAT_KEY)) if store.check([FORMAT_KEY]) else 1  # 1 predates the key
    except RuntimeFailure:
        raise
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError/DistStoreError/TimeoutError
        what = "start the rendezvous" if role == "cloud" else "reach the cloud's rendezvous"
        raise RuntimeFailure(f"{role}: cannot {what} at {host}:{port} within the start-up timeout "
                             f"of {startup_timeout_s:g} s: "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}", peer="cloud") from e
    if role != "cloud" and cloud_version != MODEL_FORMAT_VERSION:
        raise RuntimeFailure(f"{role}: the cloud at {host}:{port} sends models in format version {cloud_version}, "
                             f"this jqodi reads version {MODEL_FORMAT_VERSION}; run the same jqodi on every node",
                             peer="cloud")
    ranks = role_ranks(job["edges"])
    if role not in ranks:
        names = ", ".join(e for e in job["edges"])
        raise RuntimeFailure(f"{role}: not part of this run (its edges are: {names})", peer=role)
    rank = ranks[role]
    bind = bind_host or local_address(host)
    opts = dist.ProcessGroupGloo._Options()
    opts._timeout = timeout
    opts._devices = [dist.ProcessGroupGloo.create_device(hostname=bind)]
    # A run id scopes the group's keys, so a restarted run never meets a stale one.
    prefix = dist.PrefixStore(f"pg/{job.get('run_id', 'run')}", store)
    try:
        pg = dist.ProcessGroupGloo(prefix, rank, len(ranks), opts)
    except Exception as e:  # noqa: BLE001
        missing = [n for n, r in ranks.items() if r != rank]
        raise RuntimeFailure(f"{role}: the process group did not form within the start-up timeout of "
                             f"{startup_timeout_s:g} s "
                             f"(waiting for {', '.join(missing)}): {str(e).splitlines()[0]}",
                             peer=None) from e
    finally:
        pass
    return pg, ranks, job, (store, listener)
