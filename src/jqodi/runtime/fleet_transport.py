"""Many devices' jobs over one process's transport: a :class:`DeviceView` per device.

In a fleet the cloud talks to every end device and an edge server to several; each device's
job still runs the unchanged single-device roles (:mod:`jqodi.runtime.roles`), one thread per
device, each over a *view* of the process's real transport:

* the view speaks the job's local names (``cloud``, ``edge:X``, ``end``) and maps them to the
  processes (``end`` → ``end:NAME``); every message it sends carries ``device`` in its meta;
* a :class:`Mux` runs one dispatcher thread per peer process that reads the real transport
  (which keeps its heartbeats, silence timeouts, HMAC tags and schema checks) and files each
  message under (peer, device); a view's ``recv`` reads only its own device's messages;
* a device's failure stays with that device: its view tells the device's other peers with a
  ``device_failed`` message (never the transport-wide ``abort``), and only threads of that
  device fail. A peer *process* that dies or hangs fails every device that waits on it (an
  edge server's crash fails the devices it serves; an end device's crash only its own job).

Byte accounting is per device and per local link, as the single-device record expects.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterable

from jqodi.errors import RuntimeFailure
from jqodi.runtime.transport import LinkStats, Transport

__all__ = ["Mux", "DeviceView", "DEVICE_FAILED"]

#: a device's job failed (meta: ``reason``, ``peer``): its other roles end, the rest of the fleet runs on
DEVICE_FAILED = "device_failed"


class Mux:
    """Files the messages a process receives under (peer, device); see the module docstring."""

    def __init__(self, transport: Transport, peers: Iterable[str]):
        self.t = transport
        self.peers = list(peers)
        self._queues: dict[tuple[str, str | None], queue.Queue] = {}
        self._lock = threading.Lock()
        self._failed: dict[str, RuntimeFailure] = {}  # peer process -> why it can no longer be heard
        self._threads = [threading.Thread(target=self._dispatch, args=(p,), name=f"mux<-{p}", daemon=True)
                         for p in self.peers]

    def start(self) -> "Mux":
        for th in self._threads:
            th.start()
        return self

    def _queue(self, peer: str, device: str | None) -> queue.Queue:
        with self._lock:
            q = self._queues.get((peer, device))
            if q is None:
                q = self._queues[(peer, device)] = queue.Queue()
            return q

    def _dispatch(self, peer: str) -> None:
        while True:
            try:
                msg = self.t.recv(peer)
            except RuntimeFailure as e:  # the peer process is gone, hung, aborted or broke the protocol
                self._failed[peer] = e
                return
            device = msg.meta.pop("device", None)
            self._queue(peer, device).put(msg)

    def take(self, peer: str, device: str):
        """The next message of ``device`` from ``peer``; raises the peer's failure once none is left."""
        q = self._queue(peer, device)
        while True:
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                err = self._failed.get(peer)
                if err is not None and q.empty():
                    raise RuntimeFailure(str(err), peer=err.peer) from None


class DeviceView:
    """The transport one device's role sees (local names; duck-types :class:`Transport` for the roles)."""

    def __init__(self, mux: Mux, device: str, me: str, names: dict[str, str], limits=None):
        """``names``: local peer name → process role (e.g. ``{"end": "end:cam-1", "cloud": "cloud"}``)."""
        self.mux = mux
        self.device = device
        self.me = me
        self.names = dict(names)
        self.peers = list(names)
        self.limits = limits
        self.sent = {p: LinkStats() for p in self.peers}
        self.link_wire: dict = {}  # traces on links are not emulated in fleets (docs/fleet.md)
        self.log: list = []

    def _real(self, peer: str) -> str:
        if peer not in self.names:
            raise RuntimeFailure(f"{self.me} of {self.device}: unknown peer {peer!r}", peer=peer)
        return self.names[peer]

    def send(self, dst: str, kind: str, tensors=None, **meta) -> int:
        n = self.mux.t.send(self._real(dst), kind, tensors, device=self.device, **meta)
        st = self.sent[dst]
        st.messages += 1
        st.bytes += n
        st.by_kind[kind] = st.by_kind.get(kind, 0) + n
        return n

    def recv(self, src: str, kinds=None, timeout_s: float | None = None):
        msg = self.mux.take(self._real(src), self.device)
        if msg.kind == DEVICE_FAILED:
            raise RuntimeFailure(str(msg.meta.get("reason", f"{src} failed")), peer=msg.meta.get("peer", src))
        if kinds is not None:
            wanted = (kinds,) if isinstance(kinds, str) else tuple(kinds)
            if msg.kind not in wanted:
                raise RuntimeFailure(f"{self.me} of {self.device}: protocol error: expected {'/'.join(wanted)} "
                                     f"from {src!r}, got {msg.kind!r}", peer=self._real(src))
        return msg

    def fail(self, reason: str, peer: str | None) -> None:
        """Tell this device's other roles (best effort) that its job failed, and why."""
        for p in self.peers:
            real = self.names[p]
            if real == peer or self.mux._failed.get(real) is not None:
                continue
            try:
                self.mux.t.send(real, DEVICE_FAILED, None, device=self.device, reason=reason, peer=peer)
            except Exception:  # noqa: BLE001 - a peer already gone cannot be told
                pass
