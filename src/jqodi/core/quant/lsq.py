"""LSQ fake quantization with a straight-through estimator (STE): the quantizer of every QAT layer.

``fake_quant(x, s, bits, signed, g)`` = ``q(clamp(x/s, Qn, Qp)) · s`` with ``q`` = round (sign at 1
signed bit). Backward: the STE passes ``∂/∂x`` through inside ``[Qn, Qp]`` (0 outside) and the step
``s`` gets LSQ's gradient (Esser et al. 2020, "Learned Step Size Quantization") scaled by ``g``.
Steps are learnable parameters; :func:`effective_step` is what the forward divides by: ``max(|s|, ε)``,
so a step that SGD drives through 0 keeps learning instead of dividing by zero (docs/learning.md).
"""
from __future__ import annotations

import numpy as np
import torch

from jqodi.errors import ModelError

__all__ = ["FULL_PRECISION", "MIN_STEP", "check_bits", "effective_step", "fake_quant", "fake_quant_reference"]

FULL_PRECISION = 32

#: The smallest step the forward uses (ε of ``max(|s|, ε)``); also the floor of the initial steps.
MIN_STEP = 1e-8

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


def lsq_forward(x: torch.Tensor, step: torch.Tensor, qn: float, qp: float, sign: bool
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fused quantizer's forward pass (see :class:`_LSQ`) for an effective ``step`` (> 0):
    ``(out, mask, ds)`` with ``out = q(clamp(x/s, Qn, Qp)) · s``, the float STE mask ``m`` and the
    step-gradient factor ``ds = q(v_c) − m · v_c`` (``∂out/∂s = ds``). Three full-size tensors,
    six float kernels, nothing else allocated."""
    v = x / step                      # full-size temporaries: v, vc and out only
    vc = v.clamp(qn, qp)
    mask = torch.eq(vc, v, out=v)     # v := 1.0 inside [Qn, Qp] else 0.0 (float, no bool)
    out = torch.empty_like(vc)
    if sign:  # q(v_c) = +1 for v_c >= 0, else -1
        torch.ge(vc, 0, out=out).mul_(2).sub_(1)
    else:
        torch.round(vc, out=out)
    ds = torch.addcmul(out, vc, mask, value=-1.0, out=vc)  # vc := q(v_c) - m * v_c
    out.mul_(step)
    return out, mask, ds


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
    def forward(ctx, x, step, qn, qp, sign, g, learned=False):
        ctx.g = g
        ctx.learned = learned
        if learned:  # ``step`` is the raw learnable step: use effective_step(step), fused (no graph nodes)
            ctx.step_sign = torch.ge(step, 0).to(step.dtype).mul_(2).sub_(1)   # ∂|s|/∂s, +1 at 0
            step = step.abs().clamp_min_(MIN_STEP)
        out, mask, ds = lsq_forward(x, step, qn, qp, sign)
        ctx.save_for_backward(mask, ds, step)
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
            if ctx.learned:
                grad_s = grad_s * ctx.step_sign
        return grad_x, grad_s, None, None, None, None, None


def fake_quant(x: torch.Tensor, step: torch.Tensor, bits: int, signed: bool, grad_scale: float, *,
               learned_step: bool = False) -> torch.Tensor:
    """LSQ fake quantization of ``x`` with (broadcastable) step ``step``; STE for rounding.

    ``learned_step=True``: ``step`` is a raw learnable step and the quantizer uses
    :func:`effective_step` of it, fused into the same autograd node (values and gradients equal
    ``fake_quant(x, effective_step(step), ...)``; it saves the five small autograd nodes of
    ``effective_step`` per quantizer and step, docs/learning.md). The QAT layers call it outside
    their one-node training path (:class:`jqodi.core.quant.layers._QLayerFn`), e.g. for
    ``quantized_weight()``; the tests tie that path to this one."""
    qn, qp = _levels(bits, signed)
    if not (torch.is_grad_enabled() and (x.requires_grad or step.requires_grad)):
        if learned_step:
            step = step.detach().abs().clamp_min(MIN_STEP)
        with torch.no_grad():  # inference: no mask, no saved tensors
            v = (x / step).clamp_(qn, qp)
            if bits == 1 and signed:
                return torch.ge(v, 0, out=torch.empty_like(v)).mul_(2).sub_(1).mul_(step)
            return v.round_().mul_(step)
    return _LSQ.apply(x, step, float(qn), float(qp), bits == 1 and signed, float(grad_scale), learned_step)


def effective_step(step: torch.Tensor) -> torch.Tensor:
    """The step the quantizer uses for the learnable ``step``: ``max(|s|, MIN_STEP)``, never 0.

    Equal to ``step`` (bit for bit) for every ``step ≥ MIN_STEP``, so calibrated steps and their
    LSQ gradients are unchanged. Below that the gradient still flows: ``∂/∂s = sign(s)`` (+1 at
    0) also where the floor applies (a straight-through floor), so a step that SGD pushes through
    0 is mirrored and keeps learning; it is never reset and never divides by zero.
    """
    mag = torch.where(step >= 0, step, -step)  # |s| with ∂/∂s = +1 at s = 0 (torch.abs gives 0 there)
    return mag + (mag.clamp_min(MIN_STEP) - mag).detach()


def _init_weight_step(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel step minimising the quantization MSE (1 bit: mean |w|)."""
    w = w.detach().reshape(w.shape[0], -1)
    if bits == 1:
        return w.abs().mean(1).clamp_min(MIN_STEP)
    qn, qp = _levels(bits, True)
    wmax = w.abs().amax(1).clamp_min(MIN_STEP)
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

