"""Closed loop at planner level: open loop, static and re-planning runs against the hindsight optimum.

    .venv/bin/python benchmarks/closed_loop.py [--runs 200] [--seed 0] [--store DB | --curves FILE]
                                               [--traces DIR] [--worse-link LO] [--out FILE]
                                               [--estimates store[,prior]] [--prior-epochs N] [--ablation]
                                               [--policies P,...] [--runs-out FILE] [--reserve-spread Z]
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
  a random run of its bit-width (its *true* curve).
* **K estimates before the run**, per candidate, from three sources (``--estimates``), none of
  which sees a true curve of the run:

  - ``probe`` (main's policies): the probe estimator (:func:`jqodi.learning.curves.estimate_from_probe`,
    10 bootstrap refits) on the first 5 epochs of *another* run of the same bit-width (as ``make
    demo`` does with its probe runs, no trace store);
  - ``store`` (the new policies, default): what ``jqodi estimate`` does when the trace store holds
    complete runs of the candidate's configuration (:func:`jqodi.learning.curves.estimate_from_runs`),
    the store being the pool *less the run's true curve of every candidate* (leave-one-out: the
    other seeds of each bit-width);
  - ``prior``: the learned prior (:class:`jqodi.learning.prior.CurvePrior`) on the same
    leave-one-out library, updated with the probe's 5 epochs (slow: a prior per run).

  The world (target, deadline, events, trace, true curves, probes) is drawn exactly as before
  these sources existed, so a seed gives the runs main's benchmark gave; with ``--shard I/N``
  world k is drawn from its own stream (seed, k) instead (other worlds, any shard can draw
  them), and ``--merge`` sums the shards up.
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

Policies (:func:`jqodi.app.simulate.simulate_run`), all in one run on the same worlds. Main's
(the plan from the ``probe`` estimates, the planner's candidate: least K^rob-plan energy):
``open-loop`` (the plan followed blindly, all its K^rob epochs: the runtime before the closed
loop), ``static`` (the same plan, stopping at the target), ``replan-main`` (main's closed loop:
early stop, online estimates, re-planning after every epoch and on edge events, 3 % anti-churn
threshold, a time reserve of ``--reserve`` epochs, hedging between K^exp and K^rob when K^rob no
longer fits, switching model/bits when that pays including the new candidate's quantization and
a fresh start). The new ones (the plan from the first ``--estimates`` source, the candidate of
least *expected* energy under the estimate's spread: :mod:`jqodi.app.controller.choice`):
``static-new`` (that plan, stopping at the target), ``replan`` (the closed loop as
``replan-main``, the pre-run K counting for ``--prior-epochs`` epochs of evidence in the online
refit instead of 5, and a time reserve that also grows with the spread of the remaining planned
time, ``--reserve-spread`` standard deviations: :meth:`ClosedLoopController.spread_reserve_s`),
``replan-prev`` (``replan`` without that spread part: the new controller as the last session
left it, the "before" of the spread reserve), ``replan-spread`` (``replan`` with the spread part
always on, ``spread_condition="always"``: the default of 2026-11-30; ``replan`` keeps it only while
the candidate's options trade time for energy, :meth:`ClosedLoopController.spread_applies`) and
``replan-stay`` (``replan`` without switching: what the emulated runtime does, which trains one
model per run). ``replan-main`` keeps main's
controller as it was (no spread part). A second source (``--estimates store,prior``)
adds ``static-prior-new``, ``replan-stay-prior``, ``replan-prior``. ``--ablation`` adds
``replan-before`` (the controller as first built: no reserve, K^exp at once when K^rob does not
fit) and ``replan-planner-choice`` (the new estimates, the planner's choice of candidate).

Two references, both knowing the future: ``hindsight`` (the minimum-energy run knowing the
link trace, the edge and slowdown events and the true K of *every* candidate:
:func:`hindsight_optimum`) and ``hindsight-plan`` (the same, restricted to the candidate the
policy's plan chose: it knows the trace, the events and the true curve of the model being trained,
which is what a closed loop can learn; which candidate to train is decided before the run by
the K estimates, not by the loop).
Figures per reference: share of runs that reach L_max by T_max among those where the reference
can; energy over the reference (median, p95) on runs where both reach it in time; re-plans per
run; re-plan time.
A separate section times re-plans on the full paper-size testbed (3 models × 4 bits × 2 ESs ×
4–5 cuts, switching allowed). Prints JSON; writes it (summaries) to ``--out``; ``--runs-out``
also writes every run's outcome (megabytes: not committed).
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
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from jqodi.app.controller import ClosedLoopController, Observation, PhaseTable
from jqodi.app.controller.choice import plan_by_expected_energy
from jqodi.app.controller.loop import DEFAULT_RESERVE_EPOCHS, DEFAULT_RESERVE_SPREAD
from jqodi.app.simulate import World, hindsight_optimum, simulate_run, true_epochs
from jqodi.core.instance import EpochEstimates, PlanningInstance, Solution
from jqodi.learning.online import PRIOR_EPOCHS
from jqodi.core.linktrace import load_rate_trace
from jqodi.core.timeline import Timeline, TimedTrace, parse_timeline_events, resolve_timeline
from jqodi.learning.curves import estimate_from_probe, estimate_from_runs
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
#: pre-run K estimate sources (besides main's ``probe``): ``store`` = what ``jqodi estimate`` does when the
#: trace store holds runs of the candidate's configuration (:func:`jqodi.learning.curves.estimate_from_runs`
#: over the pool's *other* runs of that bit-width: the run's own true curve left out); ``prior`` = the
#: learned prior updated with the probe (:func:`prior_estimate`, leave-one-out too)
ESTIMATES = ("store", "prior")
#: epochs of evidence the learned prior's K counts for in the new controller's online refit (tuned on seed 1)
NEW_PRIOR_EPOCHS = 40.0
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


def pool_runs(curves: list[dict]) -> dict[int, list]:
    """The curve pool as the learned prior's library runs (:class:`~jqodi.learning.prior.CurveRun`), per bit-width."""
    from jqodi.learning.prior import CurveRun

    out: dict[int, list] = {}
    for k, r in enumerate(curves):
        out.setdefault(int(r["bits"]), []).append(CurveRun(
            k, "lenet", "fashion-mnist", "data2", int(r["bits"]), float(r.get("width") or 0.25),
            int(r.get("train_size") or 1000), int(r.get("val_size") or 300), int(r.get("seed") or 0), "finetune",
            None, None, "", np.asarray(r["val_losses"], dtype=float)))
    return out


_PRIORS: dict = {}


def prior_estimate(pool: dict[int, list], truth: dict[int, int], bits: int, probe: int, target: float):
    """K^exp / K^rob of the candidate at ``bits`` from the learned prior (:class:`~jqodi.learning.prior.CurvePrior`)
    updated with the first :data:`PROBE_EPOCHS` epochs of pool run ``probe``. Leave-one-out: the library is
    the pool less the run's true curve of *every* candidate (``truth``: bits → pool index), so no estimate
    sees a curve the run will follow; the probe's run stays in it (a past run of that configuration)."""
    from jqodi.learning.prior import CurvePrior

    key = tuple(sorted(truth.items()))
    if key not in _PRIORS:
        if len(_PRIORS) > 64:
            _PRIORS.clear()
        _PRIORS[key] = CurvePrior([r for b, runs in pool.items() for i, r in enumerate(runs) if truth.get(b) != i])
    r = pool[bits][probe]
    query = {"model": r.model, "dataset": r.dataset, "data_name": r.data_name, "bits": r.bits, "width": r.width,
             "train_size": r.train_size}
    return _PRIORS[key].estimate(r.losses[:PROBE_EPOCHS], target, query)


def make_run(rng, testbed: dict, by_bits: dict[int, list[list[float]]], traces: list[Path],
             worse_link: float = 1.0, pool: dict[int, list] | None = None, sources: Sequence[str] = ()):
    """One run's world (drawn from ``rng``: the same draws as before other estimates came in, so a seed
    gives the same worlds), the planning table of each K estimate source (``probe`` always; ``store``,
    ``prior`` when asked, see :data:`ESTIMATES`) and the run's description."""
    base = PhaseTable.from_dict(testbed["table"])
    target = target_for(rng, by_bits)
    truth, cands, picks = {}, [], {}
    for c in base.instance.candidates:
        pool_c = by_bits.get(c.bits) if c.model == "lenet" else None
        if not pool_c:
            continue
        i = int(rng.integers(len(pool_c)))
        j = int(rng.integers(len(pool_c) - 1)) if len(pool_c) > 1 else 0
        j = j + (j >= i) if len(pool_c) > 1 else i  # the probe comes from another run
        probe = estimate_from_probe(pool_c[j][:PROBE_EPOCHS], target, seed=int(rng.integers(1 << 30)),
                                    n_boot=PROBE_BOOT)
        truth[c.key] = pool_c[i]
        picks[c.key] = (c.bits, i, j)
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
    table = base.with_instance(inst)
    tables = {"probe": table}
    held = {b: i for b, i, _ in picks.values()}
    for src in sources:
        if src == "store":  # what `jqodi estimate` does when the store holds runs of the configuration
            est = {k: estimate_from_runs([c for n, c in enumerate(by_bits[b]) if n != i], target)
                   for k, (b, i, j) in picks.items()}
        elif src == "prior":
            est = {k: prior_estimate(pool, held, b, j, target) for k, (b, i, j) in picks.items()}
        else:
            continue
        pc = tuple(dataclasses.replace(c, epochs=EpochEstimates(est[c.key].expected, est[c.key].robust))
                   for c in cands)
        tables[src] = table.with_instance(dataclasses.replace(inst, candidates=pc))
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
    info["estimates"] = {c.key: {src: [t.cand(c.key).epochs.expected, t.cand(c.key).epochs.robust]
                                 for src, t in tables.items()} for c in cands}
    return World(table, tl, testbed["nominal_bps"], truth), tables, info


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


REFS = ("hindsight", "hindsight-plan")


def summarize(rows: list[dict], policies: dict) -> dict:
    """Per policy: deadline met, target reached and energy over each reference, re-plans, plan times."""
    summary = {}
    refs = REFS
    for p, (src, _, opts, rule) in policies.items():
        summary[p] = {"estimates": src, "choice": rule, "controller": opts, "replans_per_run": stats([r[p]["replans"] for r in rows]),
                      "lost_epochs_per_run": stats([r[p]["lost_epochs"] for r in rows]),
                      "plan_ms_max": stats([r[p]["plan_ms_max"] for r in rows if r[p]["plan_ms_max"]]),
                      "plan_cpu_ms_max": stats([r[p]["plan_cpu_ms_max"] for r in rows if r[p]["plan_ms_max"]]),
                      "trained": {str(b): n for b, n in sorted(Counter(r[p]["bits"] for r in rows).items())}}
        for ref in refs:
            href = (lambda r: r[ref]) if ref == "hindsight" else (lambda r: r[ref][r[p]["planned"]])
            feasible = [r for r in rows if href(r) is not None]
            met = [r for r in feasible if r[p]["met_deadline"]]
            over = [100.0 * (r[p]["energy_j"] / href(r)["energy_j"] - 1) for r in met]
            summary[p][ref] = {"feasible": len(feasible),
                               "met_deadline_pct": 100.0 * len(met) / max(1, len(feasible)),
                               "reached_target_pct": 100.0 * sum(r[p]["reached"] for r in feasible)
                               / max(1, len(feasible)),
                               "energy_over_pct": stats(over)}
    for p in ("replan-main", "replan"):
        if p not in summary:
            continue
        rp = summary[p]
        rp["targets"] = {"met_deadline_pct": ">= 95", "median_energy_over_hindsight_pct": "<= 5"}
        rp["met_targets"] = {ref: {"deadline": rp[ref]["met_deadline_pct"] >= 95.0,
                                   "energy": rp[ref]["energy_over_pct"] is not None
                                   and rp[ref]["energy_over_pct"]["median"] <= 5.0} for ref in refs}
    return summary


def merge(files: Sequence[str], out: str) -> int:
    """One summary from the ``--runs-out`` files of the shards of one seed (worlds by index ``k``)."""
    parts = [json.loads(Path(f).read_text()) for f in files]
    first = parts[0]
    if any(p["seed"] != first["seed"] or p["policies"] != first["policies"] for p in parts):
        raise SystemExit(f"--merge: the files come from different seeds or policies: {', '.join(files)}")
    rows = sorted((r for p in parts for r in p["per_run"]), key=lambda r: r["run"])
    policies = {p: tuple(v) for p, v in first["policies"].items()}
    result = {k: v for k, v in first.items() if k != "per_run"}
    result.update({"runs": len(rows), "complete": all(p["complete"] for p in parts), "shard": None,
                   "merged": [{"file": Path(f).name, "shard": p["shard"], "runs": p["runs"], "wall_s": p["wall_s"],
                               "cpu_s": p["cpu_s"], "load_avg": p["machine"]["load_avg"]} for f, p in zip(files, parts)],
                   "hindsight_feasible": sum(r["hindsight"] is not None for r in rows),
                   "skipped_worlds": sum(p["skipped_worlds"] for p in parts),
                   "wall_s": max(p["wall_s"] for p in parts), "cpu_s": sum(p["cpu_s"] for p in parts),
                   "summary": summarize(rows, policies)})
    Path(out).write_text(json.dumps(result, indent=1, default=float))
    print(table_text(result["summary"], policies, REFS), file=sys.stderr)
    print(json.dumps(result, indent=1, default=float))
    return 0


def new_plan(instance: PlanningInstance, fallback: Solution, rule: str = "expected") -> Solution:
    """A pre-run plan from other K estimates: the candidate of least expected energy
    (:func:`plan_by_expected_energy`, ``rule="expected"``) or the planner's (``"planner"``); when no
    candidate's K^rob plan fits T_max under these estimates, the K^exp plan, and failing that ``fallback``
    (main's plan, whose K^rob fits: the deadline is drawn so that one does)."""
    sol = plan_by_expected_energy(instance) if rule == "expected" else solve(instance, "optimal")
    if sol.status == "infeasible":
        sol = solve(instance, "optimal", epochs="expected")
        sol.extra["fallback"] = "K^exp"
    if sol.status == "infeasible":
        sol = dataclasses.replace(fallback, extra={**fallback.extra, "fallback": "main's plan"})
    return sol


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
    ap.add_argument("--reserve-spread", type=float, default=DEFAULT_RESERVE_SPREAD, metavar="Z",
                    help="the new policies' time reserve grows by Z standard deviations of the remaining planned "
                         "time (default %(default)s; replan-prev and replan-main: 0)")
    ap.add_argument("--worse-link", type=float, default=1.0, metavar="LO",
                    help="the SD's link mean = the planned rate × U(LO, 1) (default 1: the trace's mean is the "
                         "planned rate; the plan knows the average, not the fluctuations)")
    ap.add_argument("--estimates", default="store",
                    help="comma-separated pre-run K sources of the new policies (%s; the first one's policies are "
                         "named replan, replan-stay, static-new; default %%(default)s); empty: main's only"
                         % ", ".join(ESTIMATES))
    ap.add_argument("--prior-epochs", type=float, default=NEW_PRIOR_EPOCHS,
                    help="epochs of evidence the pre-run K counts for in the new controller's online refit "
                         "(main's: %s; default %%(default)s)" % PRIOR_EPOCHS)
    ap.add_argument("--ablation", action="store_true",
                    help="also replan-before (the first controller) and replan-planner-choice (the first --estimates "
                         "source, the planner's choice of candidate)")
    ap.add_argument("--policies", default=None, help="comma-separated subset of the policies to run")
    ap.add_argument("--shard", default=None, metavar="I/N",
                    help="run only worlds k ≡ I (mod N) of 0..runs-1, each from its own random stream "
                         "(seed, k); --merge combines the shards' --runs-out files")
    ap.add_argument("--merge", nargs="+", default=None, metavar="RUNS_JSON",
                    help="combine the --runs-out files of shards into one summary (--out)")
    ap.add_argument("--out", default=None, help="summary JSON (default: results/closed_loop_seed{SEED}.json)")
    ap.add_argument("--runs-out", default=None, help="also every run's outcome as JSON (large; not committed)")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = str(RESULTS / f"closed_loop_seed{args.seed}.json")
    if args.merge:
        return merge(args.merge, args.out)
    shard, n_shards = 0, 1
    if args.shard:
        try:
            shard, n_shards = (int(x) for x in args.shard.split("/"))
        except ValueError:
            ap.error(f"--shard: expected I/N, got {args.shard!r}")
        if not 0 <= shard < n_shards:
            ap.error(f"--shard: I must be in 0..N-1, got {args.shard!r}")
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
    sources = [x for x in args.estimates.split(",") if x]
    bad = set(sources) - set(ESTIMATES)
    if bad:
        ap.error(f"--estimates: unknown {', '.join(sorted(bad))} (known: {', '.join(ESTIMATES)})")
    pool = pool_runs(curves) if "prior" in sources else None
    # policy -> (the K estimates its plan starts from, policy, controller options, choice rule). "probe" +
    # "planner" = main's pre-run plan (the probe estimator's K, the candidate of least K^rob-plan energy);
    # "expected" = the candidate of least expected energy (jqodi.app.controller.choice)
    main_ctl = {"reserve_epochs": args.reserve, "allow_switch": True, "reserve_spread": 0.0}
    new_ctl = {"reserve_epochs": args.reserve, "prior_epochs": args.prior_epochs, "reserve_spread": args.reserve_spread}
    policies = {"open-loop": ("probe", "open-loop", {}, "planner"), "static": ("probe", "static", {}, "planner"),
                "replan-main": ("probe", "replan", main_ctl, "planner")}
    for n, src in enumerate(sources):
        tag = "" if n == 0 else f"-{src}"
        policies.update({f"static{tag}-new" if tag else "static-new": (src, "static", {}, "expected"),
                         f"replan-prev{tag}": (src, "replan", {**new_ctl, "allow_switch": True, "reserve_spread": 0.0},
                                               "expected"),
                         f"replan-spread{tag}": (src, "replan", {**new_ctl, "allow_switch": True,
                                                                 "spread_condition": "always"}, "expected"),
                         f"replan-stay{tag}": (src, "replan", {**new_ctl, "allow_switch": False}, "expected"),
                         f"replan{tag}": (src, "replan", {**new_ctl, "allow_switch": True}, "expected")})
    if args.ablation:  # the first controller; the new estimates with the planner's choice of candidate
        policies["replan-before"] = ("probe", "replan", {"reserve_epochs": 0.0, "hedge": False, "allow_switch": True},
                                     "planner")
    if args.ablation and sources:
        policies["replan-planner-choice"] = (sources[0], "replan", {**new_ctl, "allow_switch": True}, "planner")
    if args.policies:
        policies = {k: v for k, v in policies.items() if k in args.policies.split(",")}
    rows = []
    rng = np.random.default_rng(args.seed)
    t_start = time.perf_counter()
    skipped = 0
    timing = replan_timing(testbed, 60, args.seed)

    def write(rows, complete):
        result = {"runs": len(rows), "complete": complete, "shard": args.shard,
                  "policies": {p: list(v) for p, v in policies.items()},
                  "hindsight_feasible": sum(r["hindsight"] is not None for r in rows),
                  "skipped_worlds": skipped, "seed": args.seed, "threshold": args.threshold,
                  "reserve_epochs": args.reserve, "prior_epochs_new": args.prior_epochs, "estimates": sources,
                  "reserve_spread_new": args.reserve_spread,
                  "worse_link": args.worse_link, "curves": {b: len(v) for b, v in sorted(by_bits.items())},
                  "traces": len(traces), "testbed": testbed["scenario"], "wall_s": time.perf_counter() - t_start,
                  "cpu_s": time.process_time(),
                  "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                              "load_avg": list(os.getloadavg())},
                  "summary": summarize(rows, policies), "replan_timing": timing}
        Path(args.out).write_text(json.dumps(result, indent=1, default=float))
        if args.runs_out:  # every run's outcome (large: not committed)
            Path(args.runs_out).write_text(json.dumps({**result, "per_run": rows}, default=float))
        return result

    attempts = iter(range(shard, args.runs, n_shards)) if n_shards > 1 else None
    while (attempts is None and len(rows) < args.runs) or attempts is not None:
        if attempts is not None:  # world k of the seed, drawn from its own stream (any shard can draw it)
            k = next(attempts, None)
            if k is None:
                break
            rng = np.random.default_rng([args.seed, k])
        made = make_run(rng, testbed, by_bits, traces, args.worse_link, pool, sources)
        if made is None:
            skipped += 1
            continue
        world, tables, info = made
        sol = solve(world.table.instance, "optimal")
        if sol.status == "infeasible":
            skipped += 1
            continue
        worlds = {src: dataclasses.replace(world, table=t) for src, t in tables.items()}
        plans = {}
        for src, _, _, rule in policies.values():
            if (src, rule) not in plans:
                plans[(src, rule)] = sol if (src, rule) == ("probe", "planner") else \
                    new_plan(tables[src].instance, sol, rule)
        tk = world.table.instance.target_loss
        row = {"run": len(rows) if attempts is None else k, **info,
               "plans": {"+".join(k): {"model": v.model, "bits": v.bits, "epochs": v.epochs, "energy_j": v.energy_j,
                                       "time_s": v.time_s, "fallback": v.extra.get("fallback")}
                         for k, v in plans.items()},
               "true_K": {k: true_epochs(v, tk) for k, v in world.curves.items()}}
        row["hindsight"] = hindsight_optimum(world)
        hp = {}
        for v in plans.values():
            if f"{v.model}@{v.bits}" not in hp:
                hp[f"{v.model}@{v.bits}"] = hindsight_optimum(world, candidates=[f"{v.model}@{v.bits}"])
        row["hindsight-plan"] = hp
        for p, (src, pol, opts, rule) in policies.items():
            plan = plans[(src, rule)]
            out = simulate_run(worlds[src], plan, policy=pol, threshold=args.threshold, **opts)
            row[p] = {**out.to_dict(), "planned": f"{plan.model}@{plan.bits}"}
        rows.append(row)
        if len(rows) % (20 if attempts is None else 5) == 0:
            print(f"  {len(rows)}/{args.runs} runs ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr,
                  flush=True)
            if len(rows) < args.runs:  # the figures so far (a run cut short still leaves them)
                write(rows, False)
    result = write(rows, True)
    summary = result["summary"]
    print(table_text(summary, policies, REFS), file=sys.stderr)
    print(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
