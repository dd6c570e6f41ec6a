"""Closed loop at planner level: open loop, static and re-planning runs against the hindsight optimum.

    .venv/bin/python benchmarks/closed_loop.py [--runs 200] [--seed 0] [--store DB | --curves FILE]
                                               [--traces DIR] [--worse-link LO] [--out FILE]
    .venv/bin/python benchmarks/closed_loop.py --prepare      # (re)compile the testbed table (torch, once)

No torch in the simulation. Inputs:

* **Testbed**: the paper's Data 1 testbed (``examples/paper-data1.yaml``: Pi 5 SD, RTX 3090 /
  RTX 4090 ESs, A100 CS) as a phase-resolved instance (:class:`jqodi.app.controller.PhaseTable`),
  compiled once with ``--prepare`` (which profiles the models, with torch) into
  ``benchmarks/results/closed_loop_testbed.json``.
* **True learning curves**: real fine-tuning runs (validation loss per epoch) of LeNet (CPU width
  0.25, Fashion-MNIST Data 2 analog, 1000 + 300 images) at 2, 4, 6 and 8 bits, several seeds,
  read from a trace store (``--store``; made with ``jqodi finetune --model lenet --bits B
  --epochs 16 --seed S --data data2 --train-size 1000 --val-size 300``); the curves used are
  written to ``benchmarks/results/closed_loop_curves.json`` and ``--curves`` reads them back.
  The simulated candidates are the testbed's LeNet at those bit-widths, each with the curve of
  a random run of its bit-width; its K estimate before the run is the probe estimator
  (:func:`jqodi.learning.curves.estimate_from_probe`, 10 bootstrap refits) on the first 5 epochs
  of *another* run of the same bit-width (as ``make demo`` does with its probe runs).
* **Real bandwidth traces** (``--traces``, default ``../shared/traces`` or ``$JQODI_TRACES_DIR``:
  Norwegian 3G commutes and FCC broadband): the SD's link to both edges follows one trace from a
  random offset, its shape kept (outages included) and its mean rescaled to the planned rate
  (the plan knows the average, not the fluctuations); ``--worse-link 0.3`` makes the mean the
  planned rate × U(0.3, 1) instead (the link worse than planned by a random factor).

Per run (seeded): a target L_max in [1, 1.25] × the highest final loss of the curves (every
true curve reaches it within its 16 recorded epochs, so every candidate's true K is known), a deadline T_max = U(1, 2) × the fastest
K^rob-epoch plan of any candidate (the initial plan is always feasible), with probability 0.6
one edge server leaving at U(0.1, 0.8)·T_max and, with probability 0.7, returning after
U(0.1, 0.5)·T_max; with probability 0.4 the SD slowing by U(1.1, 1.6)× at U(0, 0.6)·T_max.

Policies (:func:`jqodi.app.simulate.simulate_run`): ``open-loop`` (the plan followed blindly,
all its K^rob epochs: the runtime before this work), ``static`` (the same plan, stopping at the
target), ``replan`` (the closed loop: early stop, online estimates, re-planning after every
epoch and on edge events, 3 % anti-churn threshold, a time reserve of ``--reserve`` epochs,
hedging between K^exp and K^rob when K^rob no longer fits, switching model/bits when that pays
including the new candidate's quantization and a fresh start), ``replan-before`` (the
controller as first built: no reserve, K^exp at once when K^rob does not fit; switching
allowed), ``replan-stay`` (``replan`` without switching: what the emulated runtime does, which
trains one model per run).

Two references, both knowing the future: ``hindsight`` (the minimum-energy run knowing the
link trace, the edge and slowdown events and the true K of *every* candidate:
:func:`hindsight_optimum`) and ``hindsight-plan`` (the same, restricted to the candidate the
plan chose: it knows the trace, the events and the true curve of the model being trained,
which is what a closed loop can learn; which candidate to train is decided before the run by
the K estimates, not by the loop).
Figures per reference: share of runs that reach L_max by T_max among those where the reference
can; energy over the reference (median, p95) on runs where both reach it in time; re-plans per
run; re-plan time.
A separate section times re-plans on the full paper-size testbed (3 models × 4 bits × 2 ESs ×
4–5 cuts, switching allowed). Prints JSON; writes it to ``--out``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from jqodi.app.controller import ClosedLoopController, Observation, PhaseTable
from jqodi.app.controller.loop import DEFAULT_RESERVE_EPOCHS
from jqodi.app.simulate import World, hindsight_optimum, simulate_run, true_epochs
from jqodi.core.instance import EpochEstimates, PlanningInstance
from jqodi.core.linktrace import load_rate_trace
from jqodi.core.timeline import Timeline, TimedTrace, parse_timeline_events, resolve_timeline
from jqodi.learning.curves import estimate_from_probe
from jqodi.planner import solve

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
TESTBED = RESULTS / "closed_loop_testbed.json"
CURVES = RESULTS / "closed_loop_curves.json"
PROBE_EPOCHS = 5
#: bootstrap refits of each prior probe estimate (the estimator's default is 50; 10 keeps a
#: 200-run benchmark in minutes on a shared 2-core VM; K^rob's floors ⌈1.4·K^exp⌉ and K^exp + 1 still apply)
PROBE_BOOT = 10
TRACES = Path(os.environ.get("JQODI_TRACES_DIR", ROOT.parent / "shared" / "traces"))


# --------------------------------------------------------------------------- inputs
def prepare(scenario: Path) -> dict:
    """Compile the testbed into a phase table (needs torch for the model profiles)."""
    from jqodi.app.controller import phase_table
    from jqodi.core.scenario import load_scenario
    from jqodi.core.system import System

    sc = load_scenario(scenario)
    table = phase_table(sc)
    sy = System.from_scenario(sc)
    nominal = {}
    for i, e in enumerate(sc.edges):
        nominal[f"edge:{e.name}|end"] = float(sy.edge_end_rate_bps[i])
        nominal[f"cloud|edge:{e.name}"] = float(sy.cloud_edge_rate_bps[i])
    return {"scenario": str(scenario.relative_to(ROOT)), "cloud": sc.cloud.name, "end": sc.end_device.name,
            "edges": [e.name for e in sc.edges], "nominal_bps": nominal, "table": table.to_dict()}


def curves_from_store(path: str) -> list[dict]:
    from jqodi.core.traces import TraceStore

    with TraceStore(path) as store:
        runs = [r for r in store.runs(model="lenet", data_name="data2")
                if r.source != "probe" and len(r.epochs) >= 10]
    return [{"run_id": r.id, "model": r.model, "bits": r.bits, "seed": r.seed, "width": r.width,
             "train_size": r.train_size, "val_size": r.val_size, "val_losses": r.val_losses} for r in runs]


def trace_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.glob("*/*") if f.is_file() and f.suffix != ".md")


# --------------------------------------------------------------------------- one run's world
def target_for(rng, by_bits: dict[int, list[list[float]]]) -> float:
    """L_max in [1, 1.25] × the highest final loss of the runs: every true curve reaches it within
    its recorded epochs, so every candidate's true K is known (the recorded curves end after 16
    epochs; what a run would do beyond them is not known)."""
    worst = max(c[-1] for cs in by_bits.values() for c in cs)
    return float(rng.uniform(worst, 1.25 * worst))


def make_run(rng, testbed: dict, by_bits: dict[int, list[list[float]]], traces: list[Path],
             worse_link: float = 1.0):
    base = PhaseTable.from_dict(testbed["table"])
    target = target_for(rng, by_bits)
    truth, cands = {}, []
    for c in base.instance.candidates:
        pool = by_bits.get(c.bits) if c.model == "lenet" else None
        if not pool:
            continue
        i = int(rng.integers(len(pool)))
        j = int(rng.integers(len(pool) - 1)) if len(pool) > 1 else 0
        j = j + (j >= i) if len(pool) > 1 else i  # the probe comes from another run
        probe = estimate_from_probe(pool[j][:PROBE_EPOCHS], target, seed=int(rng.integers(1 << 30)),
                                    n_boot=PROBE_BOOT)
        truth[c.key] = pool[i]
        cands.append(dataclasses.replace(c, epochs=EpochEstimates(probe.expected, probe.robust)))
    inst0 = PlanningInstance(base.instance.deadline_s, target, tuple(cands), dict(base.instance.meta))
    # deadline: U(1, 2) × the fastest robust plan of any candidate
    fastest = [c.quantize_time_s + c.epochs.robust * min(o.epoch_time_s for o in c.options)
               for c in cands if c.epochs.robust is not None and c.options]
    if not fastest:
        return None
    deadline = float(rng.uniform(1.0, 2.0) * min(fastest))
    inst = PlanningInstance(deadline, target, tuple(cands), {k: v for k, v in inst0.meta.items()
                                                             if k != "search_bits"})
    table = PhaseTable(inst, {c.key: base.terms_s[c.key] for c in cands}, {c.key: base.terms_j[c.key] for c in cands})
    # what happens: the SD's link follows a real trace; an edge may leave; the SD may slow down
    events, info = [], {"deadline_s": deadline, "target_loss": target}
    if rng.random() < 0.6:
        edge = testbed["edges"][int(rng.integers(len(testbed["edges"])))]
        leave = float(rng.uniform(0.1, 0.8) * deadline)
        events.append({"at_s": leave, "event": "edge_leaves", "edge": edge})
        info["edge_leaves"] = [edge, leave]
        if rng.random() < 0.7:
            back = leave + float(rng.uniform(0.1, 0.5) * deadline)
            events.append({"at_s": back, "event": "edge_returns", "edge": edge})
            info["edge_returns"] = back
    if rng.random() < 0.4:
        f, at = float(rng.uniform(1.1, 1.6)), float(rng.uniform(0, 0.6) * deadline)
        events.append({"at_s": at, "event": "slowdown", "device": "end", "factor": f})
        info["slowdown"] = [f, at]
    tl = resolve_timeline(parse_timeline_events(events), cloud=testbed["cloud"], end=testbed["end"],
                          edges=testbed["edges"])
    if traces:
        f = traces[int(rng.integers(len(traces)))]
        tr = load_rate_trace(f)
        offset = float(rng.uniform(0, tr.duration_s))
        worse = float(rng.uniform(worse_link, 1.0)) if worse_link < 1.0 else 1.0
        times = (tr.times_s - offset) % tr.duration_s
        order = np.argsort(times, kind="stable")
        shifted = type(tr).from_samples(times[order], tr.rates_bps[order], tr.source, tr.duration_s)
        for e in testbed["edges"]:
            key = f"edge:{e}|end"
            tl.traces[key] = TimedTrace(0.0, shifted.with_mean(testbed["nominal_bps"][key] * worse))
        info["trace"] = [f"{f.parent.name}/{f.name}", offset, worse]
    return World(table, tl, testbed["nominal_bps"], truth), info


# --------------------------------------------------------------------------- figures
def stats(xs):
    if not xs:
        return None
    a = np.asarray(xs, float)
    return {"median": float(np.median(a)), "p95": float(np.percentile(a, 95)), "max": float(a.max()),
            "mean": float(a.mean()), "n": int(a.size)}


def table_text(summary: dict, policies, refs) -> str:
    """The summary as a text table (policy × reference)."""
    lines = [f"{'policy':14s} {'reference':15s} {'meets T_max':>11s} {'energy over (median / p95)':>27s} "
             f"{'re-plans/run':>12s}"]
    for p in policies:
        for ref in refs:
            s = summary[p][ref]
            o = s["energy_over_pct"]
            over = f"{o['median']:.1f} / {o['p95']:.1f} %" if o else "-"
            lines.append(f"{p:14s} {ref:15s} {s['met_deadline_pct']:10.1f}% {over:>27s} "
                         f"{summary[p]['replans_per_run']['mean']:12.1f}")
    return "\n".join(lines)


def replan_timing(testbed: dict, n: int, seed: int) -> dict:
    """Re-plan time on the whole paper testbed (every Ω candidate, switching allowed), after
    random epochs with random slowdowns and an edge away half of the time."""
    table = PhaseTable.from_dict(testbed["table"])
    inst = table.instance
    sol = solve(inst, "optimal")
    rng = np.random.default_rng(seed)
    ms, ms_stay, cpu, cpu_stay = [], [], [], []
    for k in range(n):
        for switch, out, out_cpu in ((True, ms, cpu), (False, ms_stay, cpu_stay)):
            ctl = ClosedLoopController(table, sol, allow_switch=switch)
            if rng.random() < 0.5:
                ctl.edges_down.add(testbed["edges"][int(rng.integers(2))])
            ctl.resources.factors.update({"end": float(rng.uniform(0.8, 1.6)),
                                          "edge:rtx3090|end": float(rng.uniform(0.8, 3))})
            done = int(rng.integers(1, max(2, sol.epochs)))
            ctl.elapsed_s = inst.deadline_s * done / sol.epochs * float(rng.uniform(0.9, 1.2))
            ctl.remaining_estimate = (max(1, sol.epochs - done - 2), max(2, sol.epochs - done))
            t0, c0 = time.perf_counter(), time.process_time()
            ctl._replan("epoch")
            out.append((time.perf_counter() - t0) * 1e3)
            out_cpu.append((time.process_time() - c0) * 1e3)
    omega = inst.meta.get("search_bits")
    return {"candidates_searched": sum(c.bits in omega for c in inst.candidates) if omega else len(inst.candidates),
            "options": sum(len(c.options) for c in inst.candidates),
            "switching_allowed_wall_ms": stats(ms), "switching_allowed_cpu_ms": stats(cpu),
            "current_candidate_wall_ms": stats(ms_stay), "current_candidate_cpu_ms": stats(cpu_stay),
            "target_ms": 10.0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store", default=None, help="trace store with the LeNet Data 2 runs (writes --curves)")
    ap.add_argument("--curves", default=str(CURVES))
    ap.add_argument("--traces", default=str(TRACES))
    ap.add_argument("--testbed", default=str(TESTBED))
    ap.add_argument("--prepare", action="store_true", help="compile the testbed table (torch) and exit")
    ap.add_argument("--threshold", type=float, default=0.03)
    ap.add_argument("--reserve", type=float, default=DEFAULT_RESERVE_EPOCHS,
                    help="time reserve of policy replan, in epochs (default %(default)s)")
    ap.add_argument("--worse-link", type=float, default=1.0, metavar="LO",
                    help="the SD's link mean = the planned rate × U(LO, 1) (default 1: the trace's mean is the "
                         "planned rate; the plan knows the average, not the fluctuations)")
    ap.add_argument("--out", default=str(RESULTS / "closed_loop.json"))
    args = ap.parse_args(argv)
    if args.prepare:
        data = prepare(ROOT / "examples" / "paper-data1.yaml")
        Path(args.testbed).write_text(json.dumps(data))
        print(f"wrote {args.testbed}")
        return 0
    testbed = json.loads(Path(args.testbed).read_text())
    if args.store:
        curves = curves_from_store(args.store)
        Path(args.curves).write_text(json.dumps({"source": "jqodi finetune runs (see benchmarks/closed_loop.py)",
                                                 "runs": curves}, indent=1))
    curves = json.loads(Path(args.curves).read_text())["runs"]
    by_bits: dict[int, list[list[float]]] = {}
    for r in curves:
        by_bits.setdefault(int(r["bits"]), []).append([float(v) for v in r["val_losses"]])
    traces = trace_files(Path(args.traces)) if Path(args.traces).is_dir() else []
    if not traces:
        print(f"note: no traces in {args.traces}: links keep their planned rates", file=sys.stderr)
    policies = ("open-loop", "static", "replan-before", "replan-stay", "replan")
    options = {"replan-before": {"reserve_epochs": 0.0, "hedge": False, "allow_switch": True},
               "replan-stay": {"reserve_epochs": args.reserve, "allow_switch": False},
               "replan": {"reserve_epochs": args.reserve, "allow_switch": True}}
    rows = []
    rng = np.random.default_rng(args.seed)
    t_start = time.perf_counter()
    skipped = 0
    while len(rows) < args.runs:
        made = make_run(rng, testbed, by_bits, traces, args.worse_link)
        if made is None:
            skipped += 1
            continue
        world, info = made
        sol = solve(world.table.instance, "optimal")
        if sol.status == "infeasible":
            skipped += 1
            continue
        row = {"run": len(rows), **info, "plan": {"model": sol.model, "bits": sol.bits, "epochs": sol.epochs,
                                                  "energy_j": sol.energy_j, "time_s": sol.time_s},
               "true_K": {k: true_epochs(v, world.table.instance.target_loss) for k, v in world.curves.items()}}
        row["hindsight"] = hindsight_optimum(world)
        row["hindsight-plan"] = hindsight_optimum(world, candidates=[f"{sol.model}@{sol.bits}"])
        for p in policies:
            out = simulate_run(world, sol, policy="replan" if p.startswith("replan") else p,
                               threshold=args.threshold, **options.get(p, {}))
            row[p] = out.to_dict()
        rows.append(row)
        if len(rows) % 20 == 0:
            print(f"  {len(rows)}/{args.runs} runs ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr,
                  flush=True)
    summary = {}
    refs = ("hindsight", "hindsight-plan")
    for p in policies:
        summary[p] = {"replans_per_run": stats([r[p]["replans"] for r in rows]),
                      "lost_epochs_per_run": stats([r[p]["lost_epochs"] for r in rows]),
                      "plan_ms_max": stats([r[p]["plan_ms_max"] for r in rows if r[p]["plan_ms_max"]]),
                      "plan_cpu_ms_max": stats([r[p]["plan_cpu_ms_max"] for r in rows if r[p]["plan_ms_max"]])}
        for ref in refs:
            feasible = [r for r in rows if r[ref] is not None]
            met = [r for r in feasible if r[p]["met_deadline"]]
            over = [100.0 * (r[p]["energy_j"] / r[ref]["energy_j"] - 1) for r in met]
            summary[p][ref] = {"feasible": len(feasible),
                               "met_deadline_pct": 100.0 * len(met) / max(1, len(feasible)),
                               "reached_target_pct": 100.0 * sum(r[p]["reached"] for r in feasible)
                               / max(1, len(feasible)),
                               "energy_over_pct": stats(over)}
    for p in ("replan-before", "replan"):
        rp = summary[p]
        rp["targets"] = {"met_deadline_pct": ">= 95", "median_energy_over_hindsight_pct": "<= 5"}
        rp["met_targets"] = {ref: {"deadline": rp[ref]["met_deadline_pct"] >= 95.0,
                                   "energy": rp[ref]["energy_over_pct"] is not None
                                   and rp[ref]["energy_over_pct"]["median"] <= 5.0} for ref in refs}
    result = {"runs": len(rows), "hindsight_feasible": sum(r["hindsight"] is not None for r in rows),
              "skipped_worlds": skipped, "seed": args.seed, "threshold": args.threshold, "reserve_epochs": args.reserve, "worse_link": args.worse_link, "curves": {b: len(v) for b, v in sorted(by_bits.items())},
              "traces": len(traces), "testbed": testbed["scenario"], "wall_s": time.perf_counter() - t_start,
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "load_avg": list(os.getloadavg())},
              "summary": summary, "replan_timing": replan_timing(testbed, 60, args.seed), "per_run": rows}
    Path(args.out).write_text(json.dumps(result, indent=1, default=float))
    print(table_text(summary, policies, refs), file=sys.stderr)
    print(json.dumps({k: v for k, v in result.items() if k != "per_run"}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
