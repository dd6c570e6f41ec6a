"""Cost model vs reality on this host: predicted and measured epoch and per-phase compute time.

With this host as both the end device and the edge server (no emulation, no time dilation),
for LeNet (width 1), ResNet20 (width 0.25) and VGG (width 0.125) × 3 cuts × 2 bit-widths, one
split-learning epoch is run in this process exactly as the runtime's roles do it — QAT model,
end part forward, edge part forward + loss + backward, the cut gradient back through the end
part, Adam steps on both parts, then validation forward in batches of 500 — and each part's
time is measured (median of ``--repeats`` epochs). Three predictions of the same epochs, side
by side in the same run:

* ``spec_sheet``: the single-number device (v = peak × utilization, the form the packaged
  scenarios use): this CPU's peak (cores × clock × FLOP/cycle) × 10 %, Eq. (7) D/v;
* ``one_number``: Eq. (7) D/v with v = the calibrated file's ``flops`` (one fitted number);
* ``calibrated``: the device file's per-layer rooflines, s(q) and quantizers (extended model),
  with its per-model composition ``calibration.model_scale`` (each model's fp32 training step
  and validation forward as calibrate timed them ÷ their layers' sums: ``train`` and ``eval``,
  calibrate's own timings, never these epochs);
* ``calibrated_no_scale``: the same file without ``model_scale`` (one calibration, two
  predictions; likewise ``calibrated_quick…_no_scale`` for each ``--also-quick`` file).

Times are per-thread CPU seconds with torch on one thread by default (``--clock cpu``, the
same clock ``jqodi calibrate`` fits with): on a shared machine the wall clock measures the
other users. ``--clock wall`` uses elapsed time and all threads. The wall time of every epoch is
reported too, with the load average. Transfers are not measured (one process, no network).
QAT runs its fake quantizers as the runtime does: the compiled kernel of jqodi.core.quant.kernel
where it is available (``quant_kernel`` in the JSON; ``JQODI_QUANT_KERNEL=0`` for the PyTorch path).
Target (issue 10): calibrated median |error| ≤ 10 %, max ≤ 25 %.

    PYTHONPATH=src .venv/bin/python benchmarks/cost_model_accuracy.py [--also-quick [--quick-runs N]] > benchmarks/results/cost_model_accuracy.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time

CONFIGS = (("lenet", 1.0), ("resnet20", 0.25), ("vgg", 0.125))


def _cpu_peak_flops() -> tuple[float, str]:
    """cores × clock × FP32 FLOP/cycle (2 FMA units × vector lanes × 2) from /proc/cpuinfo."""
    mhz, flags = 2000.0, ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz") and mhz == 2000.0:
                    mhz = float(line.split(":")[1])
                if line.startswith("flags") and not flags:
                    flags = line
    except OSError:
        pass
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    per_cycle = 2 * lanes * 2
    cores = os.cpu_count() or 1
    return cores * mhz * 1e6 * per_cycle, f"{cores} cores × {mhz:.0f} MHz × {per_cycle} FLOP/cycle"


def _scenario(device_ref: str | None, flops: float | None, busy_w: float, n_train: int, n_val: int,
              batch: int, model: str, width: float, bits: list[int]):
    from jqodi.core.scenario import parse_scenario

    dev = {"device": device_ref} if device_ref else {"flops": flops, "busy_power_w": busy_w}
    link = {"cloud_link": {"rate_bps": 1e9, "power_w": 1.0},
            "end_link": {"bandwidth_hz": 80e6, "snr_db": 25, "tx_power_w": 1.0}}
    return parse_scenario({
        "name": "host", "deadline_s": 1e6, "target_loss": 1.0, "cost_model": "extended",
        "data": {"train_size": n_train, "val_size": n_val, "input_shape": [3, 32, 32], "num_classes": 10},
        "models": [{"name": model, "width": width}], "bits": bits,
        "cloud": {"name": "cloud", "flops": 1e12, "busy_power_w": 100},
        "edges": [{"name": "edge", **dev, **link}], "end_device": {"name": "end", **dev},
        "training": {"batch_size": batch}}, "benchmark")


def measure_epoch(model_name: str, width: float, bits: int, cut: int, n_train: int, n_val: int, batch: int,
                  clock, seed: int = 0) -> dict:
    """One split-learning epoch in-process; seconds per part on ``clock`` and on the wall."""
    import torch
    import torch.nn.functional as F

    from jqodi.core.quant import prepare_qat
    from jqodi.core.zoo import build_model

    torch.manual_seed(seed)
    model = build_model(model_name, (3, 32, 32), 10, width, seed=seed)
    x = torch.randn(n_train, 3, 32, 32)
    y = torch.randint(0, 10, (n_train,))
    xv = torch.randn(n_val, 3, 32, 32)
    yv = torch.randint(0, 10, (n_val,))
    if bits < 32:
        prepare_qat(model, bits, calibration=x[:batch])
    end = torch.nn.Sequential(*model.blocks[:cut])
    edge = torch.nn.Sequential(*model.blocks[cut:])
    opt_end = torch.optim.Adam(end.parameters(), lr=1e-4)
    opt_edge = torch.optim.Adam(edge.parameters(), lr=1e-4)
    t = {"end": 0.0, "edge": 0.0}
    w0 = time.perf_counter()
    end.train()
    edge.train()
    for s in range(0, n_train, batch):
        xb, yb = x[s:s + batch], y[s:s + batch]
        c0 = clock()
        a = end(xb)
        c1 = clock()
        a_in = a.detach().requires_grad_(True)
        loss = F.cross_entropy(edge(a_in), yb)
        opt_edge.zero_grad(set_to_none=True)
        loss.backward()
        opt_edge.step()
        c2 = clock()
        opt_end.zero_grad(set_to_none=True)
        a.backward(a_in.grad)
        opt_end.step()
        c3 = clock()
        t["end"] += (c1 - c0) + (c3 - c2)
        t["edge"] += c2 - c1
    end.eval()
    edge.eval()
    with torch.no_grad():
        for s in range(0, n_val, 500):
            c0 = clock()
            a = end(xv[s:s + 500])
            c1 = clock()
            F.cross_entropy(edge(a), yv[s:s + 500])
            c2 = clock()
            t["end"] += c1 - c0
            t["edge"] += c2 - c1
    return {"end_s": t["end"], "edge_s": t["edge"], "wall_s": time.perf_counter() - w0}


def main(argv=None) -> int:
    from jqodi.core.quant.heap import keep_freed_memory; keep_freed_memory()  # trains here (core/quant/heap.py)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device-file", default=None, help="use this calibrated file (default: calibrate now)")
    ap.add_argument("--quick-calibration", action="store_true", help="calibrate with --quick")
    ap.add_argument("--also-quick", action="store_true",
                    help="also calibrate with --quick (after the default) and predict with that file too "
                         "(`calibrated_quick`, beside `calibrated`, on the same measured epochs)")
    ap.add_argument("--quick-runs", type=int, default=1, metavar="N",
                    help="with --also-quick: calibrate with --quick N times (`calibrated_quick`, then "
                         "`calibrated_quick2`, …), to show how much one quick file varies from run to run")
    ap.add_argument("--clock", default="cpu", choices=("cpu", "wall"))
    ap.add_argument("--train-size", type=int, default=512)
    ap.add_argument("--val-size", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bits", default="4,8")
    args = ap.parse_args(argv)

    import torch

    from jqodi.core.costs import cost_table
    from jqodi.core.device_model import dump_device_file, load_device_file
    from jqodi.core.profile import profile_named_model
    from jqodi.core.quant import kernel
    from jqodi.runtime.calibration import quantizer_path

    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    say(f"QAT quantizers here: {kernel.status()} (JQODI_QUANT_KERNEL=0: the PyTorch path)")
    load0 = os.getloadavg()
    wall0 = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="jqodi-accuracy-")
    if args.device_file:
        dev_path = args.device_file
    else:
        from jqodi.app.calibrate import calibrate_host

        dev_path = os.path.join(tmp, "host.yaml")
        res = calibrate_host(dev_path, quick=args.quick_calibration, power="declared", clock=args.clock,
                             progress=lambda s: None, say=say)
        say(f"calibrated in {res.seconds:.0f} s → {dev_path}")
    quick_paths, quick_cals = {}, []
    if args.also_quick:
        from jqodi.app.calibrate import calibrate_host

        for i in range(max(1, args.quick_runs)):
            label = "calibrated_quick" + (str(i + 1) if i else "")
            quick_paths[label] = os.path.join(tmp, f"host-quick{i + 1}.yaml")
            res = calibrate_host(quick_paths[label], quick=True, power="declared", clock=args.clock,
                                 progress=lambda s: None, say=say)
            steps = [r for r in res.residuals if r["kind"] == "training step"]
            quick_cals.append({"label": label, "seconds": round(res.seconds, 1),
                               **{k: res.device.calibration.get(k) for k in
                                  ("cpu_seconds", "stage_cpu_seconds", "load_average")},
                               "scale": steps[0].get("scale") if steps else None,
                               "drift": steps[0].get("drift") if steps else None,
                               "quantizer_scale": next((r["quantizer_scale"] for r in steps if "quantizer_scale" in r),
                                                       None),
                               "quant_kernel": res.device.calibration.get("quant_kernel"),
                               "model_scale": res.device.calibration.get("model_scale"),
                               "bit_time_factor": dict(res.device.bit_time_factor)})
            say(f"quick calibration {i + 1} in {res.seconds:.0f} s → {quick_paths[label]}")
    quick_path = quick_paths.get("calibrated_quick")
    quick_cal = quick_cals[0] if quick_cals else None
    dev = load_device_file(dev_path)
    files = {"calibrated": dev_path, **quick_paths}
    for label, pth in list(files.items()):  # the same file without its per-model composition
        d = load_device_file(pth)
        cal_ = {k: v for k, v in (d.calibration or {}).items() if k != "model_scale"}
        files[f"{label}_no_scale"] = dump_device_file(d.model_copy(update={"calibration": cal_}),
                                                      os.path.join(tmp, f"{label}-no-scale.yaml"))
    peak, peak_how = _cpu_peak_flops()
    bits = [int(b) for b in args.bits.split(",")]
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    threads = torch.get_num_threads()
    if args.clock == "cpu":
        torch.set_num_threads(1)

    rows = []
    for model, width in CONFIGS:
        prof = profile_named_model(model, (3, 32, 32), 10, width)
        n = prof.num_blocks
        cuts = sorted({1, max(1, n // 2), n - 1})
        preds = {}
        for label, ref, v in (("spec_sheet", None, 0.10 * peak), ("one_number", None, dev.flops)) + tuple(
                (lb, str(pth), None) for lb, pth in files.items()):
            sc = _scenario(ref, v, dev.busy_power_w, args.train_size, args.val_size, args.batch_size,
                           model, width, bits)
            preds[label] = cost_table(sc, model, prof)
        for q in bits:
            for cut in cuts:
                ms = [measure_epoch(model, width, q, cut, args.train_size, args.val_size, args.batch_size, clock, seed=r)
                      for r in range(args.repeats)]
                meas = {k: statistics.median(m[k] for m in ms) for k in ("end_s", "edge_s", "wall_s")}
                row = {"model": model, "width": width, "bits": q, "cut": cut,
                       "measured": {"end_s": meas["end_s"], "edge_s": meas["edge_s"],
                                    "epoch_s": meas["end_s"] + meas["edge_s"], "wall_s": meas["wall_s"]}}
                for label, ct in preds.items():
                    ec = ct.epoch(q, cut, "edge")
                    p = {"end_s": ec.end_compute_s, "edge_s": ec.edge_compute_s,
                         "epoch_s": ec.end_compute_s + ec.edge_compute_s}
                    row[label] = {**p, **{f"{k[:-2]}_error": p[k] / row["measured"][k] - 1 for k in p}}
                rows.append(row)
                say(f"{model}×{width:g} {q}-bit cut {cut}: measured {row['measured']['epoch_s']:.2f} s, "
                    f"calibrated {row['calibrated']['epoch_s']:.2f} s ({100 * row['calibrated']['epoch_error']:+.0f}%, "
                    f"no scale {100 * row['calibrated_no_scale']['epoch_error']:+.0f}%), "
                    + (f"quick {100 * row['calibrated_quick']['epoch_error']:+.0f}%, " if quick_path else "") +
                    f"one number {100 * row['one_number']['epoch_error']:+.0f}%, "
                    f"spec sheet {100 * row['spec_sheet']['epoch_error']:+.0f}%")
    torch.set_num_threads(threads)

    def summary(label: str) -> dict:
        out = {}
        for what in ("epoch", "end", "edge"):
            errs = sorted(abs(r[label][f"{what}_error"]) for r in rows)
            out[what] = {"median_abs_error": statistics.median(errs), "max_abs_error": errs[-1]}
        return out

    summaries = {label: summary(label) for label in ("spec_sheet", "one_number", *files)}
    target = {"median_abs_error": 0.10, "max_abs_error": 0.25}

    def met(label: str) -> bool:
        return all(summaries[label]["epoch"][k] <= v for k, v in target.items())

    result = {
        "benchmark": "cost_model_accuracy", "host": platform.node(), "cpus": os.cpu_count(),
        "clock": args.clock, "torch_threads": 1 if args.clock == "cpu" else threads,
        "load_average_start": [round(v, 2) for v in load0],
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "process_cpu_seconds": round(time.process_time(), 1), "wall_seconds": round(time.perf_counter() - wall0, 1),
        "train_size": args.train_size, "val_size": args.val_size, "batch_size": args.batch_size,
        "repeats": args.repeats,
        "quant_kernel": quantizer_path(), "quant_kernel_status": kernel.status(),  # how QAT quantized here
        "device_file": dev.model_dump(mode="json", exclude_none=True),
        "spec_sheet_peak": {"flops": peak, "how": peak_how, "utilization": 0.10},
        "summary": summaries,
        "quick_calibration": quick_cal, "quick_calibrations": quick_cals,
        "quick_device_file": load_device_file(quick_path).model_dump(mode="json", exclude_none=True) if quick_path else None,
        "target": target, "target_met": met("calibrated"), "target_met_by": {label: met(label) for label in files},
        "rows": rows,
    }
    json.dump(result, sys.stdout, indent=2, default=lambda o: None if isinstance(o, float) and not math.isfinite(o) else str(o))
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
