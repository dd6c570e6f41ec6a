"""``jqodi meters``: which energy meters work on this machine, and one window read with one."""
from __future__ import annotations

import argparse
import time

HELP = "list the energy meters available here and read one short window"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from jqodi.cli import _types as t
    from jqodi.cli._choices import RegistryChoices

    p.add_argument("--kind", default="auto", metavar="KIND",
                   choices=RegistryChoices("jqodi.runtime.energy:METERS", before=("auto",)),
                   help="meter to read the window with: %(choices)s (default: auto = nvml → rapl → model → null)")
    p.add_argument("--busy-power-w", type=t.positive_float, default=None, metavar="W",
                   help="busy power for the model meter, in watts (enables it)")
    p.add_argument("--gpu-index", type=t.nonneg_int, default=0, help="GPU the nvml meter reads (default 0)")
    p.add_argument("--window-ms", type=t.positive_float, default=300.0,
                   help="length of the sample window in milliseconds (default 300)")
    p.add_argument("--idle", action="store_true",
                   help="sleep during the window instead of keeping one CPU core busy")
    p.add_argument("--json", metavar="FILE", default=None, help="also save the result as JSON")


def run(args: argparse.Namespace) -> int:
    from jqodi.render.report import format_table, save_json
    from jqodi.runtime.energy import available_meters, make_meter

    infos = available_meters(busy_power_w=args.busy_power_w, gpu_index=args.gpu_index)
    print(format_table([{"meter": i.kind, "available": i.available, "detail": i.detail}
                        for i in infos], ["meter", "available", "detail"]))

    meter = make_meter(args.kind, busy_power_w=args.busy_power_w, gpu_index=args.gpu_index)
    try:
        window_s = args.window_ms / 1e3
        meter.begin_window("jqodi-meters")
        deadline = time.monotonic() + window_s
        if args.idle:
            time.sleep(window_s)
        else:
            x = 0
            while time.monotonic() < deadline:  # keep one core busy: the window has work in it
                x += 1
        m = meter.end_window("jqodi-meters")
    finally:
        meter.close()
    print(f"\npicked: {meter.name} — {meter.description}")
    print(f"window ({'idle' if args.idle else 'one core busy'}): {m.time_s * 1e3:.1f} ms, "
          f"{m.energy_j:.3f} J, {m.avg_power_w:.2f} W average")
    if args.json:
        save_json(args.json, {"meters": infos, "picked": meter.name,
                              "description": meter.description,
                              "load": "idle" if args.idle else "busy", "window": m})
    return 0
