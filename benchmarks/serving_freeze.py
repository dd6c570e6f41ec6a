"""Serving latency of the QAT model as trained vs frozen once at load, side by side in one run.

    PYTHONPATH=src .venv/bin/python benchmarks/serving_freeze.py [--requests N] [--block B] [--out FILE]

For each model (the zoo's CPU widths) and bit-width, one fine-tuned-like QAT model serves
``--requests`` single-sample requests twice: as trained (every request re-runs the weights'
fake quantizers) and frozen by :func:`jqodi.runtime.inference.freeze_for_serving` (weights
quantized once; activation quantizers kept). Both go through the serving loop itself
(:func:`jqodi.runtime.inference.requests_local`, no emulation: the host's own latency), on one
torch thread as the role processes run, alternating blocks of ``--block`` requests so that both
see the same machine load. Before timing, the two answer every request identically (checked).

Prints one JSON object: per (model, bits) the p50/p95 latency (ms, wall) and the CPU time per
request (ms, ``time.process_time``: what a shared machine cannot inflate) of each variant, their
ratios, and the 1-minute load average before and after.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time

import torch

from jqodi.core.quant import prepare_qat
from jqodi.core.training import DEFAULT_WIDTH
from jqodi.core.zoo import build_model
from jqodi.runtime.emulation import ComputeClock
from jqodi.runtime.energy import NullMeter
from jqodi.runtime.inference import freeze_for_serving, requests_local

SHAPE = (1, 28, 28)


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def bench(model_name: str, bits: int, requests: int, block: int) -> dict:
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(requests, *SHAPE, generator=g)
    ys = torch.randint(0, 10, (requests,), generator=g)
    width = DEFAULT_WIDTH.get(model_name, 0.25)
    trained = prepare_qat(build_model(model_name, SHAPE, 10, width, seed=1), bits, None, calibration=xs[:32]).eval()
    frozen = freeze_for_serving(copy.deepcopy(trained))
    with torch.no_grad():
        assert all(torch.equal(trained(xs[i:i + 1]), frozen(xs[i:i + 1])) for i in range(min(20, requests)))
    lat: dict[str, list[float]] = {"trained": [], "frozen": []}
    cpu: dict[str, float] = {"trained": 0.0, "frozen": 0.0}
    for name, m in (("trained", trained), ("frozen", frozen)):  # warm-up
        requests_local(m, xs[:5], ys[:5], ComputeClock(), NullMeter(), 0.0, 1.0)
    for s in range(0, requests, block):
        order = (("trained", trained), ("frozen", frozen)) if (s // block) % 2 == 0 else \
            (("frozen", frozen), ("trained", trained))
        for name, m in order:
            c0 = time.process_time()
            latencies, _, _ = requests_local(m, xs[s:s + block], ys[s:s + block], ComputeClock(), NullMeter(),
                                             0.0, 1.0)
            cpu[name] += time.process_time() - c0
            lat[name] += latencies
    out = {"model": model_name, "width": width, "bits": bits, "requests": requests}
    for name in lat:
        out[name] = {"p50_ms": 1e3 * _pct(lat[name], 0.5), "p95_ms": 1e3 * _pct(lat[name], 0.95),
                     "cpu_per_request_ms": 1e3 * cpu[name] / len(lat[name])}
    out["p50_ratio_frozen_vs_trained"] = out["frozen"]["p50_ms"] / out["trained"]["p50_ms"]
    out["cpu_ratio_frozen_vs_trained"] = out["frozen"]["cpu_per_request_ms"] / out["trained"]["cpu_per_request_ms"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=400, help="requests per variant (default 400)")
    ap.add_argument("--block", type=int, default=20, help="requests per alternating block (default 20)")
    ap.add_argument("--models", default="lenet,resnet20,vgg")
    ap.add_argument("--bits", default="4,8")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    rows = []
    combos = [(m, int(b)) for m in args.models.split(",") for b in args.bits.split(",")]
    for i, (m, b) in enumerate(combos, 1):
        t0 = time.perf_counter()
        rows.append(bench(m, b, args.requests, args.block))
        r = rows[-1]
        print(f"[{i}/{len(combos)}] {m} {b}-bit: p50 {r['trained']['p50_ms']:.3f} → {r['frozen']['p50_ms']:.3f} ms "
              f"(CPU {r['trained']['cpu_per_request_ms']:.3f} → {r['frozen']['cpu_per_request_ms']:.3f} ms), "
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    result = {"command": "benchmarks/serving_freeze.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "torch_threads": 1, "load_avg_1min": {"before": load_before, "after": os.getloadavg()[0]},
              "median_p50_ratio": statistics.median(r["p50_ratio_frozen_vs_trained"] for r in rows),
              "median_cpu_ratio": statistics.median(r["cpu_ratio_frozen_vs_trained"] for r in rows),
              "rows": rows}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
