"""Roles as threads of one process: an :class:`InProcessHub` routes the encoded messages of its
:class:`InProcessTransport` members (tests, quick runs; byte counts agree with the wire)."""
from __future__ import annotations

import threading
from typing import Iterable

from jqodi.runtime.transport.base import Transport

__all__ = ["InProcessHub", "InProcessTransport"]


class InProcessHub:
    """Connects :class:`InProcessTransport` objects of one process (one per role)."""

    def __init__(self):
        self._members: dict[str, InProcessTransport] = {}
        self._lock = threading.Lock()
        self.dead: set[str] = set()

    def join(self, t: "InProcessTransport") -> None:
        with self._lock:
            self._members[t.me] = t

    def kill(self, name: str) -> None:
        """Emulate a crash of ``name``: its peers see a broken connection."""
        self.dead.add(name)
        for m in list(self._members.values()):
            if m.me != name and name in m._queues:
                m._deliver_error(name, ConnectionResetError(f"{name} crashed"))

    def route(self, src: str, dst: str, buf: bytes) -> None:
        if src in self.dead:
            raise ConnectionResetError(f"{src} is dead")
        if dst in self.dead:
            raise ConnectionResetError(f"connection to {dst} closed")
        member = self._members.get(dst)
        if member is None:
            raise ConnectionRefusedError(f"{dst} has not joined")
        member._deliver(src, bytes(buf))


class InProcessTransport(Transport):
    """Roles as threads of one process; messages are encoded as on the wire, then queued."""

    def __init__(self, hub: InProcessHub, me: str, peers: Iterable[str], **kw):
        super().__init__(me, peers, **kw)
        self.hub = hub
        hub.join(self)

    def _send_bytes(self, dst: str, buf: bytes) -> None:
        self.hub.route(self.me, dst, buf)

