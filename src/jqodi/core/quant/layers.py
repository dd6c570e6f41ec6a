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
* Training: each layer is one autograd node (:class:`_QLayerFn`: weight quantizer + conv/linear
  + input quantizer, hand-written backward), its quantizers the compiled loops of
  :mod:`jqodi.core.quant.kernel` where they are available (PyTorch otherwise; same values).
* ``bits = 32`` leaves the model unchanged. ``act_bits`` defaults to 8 (``W{q}A8``); 32 turns
  activation quantization off.
"""
from __future__ import annotations

import copy
import math
from typing import Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from jqodi.errors import ModelError

from jqodi.core.quant import kernel
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
        return fake_quant(w, step, self.bits, True, self._weight_grad_scale(), learned_step=True)

    def _weight_grad_scale(self) -> float:
        _, qp = _levels(self.bits, True)
        return 1.0 / math.sqrt(self.weight[0].numel() * qp)

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
        step = self.act_step
        if not (torch.is_grad_enabled() and (x.requires_grad or step.requires_grad)) and kernel.usable(x, step):
            qn, qp = _levels(self.act_bits, self.act_signed)   # evaluation, serving: one pass, same values
            return kernel.quantize(x, step.detach(), float(qn), float(qp), self.act_bits == 1 and self.act_signed)
        return fake_quant(x, step, self.act_bits, self.act_signed, self._act_grad_scale(x), learned_step=True)

    def _trains(self, x: torch.Tensor) -> bool:
        """Autograd will record this layer (the fused path of :class:`_QLayerFn` applies)."""
        return torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad
                                            or self.weight_step.requires_grad or self.act_step.requires_grad)

    def _spec(self, x: torch.Tensor, conv: tuple | None) -> _Spec:
        """The layer's quantizer constants for inputs shaped like ``x`` (cached: same key, same spec)."""
        key = (self.bits, self.act_bits, self.act_signed, x.shape[1:], self.weight.shape, conv)
        cached = self.__dict__.get("_spec_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        w_qn, w_qp = _levels(self.bits, True)
        a_qn, a_qp = _levels(self.act_bits, self.act_signed) if self.act_bits < FULL_PRECISION else (0, 1)
        spec = _Spec(float(w_qn), float(w_qp), self.bits == 1, self._weight_grad_scale(),
                     self.act_bits < FULL_PRECISION, float(a_qn), float(a_qp),
                     self.act_bits == 1 and self.act_signed, self._act_grad_scale(x), conv)
        self.__dict__["_spec_cache"] = (key, spec)
        return spec

    def _fused(self, x: torch.Tensor, conv: tuple | None) -> torch.Tensor:
        """The training forward: the whole layer as one autograd node (:class:`_QLayerFn`)."""
        if self.act_bits < FULL_PRECISION:
            self._calibrate_input(x)
        return _QLayerFn.apply(x, self.weight, self.bias, self.weight_step, self.act_step, self._spec(x, conv))

    def extra_repr(self) -> str:  # type: ignore[override]
        return super().extra_repr() + f", bits={self.bits}, act_bits={self.act_bits}"  # type: ignore[misc]


class _Spec(NamedTuple):
    """The constants of one fake-quantized layer's fused forward (cached per layer and input shape)."""

    w_qn: float
    w_qp: float
    w_sign: bool          # 1-bit weights: sign(w) · s
    w_g: float            # LSQ gradient scale of the weight step
    act: bool             # the input is quantized (act_bits < 32)
    a_qn: float
    a_qp: float
    a_sign: bool
    a_g: float            # LSQ gradient scale of the activation step
    conv: tuple | None    # Conv2d: (stride, padding, dilation, groups); Linear: None


def _step_grad(dot: torch.Tensor, step: torch.Tensor, g: float) -> torch.Tensor:
    """LSQ's gradient of the raw ``step`` from ``dot`` = ⟨∂L/∂out, ds⟩: ``g · dot · sign(step)``,
    sign +1 at 0 (∂ effective_step/∂s; exactly ±, as the separate quantizer node computed it)."""
    grad_s = dot.mul_(g).reshape(step.shape)
    return torch.where(step >= 0, grad_s, grad_s.neg())


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(-1)


class _QLayerFn(torch.autograd.Function):
    """One QAT layer as one autograd node: weight quantizer + activation quantizer + conv/linear.

    Forward: ``y = layer(Q_a(x), Q_w(W)) + b`` with the LSQ quantizers at the effective steps
    ``max(|s|, ε)``. Backward (hand-written; the values and gradients of the three separate nodes
    it replaces, :class:`jqodi.core.quant.lsq._LSQ` twice and the convolution's): ``∂L/∂x_q``,
    ``∂L/∂W_q``, ``∂L/∂b`` from ``aten.convolution_backward`` (or the two matrix products of
    ``linear``), then the STE masks and LSQ's step gradients ``g · sign(s) · ⟨∂L/∂·_q, ds⟩``.
    Where the input needs no gradient (the model's first layer on the image), the activation
    step's gradient is ``g · sign(s) · ⟨∂L/∂y, conv(ds, W_q)⟩`` (the adjoint of the
    convolution): one forward convolution instead of the backward-data one (≈ 3× its cost on 3
    input channels).

    The quantizers run as the compiled one-pass loops of :mod:`jqodi.core.quant.kernel` when it
    is available (float32 CPU contiguous tensors): forward one pass per quantizer, nothing saved
    but the input (the backward recomputes the mask and the step factor from it in one pass).
    Otherwise as :func:`lsq_forward` (six PyTorch kernels, the mask and the factor saved).
    Both give the same outputs and input gradients bit for bit; the step gradients differ only in
    the summation order of their dot products.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, w_step, a_step, spec: _Spec):
        ctx.spec = spec
        ctx.has_bias = bias is not None
        compiled = kernel.usable(weight, w_step) and (not spec.act or kernel.usable(x, a_step))
        ctx.compiled = compiled
        if compiled:
            wq = kernel.quantize(weight, w_step, spec.w_qn, spec.w_qp, spec.w_sign)
            xq = kernel.quantize(x, a_step, spec.a_qn, spec.a_qp, spec.a_sign) if spec.act else x
            saved = (x, weight)
        else:
            sw = w_step.abs().clamp_min_(MIN_STEP).view(-1, *([1] * (weight.dim() - 1)))
            wq, wm, wds = lsq_forward(weight, sw, spec.w_qn, spec.w_qp, spec.w_sign)
            if spec.act:
                xq, xm, xds = lsq_forward(x, a_step.abs().clamp_min_(MIN_STEP), spec.a_qn, spec.a_qp, spec.a_sign)
            else:
                xq, xm, xds = x, None, None
            saved = (wm, wds, xm, xds)
        y = F.linear(xq, wq, bias) if spec.conv is None else F.conv2d(xq, wq, bias, *spec.conv)
        ctx.save_for_backward(xq, wq, w_step, a_step, *saved)
        return y

    @staticmethod
    def backward(ctx, grad):
        xq, wq, w_step, a_step, *saved = ctx.saved_tensors
        spec: _Spec = ctx.spec
        need_x, need_w, need_b, need_sw, need_sa = ctx.needs_input_grad[:5]
        need_sa = need_sa and spec.act
        adjoint = need_sa and not need_x and spec.conv is not None
        need_xq = need_x or (need_sa and not adjoint)
        if spec.conv is None:
            grad_xq = grad.mm(wq) if need_xq else None
            grad_wq = xq.t().mm(grad).t() if (need_w or need_sw) else None
            grad_b = grad.sum(0) if need_b and ctx.has_bias else None
        else:
            stride, padding, dilation, groups = spec.conv
            grad_xq, grad_wq, grad_b = torch.ops.aten.convolution_backward(
                grad, xq, wq, [wq.shape[0]] if ctx.has_bias else None, list(stride), list(padding), list(dilation),
                False, [0] * len(stride), groups, [need_xq, need_w or need_sw, need_b and ctx.has_bias])
        grad_x = grad_sa = grad_w = grad_sw = None
        if ctx.compiled:
            x, weight = saved
            if need_w or need_sw:
                grad_w, grad_sw = kernel.backward(weight, w_step, grad_wq, spec.w_qn, spec.w_qp, spec.w_sign, spec.w_g,
                                                  need_x=need_w)
            if not spec.act:
                grad_x = grad_xq if need_x else None
            elif adjoint:
                ds = kernel.step_factor(x, a_step, spec.a_qn, spec.a_qp, spec.a_sign)
                grad_sa = _step_grad(_adjoint_dot(grad, ds, wq, spec), a_step, spec.a_g)
            elif need_xq:
                grad_x, grad_sa = kernel.backward(x, a_step, grad_xq, spec.a_qn, spec.a_qp, spec.a_sign, spec.a_g,
                                                  need_x=need_x)
        else:
            wm, wds, xm, xds = saved
            if need_x:
                grad_x = grad_xq * xm if spec.act else grad_xq
            if need_sa:
                dot = _adjoint_dot(grad, xds, wq, spec) if adjoint else torch.dot(_flat(grad_xq), _flat(xds))
                grad_sa = _step_grad(dot, a_step, spec.a_g)
            if need_w:
                grad_w = grad_wq * wm
            if need_sw:
                c = wq.shape[0]
                grad_sw = _step_grad(torch.bmm(grad_wq.contiguous().view(c, 1, -1), wds.view(c, -1, 1)), w_step,
                                     spec.w_g)
        return (grad_x, grad_w if need_w else None, grad_b if need_b else None, grad_sw if need_sw else None,
                grad_sa if need_sa else None, None)


def _adjoint_dot(grad: torch.Tensor, ds: torch.Tensor, wq: torch.Tensor, spec: _Spec) -> torch.Tensor:
    """``⟨∂L/∂y, conv(ds, W_q)⟩`` = ``⟨∂L/∂x_q, ds⟩``: the backward-data convolution is the adjoint
    of the forward one (same zero padding, stride, dilation, groups)."""
    return torch.dot(_flat(grad), _flat(F.conv2d(ds, wq, None, *spec.conv)))


class QConv2d(_QuantMixin, nn.Conv2d):
    """``nn.Conv2d`` with fake-quantized weights (per channel) and input (per tensor)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode == "zeros" and not isinstance(self.padding, str) and self._trains(x):
            return self._fused(x, (self.stride, self.padding, self.dilation, self.groups))
        return self._conv_forward(self.quantized_input(x), self.quantized_weight(), self.bias)


class QLinear(_QuantMixin, nn.Linear):
    """``nn.Linear`` with fake-quantized weights (per output) and input (per tensor)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and self._trains(x):
            return self._fused(x, None)
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
    It changes nothing outside ``model``: a process that trains calls
    :func:`~jqodi.core.quant.heap.keep_freed_memory` itself (the CLI's training verbs, the role
    processes and the benchmarks do), which saves the QAT step its page faults.
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

