"""What the roles put on the wire: packed model parts, their updates, cut-layer tensors.

Model parts travel as the bare payload of :class:`jqodi.quant.PackedModel` (q-bit codes + fp32
steps + fp32 norms: exactly Eq. (1)–(2)'s g at q bits); both ends know the architecture, so the
receiver rebuilds the layout from its own copy of the part. A part is ``model.shallow(cut)`` or
``model.deep(cut)``: packing per part gives the same bytes as packing the whole model (per-entry
encoding), so the SD can receive only its shallow part.

Cut-layer activations travel as codes + one fp32 scale (:func:`jqodi.quant.quantize_activations`)
when ``wire_act_bits < 32``, and so do their gradients at ``wire_grad_bits``; the receiver
dequantizes (a straight-through estimator: the gradient of the dequantized tensor is sent back).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from jqodi.quant import PackedModel, _Entry, check_bits, quant_layers
from jqodi.quant import dequantize_activations, pack_bits, quantize_activations, unpack_bits

__all__ = ["packed_to_tensor", "packed_from_tensor", "update_to_tensor", "update_from_tensor",
           "encode_cut", "decode_cut", "cut_tensor_bytes"]


def packed_to_tensor(packed) -> torch.Tensor:
    """A PackedModel or PackedUpdate as one uint8 tensor (its ``nbytes`` long)."""
    return torch.frombuffer(bytearray(packed.to_bytes()), dtype=torch.uint8) if packed.nbytes \
        else torch.empty(0, dtype=torch.uint8)


def packed_from_tensor(t: torch.Tensor, like: nn.Module, bits: int) -> PackedModel:
    return PackedModel.from_bytes(t.numpy().tobytes(), like, bits)


def update_from_tensor(t: torch.Tensor, like: nn.Module, bits: int, mode: str):
    """Rebuild a :class:`jqodi.train.PackedUpdate` from its payload and the receiver's part."""
    from jqodi.train import PackedUpdate

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
