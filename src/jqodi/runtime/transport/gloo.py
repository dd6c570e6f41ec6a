"""Separate processes (or machines): torch.distributed gloo point-to-point send/recv after a
``TCPStore`` rendezvous (:mod:`jqodi.runtime.rendezvous`), one pre-posted receive per peer."""
from __future__ import annotations

import threading
from datetime import timedelta
from typing import Mapping

import torch

from jqodi.runtime.transport.base import Transport
from jqodi.runtime.transport.framing import MAC_BYTES

__all__ = ["GlooTransport"]

_TAG = 7


class GlooTransport(Transport):
    """torch.distributed gloo point-to-point, one pre-posted receive per peer.

    ``pg`` is a ``ProcessGroupGloo`` (see :func:`jqodi.runtime.rendezvous.connect`); ``ranks`` maps
    every role name to its rank.
    """

    def __init__(self, pg, me: str, ranks: Mapping[str, int], **kw):
        super().__init__(me, [n for n in ranks if n != me], **kw)
        self.pg = pg
        self.ranks = dict(ranks)
        self._wait = timedelta(seconds=self.timeout_s)
        # receives wait longer than the silence timeout: a hung peer is reported by recv() (which
        # names it as silent) before gloo's own timeout fires
        self._recv_wait = timedelta(seconds=2 * self.timeout_s + 5)
        self._receivers = []
        for p in self.peers:
            t = threading.Thread(target=self._receive_loop, args=(p,), name=f"{me}<-{p}", daemon=True)
            self._receivers.append(t)

    def start(self) -> "GlooTransport":
        for t in self._receivers:
            t.start()
        return super().start()

    def _send_bytes(self, dst: str, buf: bytes) -> None:
        rank = self.ranks[dst]
        n = torch.tensor([len(buf)], dtype=torch.int64)
        payload = torch.frombuffer(bytearray(buf), dtype=torch.uint8)
        w1 = self.pg.send([n], rank, _TAG)
        w2 = self.pg.send([payload], rank, _TAG)
        w1.wait(self._wait)
        w2.wait(self._wait)

    def _receive_loop(self, src: str) -> None:
        rank = self.ranks[src]
        try:
            while not self._closing.is_set():
                n = torch.empty(1, dtype=torch.int64)
                self.pg.recv([n], rank, _TAG).wait(self._recv_wait)
                size = int(n.item())
                limit = (self.limits.max_message_bytes if self.limits is not None else 1 << 40) + MAC_BYTES
                if not 4 <= size <= limit:  # checked before a byte is allocated
                    from jqodi.runtime.messages import ProtocolViolation

                    self._violation(src, ProtocolViolation(
                        f"peer {src!r} sent a message the protocol does not allow: length header {size} B "
                        f"(the job's limit is {limit} B)", peer=src))
                    return
                buf = torch.empty(size, dtype=torch.uint8)
                self.pg.recv([buf], rank, _TAG).wait(self._recv_wait)
                self._deliver(src, memoryview(buf.numpy()))
                if src in self._gone:
                    return  # the peer said bye: post no further receive
        except Exception as e:  # noqa: BLE001 - gloo errors mean the peer is gone
            self._deliver_error(src, e)

    def _shutdown(self) -> None:
        for t in self._receivers:
            t.join(timeout=1.0)
