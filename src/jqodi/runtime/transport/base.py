"""The :class:`Transport` interface: what every transport guarantees, whatever its wire.

A message goes out encoded (:mod:`jqodi.runtime.transport.framing`); a receiver thread per peer
keeps one receive **pre-posted** at all times, so sends never wait for the other side to reach its
``recv`` and the send/recv order of the roles cannot deadlock.

Failure detection: every transport sends a small heartbeat to each peer every
``heartbeat_s``; a role waiting on a peer fails with a one-line :class:`RuntimeFailure` naming it
when nothing at all (not even a heartbeat) came from that peer for ``timeout_s`` (a hung or
stopped process), or at once when the connection breaks (a crashed one). A role that fails sends
an ``abort`` naming the culprit to the others, so every process reports the same root cause.

Accounting: bytes and messages per directed link and per kind, and a log of every message's kind
and tensor shapes (the privacy test reads it). Optional per-link rate limiting (bit/s) makes a
send occupy the link for ``bytes·8 / rate`` seconds before it is delivered (the receiver sees it
when a real link would deliver it), for emulating a testbed on one machine.
"""
from __future__ import annotations

import queue
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import torch

from jqodi.errors import RuntimeFailure
from jqodi.runtime.transport.framing import MAC_BYTES, Message, decode_message, encode_message

__all__ = ["LinkStats", "MessageRecord", "Transport"]

HEARTBEAT = "_hb"
BYE = "_bye"
ABORT = "abort"


@dataclass
class LinkStats:
    """Traffic on one directed link ``src → dst`` (heartbeats excluded)."""

    messages: int = 0
    bytes: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    wire_s: float = 0.0  # time spent sending (incl. emulated rate limiting)


@dataclass(frozen=True)
class MessageRecord:
    """One logged message: direction, peer, kind and the shapes/dtypes of its tensors."""

    direction: str  # "sent" | "recv"
    peer: str
    kind: str
    shapes: tuple[tuple[str, tuple[int, ...], str], ...]
    nbytes: int
    t: float


# --- the interface -------------------------------------------------------------------------------

class Transport(ABC):
    """Moves messages between named peers; see the module docstring for the guarantees.

    Subclasses implement :meth:`_send_bytes` and call :meth:`_deliver` / :meth:`_deliver_error`
    from their receiving side.
    """

    def __init__(self, me: str, peers: Iterable[str], *, timeout_s: float, heartbeat_s: float | None = None,
                 link_rate_bps: Mapping[str, float] | None = None, limits=None, secret=None):
        """``limits``: :class:`jqodi.runtime.messages.MessageLimits` every received message is checked
        against (with the protocol's schema of kinds and tensors; without limits only the structure); ``secret``: a :class:`jqodi.runtime.auth.JobSecret` to tag each message body with an
        HMAC (and check the peers' tags), or ``None`` for no per-message integrity check."""
        self.me = me
        self.limits = limits
        self.secret = secret
        self._seq_out: dict[str, int] = {}
        self._seq_in: dict[str, int] = {}
        self._violated: set[str] = set()
        self.peers = [p for p in peers if p != me]
        self.timeout_s = float(timeout_s)
        self.heartbeat_s = float(heartbeat_s if heartbeat_s is not None else max(0.05, min(2.0, timeout_s / 5)))
        self.link_rate_bps = dict(link_rate_bps or {})  # key: peer name (this side sends to it)
        # peer -> f(begin, nbytes) -> when the wire is free again (time.monotonic scale): a link
        # whose rate follows a trace (jqodi.runtime.control.EmulatedTimeline); overrides the rate
        self.link_wire: dict[str, Callable[[float, int], float]] = {}
        self.sent: dict[str, LinkStats] = {p: LinkStats() for p in self.peers}
        self.received: dict[str, LinkStats] = {p: LinkStats() for p in self.peers}
        self.log: list[MessageRecord] = []
        self._queues: dict[str, queue.Queue] = {p: queue.Queue() for p in self.peers}
        self._last_seen: dict[str, float] = {p: time.monotonic() for p in self.peers}
        self._gone: set[str] = set()  # peers that said bye
        self._send_locks = {p: threading.Lock() for p in self.peers}
        self._link_free_at: dict[str, float] = {p: 0.0 for p in self.peers}
        self._closing = threading.Event()
        self._hb_thread: threading.Thread | None = None
        self._t0 = time.monotonic()

    # -- sending ---------------------------------------------------------------------------------
    def send(self, dst: str, kind: str, tensors: Mapping[str, torch.Tensor] | None = None, **meta) -> int:
        """Send a message to ``dst``; returns its size on the wire in bytes."""
        self._check_peer(dst)
        start = time.monotonic()  # encoding overlaps the wire time, as a NIC's DMA would
        buf = encode_message(kind, meta, tensors)
        with self._send_locks[dst]:
            rate = self.link_rate_bps.get(dst)
            wire = self.link_wire.get(dst)
            if rate or wire:  # the message occupies the link first, so it arrives when a real one would
                begin = max(start, self._link_free_at[dst])
                done = wire(begin, len(buf)) if wire else begin + len(buf) * 8.0 / rate
                self._link_free_at[dst] = done
                _sleep_until(done)
            try:
                self._emit(dst, buf)
            except RuntimeFailure:
                raise
            except Exception as e:  # noqa: BLE001 - any wire error means the peer is unreachable
                raise RuntimeFailure(f"{self.me}: cannot send to {dst!r}: {_short(e)}", peer=dst) from e
        st = self.sent[dst]
        st.messages += 1
        st.bytes += len(buf)
        st.by_kind[kind] = st.by_kind.get(kind, 0) + len(buf)
        st.wire_s += time.monotonic() - start
        self.log.append(MessageRecord("sent", dst, kind, _shapes(tensors), len(buf), start - self._t0))
        return len(buf)

    # -- receiving -------------------------------------------------------------------------------
    def recv(self, src: str, kinds: str | Iterable[str] | None = None, timeout_s: float | None = None) -> Message:
        """The next message from ``src``. Raises :class:`RuntimeFailure` naming ``src`` if it sent
        nothing (not even a heartbeat) for ``timeout_s``, broke the connection, aborted, or sent
        a kind not in ``kinds``."""
        self._check_peer(src)
        timeout = self.timeout_s if timeout_s is None else float(timeout_s)
        q = self._queues[src]
        # Silence is counted only while this process is itself running: a stall of our own (a long
        # GIL-holding call, a descheduled process) must not be blamed on the peer. Each loop step
        # adds at most 0.25 s; any message from the peer (heartbeats included) resets it.
        seen = self._last_seen[src]
        prev = time.monotonic()
        silent = min(prev - seen, timeout / 2)
        while True:
            try:
                item = q.get(timeout=min(0.05, timeout))
            except queue.Empty:
                now = time.monotonic()
                if self._last_seen[src] != seen:
                    seen, silent = self._last_seen[src], now - self._last_seen[src]
                else:
                    silent += min(now - prev, 0.25)
                prev = now
                if src in self._gone:
                    raise RuntimeFailure(f"{self.me}: peer {src!r} left before sending the expected "
                                         f"message", peer=src) from None
                if silent > timeout:
                    raise RuntimeFailure(f"{self.me}: peer {src!r} sent nothing for {silent:.1f} s "
                                         f"(timeout {timeout:g} s): it hung or is unreachable", peer=src) from None
                continue
            if isinstance(item, RuntimeFailure):  # a protocol violation, already one line naming the peer
                raise item
            if isinstance(item, BaseException):
                raise RuntimeFailure(f"{self.me}: lost the connection to {src!r} ({_short(item)}): "
                                     f"it crashed or was killed", peer=src) from item
            msg: Message = item
            if msg.kind == ABORT:
                raise RuntimeFailure(msg.meta.get("reason", f"{src!r} aborted"), peer=msg.meta.get("peer", src))
            if kinds is not None:
                wanted = (kinds,) if isinstance(kinds, str) else tuple(kinds)
                if msg.kind not in wanted:
                    raise RuntimeFailure(f"{self.me}: protocol error: expected {'/'.join(wanted)} from "
                                         f"{src!r}, got {msg.kind!r}", peer=src)
            return msg

    def _emit(self, dst: str, buf: bytes) -> None:
        """Put one message on the wire (under ``dst``'s send lock), with its HMAC tag if keyed."""
        if self.secret is not None:
            seq = self._seq_out.get(dst, 0)
            self._seq_out[dst] = seq + 1
            buf = b"".join([buf, self.secret.mac_bytes(buf, seq)])
        self._send_bytes(dst, buf)

    def _violation(self, src: str, err: RuntimeFailure) -> None:
        """``src`` broke the protocol: its participation ends; whoever waits on it hears why."""
        self._violated.add(src)
        self._queues[src].put(err)

    def _deliver(self, src: str, buf) -> None:
        if src in self._violated:
            return
        from jqodi.runtime.messages import ProtocolViolation

        self._last_seen[src] = time.monotonic()
        try:
            if self.secret is not None:
                import hmac

                seq = self._seq_in.get(src, 0)
                body, tag = buf[:-MAC_BYTES], bytes(buf[-MAC_BYTES:])
                if len(buf) < MAC_BYTES or not hmac.compare_digest(tag, self.secret.mac_bytes(body, seq)):
                    raise ProtocolViolation(f"peer {src!r} sent a message that failed its integrity check "
                                            f"(message #{seq}: altered, replayed or not from the job)", peer=src)
                self._seq_in[src] = seq + 1
                buf = body
            # a job's transport (with limits) enforces the protocol's schema; a bare one its structure
            msg = decode_message(buf, src, self.limits, schema=self.limits is not None)
        except ProtocolViolation as e:
            self._violation(src, e)
            return
        if msg.kind == HEARTBEAT:
            return
        if msg.kind == BYE:
            self._gone.add(src)
            return
        st = self.received[src]
        st.messages += 1
        st.bytes += msg.nbytes
        st.by_kind[msg.kind] = st.by_kind.get(msg.kind, 0) + msg.nbytes
        self.log.append(MessageRecord("recv", src, msg.kind, _shapes(msg.tensors), msg.nbytes,
                                      time.monotonic() - self._t0))
        self._queues[src].put(msg)

    def _deliver_error(self, src: str, err: BaseException) -> None:
        if src in self._gone or self._closing.is_set():
            return
        self._queues[src].put(err)

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> "Transport":
        self._hb_thread = threading.Thread(target=self._heartbeat_loop, name=f"{self.me}-heartbeat", daemon=True)
        self._hb_thread.start()
        return self

    def _heartbeat_loop(self) -> None:
        hb = encode_message(HEARTBEAT, None, None)
        while not self._closing.wait(self.heartbeat_s):
            for p in self.peers:
                if p in self._gone:
                    continue
                lock = self._send_locks[p]
                if not lock.acquire(timeout=self.heartbeat_s):
                    continue  # a big message is on its way: that is a sign of life too
                try:
                    self._emit(p, hb)
                except Exception:  # noqa: BLE001 - the receiving side reports lost peers
                    pass
                finally:
                    lock.release()

    def abort(self, reason: str, peer: str | None) -> None:
        """Tell every peer (best effort) that this run failed, and why."""
        buf = encode_message(ABORT, {"reason": reason, "peer": peer}, None)
        for p in self.peers:
            if p == peer or p in self._gone:
                continue
            try:
                if self._send_locks[p].acquire(timeout=1.0):
                    try:
                        self._emit(p, buf)
                    finally:
                        self._send_locks[p].release()
            except Exception:  # noqa: BLE001
                pass

    def close(self, wait_s: float | None = None) -> None:
        """Say bye to every peer, wait (up to ``wait_s``) for theirs, stop the heartbeat."""
        bye = encode_message(BYE, None, None)
        for p in self.peers:
            try:
                with self._send_locks[p]:
                    self._emit(p, bye)
            except Exception:  # noqa: BLE001 - a peer already gone cannot be told
                pass
        deadline = time.monotonic() + (self.timeout_s if wait_s is None else wait_s)
        while time.monotonic() < deadline and not self._gone.issuperset(self.peers):
            time.sleep(0.01)
        self._closing.set()
        if self._hb_thread is not None:
            self._hb_thread.join(timeout=5)
        self._shutdown()

    def _shutdown(self) -> None:  # subclasses release their resources
        pass

    @abstractmethod
    def _send_bytes(self, dst: str, buf: bytes) -> None: ...

    def _check_peer(self, peer: str) -> None:
        if peer not in self._queues:
            raise RuntimeFailure(f"{self.me}: unknown peer {peer!r} (peers: {', '.join(self.peers)})", peer=peer)

    # -- accounting ------------------------------------------------------------------------------
    def link_bytes(self) -> dict[str, int]:
        """Bytes this side sent per link, keyed ``"me->peer"``."""
        return {f"{self.me}->{p}": st.bytes for p, st in self.sent.items()}


def _sleep_until(t_end: float) -> None:
    """Sleep until ``time.monotonic() == t_end``; the last 2 ms are spun for precision."""
    while True:
        left = t_end - time.monotonic()
        if left <= 0:
            return
        time.sleep(left - 0.002 if left > 0.003 else 0)


def _shapes(tensors) -> tuple:
    return tuple((n, tuple(t.shape), str(t.dtype)) for n, t in (tensors or {}).items())


def _short(e: BaseException) -> str:
    """The gist of a (gloo) error: first line, without the source-location prefix."""
    import re

    text = str(e).strip().splitlines()
    line = re.sub(r"^\[[^\]]*\]\s*", "", text[0] if text else type(e).__name__)
    line = line.split(". This is typically")[0]
    return line[:160]

