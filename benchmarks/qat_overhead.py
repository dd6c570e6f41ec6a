"""Cost of our hand-written fake quantization per training step (prints JSON).

For each zoo model (CPU-scale width, 28×28×1 input) times one SGD training step with the plain
model and with ``prepare_qat`` at each bit-width (weights per channel + activations at 8 bits),
interleaving the two so that load from other processes hits both alike, and reports the median
step time and the ratio QAT / plain. Brevitas is deliberately not installed; the issue's figures
for it (×1.5–2.0, NaN from its default 1-bit weight quantizer) are quoted, not re-measured.

    python benchmarks/qat_overhead.py [--steps 20] [--batch 64] [--threads 2]
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time


def main(argv=None) -> int:
    import torch
    import torch.nn.functional as F

    from jqodi.quant import prepare_qat
    from jqodi.train import DEFAULT_WIDTH
    from jqodi.zoo import build_model

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=["lenet", "vgg", "resnet20"])
    ap.add_argument("--bits", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--act-bits", type=int, default=None, help="activation bits (default 8; 32 = weights only)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, y = torch.randn(args.batch, 1, 28, 28), torch.randint(0, 10, (args.batch,))

    def step_time(model, opt):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        return time.perf_counter() - t

    rows = []
    for name in args.models:
        base = build_model(name, (1, 28, 28), 10, DEFAULT_WIDTH[name], seed=0)
        for bits in args.bits:
            plain = copy.deepcopy(base)
            qat = prepare_qat(copy.deepcopy(base), bits, args.act_bits, calibration=x)
            o1 = torch.optim.SGD(plain.parameters(), lr=1e-3, momentum=0.9)
            o2 = torch.optim.SGD(qat.parameters(), lr=1e-3, momentum=0.9)
            for _ in range(3):  # warm-up
                step_time(plain, o1), step_time(qat, o2)
            tp, tq = [], []
            for _ in range(args.steps):
                tp.append(step_time(plain, o1))
                tq.append(step_time(qat, o2))
            p, q = statistics.median(tp), statistics.median(tq)
            rows.append({"model": name, "width": DEFAULT_WIDTH[name], "bits": bits, "act_bits": args.act_bits or 8,
                         "batch": args.batch,
                         "plain_step_ms": round(p * 1e3, 2), "qat_step_ms": round(q * 1e3, 2),
                         "ratio": round(q / p, 3)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"threads": args.threads, "steps": args.steps, "results": rows,
                      "median_ratio": statistics.median(r["ratio"] for r in rows)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
