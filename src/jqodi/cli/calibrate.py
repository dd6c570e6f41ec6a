"""``jqodi calibrate``: micro-benchmark this machine and write its device file."""
from __future__ import annotations

import argparse
import sys

HELP = "measure this machine (layer rooflines, s(q), bandwidth, power) and write its device file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from jqodi.cli import _types as t

    p.add_argument("--out", metavar="FILE", default=None,
                   help="device file to write or update (default: <JQODI_HOME>/devices/host.yaml, "
                        "usable in a scenario as 'device: host')")
    p.add_argument("--quick", action="store_true", help="fewer layers, batches and repeats (≤ 30 s)")
    p.add_argument("--name", default=None, help="device name in the file (default: kept, or 'host')")
    p.add_argument("--power", default="auto", choices=("auto", "nvml", "rapl", "declared"),
                   help="where busy/idle power come from (default auto: NVML, then RAPL, else declared)")
    p.add_argument("--tdp-w", type=t.positive_float, default=None, metavar="W",
                   help="declared busy power (TDP) when no meter reads power")
    p.add_argument("--idle-w", type=t.nonneg_float, default=None, metavar="W", help="declared idle power")
    p.add_argument("--clock", default="cpu", choices=("cpu", "wall"),
                   help="cpu (default): torch on one thread, timed by its CPU time — steady on a busy "
                        "machine; wall: all threads, elapsed time — for a quiet, dedicated machine")
    p.add_argument("--json", metavar="FILE", default=None, help="also save the fit's residuals as JSON")


def run(args: argparse.Namespace) -> int:
    from jqodi.errors import JqodiError

    import math

    from jqodi.core.quant.heap import keep_freed_memory; keep_freed_memory()  # trains here (core/quant/heap.py)
    if args.tdp_w is not None and not (math.isfinite(args.tdp_w) and args.tdp_w > 0):
        raise JqodiError(f"--tdp-w: must be a positive, finite number of watts, got {args.tdp_w}")
    if args.idle_w is not None and not (math.isfinite(args.idle_w) and args.idle_w >= 0):
        raise JqodiError(f"--idle-w: must be a non-negative, finite number of watts, got {args.idle_w}")
    if args.tdp_w is not None and args.idle_w is not None and args.idle_w >= args.tdp_w:
        raise JqodiError(f"--idle-w: must be below --tdp-w ({args.tdp_w:g} W), got {args.idle_w:g}")
    from jqodi.app.calibrate import calibrate_host
    from jqodi.render.report import save_json
    from jqodi.render.tables import format_table

    tty = sys.stderr.isatty()

    def progress(text: str) -> None:
        sys.stderr.write(("\r\x1b[K" if tty else "") + f"calibrate: {text}" + ("" if tty else "\n"))
        sys.stderr.flush()

    res = calibrate_host(args.out, quick=args.quick, name=args.name, power=args.power, tdp_w=args.tdp_w,
                         idle_w=args.idle_w, clock=args.clock, progress=progress)
    if tty:
        sys.stderr.write("\n")
    def num(v, k):
        return "-" if v != v else f"{v * k:.2f}"

    rows = [(r["kind"], r["phase"], r["calls"], f"{100 * r['median_abs_error']:.1f}%",
             f"{100 * r['max_abs_error']:.1f}%", num(r["flops_per_s"], 1e-9), num(r["bytes_per_s"], 1e-9),
             num(r["overhead_s"], 1e6), (f"×{r['scale']:.2f}" if "scale" in r else "")
             + (f", quantizers ×{r['quantizer_scale']:.2f}" if "quantizer_scale" in r else "")) for r in res.residuals]
    print("roofline fit (t = max(flops/F, bytes/B) + c), residuals of the timed calls; last rows:\n"
          "whole training steps (fp32, and QAT with s(q)), after scaling every roofline by the factor shown\n"
          "(and the fake quantizers' by theirs, fitted with s(q) on the QAT steps)")
    print(format_table(["layer", "phase", "calls", "median |err|", "max |err|", "F GFLOP/s", "B GB/s", "c µs",
                        "scale"],
                       rows, indent="  "))
    d = res.device
    print("s(q) (time factor of conv/linear at q bits vs fp32): "
          + ", ".join(f"{q}: {f:.2f}" for q, f in sorted(d.bit_time_factor.items())))
    print(f"v (paper model) {d.flops / 1e9:.2f} GFLOP/s; busy {d.busy_power_w:g} W, idle {d.idle_power_w:g} W "
          f"(power: {d.power}); {res.seconds:.0f} s")
    print(f"wrote {res.path} (use it in a scenario as 'device: {_scenario_ref(res.path)}')")
    if args.json:
        save_json(args.json, {"device": d.model_dump(mode="json"), "path": str(res.path),
                              "residuals": res.residuals, "power": res.power_note, "seconds": res.seconds})
    return 0


def _scenario_ref(path) -> str:
    """How a scenario names the file at ``path``: its library name when the library resolves that
    name to it (``<JQODI_HOME>/devices/host.yaml`` is ``host``), else its path."""
    from pathlib import Path

    from jqodi.core.device_model import library_devices

    p = Path(path).resolve()
    found = library_devices().get(p.stem)
    return p.stem if found is not None and found.resolve() == p else str(path)
