"""The wire format: a message is a ``kind``, a small JSON-able ``meta`` dict and named tensors.

On the wire it is one buffer, ``u32 header length | JSON header | raw tensor bytes`` (tensors
contiguous, on the CPU); a transport sends it preceded by its length and, when it holds the job
secret, followed by an HMAC-SHA256 tag of :data:`MAC_BYTES`. :func:`decode_message` checks a
buffer against the protocol (:mod:`jqodi.runtime.messages`) before it builds a tensor.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Mapping

import torch

__all__ = ["Message", "encode_message", "decode_message", "DTYPE_SIZES", "MAC_BYTES"]


@dataclass
class Message:
    """A received message: ``kind``, ``meta`` (JSON-able) and named tensors, from ``src``."""

    kind: str
    meta: dict
    tensors: dict[str, torch.Tensor]
    src: str
    nbytes: int = 0


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
