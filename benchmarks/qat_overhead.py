"""Cost of our hand-written fake quantization per training step (prints JSON).

For each zoo model (CPU-scale width, 28×28×1 input) times one SGD training step with the plain
model and with ``prepare_qat`` at each bit-width (weights per channel + activations at 8 bits),
interleaving the two so that load from other processes hits both alike, and reports the median
step time and the ratio QAT / plain. Brevitas is deliberately not installed; the issue's figures
for it (×1.5–2.0, NaN from its default 1-bit weight quantizer) are quoted, not re-measured.

    python benchmarks/qat_overhead.py [--steps 20] [--batch 64] [--threads 2] [--compare-ref] [--clock cpu]

``--compare-ref`` also times, interleaved in the same loop, the same QAT model with a previous
quantizer, so before/after figures share the machine's load: ``--ref v2`` (default) the fused
kernel with ``effective_step`` as separate autograd nodes in front of it (before it was fused),
``--ref v1`` the first fused version (``_LSQv1`` below: mask and rounding recomputed in the
backward, ``torch.where`` for the step gradient). The JSON keys say ``v1`` for either.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time


def _v1_fake_quant():
    """The fused LSQ quantizer as it was before the backward was reduced to two kernels."""
    import torch

    from jqodi.core.quant import _levels

    class _LSQv1(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, step, qn, qp, sign, g):
            ctx.save_for_backward(x, step)
            ctx.consts = (qn, qp, sign, g)
            v = (x / step).clamp_(qn, qp)
            if sign:
                return torch.where(v >= 0, step, -step)
            return v.round_().mul_(step)

        @staticmethod
        def backward(ctx, grad):
            x, step = ctx.saved_tensors
            qn, qp, sign, g = ctx.consts
            v = x / step
            inside = (v >= qn) & (v <= qp)
            grad_x = grad * inside if ctx.needs_input_grad[0] else None
            grad_s = None
            if ctx.needs_input_grad[1]:
                vc = v.clamp(qn, qp)
                vq = torch.where(vc >= 0, 1.0, -1.0).to(x.dtype) if sign else vc.round()
                ds = torch.where(inside, vq.sub_(v), vc).mul_(grad)
                if step.numel() == 1:
                    grad_s = ds.sum().reshape(step.shape) * g
                else:
                    grad_s = ds.sum(dim=tuple(range(1, ds.dim())), keepdim=True).reshape(step.shape) * g
            return grad_x, grad_s, None, None, None, None

    def fake_quant(x, step, bits, signed, grad_scale, learned_step=False):
        from jqodi.core.quant import effective_step

        if learned_step:
            step = effective_step(step)
        qn, qp = _levels(bits, signed)
        return _LSQv1.apply(x, step, float(qn), float(qp), bits == 1 and signed, float(grad_scale))

    return fake_quant


def _v2_fake_quant(fq_new):
    """The fused quantizer as it was before ``effective_step`` was fused into it (v2): the same
    kernel, with ``effective_step`` as five small autograd nodes in front of it."""
    from jqodi.core.quant import effective_step

    def fake_quant(x, step, bits, signed, grad_scale, learned_step=False):
        return fq_new(x, effective_step(step) if learned_step else step, bits, signed, grad_scale)

    return fake_quant


def main(argv=None) -> int:
    import torch
    import torch.nn.functional as F

    from jqodi.core.quant import prepare_qat
    from jqodi.core.training import DEFAULT_WIDTH
    from jqodi.core.zoo import build_model

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=["lenet", "vgg", "resnet20"])
    ap.add_argument("--bits", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--act-bits", type=int, default=None, help="activation bits (default 8; 32 = weights only)")
    ap.add_argument("--width", type=float, default=None,
                    help="width multiplier for every model (default: the CPU-scale DEFAULT_WIDTH)")
    ap.add_argument("--compare-ref", action="store_true",
                    help="also time the previous quantizer (--ref) in the same interleaved loop")
    ap.add_argument("--ref", choices=("v1", "v2"), default="v2",
                    help="the previous quantizer: v1 (before the two-kernel backward) or v2 (before "
                         "effective_step was fused; default)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: perf_counter; cpu: this process's CPU time (steadier on a machine shared with "
                         "other work: time spent waiting for a core is not counted; use with --threads 1)")
    args = ap.parse_args(argv)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    import jqodi.core.quant.layers as quant  # the module whose layers call fake_quant

    fq_new = quant.fake_quant
    fq_v1 = _v1_fake_quant() if args.ref == "v1" else _v2_fake_quant(fq_new)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, y = torch.randn(args.batch, 1, 28, 28), torch.randint(0, 10, (args.batch,))

    def step_time(model, opt, fq=None):
        quant.fake_quant = fq or fq_new
        t = clock()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        return clock() - t

    rows = []
    for name in args.models:
        width = args.width or DEFAULT_WIDTH[name]
        base = build_model(name, (1, 28, 28), 10, width, seed=0)
        for bits in args.bits:
            plain = copy.deepcopy(base)
            qat = prepare_qat(copy.deepcopy(base), bits, args.act_bits, calibration=x)
            ref = copy.deepcopy(qat)
            o1 = torch.optim.SGD(plain.parameters(), lr=1e-3, momentum=0.9)
            o2 = torch.optim.SGD(qat.parameters(), lr=1e-3, momentum=0.9)
            o3 = torch.optim.SGD(ref.parameters(), lr=1e-3, momentum=0.9)
            for _ in range(3):  # warm-up
                step_time(plain, o1), step_time(qat, o2)
                if args.compare_ref:
                    step_time(ref, o3, fq_v1)
            tp, tq, tr = [], [], []
            for _ in range(args.steps):
                tp.append(step_time(plain, o1))
                tq.append(step_time(qat, o2))
                if args.compare_ref:
                    tr.append(step_time(ref, o3, fq_v1))
            p, q = statistics.median(tp), statistics.median(tq)
            rows.append({"model": name, "width": width, "bits": bits, "act_bits": args.act_bits or 8,
                         "batch": args.batch,
                         "plain_step_ms": round(p * 1e3, 2), "qat_step_ms": round(q * 1e3, 2),
                         "ratio": round(q / p, 3)})
            if args.compare_ref:
                r = statistics.median(tr)
                rows[-1].update({"ref": args.ref, "qat_v1_step_ms": round(r * 1e3, 2), "ratio_v1": round(r / p, 3)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    quant.fake_quant = fq_new
    summary = {"threads": args.threads, "steps": args.steps, "clock": args.clock, "results": rows,
               "median_ratio": statistics.median(r["ratio"] for r in rows)}
    if args.compare_ref:
        summary["median_ratio_v1"] = statistics.median(r["ratio_v1"] for r in rows)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
