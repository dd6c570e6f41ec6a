"""The update codec: everything that travels between cloud, edge and end device.

**How the master keeps sub-step updates** (``TrainConfig.return_mode``). One epoch of fine-tuning
moves most weights by less than one quantization step, so what the return trip carries decides
whether learning survives:

* ``"codes"`` — q-bit codes, round-to-nearest (the paper's Eq. (1): q-bit weights both ways).
  A change smaller than half a step rounds back to the sent value and is lost.
* ``"stochastic"`` — q-bit codes with stochastic rounding: unbiased (the master receives the
  update in expectation), noisy; same bytes as ``"codes"``.
* ``"delta-fp16"`` — the change ``latent − sent`` in fp16: 16 bits per weight up.
* ``"latent"`` — the worker's fp32 latent weights: 32 bits per weight up.

Measured (docs/learning.md) — the default is the one that learns for the fewest bytes.
Byte counts come from :func:`update_size_bytes`.

What the roles put on the wire: packed model parts, their updates, cut-layer tensors.

Model parts travel as the bare payload of :class:`jqodi.core.quant.PackedModel` (q-bit codes + fp32
steps + fp32 norms: exactly Eq. (1)–(2)'s g at q bits); both ends know the architecture, so the
receiver rebuilds the layout from its own copy of the part. A part is ``model.shallow(cut)`` or
``model.deep(cut)``: packing per part gives the same bytes as packing the whole model (per-entry
encoding), so the SD can receive only its shallow part.

Cut-layer activations travel as codes + one fp32 scale (:func:`jqodi.core.quant.quantize_activations`)
when ``wire_act_bits < 32``, and so do their gradients at ``wire_grad_bits``; the receiver
dequantizes (a straight-through estimator: the gradient of the dequantized tensor is sent back).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from jqodi.errors import JqodiError, ModelError

from jqodi.core.quant import FULL_PRECISION, PackedModel, _Entry, _levels, check_bits, effective_step, pack_model
from jqodi.core.quant import quant_layers
from jqodi.core.quant import dequantize_activations, pack_bits, quantize_activations, unpack_bits
from jqodi.core.train_config import RETURN_MODES  # how the ES returns its update (one definition)

__all__ = ["RETURN_MODES", "PackedUpdate", "pack_update", "apply_update", "update_size_bytes",
           "packed_to_tensor", "packed_from_tensor", "update_to_tensor", "update_from_tensor",
           "encode_cut", "decode_cut", "cut_tensor_bytes"]



@dataclass
class PackedUpdate:
    """What the worker sends back to the cloud at the end of an epoch (``nbytes`` on the wire)."""

    mode: str
    bits: int
    entries: list[_Entry] = field(repr=False)

    @property
    def nbytes(self) -> int:
        return sum(len(e.payload) for e in self.entries)

    def to_bytes(self) -> bytes:
        return b"".join(e.payload for e in self.entries)


def _quant_keys(model: nn.Module) -> list[str]:
    return [f"{n}.weight" if n else "weight" for n, _ in quant_layers(model)]


def _dequant(entry: _Entry, step: torch.Tensor, bits: int) -> torch.Tensor:
    n = int(np.prod(entry.shape))
    u = torch.from_numpy(unpack_bits(entry.payload, bits, n).astype(np.int64))
    lv = (2 * u - 1) if bits == 1 else (u + _levels(bits, True)[0])
    return lv.view(entry.shape).float() * effective_step(step).view(-1, *([1] * (len(entry.shape) - 1)))


def _raw_tensor(entry: _Entry) -> torch.Tensor:
    dt = torch.empty(0, dtype=entry.dtype).numpy().dtype
    return torch.from_numpy(np.frombuffer(entry.payload, dtype=dt).reshape(entry.shape).copy())


def pack_update(worker: nn.Module, sent: PackedModel, mode: str, *, generator: torch.Generator | None = None) -> PackedUpdate:
    """Encode the worker's end-of-epoch state for the cloud (see the module docstring)."""
    bits = sent.bits
    if mode not in RETURN_MODES:
        raise JqodiError(f"unknown return mode {mode!r}")
    if bits == FULL_PRECISION or mode in ("codes", "stochastic"):
        p = pack_model(worker, bits, stochastic=(mode == "stochastic"), generator=generator)
        return PackedUpdate(mode, bits, p.entries)
    state = worker.state_dict()
    sent_raw = {e.key: e for e in sent.entries}
    qkeys = set(_quant_keys(worker))
    entries = []
    for key, t in state.items():
        if key in qkeys:
            if mode == "latent":
                payload = t.detach().float().cpu().numpy().tobytes()
            else:
                step = _raw_tensor(sent_raw[key[: -len("weight")] + "weight_step"])
                delta = t.detach().float().cpu() - _dequant(sent_raw[key], step, bits)
                payload = delta.half().numpy().tobytes()
            entries.append(_Entry(key, mode, tuple(t.shape), t.dtype, payload))
        else:
            entries.append(_Entry(key, "raw", tuple(t.shape), t.dtype, t.detach().cpu().contiguous().numpy().tobytes()))
    return PackedUpdate(mode, bits, entries)


@torch.no_grad()
def apply_update(master: nn.Module, update: PackedUpdate, sent: PackedModel) -> nn.Module:
    """Fold a worker's update into the cloud's master, in place.

    Quantized weights: ``master += returned_value − sent_value`` (keeps the master's sub-step
    residual); everything else (steps, biases, norms, buffers) is replaced by the worker's.
    At 32 bits the master becomes the worker's state.
    """
    state = master.state_dict()
    if update.bits == FULL_PRECISION:
        for e in update.entries:
            state[e.key].copy_(_raw_tensor(e))
        return master
    upd = {e.key: e for e in update.entries}
    snt = {e.key: e for e in sent.entries}
    for key in _quant_keys(master):
        skey = key[: -len("weight")] + "weight_step"
        sent_value = _dequant(snt[key], _raw_tensor(snt[skey]), update.bits)
        e = upd[key]
        if e.kind == "codes":
            new_value = _dequant(e, _raw_tensor(upd[skey]), update.bits)
            delta = new_value - sent_value
        elif e.kind == "latent":
            delta = _raw_tensor(_Entry(key, "raw", e.shape, torch.float32, e.payload)) - sent_value
        elif e.kind == "delta-fp16":
            delta = _raw_tensor(_Entry(key, "raw", e.shape, torch.float16, e.payload)).float()
        else:  # pragma: no cover - construction guarantees the kinds
            raise ModelError(f"unknown update entry kind {e.kind!r}")
        state[key].add_(delta.to(state[key].device))
    qkeys = set(_quant_keys(master))
    for e in update.entries:
        if e.key not in qkeys:
            state[e.key].copy_(_raw_tensor(e))
    return master


def update_size_bytes(model: nn.Module, bits: int, mode: str) -> int:
    """Bytes of the return trip for ``model`` at ``bits`` in ``mode`` (without packing)."""
    from jqodi.core.quant import model_size_bytes

    if bits == FULL_PRECISION or mode in ("codes", "stochastic"):
        return model_size_bytes(model, bits)
    per_weight = 2 if mode == "delta-fp16" else 4
    codes = sum((m.weight.numel() * bits + 7) // 8 for _, m in quant_layers(model))
    weights = sum(m.weight.numel() for _, m in quant_layers(model))
    return model_size_bytes(model, bits) - codes + per_weight * weights


def packed_to_tensor(packed) -> torch.Tensor:
    """A PackedModel or PackedUpdate as one uint8 tensor (its ``nbytes`` long)."""
    return torch.frombuffer(bytearray(packed.to_bytes()), dtype=torch.uint8) if packed.nbytes \
        else torch.empty(0, dtype=torch.uint8)


def packed_from_tensor(t: torch.Tensor, like: nn.Module, bits: int) -> PackedModel:
    return PackedModel.from_bytes(t.numpy().tobytes(), like, bits)


def update_from_tensor(t: torch.Tensor, like: nn.Module, bits: int, mode: str):
    """Rebuild a :class:`jqodi.core.codec.PackedUpdate` from its payload and the receiver's part."""
    data = t.numpy().tobytes()
    if bits >= 32 or mode in ("codes", "stochastic"):
        return PackedUpdate(mode, bits, PackedModel.from_bytes(data, like, bits).entries)
    qkeys = {f"{n}.weight" if n else "weight" for n, _ in quant_layers(like)}
    per = 2 if mode == "delta-fp16" else 4
    entries, off = [], 0
    for key, v in like.state_dict().items():
        if key in qkeys:
            size, kind = v.numel() * per, mode
        else:
            size, kind = v.numel() * v.element_size(), "raw"
        entries.append(_Entry(key, kind, tuple(v.shape), v.dtype, data[off:off + size]))
        off += size
    if off != len(data):
        raise ValueError(f"update payload has {len(data)} bytes, the part needs {off}")
    return PackedUpdate(mode, bits, entries)


def update_to_tensor(update) -> torch.Tensor:
    return packed_to_tensor(update)


# --- cut-layer activations and gradients ---------------------------------------------------------

def encode_cut(x: torch.Tensor, bits: int, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors to send for ``x`` at ``bits`` per element: fp32 as is, else bit-packed codes + scale."""
    bits = check_bits(bits)
    x = x.detach()
    if bits >= 32:
        return {f"{prefix}x": x.float()}
    codes, scale = quantize_activations(x, bits)
    signed = codes.dtype == torch.int8
    c = codes.to(torch.int16)
    if bits == 1:
        u = ((c + 1) // 2) if signed else c
    else:
        u = c + (2 ** (bits - 1) - 1) if signed else c  # signed codes are symmetric ±(2^(b-1)-1)
    packed = np.frombuffer(pack_bits(u.numpy().astype(np.uint8), bits), dtype=np.uint8)
    meta = torch.tensor([bits, int(signed), *x.shape], dtype=torch.int64)
    return {f"{prefix}codes": torch.from_numpy(packed.copy()), f"{prefix}scale": scale.reshape(1).float(),
            f"{prefix}layout": meta}


def decode_cut(tensors: dict[str, torch.Tensor], prefix: str = "") -> torch.Tensor:
    """Inverse of :func:`encode_cut` (float32)."""
    if f"{prefix}x" in tensors:
        return tensors[f"{prefix}x"]
    layout = tensors[f"{prefix}layout"].tolist()
    bits, signed, shape = int(layout[0]), bool(layout[1]), tuple(int(s) for s in layout[2:])
    n = int(np.prod(shape)) if shape else 1
    u = torch.from_numpy(unpack_bits(tensors[f"{prefix}codes"].numpy().tobytes(), bits, n).astype(np.int64))
    if signed:
        codes = (2 * u - 1) if bits == 1 else u - (2 ** (bits - 1) - 1)
    else:
        codes = u
    return dequantize_activations(codes.view(shape).to(torch.int32), tensors[f"{prefix}scale"][0])


def cut_tensor_bytes(numel: int, bits: int) -> int:
    """Payload bytes of ``numel`` cut-layer elements at ``bits`` (codes + the fp32 scale)."""
    return 4 * numel if bits >= 32 else (numel * bits + 7) // 8 + 4
