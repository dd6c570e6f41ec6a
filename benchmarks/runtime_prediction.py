"""Cost-model time prediction vs measured time per epoch, with the testbed emulated (target ≤ 15 %).

Runs the packaged Data 1 scenario at CPU scale (Fashion-MNIST, CPU widths, fewer samples) as
separate cloud/edge/end processes over gloo on loopback, with a schedule that visits every
(edge, cut) option of the planned model for ``--epochs`` epochs each, in dilated time
(``--dilation auto`` by default: :func:`jqodi.runtime.plan.dilation_choice`, whose two rules and
per-option figures the output keeps). Prints JSON: per epoch the predicted and measured
(wall-clock / dilation) time and energy, the relative errors, and a summary.

``--compare`` runs the schedule twice in one invocation, from one timing of the host: first at the
epoch rule alone (the automatic dilation before the overrun rule), then at the automatic dilation
(the larger of both), so both see about the same load; ``runs`` holds both.

    .venv/bin/python benchmarks/runtime_prediction.py > benchmarks/results/runtime_prediction.json
    .venv/bin/python benchmarks/runtime_prediction.py --compare > benchmarks/results/runtime_prediction_compare.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time


def run_once(sc, sol, dilation: float, label: str) -> dict:
    """One run of ``sol`` at ``dilation``: per-epoch rows and the summary."""
    from jqodi.runtime.launch import run_plan

    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as wd:
        rec = run_plan(sc, sol, workdir=wd, emulate=True, dilation=dilation, pretrained={"source": "random"},
                       say=lambda s: print(s, file=sys.stderr, flush=True))
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    rows = []
    for e in rec.epochs:
        p = e["predicted"]
        rows.append({"epoch": e["epoch"], "edge": e["edge"], "cut": e["cut"],
                     "predicted_s": p["time_s"], "measured_s": e["time_s"], "raw_s": e["raw_time_s"],
                     "time_error": (e["time_s"] - p["time_s"]) / p["time_s"],
                     "predicted_j": p["energy_j"], "measured_j": e["energy_j"],
                     "energy_error": (e["energy_j"] - p["energy_j"]) / p["energy_j"],
                     "overrun_s": e.get("overrun_s"),
                     "phases_predicted_s": p["phases_s"], "phases_measured_s": e["phases_s"]})
    errs = [abs(r["time_error"]) for r in rows]
    return {"label": label, "dilation": rec.dilation, "epochs": rows, "wall_s": time.perf_counter() - t0,
            "cpu_s_role_processes": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
            "load_average_1min": [load0, os.getloadavg()[0]],
            "summary": {"epochs": len(rows), "mean_abs_time_error": statistics.mean(errs),
                        "median_abs_time_error": statistics.median(errs),
                        "max_abs_time_error": max(errs),
                        "epochs_within_15pct": sum(e <= 0.15 for e in errs),
                        "cut1_mean_abs_time_error": statistics.mean(
                            [abs(r["time_error"]) for r in rows if r["cut"] == 1] or [float("nan")]),
                        "mean_abs_energy_error": statistics.mean(abs(r["energy_error"]) for r in rows),
                        "target": "time error <= 15 % per epoch"}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default=None)
    ap.add_argument("--model", default=None, help="default: the JQODI plan's model")
    ap.add_argument("--bits", type=int, default=None, help="default: the JQODI plan's bits")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per (edge, cut)")
    ap.add_argument("--train-size", type=int, default=512)
    ap.add_argument("--val-size", type=int, default=128)
    ap.add_argument("--dilation", default="auto")
    ap.add_argument("--compare", action="store_true",
                    help="run at the epoch rule alone, then at the automatic dilation (one timing of the host)")
    args = ap.parse_args(argv)

    from jqodi.core.costs import compile_instance
    from jqodi.planner import ScheduleEntry, Solution, solve
    from jqodi.runtime.plan import cpu_scale, dilation_choice
    from jqodi.core.scenario import default_scenario_path, load_scenario

    sc = cpu_scale(load_scenario(args.scenario or default_scenario_path()),
                   train_size=args.train_size, val_size=args.val_size)
    plan = solve(compile_instance(sc), "jqodi")
    model, bits = args.model or plan.model, args.bits or plan.bits
    from jqodi.core.profile import profile_named_model

    cuts = profile_named_model(model, sc.data.input_shape, sc.data.num_classes, sc.model_entry(model).width).cuts
    sched = tuple(ScheduleEntry(e.name, c, args.epochs) for e in sc.edges for c in cuts)
    sol = Solution("feasible", "benchmark", model, bits, sched)
    choice = None
    if args.dilation == "auto" or args.compare:
        choice = dilation_choice(sc, sol)
        print(f"dilation: epoch rule ×{choice['epoch_rule']:.3g}, overrun rule ×{choice['overrun_rule']:.3g} "
              f"→ ×{choice['dilation']:.3g} (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    if args.compare:
        plan_runs = [(choice["epoch_rule"], "epoch rule alone (before)"), (choice["dilation"], "auto (both rules)")]
    else:
        plan_runs = [(choice["dilation"] if args.dilation == "auto" else float(args.dilation), f"--dilation {args.dilation}")]
    runs = [run_once(sc, sol, d, label) for d, label in plan_runs]
    out = {"benchmark": "runtime_prediction", "scenario": sc.name, "model": model, "bits": bits,
           "width": sc.model_entry(model).width, "dataset": sc.data.dataset,
           "train_size": sc.data.train_size, "val_size": sc.data.val_size, "host": platform.node(),
           "dilation_choice": choice}
    if args.compare:
        out["runs"] = runs
    else:
        out.update(runs[0])
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
