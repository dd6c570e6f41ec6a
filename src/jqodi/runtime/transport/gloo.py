"""Separate processes (or machines): torch.distributed gloo point-to-point send/recv after a
``TCPStore`` rendezvous (:mod:`jqodi.runtime.rendezvous`), one pre-posted receive per peer."""
from __future__ import annotations

import queue
import threading
from datetime import timedelta
from typing import Mapping

import torch

from jqodi.errors import RuntimeFailure
from jqodi.runtime.transport.base import Transport
from jqodi.runtime.transport.framing import MAC_BYTES

__all__ = ["GlooTransport"]

_TAG = 7
#: No wait on gloo may time out while a run is alive: a timed-out send or receive makes gloo close
#: *every* pair of the process ("Application timeout caused pair closure", signalled to the whole
#: context by UnboundBuffer::waitSend / waitRecv), so one peer silent for longer — an edge stopped
#: while it is away, for minutes at a large time dilation — took the connections to all the
#: others with it. Gloo's waits get this timeout, beyond any run; silence is detected by
#: :meth:`Transport.recv` and a send that does not complete is bounded in Python (``_send_bytes``).
_PARKED = timedelta(days=7)


class GlooTransport(Transport):
    """torch.distributed gloo point-to-point, one pre-posted receive per peer.

    ``pg`` is a ``ProcessGroupGloo`` (see :func:`jqodi.runtime.rendezvous.connect`); ``ranks`` maps
    every role name to its rank.
    """

    def __init__(self, pg, me: str, ranks: Mapping[str, int], **kw):
        super().__init__(me, [n for n in ranks if n != me], **kw)
        self.pg = pg
        self.ranks = dict(ranks)
        self._receivers = []
        # posted sends per peer, waited for in order by one completer thread per peer
        self._posted: dict[str, queue.Queue] = {p: queue.Queue() for p in self.peers}
        for p in self.peers:
            t = threading.Thread(target=self._receive_loop, args=(p,), name=f"{me}<-{p}", daemon=True)
            self._receivers.append(t)
            t = threading.Thread(target=self._complete_loop, args=(p,), name=f"{me}->{p}", daemon=True)
            self._receivers.append(t)

    def start(self) -> "GlooTransport":
        for t in self._receivers:
            t.start()
        return super().start()

    def _send_bytes(self, dst: str, buf: bytes) -> None:
        """Post the message (gloo keeps a pair's messages in order) and wait up to ``timeout_s``
        for it to complete; heartbeats are posted and not waited for (a peer that is stopped must
        not hold up the heartbeats to the others)."""
        rank = self.ranks[dst]
        n = torch.tensor([len(buf)], dtype=torch.int64)
        payload = torch.frombuffer(bytearray(buf), dtype=torch.uint8)
        works = (self.pg.send([n], rank, _TAG), self.pg.send([payload], rank, _TAG))
        done, errors = threading.Event(), []
        self._posted[dst].put((works, (n, payload), done, errors))  # the tensors live until sent
        if threading.current_thread() is self._hb_thread:
            return
        if not done.wait(self.timeout_s):
            raise RuntimeFailure(f"{self.me}: a message to {dst!r} was not taken within {self.timeout_s:g} s: "
                                 f"it hung or is unreachable", peer=dst)
        if errors:
            raise errors[0]

    def _complete_loop(self, dst: str) -> None:
        q = self._posted[dst]
        while True:
            try:
                works, _tensors, done, errors = q.get(timeout=0.5)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            try:
                for w in works:
                    w.wait(_PARKED)
            except Exception as e:  # noqa: BLE001 - reported to the sender, if it waits
                errors.append(e)
            done.set()

    def _receive_loop(self, src: str) -> None:
        rank = self.ranks[src]
        try:
            while not self._closing.is_set():
                n = torch.empty(1, dtype=torch.int64)
                self.pg.recv([n], rank, _TAG).wait(_PARKED)
                size = int(n.item())
                limit = (self.limits.max_message_bytes if self.limits is not None else 1 << 40) + MAC_BYTES
                if not 4 <= size <= limit:  # checked before a byte is allocated
                    from jqodi.runtime.messages import ProtocolViolation

                    self._violation(src, ProtocolViolation(
                        f"peer {src!r} sent a message the protocol does not allow: length header {size} B "
                        f"(the job's limit is {limit} B)", peer=src))
                    return
                buf = torch.empty(size, dtype=torch.uint8)
                self.pg.recv([buf], rank, _TAG).wait(_PARKED)
                self._deliver(src, memoryview(buf.numpy()))
                if src in self._gone:
                    return  # the peer said bye: post no further receive
        except Exception as e:  # noqa: BLE001 - gloo errors mean the peer is gone
            self._deliver_error(src, e)

    def _shutdown(self) -> None:
        for t in self._receivers:
            t.join(timeout=1.0)
