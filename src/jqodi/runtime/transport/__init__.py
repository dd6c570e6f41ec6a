"""Transports: how the roles' messages move between the cloud, the edges and the end device.

A role only decides *what* to send; a :class:`Transport` moves it (the Flower split between a
strategy and its grid). Two implementations share everything but the wire:

* :class:`GlooTransport`  — separate processes (or machines), torch.distributed gloo point-to-point
  send/recv after a ``TCPStore`` rendezvous (see :mod:`jqodi.runtime.rendezvous`).
* :class:`InProcessTransport` — roles as threads of one process, queues in between (tests, quick
  runs). Messages are encoded exactly as on the wire, so byte counts agree.

The package holds one concept per module:

* :mod:`~jqodi.runtime.transport.framing` — :class:`Message` and the wire format
  (:func:`encode_message`, :func:`decode_message`);
* :mod:`~jqodi.runtime.transport.base` — the :class:`Transport` interface: sending, receiving,
  heartbeats and failure detection, rate limiting, per-link accounting
  (:class:`LinkStats`, :class:`MessageRecord`);
* :mod:`~jqodi.runtime.transport.inprocess` — :class:`InProcessHub`, :class:`InProcessTransport`;
* :mod:`~jqodi.runtime.transport.gloo` — :class:`GlooTransport`.
"""
from jqodi.runtime.transport.base import LinkStats, MessageRecord, Transport
from jqodi.runtime.transport.framing import DTYPE_SIZES, MAC_BYTES, Message, decode_message, encode_message
from jqodi.runtime.transport.gloo import GlooTransport
from jqodi.runtime.transport.inprocess import InProcessHub, InProcessTransport

__all__ = ["Message", "LinkStats", "MessageRecord", "Transport", "InProcessHub", "InProcessTransport",
           "GlooTransport", "encode_message", "decode_message", "DTYPE_SIZES", "MAC_BYTES"]
