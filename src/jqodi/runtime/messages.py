"""What a peer may send: the message schema and the limits a job implies.

Every message is checked twice before it is trusted:

1. **On the wire, before any tensor is allocated** (:func:`check_header`, called by the
   transport): its length is within :attr:`MessageLimits.max_message_bytes`; the header is JSON
   of the expected form; the kind is one the protocol knows; each tensor is one the kind may
   carry, of an allowed dtype, with a shape whose byte length matches, laid end to end inside the
   buffer with nothing left over.
2. **By the role that uses it** (:func:`checked_cut`, :func:`checked_labels`,
   :func:`checked_update`): a cut-layer tensor has the per-sample shape of the current cut and
   at most a batch of samples; labels are class indices; a packed model or update has exactly
   the bytes its layout needs.

A violation raises :class:`ProtocolViolation` naming the peer and the field; the receiving role
fails at once, nothing is half-applied (the cloud decodes a whole update before it folds any of
it into the master) and the cloud keeps its last checkpoint.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field

from jqodi.errors import RuntimeFailure

__all__ = ["ProtocolViolation", "MessageLimits", "SCHEMA", "CONTROL_KINDS", "check_header", "message_limits",
           "checked_cut", "checked_labels", "checked_update"]

_CUT = {"x": {"torch.float32"}, "codes": {"torch.uint8"}, "scale": {"torch.float32"},
        "layout": {"torch.int64"}}
_MODEL = {"shallow": {"torch.uint8"}, "deep": {"torch.uint8"}}

#: kind → {tensor name: allowed dtypes}; control kinds carry no tensors
SCHEMA: dict[str, dict[str, set[str]]] = {
    "act": {**_CUT, "y": {"torch.int64"}},
    "val_act": {**_CUT, "y": {"torch.int64"}},
    "grad": dict(_CUT),
    "infer": dict(_CUT),
    "logits": {"y": {"torch.float32"}},
    "shallow": {"model": {"torch.uint8"}},
    "model": dict(_MODEL),
    "shallow_back": {"update": {"torch.uint8"}},
    "model_back": dict(_MODEL),
    "infer_model": dict(_MODEL),
}
CONTROL_KINDS = {"ready", "trailer", "progress", "infer_start", "infer_edge", "infer_report", "abort",
                 "_hb", "_bye", "epoch", "done",  # epoch/done: the cloud assigns each epoch (closed loop)
                 "device_failed"}  # a fleet: one device's job failed, the others run on (runtime/fleet_transport.py)
MAX_HEADER_BYTES = 1 << 20


class _AnyName(dict):
    """Every tensor name allowed, with any dtype the wire knows (``schema=False``)."""

    def __init__(self, dtypes: set[str]):
        super().__init__()
        self._dtypes = dtypes

    def __contains__(self, name) -> bool:
        return isinstance(name, str)

    def __getitem__(self, name) -> set[str]:
        return self._dtypes


class ProtocolViolation(RuntimeFailure):
    """A peer sent a message the protocol does not allow (names the peer and the field)."""


@dataclass(frozen=True)
class MessageLimits:
    """Bounds derived from a job (:func:`message_limits`)."""

    max_message_bytes: int
    max_batch: int
    num_classes: int
    cut_shapes: dict[int, tuple[int, ...]] = field(default_factory=dict)  # per-sample shape after cut j
    control: bool = False  # only control messages (no tensors) are allowed

    @classmethod
    def control_only(cls) -> "MessageLimits":
        """Before a role knows its job's limits: heartbeats, ``ready``, ``abort`` and the like only."""
        return cls(max_message_bytes=MAX_HEADER_BYTES + 4, max_batch=0, num_classes=0, control=True)

    @property
    def max_cut_elements(self) -> int:
        return self.max_batch * max((math.prod(s) for s in self.cut_shapes.values()), default=0)


def message_limits(job) -> MessageLimits:
    """The limits a job implies: the model at fp32 and a batch of the widest cut, with headroom."""
    from jqodi.core.profile import profile_model
    from jqodi.core.zoo import build_model

    model = build_model(job.model, job.input_shape, job.num_classes, job.width)
    prof = profile_model(model)
    cut_shapes = {j: tuple(prof.blocks[j - 1].out_shape) for j in range(1, len(prof.blocks))}
    state_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    # fp32 steps and codes never exceed the fp32 state; updates in "latent" mode are fp32 too
    cfg = job.training.train_config()
    max_batch = max(int(cfg.batch_size), int(cfg.eval_batch_size), 1)
    widest = max((math.prod(s) for s in cut_shapes.values()), default=1)
    per_batch = max_batch * (4 * widest + 8) + max_batch * 4 * job.num_classes
    biggest = max(2 * state_bytes, per_batch)
    return MessageLimits(max_message_bytes=int(biggest * 1.25) + MAX_HEADER_BYTES, max_batch=max_batch,
                         num_classes=int(job.num_classes), cut_shapes=cut_shapes)


def _bad(src: str, what: str) -> ProtocolViolation:
    return ProtocolViolation(f"peer {src!r} sent a message the protocol does not allow: {what}", peer=src)


def check_header(buf, src: str, limits: MessageLimits | None = None, *, schema: bool = True) -> dict:
    """Validate a whole wire buffer (``u32 header length | JSON header | tensor bytes``) and return
    its header; nothing is allocated for the tensors before this passes.

    The structure (lengths, offsets, dtypes the wire knows) is always checked; ``schema=False``
    skips only the protocol's allow-list of kinds and tensor names (the codec's own tests)."""
    n = len(buf)
    if limits is not None and n > limits.max_message_bytes:
        raise _bad(src, f"length {n} B beyond the job's limit of {limits.max_message_bytes} B")
    if n < 4:
        raise _bad(src, f"truncated message ({n} B)")
    (hlen,) = struct.unpack_from("<I", buf, 0)
    if hlen > min(MAX_HEADER_BYTES, n - 4):
        raise _bad(src, f"header length {hlen} B beyond the message ({n} B) or the limit")
    try:
        header = json.loads(bytes(buf[4:4 + hlen]))
    except (ValueError, UnicodeDecodeError):
        raise _bad(src, "header is not JSON") from None
    if not isinstance(header, dict) or set(header) != {"kind", "meta", "tensors"}:
        raise _bad(src, "header fields")
    kind, meta, specs = header["kind"], header["meta"], header["tensors"]
    if not isinstance(kind, str) or (schema and kind not in SCHEMA and kind not in CONTROL_KINDS):
        raise _bad(src, f"unknown kind {str(kind)[:40]!r}")
    if limits is not None and limits.control and kind not in CONTROL_KINDS:
        raise _bad(src, f"{kind} before the job's limits were known")
    if not isinstance(meta, dict):
        raise _bad(src, f"{kind}.meta is not an object")
    from jqodi.runtime.transport import DTYPE_SIZES

    allowed = SCHEMA.get(kind, {}) if schema else _AnyName(set(DTYPE_SIZES))
    if not isinstance(specs, list) or len(specs) > (len(allowed) if schema else 64):
        raise _bad(src, f"{kind}: too many tensors")

    body = n - 4 - hlen
    offset = 0
    for spec in specs:
        if not (isinstance(spec, list) and len(spec) == 5):
            raise _bad(src, f"{kind}: tensor spec")
        name, dtype, shape, off, size = spec
        if not isinstance(name, str) or name not in allowed:
            raise _bad(src, f"{kind}: unexpected tensor {str(name)[:40]!r}")
        if dtype not in allowed[name] or dtype not in DTYPE_SIZES:
            raise _bad(src, f"{kind}.{name}: dtype {str(dtype)[:20]} (expected {'/'.join(sorted(allowed[name]))})")
        if not (isinstance(shape, list) and len(shape) <= 8
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise _bad(src, f"{kind}.{name}: shape {str(shape)[:60]}")
        if not (isinstance(off, int) and isinstance(size, int)) or off != offset:
            raise _bad(src, f"{kind}.{name}: offset")
        if size != math.prod(shape) * DTYPE_SIZES[dtype]:
            raise _bad(src, f"{kind}.{name}: byte length {size} does not match shape {shape} of {dtype}")
        offset += size
        if offset > body:
            raise _bad(src, f"{kind}.{name}: truncated body ({body} B, needs at least {offset} B)")
    if offset != body:
        raise _bad(src, f"{kind}: {body - offset} B beyond its tensors")
    return header


def checked_cut(msg, limits: MessageLimits | None, cut: int | None = None, shape: tuple | None = None):
    """Decode a cut-layer tensor (activations or gradients) after checking it against the job:
    per-sample shape of ``cut`` (or exactly ``shape``), at most a batch of samples."""
    from jqodi.core.codec import decode_cut

    t = msg.tensors
    src, kind = msg.src, msg.kind
    if "x" in t:
        dims = tuple(t["x"].shape)
    else:
        if not {"codes", "scale", "layout"} <= set(t):
            raise _bad(src, f"{kind}: cut tensor needs x, or codes + scale + layout")
        layout = t["layout"].tolist()
        if len(layout) < 3 or int(layout[0]) not in range(1, 9) or int(layout[1]) not in (0, 1):
            raise _bad(src, f"{kind}.layout {layout[:4]}")
        dims = tuple(int(d) for d in layout[2:])
        if any(d < 0 for d in dims):
            raise _bad(src, f"{kind}.layout shape {dims}")
        need = (math.prod(dims) * int(layout[0]) + 7) // 8
        if t["codes"].numel() != need or t["scale"].numel() != 1:
            raise _bad(src, f"{kind}.codes: {t['codes'].numel()} B for shape {dims} at {layout[0]} bits "
                            f"(needs {need})")
    if shape is not None and dims != tuple(shape):
        raise _bad(src, f"{kind}: shape {dims}, expected {tuple(shape)}")
    if limits is not None:
        if not dims or dims[0] > limits.max_batch:
            raise _bad(src, f"{kind}: batch of {dims[0] if dims else 0} beyond the job's {limits.max_batch}")
        if cut is not None and cut in limits.cut_shapes and dims[1:] != limits.cut_shapes[cut]:
            raise _bad(src, f"{kind}: per-sample shape {dims[1:]} at cut {cut}, expected {limits.cut_shapes[cut]}")
    x = decode_cut(t)
    if not bool(x.isfinite().all()):
        raise _bad(src, f"{kind}: non-finite values")
    return x


def checked_labels(msg, limits: MessageLimits | None, n: int):
    """The labels ``y`` of an activation message: ``n`` class indices in range."""
    y = msg.tensors.get("y")
    if y is None or tuple(y.shape) != (n,):
        raise _bad(msg.src, f"{msg.kind}.y: shape {None if y is None else tuple(y.shape)}, expected ({n},)")
    if limits is not None and n and (int(y.min()) < 0 or int(y.max()) >= limits.num_classes):
        raise _bad(msg.src, f"{msg.kind}.y: label out of range 0..{limits.num_classes - 1}")
    return y


def checked_update(decode, msg, name: str):
    """Run ``decode()`` (a packed model or update from ``msg.tensors[name]``); a payload that does
    not fit the receiver's layout becomes a :class:`ProtocolViolation` naming the peer."""
    from jqodi.errors import JqodiError

    try:
        return decode()
    except (ValueError, JqodiError) as e:
        raise _bad(msg.src, f"{msg.kind}.{name}: {str(e).splitlines()[0]}") from None
