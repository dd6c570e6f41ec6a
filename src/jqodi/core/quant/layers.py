"""Fake-quantized layers and QAT preparation: the paper's M_(a,q) during fine-tuning.

* **Weights**: symmetric, per output channel, learnable step ``s`` (LSQ) with a straight-through
  estimator (STE) for rounding. At ``q ≥ 2`` bits the integer levels are ``-2^(q-1) .. 2^(q-1)-1``
  (2^q levels); at ``q = 1`` the weight is ``sign(w) · s`` (two levels, ``sign(0) = +1``) with the
  same LSQ gradients for ``s``. The step starts at the per-channel value minimising the
  quantization MSE (1 bit: ``mean|w|``, the L2 optimum).
* **Activations** (the input of every Conv2d/Linear): per tensor, learnable step, unsigned
  ``0 .. 2^a-1`` since they follow ReLU/max-pool; the model's first layer sees the normalised
  image, which is signed, so it uses signed levels. The step is calibrated by
  :func:`calibrate_activations` (or lazily from the first batch the layer sees); the buffer
  ``act_calibrated`` records that it was, so the step's value never doubles as a flag.
* Every step enters the forward as :func:`jqodi.core.quant.lsq.effective_step` (``max(|s|, ε)``),
  fused into the quantizer (``fake_quant(..., learned_step=True)``).
* ``bits = 32`` leaves the model unchanged. ``act_bits`` defaults to 8 (``W{q}A8``); 32 turns
  activation quantization off.
"""
from __future__ import annotations

import copy
import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from jqodi.errors import ModelError

from jqodi.core.quant.heap import keep_freed_memory
from jqodi.core.quant.lsq import (FULL_PRECISION, MIN_STEP, _init_act_step, _init_weight_step, _levels, check_bits,
                                  fake_quant, lsq_forward)

__all__ = ["QConv2d", "QLinear", "calibrate_activations", "model_bits", "prepare_qat", "quant_layers"]

#: The parameters and buffers a fake-quantized layer adds to a plain Conv2d/Linear.
QUANT_STATE = ("weight_step", "act_step", "act_calibrated")

class _QuantMixin:
    """Shared state of the fake-quantized layers: ``weight_step`` (per channel), ``act_step`` and
    the ``act_calibrated`` buffer (False until :func:`calibrate_activations` or the first batch
    set ``act_step``; it travels in state dicts, checkpoints and on the wire)."""

    bits: int
    act_bits: int
    act_signed: bool
    weight: nn.Parameter

    def _init_quant(self, bits: int, act_bits: int, act_signed: bool) -> None:
        self.bits = bits
        self.act_bits = act_bits
        self.act_signed = act_signed
        self.weight_step = nn.Parameter(_init_weight_step(self.weight, bits))
        # The step's value is never a flag: whatever SGD makes of it (even ≤ 0) stays learned.
        self.act_step = nn.Parameter(torch.ones(1))
        self.register_buffer("act_calibrated", torch.zeros(1, dtype=torch.bool))  # type: ignore[attr-defined]

    def set_bits(self, bits: int) -> None:
        self.bits = bits
        with torch.no_grad():
            self.weight_step.copy_(_init_weight_step(self.weight, bits))

    def quantized_weight(self) -> torch.Tensor:
        w = self.weight
        step = self.weight_step.view(-1, *([1] * (w.dim() - 1)))
        _, qp = _levels(self.bits, True)
        g = 1.0 / math.sqrt(w[0].numel() * qp)
        return fake_quant(w, step, self.bits, True, g, learned_step=True)

    def _calibrate_input(self, x: torch.Tensor) -> None:
        if not bool(self.act_calibrated):
            with torch.no_grad():
                self.act_step.fill_(_init_act_step(x, self.act_bits, self.act_signed))
                self.act_calibrated.fill_(True)

    def _act_grad_scale(self, x: torch.Tensor) -> float:
        _, qp = _levels(self.act_bits, self.act_signed)
        return 1.0 / math.sqrt(max(1, x[0].numel()) * qp)

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_bits >= FULL_PRECISION:
            return x
        self._calibrate_input(x)
        return fake_quant(x, self.act_step, self.act_bits, self.act_signed, self._act_grad_scale(x),
                          learned_step=True)

    def extra_repr(self) -> str:  # type: ignore[override]
        return super().extra_repr() + f", bits={self.bits}, act_bits={self.act_bits}"  # type: ignore[misc]


class QConv2d(_QuantMixin, nn.Conv2d):
    """``nn.Conv2d`` with fake-quantized weights (per channel) and input (per tensor)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.act_bits < FULL_PRECISION and not x.requires_grad and self.act_step.requires_grad
                and torch.is_grad_enabled() and self.padding_mode == "zeros" and not isinstance(self.padding, str)):
            return self._stem_forward(x)
        return self._conv_forward(self.quantized_input(x), self.quantized_weight(), self.bias)

    def _stem_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The layer on an input that needs no gradient (the model's first layer on the image):
        the same values and gradients as :meth:`forward`'s general path, but the activation
        step's LSQ gradient is ``g · ⟨∂L/∂x_q, ds⟩ = g · ⟨∂L/∂y, conv(ds, W_q)⟩`` (the adjoint of
        the convolution), one forward convolution instead of the backward-data convolution
        ∂L/∂x_q that nothing else needs (≈ 3× the cost of a forward one on 3 input channels)."""
        self._calibrate_input(x)
        qn, qp = _levels(self.act_bits, self.act_signed)
        with torch.no_grad():
            step = self.act_step.detach().abs().clamp_min(MIN_STEP)
            xq, _, ds = lsq_forward(x, step, float(qn), float(qp), self.act_bits == 1 and self.act_signed)
        return _StemConv.apply(xq, ds, self.quantized_weight(), self.bias, self.act_step,
                               self._act_grad_scale(x), self.stride, self.padding, self.dilation, self.groups)


class _StemConv(torch.autograd.Function):
    """``conv2d(x_q, W, b)`` of an already quantized input ``x_q`` that needs no gradient, with the
    LSQ gradient of the input's raw step ``s``: ``g · sign(s) · ⟨∂L/∂y, conv(ds, W)⟩`` (no bias),
    equal to ``g · sign(s) · ⟨∂L/∂x_q, ds⟩`` because the backward-data convolution is the adjoint
    of the forward one (same zero padding, stride, dilation, groups)."""

    @staticmethod
    def forward(ctx, xq, ds, weight, bias, step, g, stride, padding, dilation, groups):
        ctx.save_for_backward(xq, ds, weight, step)
        ctx.conf = (g, stride, padding, dilation, groups, bias is not None)
        return F.conv2d(xq, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        xq, ds, weight, step = ctx.saved_tensors
        g, stride, padding, dilation, groups, has_bias = ctx.conf
        need_w, need_b, need_s = ctx.needs_input_grad[2], ctx.needs_input_grad[3], ctx.needs_input_grad[4]
        grad_w = grad_b = grad_s = None
        if need_w or need_b:
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, xq, weight, [weight.shape[0]] if has_bias else None, list(stride), list(padding),
                list(dilation), False, [0] * len(stride), groups, [False, need_w, need_b and has_bias])
        if need_s:
            dy = F.conv2d(ds, weight, None, stride, padding, dilation, groups)
            sign = 1.0 if bool(step >= 0) else -1.0   # ∂|s|/∂s, +1 at 0 (effective_step)
            grad_s = torch.dot(grad.reshape(-1), dy.reshape(-1)).mul_(g * sign).reshape(step.shape)
        return (None, None, grad_w if need_w else None, grad_b if need_b else None, grad_s,
                None, None, None, None, None)


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
    new.act_calibrated = new.act_calibrated.to(old.weight.device)
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
    Also keeps freed tensor memory in this process's heap (:func:`~jqodi.core.quant.heap.keep_freed_memory`:
    no page faults per training step; at any ``bits``, so fp32 fine-tuning gets it too).
    """
    bits = check_bits(bits)
    act_bits = 8 if act_bits is None else check_bits(act_bits, "act_bits")
    keep_freed_memory()
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
        m.act_calibrated.fill_(False)
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
                new._parameters = {k: v for k, v in child._parameters.items() if k not in QUANT_STATE}
                new._buffers = {k: v for k, v in child._buffers.items() if k not in QUANT_STATE}
                new._modules = dict(child._modules)
                setattr(parent, child_name, new)
    return m

