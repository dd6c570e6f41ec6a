"""Epoch times of devices that share an edge server: measured vs the capacity model (target ≤ 15 %).

Runs the fleet demo scenario (examples/fleet-demo.yaml: Pi 5 devices, Jetson-class edges, LeNet
x0.25 on Fashion-MNIST) with ``k`` identical devices all training on edge ``jetson-a`` at one cut,
as separate processes over gloo (1 cloud + 1 edge + k end devices) with the edge's compute shared
by processor sharing. For every device it compares the measured epoch time (epochs 2.. of each
device, wall-clock / dilation: the first epoch starts staggered as the devices join) with

* ``predicted_s``: the capacity model's shared epoch time (:func:`jqodi.core.fleet.processor_sharing_epoch_s`)
  from the cost model's stand-alone epoch and its edge-compute term — the planner's whole prediction;
* ``calibrated_s``: the same model fed the *measured* stand-alone epoch (the k = 1 run at that cut)
  — the capacity model alone, without the cost model's own error.

Prints JSON (per configuration and a summary); ``--quick`` runs fewer configurations.

    .venv/bin/python benchmarks/fleet_runtime.py > benchmarks/results/fleet_runtime.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_config(sc, k: int, cut: int, epochs: int, dilation) -> dict:
    from jqodi.app.fleet_run import FleetRunOptions, fleet_job_from_plan
    from jqodi.planner.fleet import FleetSolution
    from jqodi.core.instance import ScheduleEntry, Solution
    from jqodi.runtime.fleet_launch import run_fleet

    plans = {f"sd-{i + 1}": Solution("feasible", "bench", "lenet", 4, (ScheduleEntry("jetson-a", cut, epochs),),
                                     0.0, 0.0) for i in range(k)}
    sol = FleetSolution("bench", "feasible", plans, 0.0, {}, {})
    sc_k = sc.model_copy(update={"end_devices": [d.model_copy(update={"name": n}) for d, n in
                                                 zip([sc.end_devices[0]] * k, plans)]})
    opts = FleetRunOptions(random_init=True, trace_store=None, dilation=dilation, timeout_s=60.0,
                           startup_timeout_s=300.0)
    fleet, predicted = fleet_job_from_plan(sc_k, sol, opts)
    with tempfile.TemporaryDirectory() as wd:
        t0 = time.perf_counter()
        rec = run_fleet(fleet, wd, say=lambda s: None, predicted=predicted, wall_limit_s=900)
        wall = time.perf_counter() - t0
    rows = []
    for name, d in rec.devices.items():
        eps = rec.records[name]["epochs"]
        measured = [e["time_s"] for e in eps[1:]] or [e["time_s"] for e in eps]
        overrun = max((sum(e["overrun_s"].values()) for e in eps), default=0.0)
        rows.append({"device": name, "status": d["status"], "measured_epoch_s": statistics.mean(measured),
                     "epochs_measured": len(measured), "predicted_s": d["predicted"]["shared_epoch_s"],
                     "alone_predicted_s": d["predicted"]["alone_epoch_s"],
                     "edge_predicted_s": d["predicted"]["edge_epoch_s"], "max_overrun_s": overrun})
    return {"devices": k, "cut": cut, "dilation": rec.dilation, "wall_s": wall, "rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train-size", type=int, default=128)
    ap.add_argument("--val-size", type=int, default=64)
    ap.add_argument("--dilation", default="auto")
    ap.add_argument("--quick", action="store_true", help="k = 1 and 4 at cut 1 only")
    args = ap.parse_args(argv)

    from jqodi.app.fleet_run import FleetRunOptions, load_fleet_for_run
    from jqodi.core.fleet import processor_sharing_epoch_s

    sc = load_fleet_for_run(ROOT / "examples" / "fleet-demo.yaml",
                            FleetRunOptions(train_size=args.train_size, val_size=args.val_size))
    configs = [(1, 1), (4, 1)] if args.quick else [(1, 1), (2, 1), (4, 1), (6, 1), (1, 3), (6, 3)]
    dil = args.dilation if args.dilation == "auto" else float(args.dilation)
    results, solo = [], {}
    for k, cut in configs:
        print(f"fleet_runtime: {k} device(s) at cut {cut} ...", file=sys.stderr, flush=True)
        r = run_config(sc, k, cut, args.epochs, dil)
        if k == 1:
            solo[cut] = r["rows"][0]["measured_epoch_s"]
        for row in r["rows"]:
            row["error"] = row["measured_epoch_s"] / row["predicted_s"] - 1
            if cut in solo:
                alone = [solo[cut]] * len(r["rows"])
                edge = [x["edge_predicted_s"] for x in r["rows"]]
                row["calibrated_s"] = processor_sharing_epoch_s(alone, edge)[0]
                row["calibrated_error"] = row["measured_epoch_s"] / row["calibrated_s"] - 1
        results.append(r)
        print(json.dumps({"devices": k, "cut": cut, "measured": [round(x["measured_epoch_s"], 3) for x in r["rows"]],
                          "predicted": round(r["rows"][0]["predicted_s"], 3)}), file=sys.stderr, flush=True)
    shared = [row for r in results if r["devices"] > 1 for row in r["rows"]]
    errs = [abs(x["error"]) for x in shared]
    cal = [abs(x["calibrated_error"]) for x in shared if "calibrated_error" in x]
    summary = {"target": "measured epoch time of devices sharing an edge within 15 % of the capacity model",
               "shared_devices": len(shared),
               "max_abs_error": max(errs) if errs else None, "median_abs_error": statistics.median(errs) if errs else None,
               "max_abs_calibrated_error": max(cal) if cal else None,
               "median_abs_calibrated_error": statistics.median(cal) if cal else None,
               "met": bool(errs) and max(errs) <= 0.15,
               "met_calibrated": bool(cal) and max(cal) <= 0.15}
    print(json.dumps({"benchmark": "fleet_runtime", "host": platform.node(), "python": platform.python_version(),
                      "args": vars(args), "configs": results, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
