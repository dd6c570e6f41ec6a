"""Bit packing: a quantized model on the wire (:class:`PackedModel`) and cut-layer activations.

A quantized model travels as a :class:`PackedModel`: each quantized weight as q-bit integer codes,
bit-packed, plus fp32 per-channel steps; every other state entry (biases, BatchNorm weights and
running statistics, activation steps, the ``act_calibrated`` flags) in its own dtype (fp32;
``num_batches_tracked`` int64; the flag 1 byte). Both ends know the architecture, so the wire
format is the bare payload with no header and
``PackedModel.nbytes == len(to_bytes()) == model_size_bytes(model, bits)``:

    size(q) = Σ_layers [ceil(n_w · q / 8) + 4 B · C_out (weight steps) + 4 B (activation step)
                        + 1 B (activation-calibrated flag)]
              + Σ other state entries (4 B each fp32 value, 8 B per num_batches_tracked).

This is the paper's g^i_(a,q) (Eq. (1)-(2)) with the fp32 extras made explicit. The layout of
this payload and of checkpoints is :data:`MODEL_FORMAT_VERSION`; the roles compare it at the
rendezvous and checkpoints record it, since the payload itself carries no header.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from jqodi.errors import ModelError

from jqodi.core.quant.layers import _is_plain_layer, _unprepared_view, model_bits, quant_layers
from jqodi.core.quant.lsq import FULL_PRECISION, _levels, check_bits, effective_step

__all__ = ["MODEL_FORMAT_VERSION", "PackedModel", "activation_bytes", "dequantize_activations",
           "model_size_bytes", "pack_bits", "pack_model", "quantize_activations", "unpack_bits",
           "unpack_model"]

#: Version of the quantized-model state layout (the wire payload and checkpoints).
#: 1: the activation step doubled as the "calibrated" flag (≤ 0 = not calibrated).
#: 2: every quantized layer has an ``act_calibrated`` buffer (1 byte on the wire).
MODEL_FORMAT_VERSION = 2

def _weight_codes(w: torch.Tensor, step: torch.Tensor, bits: int, stochastic: bool = False,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Integer levels of ``w`` (signed, per output channel, at the effective step), as int64."""
    s = effective_step(step.detach().cpu()).view(-1, *([1] * (w.dim() - 1)))
    qn, qp = _levels(bits, True)
    v = torch.clamp(w.detach().cpu() / s, qn, qp)  # codes are made on the CPU (wire side)
    if bits == 1:
        if stochastic:  # P(+1) = (v + 1) / 2: unbiased in expectation
            u = torch.rand(v.shape, generator=generator, dtype=v.dtype)
            return torch.where(u < (v + 1) / 2, 1, -1).long()
        return torch.where(v >= 0, 1, -1).long()
    if stochastic:
        u = torch.rand(v.shape, generator=generator, dtype=v.dtype)
        return torch.clamp(torch.floor(v + u), qn, qp).long()
    return v.round().long()


def pack_bits(codes: np.ndarray | torch.Tensor, bits: int) -> bytes:
    """Pack unsigned integer codes (each < 2^bits) into a byte string, ``ceil(n·bits/8)`` long."""
    c = np.asarray(codes.cpu() if isinstance(codes, torch.Tensor) else codes).astype(np.uint8).ravel()
    if bits == 8:
        return c.tobytes()
    b = np.unpackbits(c[:, None], axis=1)[:, 8 - bits:]  # big-endian, low `bits` bits
    return np.packbits(b.ravel()).tobytes()


def unpack_bits(data: bytes, bits: int, n: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``n`` uint8 codes."""
    arr = np.frombuffer(data, dtype=np.uint8)
    if bits == 8:
        return arr[:n].copy()
    b = np.unpackbits(arr)[: n * bits].reshape(n, bits)
    full = np.zeros((n, 8), dtype=np.uint8)
    full[:, 8 - bits:] = b
    return np.packbits(full, axis=1).ravel()


def _packed_len(n: int, bits: int) -> int:
    return (n * bits + 7) // 8


@dataclass
class _Entry:
    key: str
    kind: str  # "codes" | "raw"
    shape: tuple[int, ...]
    dtype: torch.dtype
    payload: bytes


@dataclass
class PackedModel:
    """A model at ``bits``: bit-packed weight codes + fp32 steps + raw other state.

    ``nbytes`` is the real size on the wire (``len(to_bytes())``). The receiver rebuilds it with
    :meth:`from_bytes` and a model of the same architecture and bit-width.
    """

    bits: int
    entries: list[_Entry] = field(repr=False)

    @property
    def nbytes(self) -> int:
        return sum(len(e.payload) for e in self.entries)

    @property
    def code_bytes(self) -> int:
        return sum(len(e.payload) for e in self.entries if e.kind == "codes")

    @property
    def extra_bytes(self) -> int:
        """Bytes of everything that is not a weight code (steps, biases, norms, buffers)."""
        return self.nbytes - self.code_bytes

    def to_bytes(self) -> bytes:
        return b"".join(e.payload for e in self.entries)

    def to_tensor(self) -> torch.Tensor:
        """The payload as one uint8 tensor (for ``torch.distributed`` send/recv)."""
        return torch.frombuffer(bytearray(self.to_bytes()), dtype=torch.uint8)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | torch.Tensor, like: nn.Module, bits: int) -> "PackedModel":
        """Split a payload made by :meth:`to_bytes` using the layout of ``like`` (same architecture)."""
        if isinstance(data, torch.Tensor):
            data = data.cpu().numpy().tobytes()
        data = bytes(data)
        layout = _layout(like, check_bits(bits))
        need = sum(size for *_, size in layout)
        if len(data) != need:
            raise ModelError(f"packed model has {len(data)} bytes but a {bits}-bit "
                             f"{getattr(like, 'name', type(like).__name__)} needs {need} "
                             f"(model format version {MODEL_FORMAT_VERSION})")
        entries, off = [], 0
        for key, kind, shape, dtype, size in layout:
            entries.append(_Entry(key, kind, shape, dtype, data[off:off + size]))
            off += size
        return cls(bits, entries)


def _code_keys(model: nn.Module) -> set[str]:
    return {f"{name}.weight" if name else "weight" for name, _ in quant_layers(model)}


def _layout(model: nn.Module, bits: int) -> list[tuple[str, str, tuple[int, ...], torch.dtype, int]]:
    """(key, kind, shape, dtype, bytes) of every state entry, in state_dict order."""
    if bits != FULL_PRECISION and model_bits(model) != bits:
        raise ModelError(f"model is prepared for {model_bits(model)} bits, not {bits}; call prepare_qat first")
    codes = _code_keys(model) if bits != FULL_PRECISION else set()
    out = []
    for key, t in model.state_dict().items():
        shape = tuple(t.shape)
        if key in codes:
            out.append((key, "codes", shape, t.dtype, _packed_len(t.numel(), bits)))
        else:
            out.append((key, "raw", shape, t.dtype, t.numel() * t.element_size()))
    return out


def _raw_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().numpy().tobytes()


def pack_model(model: nn.Module, bits: int, *, stochastic: bool = False,
               generator: torch.Generator | None = None) -> PackedModel:
    """Pack ``model`` (prepared at ``bits``, or any model at 32) for the wire.

    Weight codes use round-to-nearest, or stochastic rounding (unbiased; ``generator`` seeds it)
    when ``stochastic``. Everything else is copied exactly.
    """
    bits = check_bits(bits)
    layout = _layout(model, bits)
    state = model.state_dict()
    steps = {f"{n}.weight" if n else "weight": m.weight_step for n, m in quant_layers(model)}
    qn = _levels(bits, True)[0] if bits != FULL_PRECISION else 0
    entries = []
    for key, kind, shape, dtype, _size in layout:
        t = state[key]
        if kind == "codes":
            c = _weight_codes(t, steps[key], bits, stochastic, generator)
            u = (c + 1) // 2 if bits == 1 else c - qn  # 1 bit: {-1,+1} -> {0,1}
            entries.append(_Entry(key, kind, shape, dtype, pack_bits(u.cpu().numpy().astype(np.uint8), bits)))
        else:
            entries.append(_Entry(key, kind, shape, dtype, _raw_bytes(t)))
    return PackedModel(bits, entries)


def _np_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty(0, dtype=dtype).numpy().dtype


@torch.no_grad()
def unpack_model(model: nn.Module, packed: PackedModel) -> nn.Module:
    """Load ``packed`` into ``model`` (same architecture, prepared at ``packed.bits``), in place.

    Quantized weights become their dequantized values ``level · effective_step(step)``, which lie exactly on the
    quantization grid, so the unpacked model computes what the packed one did.
    """
    layout = _layout(model, packed.bits)
    if [(k, kind) for k, kind, *_ in layout] != [(e.key, e.kind) for e in packed.entries]:
        raise ModelError("packed model does not match this model's architecture")
    state = model.state_dict()
    raw: dict[str, torch.Tensor] = {}
    for e in packed.entries:
        if e.kind == "raw":
            arr = np.frombuffer(e.payload, dtype=_np_dtype(e.dtype)).reshape(e.shape)
            raw[e.key] = torch.from_numpy(arr.copy())
    for e in packed.entries:
        if e.kind == "raw":
            state[e.key].copy_(raw[e.key])
    qn = _levels(packed.bits, True)[0]
    for e in packed.entries:
        if e.kind != "codes":
            continue
        n = int(np.prod(e.shape))
        u = torch.from_numpy(unpack_bits(e.payload, packed.bits, n).astype(np.int64))
        levels = (2 * u - 1) if packed.bits == 1 else (u + qn)
        step_key = e.key[: -len("weight")] + "weight_step"
        step = effective_step(raw[step_key]).view(-1, *([1] * (len(e.shape) - 1)))
        state[e.key].copy_(levels.view(e.shape).to(step.dtype) * step)
    return model


def model_size_bytes(model: nn.Module, bits: int) -> int:
    """Bytes of ``model`` on the wire at ``bits`` (= ``pack_model(...).nbytes``), without packing.

    Works on a prepared model or on a plain one (counting the steps that ``prepare_qat`` adds).
    """
    bits = check_bits(bits)
    if bits == FULL_PRECISION and list(quant_layers(model)):
        return model_size_bytes(_unprepared_view(model), bits)
    if bits == FULL_PRECISION or list(quant_layers(model)):
        if bits != FULL_PRECISION and model_bits(model) != bits:
            # prepared at another width: count as if re-prepared
            return model_size_bytes(_unprepared_view(model), bits)
        return sum(size for *_, size in _layout(model, bits))
    total = 0
    for m in model.modules():
        for name, t in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
            if _is_plain_layer(m) and name == "weight":
                # codes, weight steps, activation step, act_calibrated flag
                total += _packed_len(t.numel(), bits) + 4 * t.shape[0] + 4 + 1
            else:
                total += t.numel() * t.element_size()
    return total


# --- cut-layer activations ---------------------------------------------------------------------

def quantize_activations(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a tensor per tensor for the wire: ``(codes, scale)``.

    Non-negative tensors (post-ReLU activations) use unsigned codes ``0..2^b-1`` (uint8);
    tensors with negatives (e.g. gradients) use symmetric signed codes ``±(2^(b-1)-1)`` (int8).
    ``bits = 32`` returns ``(x, scale=1)`` unchanged. Wire size: :func:`activation_bytes`.
    """
    bits = check_bits(bits)
    if bits == FULL_PRECISION:
        return x, torch.ones(())
    x = x.detach()
    if x.numel() == 0 or bool((x >= 0).all()):
        qp = 2 ** bits - 1
        scale = (x.amax() / qp) if x.numel() else torch.ones(())
        scale = torch.where(scale > 0, scale, torch.ones_like(scale)).float()
        return torch.clamp((x / scale).round(), 0, qp).to(torch.uint8), scale
    qp = max(1, 2 ** (bits - 1) - 1)
    scale = (x.abs().amax() / qp).float()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    if bits == 1:
        return torch.where(x >= 0, 1, -1).to(torch.int8), x.abs().mean().float()
    return torch.clamp((x / scale).round(), -qp, qp).to(torch.int8), scale


def dequantize_activations(codes: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """Inverse of :func:`quantize_activations` (float32)."""
    if codes.is_floating_point():
        return codes
    return codes.float() * scale


def activation_bytes(numel: int, bits: int) -> int:
    """Wire bytes of ``numel`` activations at ``bits`` (bit-packed codes + one fp32 scale)."""
    bits = check_bits(bits)
    if bits == FULL_PRECISION:
        return 4 * numel
    return _packed_len(numel, bits) + 4

