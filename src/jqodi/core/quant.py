"""Quantization-aware training (QAT) and bit-packed models: the paper's M_(a,q).

Fake quantization, hand-written (no Brevitas; see docs/learning.md for the measured overhead):

* **Weights**: symmetric, per output channel, learnable step ``s`` (LSQ, Esser et al. 2020) with
  a straight-through estimator (STE) for rounding. At ``q ≥ 2`` bits the integer levels are
  ``-2^(q-1) .. 2^(q-1)-1`` (2^q levels); at ``q = 1`` the weight is ``sign(w) · s`` (two
  levels, ``sign(0) = +1``) with the same LSQ gradients for ``s``. The step starts at the
  per-channel value minimising the quantization MSE (1 bit: ``mean|w|``, the L2 optimum).
* **Activations** (the input of every Conv2d/Linear): per tensor, learnable step, unsigned
  ``0 .. 2^a-1`` since they follow ReLU/max-pool; the model's first layer sees the normalised
  image, which is signed, so it uses signed levels. The step is calibrated by
  :func:`calibrate_activations` (or lazily from the first batch it sees).
* ``bits = 32`` leaves the model unchanged. ``act_bits`` defaults to 8 (``W{q}A8``); 32 turns
  activation quantization off.

A quantized model travels as a :class:`PackedModel`: each quantized weight as q-bit integer codes,
bit-packed, plus fp32 per-channel steps; every other state entry (biases, BatchNorm weights and
running statistics, activation steps) in its own dtype (fp32; ``num_batches_tracked`` int64).
Both ends know the architecture, so the wire format is the bare payload with no header and
``PackedModel.nbytes == len(to_bytes()) == model_size_bytes(model, bits)``:

    size(q) = Σ_layers ceil(n_w · q / 8) + 4 B · C_out (weight steps) + 4 B (activation step)
              + Σ other state entries (4 B each fp32 value, 8 B per num_batches_tracked).

This is the paper's g^i_(a,q) (Eq. (1)-(2)) with the fp32 extras made explicit.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jqodi.errors import ModelError

__all__ = [
    "PackedModel",
    "QConv2d",
    "QLinear",
    "calibrate_activations",
    "check_bits",
    "dequantize_activations",
    "model_size_bytes",
    "pack_bits",
    "pack_model",
    "prepare_qat",
    "quant_layers",
    "quantize_activations",
    "unpack_bits",
    "unpack_model",
]

FULL_PRECISION = 32


def check_bits(bits: int, what: str = "bits") -> int:
    """Validate a bit-width: an integer in 1..8, or 32 (full precision)."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise ModelError(f"{what} must be an integer in 1..8 or 32, got {bits!r}")
    bits = int(bits)
    if not (1 <= bits <= 8 or bits == FULL_PRECISION):
        raise ModelError(f"{what} must be in 1..8 or 32, got {bits}")
    return bits


def _levels(bits: int, signed: bool) -> tuple[int, int]:
    """Integer range (Qn, Qp) of the quantizer."""
    if signed:
        return (-1, 1) if bits == 1 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return 0, 2 ** bits - 1


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return (x.round() - x).detach() + x


def _sign_ste(x: torch.Tensor) -> torch.Tensor:
    return (torch.where(x >= 0, 1.0, -1.0).to(x.dtype) - x).detach() + x


def _grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    y = x * g
    return (x - y).detach() + y


def fake_quant_reference(x: torch.Tensor, step: torch.Tensor, bits: int, signed: bool, grad_scale: float) -> torch.Tensor:
    """LSQ fake quantization written with ``detach`` tricks (the readable reference of
    :func:`fake_quant`; the tests check that both give the same values and gradients)."""
    s = _grad_scale(step, grad_scale)
    qn, qp = _levels(bits, signed)
    v = torch.clamp(x / s, qn, qp)
    if bits == 1 and signed:
        return _sign_ste(v) * s
    return _round_ste(v) * s


class _LSQ(torch.autograd.Function):
    """Fused LSQ fake quantization: one pass forward, two kernels backward.

    Forward: ``out = q(clamp(x/s, Qn, Qp)) · s`` with ``q`` = round (or sign at 1 bit).
    Backward (STE): ``∂out/∂x = 1`` inside ``[Qn, Qp]`` and 0 outside;
    ``∂out/∂s = q(v) − v`` inside, ``Qn``/``Qp`` outside, times the LSQ gradient scale ``g``.

    Since ``Qn``/``Qp`` are integers, ``q(clamp(v)) = clamp(v)`` outside the range, so both
    cases of ``∂out/∂s`` are ``q(v_c) − m · v_c`` with ``v_c = clamp(v)`` and the float mask
    ``m = [v_c = v]`` (1 inside). The forward saves ``m`` and that factor, so the backward is one
    multiply for ``x`` and one batched dot product (no temporary) for ``s``. Every kernel is a
    plain float one: ``torch.where``/``masked_fill`` are ≈ 30–40× and bool comparisons ≈ 4× slower
    per element on this CPU than a float multiply (measured, see docs/learning.md "QAT overhead").
    """

    @staticmethod
    def forward(ctx, x, step, qn, qp, sign, g):
        ctx.g = g
        v = x / step                      # full-size temporaries: v, vc and out only
        vc = v.clamp(qn, qp)
        mask = torch.eq(vc, v, out=v)     # v := 1.0 inside [Qn, Qp] else 0.0 (float, no bool)
        out = torch.empty_like(vc)
        if sign:  # q(v_c) = +1 for v_c >= 0, else -1
            torch.ge(vc, 0, out=out).mul_(2).sub_(1)
        else:
            torch.round(vc, out=out)
        ds = torch.addcmul(out, vc, mask, value=-1.0, out=vc)  # vc := q(v_c) - m * v_c
        ctx.save_for_backward(mask, ds, step)
        out.mul_(step)
        return out

    @staticmethod
    def backward(ctx, grad):
        mask, ds, step = ctx.saved_tensors
        grad_x = grad * mask if ctx.needs_input_grad[0] else None
        grad_s = None
        if ctx.needs_input_grad[1]:
            grad = grad.contiguous()
            if step.numel() == 1:
                grad_s = torch.dot(grad.view(-1), ds.view(-1)).mul_(ctx.g).reshape(step.shape)
            elif step.dim() == grad.dim() and step.numel() == step.shape[0] == grad.shape[0]:  # per channel
                c = grad.shape[0]
                grad_s = torch.bmm(grad.view(c, 1, -1), ds.view(c, -1, 1)).mul_(ctx.g).reshape(step.shape)
            else:  # any other broadcast: sum over the broadcast dimensions
                prod = grad * ds
                lead = prod.dim() - step.dim()
                dims = list(range(lead)) + [lead + i for i, n in enumerate(step.shape)
                                            if n == 1 and prod.shape[lead + i] != 1]
                grad_s = (prod.sum(dims, keepdim=True) if dims else prod).reshape(step.shape) * ctx.g
        return grad_x, grad_s, None, None, None, None


def fake_quant(x: torch.Tensor, step: torch.Tensor, bits: int, signed: bool, grad_scale: float) -> torch.Tensor:
    """LSQ fake quantization of ``x`` with (broadcastable) step ``step``; STE for rounding."""
    qn, qp = _levels(bits, signed)
    if not (torch.is_grad_enabled() and (x.requires_grad or step.requires_grad)):
        with torch.no_grad():  # inference: no mask, no saved tensors
            v = (x / step).clamp_(qn, qp)
            if bits == 1 and signed:
                return torch.ge(v, 0, out=torch.empty_like(v)).mul_(2).sub_(1).mul_(step)
            return v.round_().mul_(step)
    return _LSQ.apply(x, step, float(qn), float(qp), bits == 1 and signed, float(grad_scale))


def _weight_codes(w: torch.Tensor, step: torch.Tensor, bits: int, stochastic: bool = False,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Integer levels of ``w`` (signed, per output channel), as int64."""
    s = step.detach().cpu().view(-1, *([1] * (w.dim() - 1)))
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


def _init_weight_step(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel step minimising the quantization MSE (1 bit: mean |w|)."""
    w = w.detach().reshape(w.shape[0], -1)
    if bits == 1:
        return w.abs().mean(1).clamp_min(1e-8)
    qn, qp = _levels(bits, True)
    wmax = w.abs().amax(1).clamp_min(1e-8)
    best_s = wmax / qp
    best_err = torch.full_like(wmax, float("inf"))
    for r in torch.linspace(0.2, 1.0, 33):
        s = (r * wmax / qp).unsqueeze(1)
        err = ((torch.clamp((w / s).round(), qn, qp) * s - w) ** 2).mean(1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_s = torch.where(better, s.squeeze(1), best_s)
    return best_s


def _init_act_step(x: torch.Tensor, bits: int, signed: bool) -> float:
    x = x.detach().flatten().float()
    qn, qp = _levels(bits, signed)
    xmax = (x.abs().amax() if signed else x.clamp_min(0).amax()).item()
    if xmax <= 0:
        return 1.0
    if x.numel() > 200_000:  # subsample for the search, deterministically
        x = x[:: x.numel() // 200_000 + 1]
    best, best_err = xmax / qp, float("inf")
    for r in torch.linspace(0.2, 1.0, 33).tolist():
        s = r * xmax / qp
        err = ((torch.clamp((x / s).round(), qn, qp) * s - x) ** 2).mean().item()
        if err < best_err:
            best, best_err = s, err
    return best


class _QuantMixin:
    """Shared state of the fake-quantized layers (``weight_step`` per channel, ``act_step``)."""

    bits: int
    act_bits: int
    act_signed: bool
    weight: nn.Parameter

    def _init_quant(self, bits: int, act_bits: int, act_signed: bool) -> None:
        self.bits = bits
        self.act_bits = act_bits
        self.act_signed = act_signed
        self.weight_step = nn.Parameter(_init_weight_step(self.weight, bits))
        # act_step > 0 means calibrated; 0 = calibrate from the first batch seen.
        self.act_step = nn.Parameter(torch.zeros(1))

    def set_bits(self, bits: int) -> None:
        self.bits = bits
        with torch.no_grad():
            self.weight_step.copy_(_init_weight_step(self.weight, bits))

    def quantized_weight(self) -> torch.Tensor:
        w = self.weight
        step = self.weight_step.view(-1, *([1] * (w.dim() - 1)))
        _, qp = _levels(self.bits, True)
        g = 1.0 / math.sqrt(w[0].numel() * qp)
        return fake_quant(w, step, self.bits, True, g)

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_bits >= FULL_PRECISION:
            return x
        if float(self.act_step.detach()) <= 0:
            with torch.no_grad():
                self.act_step.fill_(_init_act_step(x, self.act_bits, self.act_signed))
        _, qp = _levels(self.act_bits, self.act_signed)
        g = 1.0 / math.sqrt(max(1, x[0].numel()) * qp)
        return fake_quant(x, self.act_step, self.act_bits, self.act_signed, g)

    def extra_repr(self) -> str:  # type: ignore[override]
        return super().extra_repr() + f", bits={self.bits}, act_bits={self.act_bits}"  # type: ignore[misc]


class QConv2d(_QuantMixin, nn.Conv2d):
    """``nn.Conv2d`` with fake-quantized weights (per channel) and input (per tensor)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.quantized_input(x), self.quantized_weight(), self.bias)


class QLinear(_QuantMixin, nn.Linear):
    """``nn.Linear`` with fake-quantized weights (per output) and input (per tensor)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quantized_input(x), self.quantized_weight(), self.bias)


def _swap(old: nn.Module, bits: int, act_bits: int, signed: bool) -> nn.Module:
    cls = QConv2d if isinstance(old, nn.Conv2d) else QLinear
    new = cls.__new__(cls)
    nn.Module.__init__(new)
    new.__dict__.update({k: v for k, v in old.__dict__.items()
                         if k not in ("_parameters", "_buffers", "_modules")})
    new._parameters = dict(old._parameters)
    new._buffers = dict(old._buffers)
    new._modules = dict(old._modules)
    new._init_quant(bits, act_bits, signed)
    new.weight_step.data = new.weight_step.data.to(old.weight.device)
    new.act_step.data = new.act_step.data.to(old.weight.device)
    return new


def quant_layers(model: nn.Module) -> Iterator[tuple[str, _QuantMixin]]:
    """The fake-quantized layers of ``model`` in module order."""
    for name, m in model.named_modules():
        if isinstance(m, _QuantMixin):
            yield name, m


def _is_plain_layer(m: nn.Module) -> bool:
    return type(m) in (nn.Conv2d, nn.Linear)


def prepare_qat(model: nn.Module, bits: int, act_bits: int | None = None,
                calibration: torch.Tensor | None = None) -> nn.Module:
    """Swap every ``nn.Conv2d``/``nn.Linear`` of ``model`` for its fake-quantized version, in place.

    ``bits`` in 1..8 (32 = leave the model unchanged); ``act_bits`` defaults to 8 (32 = no
    activation quantization). Parameters are shared with the original layers, so an optimizer
    built before still updates them (new ``weight_step``/``act_step`` parameters are added).
    Calling it again on a prepared model re-initialises the steps for the new ``bits``.
    ``calibration`` (a batch of inputs) sets the activation steps; deterministic.
    """
    bits = check_bits(bits)
    act_bits = 8 if act_bits is None else check_bits(act_bits, "act_bits")
    if bits == FULL_PRECISION:
        return model
    existing = list(quant_layers(model))
    if existing:
        for _, m in existing:
            m.set_bits(bits)
            m.act_bits = act_bits
    else:
        # The first layer in module (execution) order sees the signed, normalised image.
        order = [name for name, m in model.named_modules() if _is_plain_layer(m)]
        for parent_name, parent in list(model.named_modules()):
            for child_name, child in list(parent.named_children()):
                if _is_plain_layer(child):
                    full = f"{parent_name}.{child_name}" if parent_name else child_name
                    setattr(parent, child_name, _swap(child, bits, act_bits, signed=(full == order[0])))
    if calibration is not None:
        calibrate_activations(model, calibration)
    return model


@torch.no_grad()
def calibrate_activations(model: nn.Module, x: torch.Tensor) -> None:
    """Set every activation step from one forward pass over ``x`` (eval mode; restores mode)."""
    layers = [m for _, m in quant_layers(model)]
    if not layers:
        return
    for m in layers:
        m.act_step.zero_()
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        model.train(was_training)


def model_bits(model: nn.Module) -> int:
    """The weight bit-width of a prepared model (32 if it is not prepared)."""
    layers = list(quant_layers(model))
    if not layers:
        return FULL_PRECISION
    b = {m.bits for _, m in layers}
    if len(b) != 1:
        raise ModelError(f"model mixes weight bit-widths {sorted(b)}")
    return b.pop()


# --- bit packing --------------------------------------------------------------------------------

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
                             f"{getattr(like, 'name', type(like).__name__)} needs {need}")
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

    Quantized weights become their dequantized values ``level · step``, which lie exactly on the
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
        step = raw[step_key].view(-1, *([1] * (len(e.shape) - 1)))
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
                total += _packed_len(t.numel(), bits) + 4 * t.shape[0] + 4  # codes, steps, act step
            else:
                total += t.numel() * t.element_size()
    return total


def _unprepared_view(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with the fake-quantized layers turned back into plain ones."""
    m = copy.deepcopy(model)
    for parent in list(m.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, _QuantMixin):
                cls = nn.Conv2d if isinstance(child, nn.Conv2d) else nn.Linear
                new = cls.__new__(cls)
                nn.Module.__init__(new)
                new.__dict__.update({k: v for k, v in child.__dict__.items()
                                     if k not in ("_parameters", "_buffers", "_modules")})
                new._parameters = {k: v for k, v in child._parameters.items()
                                   if k not in ("weight_step", "act_step")}
                new._buffers = dict(child._buffers)
                new._modules = dict(child._modules)
                setattr(parent, child_name, new)
    return m


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

