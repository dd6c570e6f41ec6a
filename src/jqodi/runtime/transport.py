"""Transports: how the roles' messages move between the cloud, the edges and the end device.

A role only decides *what* to send; a :class:`Transport` moves it (the Flower split between a
strategy and its grid). Two implementations share everything but the wire:

* :class:`GlooTransport`  — separate processes (or machines), torch.distributed gloo point-to-point
  send/recv after a ``TCPStore`` rendezvous (see :mod:`jqodi.runtime.rendezvous`).
* :class:`InProcessTransport` — roles as threads of one process, queues in between (tests, quick
  runs). Messages are encoded exactly as on the wire, so byte counts agree.

A message is a ``kind``, a small JSON-able ``meta`` dict and named tensors. On the wire it is one
``uint8`` buffer (header length, JSON header, raw tensor bytes) preceded by its length, so a
receiver thread per peer keeps one receive **pre-posted** at all times: sends never wait for the
other side to reach its ``recv`` and the send/recv order of the roles cannot deadlock.

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

import json
import queue
import struct
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable, Iterable, Mapping

import torch

from jqodi.errors import RuntimeFailure

__all__ = ["Message", "LinkStats", "MessageRecord", "Transport", "InProcessHub", "InProcessTransport",
           "GlooTransport", "encode_message", "decode_message", "DTYPE_SIZES", "MAC_BYTES"]

HEARTBEAT = "_hb"
BYE = "_bye"
ABORT = "abort"
_TAG = 7


@dataclass
class Message:
    """A received message: ``kind``, ``meta`` (JSON-able) and named tensors, from ``src``."""

    kind: str
    meta: dict
    tensors: dict[str, torch.Tensor]
    src: str
    nbytes: int = 0


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


# --- the wire format ---------------------------------------------------------------------------

_DTYPES = {str(d): d for d in (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
                                torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)}
#: bytes per element of every dtype the wire carries (the schema checks lengths before allocating)
DTYPE_SIZES = {name: torch.empty(0, dtype=d).element_size() for name, d in _DTYPES.items()}
#: an HMAC-SHA256 tag after each message body when the transport has the job secret
MAC_BYTES = 32


def encode_message(kind: str, meta: Mapping | None, tensors: Mapping[str, torch.Tensor] | None) -> bytes:
    """One buffer: ``u32 header length | JSON header | raw tensor bytes`` (tensors contiguous, CPU)."""
    specs, chunks, offset = [], [], 0
    for name, t in (tensors or {}).items():
        t = t.detach().to("cpu").contiguous()
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        specs.append([name, str(t.dtype), list(t.shape), offset, len(raw)])
        chunks.append(raw)
        offset += len(raw)
    header = json.dumps({"kind": kind, "meta": dict(meta or {}), "tensors": specs},
                        separators=(",", ":")).encode()
    return b"".join([struct.pack("<I", len(header)), header, *chunks])


def decode_message(buf: bytes | bytearray | memoryview, src: str, limits=None, *, schema: bool = True) -> Message:
    """Check ``buf`` against the protocol (:func:`jqodi.runtime.messages.check_header`: kinds,
    dtypes, shapes, lengths, the job's ``limits``), then build its tensors."""
    from jqodi.runtime.messages import check_header

    header = check_header(buf, src, limits, schema=schema)
    (hlen,) = struct.unpack_from("<I", buf, 0)
    base = 4 + hlen
    tensors = {}
    for name, dtype, shape, off, n in header["tensors"]:
        dt = _DTYPES[dtype]
        if n:
            flat = torch.frombuffer(bytearray(buf[base + off: base + off + n]), dtype=torch.uint8)
            tensors[name] = flat.view(dt).reshape(shape)
        else:
            tensors[name] = torch.empty(shape, dtype=dt)
    return Message(header["kind"], header["meta"], tensors, src, len(buf))


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


# --- in one process ------------------------------------------------------------------------------

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


# --- gloo ----------------------------------------------------------------------------------------

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
