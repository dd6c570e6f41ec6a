"""Rendezvous: how the cloud, edge and end processes find each other.

The cloud hosts a torch.distributed ``TCPStore`` on the configured ``host:port`` (its listening
socket is bound by us to exactly that address, never to all interfaces). Every other process
first proves that it knows the job's secret (:mod:`jqodi.runtime.auth`: HMAC challenge–response,
one admission per role and generation); only then does it learn the session prefix under which
the cloud published the job (the plan and everything the roles need). It finds its rank from
its role name, and all processes build one gloo process group — its rendezvous keys also under
the secret prefix — whose sockets are bound to each process's own address (``bind_host``;
loopback when the store is on loopback). Every step has an explicit timeout (torch's default
is 30 minutes): the **start-up** timeout (``Job.startup_timeout_s``, ``--startup-timeout``),
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
import time
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


def _client_store(host: str, port: int, timeout: timedelta):
    """A ``TCPStore`` client of ``host:port``, or ``TimeoutError`` once ``timeout`` has passed.

    torch's client bounds connecting by ``timeout`` but not its handshake: a port where something
    else listens and accepts without answering (a web server waiting for its request line, a
    tarpit, a hung process) holds the constructor forever. So it runs in a daemon thread, and a
    client that has not connected in time is given up (its thread stays blocked in that socket
    until the process ends).
    """
    import threading

    import torch.distributed as dist

    box: dict = {}

    def make() -> None:
        try:
            box["store"] = dist.TCPStore(host, port, None, False, timeout)
        except Exception as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=make, name="jqodi-store-client", daemon=True)
    t.start()
    t.join(timeout.total_seconds() + 5.0)   # torch's own connect timeout first, then ours
    if "error" in box:
        raise box["error"]
    if "store" not in box:
        raise TimeoutError("something listens there but does not answer as a jqodi cloud "
                           "(another program on that port?)")   # connect()'s line names host:port
    return box["store"]


def connect(role: str, host: str, port: int, startup_timeout_s: float, *, job: dict | None = None,
            bind_host: str | None = None, secret=None, say=lambda s: None, ranks_of=None, on_listening=None):
    """Join the run at ``host:port`` as ``role`` ("cloud", "end" or "edge:NAME").

    ``startup_timeout_s`` bounds reaching the store, admission and forming the process group. The
    cloud passes ``job`` and admits the other roles (``secret``: a
    :class:`jqodi.runtime.auth.JobSecret`, required on every side); the others prove the secret
    and receive the job. Returns ``(pg, ranks, job, keep)``; ``keep`` holds what must live as long
    as the process group (the store, the cloud's listener and gatekeeper).
    ``ranks_of(job) -> {role: rank}``: the roles of the job (default :func:`role_ranks` of its
    edges; a fleet's are :func:`jqodi.runtime.fleet_job.fleet_ranks`).
    ``on_listening()`` (cloud): called once the rendezvous listens and holds the job, before the
    others are admitted (what the cloud says a person may now start them on).
    """
    import torch.distributed as dist

    from jqodi.core.quant import MODEL_FORMAT_VERSION
    from jqodi.runtime.auth import Gatekeeper, join_job

    timeout = timedelta(seconds=startup_timeout_s)
    ranks_of = ranks_of or (lambda j: role_ranks(j["edges"]))
    listener = gatekeeper = None
    try:
        if role == "cloud":
            if job is None:
                raise RuntimeFailure("cloud: no job to publish", peer="cloud")
            if secret is None:
                raise RuntimeFailure("cloud: no job secret", peer="cloud")
            listener = _listen(host, port)
            store = dist.TCPStore(host, port, None, True, timeout, wait_for_workers=False,
                                  master_listen_fd=listener.fileno(), use_libuv=True)
            store.set(FORMAT_KEY, str(MODEL_FORMAT_VERSION))  # public: a joiner checks it before anything else
            # a second client for the gatekeeper thread that refuses late claimants
            gate_store = dist.TCPStore(host, port, None, False, timeout)
            gatekeeper = Gatekeeper(gate_store, secret, [r for r in ranks_of(job) if r != "cloud"],
                                    log=say)
            prefix = gatekeeper.session_prefix
            store.set(f"{prefix}/job", json.dumps(job))
            if on_listening is not None:
                on_listening()
            gatekeeper.admit_all(startup_timeout_s)
            gatekeeper.keep_refusing()
        else:
            store = _client_store(host, port, timeout)
            deadline = time.monotonic() + startup_timeout_s
            while not store.check([FORMAT_KEY]) and not store.check(["job"]):  # "job": a version-1 cloud
                if time.monotonic() > deadline:
                    raise TimeoutError("the cloud published nothing")
                time.sleep(0.02)
            cloud_version = int(store.get(FORMAT_KEY)) if store.check([FORMAT_KEY]) else 1  # 1 predates the key
            if cloud_version != MODEL_FORMAT_VERSION:
                raise RuntimeFailure(f"{role}: the cloud at {host}:{port} sends models in format version "
                                     f"{cloud_version}, this jqodi reads version {MODEL_FORMAT_VERSION}; run the "
                                     f"same jqodi on every node", peer="cloud")
            prefix = join_job(store, secret, role, startup_timeout_s)
            job = json.loads(store.get(f"{prefix}/job"))
    except RuntimeFailure:
        if gatekeeper is not None:
            gatekeeper.stop()
        raise
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError/DistStoreError/TimeoutError
        if gatekeeper is not None:
            gatekeeper.stop()
        what = "start the rendezvous" if role == "cloud" else "reach the cloud's rendezvous"
        raise RuntimeFailure(f"{role}: cannot {what} at {host}:{port} within the start-up timeout "
                             f"of {startup_timeout_s:g} s: "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}", peer="cloud") from e
    ranks = ranks_of(job)
    if role not in ranks:
        names = ", ".join(e for e in job["edges"])
        raise RuntimeFailure(f"{role}: not part of this run (its edges are: {names})", peer=role)
    rank = ranks[role]
    bind = bind_host or local_address(host)
    opts = dist.ProcessGroupGloo._Options()
    opts._timeout = timeout
    opts._devices = [dist.ProcessGroupGloo.create_device(hostname=bind)]
    # A run id scopes the group's keys, so a restarted run never meets a stale one.
    pg_store = dist.PrefixStore(f"{prefix}/pg/{job.get('run_id', 'run')}", store)
    try:
        pg = dist.ProcessGroupGloo(pg_store, rank, len(ranks), opts)
    except Exception as e:  # noqa: BLE001
        missing = [n for n, r in ranks.items() if r != rank]
        if gatekeeper is not None:
            gatekeeper.stop()
        raise RuntimeFailure(f"{role}: the process group did not form within the start-up timeout of "
                             f"{startup_timeout_s:g} s "
                             f"(waiting for {', '.join(missing)}): {str(e).splitlines()[0]}",
                             peer=None) from e
    return pg, ranks, job, (store, listener, gatekeeper)
