"""Fleet planning: fleet-lagrange vs the exact fleet MILP on small fleets, plan time vs fleet size,
and the baselines (first come first served; everyone on their best edge ignoring capacity).

    .venv/bin/python benchmarks/fleet_planner.py [--quick] [--fleets N] [--scenario FILE] [--out FILE]

Small fleets: ``jqodi.planner.fleet.random_fleet`` (8–12 devices, 2–3 edges, 2 models × 2 bits, 3
cuts, K in 5..20, each edge's capacity 70–90 % of the load the devices' stand-alone optima put on
it). ``fleet-optimal`` runs with a 20 s limit; a fleet it does not prove optimal, or that it proves
infeasible (capacity cannot serve everyone), is counted and left out of the gap statistics.
``fleet-lagrange`` runs at its default work budget (``WorkBudget``: counted steps, so the same plan
on any machine; ``time_limit_s`` is a 120 s safety cap, and each row says whether it was hit).
Scaling: random fleets of 100–1,000
devices × 20 edges × 3 models × 4 bits × 4 cuts (80 options per candidate), fleet-lagrange at its
default budget, timed in wall-clock and CPU seconds (``--cap-s``: its safety cap); ``--scenario`` adds a compiled scenario (e.g.
examples/fleet-1000.yaml: compile time and plan time). The host's 2 cores are shared with other
jobs: the load average is recorded with the results.
Prints JSON; writes it to ``--out`` (default benchmarks/results/fleet_planner.json).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from jqodi.planner.fleet import random_fleet, solve_fleet

RESULTS = Path(__file__).parent / "results"


def row(sol, t):
    t, cpu = t
    return {"status": sol.status, "served": sol.served, "devices": len(sol.plans), "energy_j": sol.energy_j,
            "overload_s": sum(sol.overload_s.values()), "plan_s": t, "plan_cpu_s": cpu,
            "lower_bound_j": sol.extra.get("lower_bound_j"), "time_cap_hit": sol.extra.get("time_cap_hit")}


def timed(fleet, solver, **kw):
    """The solution and (wall seconds, CPU seconds of this process) of one solve."""
    t, c = time.perf_counter(), time.process_time()
    sol = solve_fleet(fleet, solver, **kw)
    return sol, (time.perf_counter() - t, time.process_time() - c)


def small_fleets(n: int) -> dict:
    rng = np.random.default_rng(0)
    out, gaps, skipped = [], [], {"not_proven": 0, "infeasible": 0}
    for seed in range(n):
        devices, edges = int(rng.integers(8, 13)), int(rng.integers(2, 4))
        share = float(rng.uniform(0.7, 0.9))
        fleet = random_fleet(1000 + seed, devices=devices, edges=edges, epochs=(5, 20), capacity_share=share)
        opt, t_opt = timed(fleet, "fleet-optimal", time_limit_s=20)
        rec = {"seed": 1000 + seed, "devices": devices, "edges": edges, "capacity_share": share,
               "fleet-optimal": row(opt, t_opt)}
        if opt.status == "infeasible":
            skipped["infeasible"] += 1
        elif opt.status != "optimal":
            skipped["not_proven"] += 1
        for name, kw in (("fleet-lagrange", {}), ("fcfs", {}), ("ignore-capacity", {})):
            sol, t = timed(fleet, name, **kw)
            rec[name] = row(sol, t)
            if opt.status == "optimal" and opt.energy_j > 0:
                rec[name]["gap_pct"] = (100 * (sol.energy_j / opt.energy_j - 1)
                                        if sol.served == opt.served else None)
        if opt.status == "optimal":
            g = rec["fleet-lagrange"]["gap_pct"]
            gaps.append(g if g is not None else float("inf"))
        out.append(rec)
        print(f"small fleet {seed + 1}/{n}: {devices} devices, {edges} edges: "
              f"gap {rec['fleet-lagrange'].get('gap_pct')}", flush=True, file=__import__("sys").stderr)
    g = np.array(gaps, dtype=float)

    def served_all(name):
        return sum(1 for r in out if r[name]["served"] == r["devices"] and r[name]["overload_s"] <= 1e-9)

    return {"fleets": n, "compared": len(gaps), "skipped": skipped,
            "lagrange_gap_pct": {"median": float(np.median(g)) if len(g) else None,
                                 "p90": float(np.percentile(g, 90)) if len(g) else None,
                                 "max": float(g.max()) if len(g) else None,
                                 "unserved_where_milp_serves_all": int(np.isinf(g).sum())},
            "fcfs_gap_pct_median": float(np.median([r["fcfs"]["gap_pct"] for r in out
                                                    if r["fcfs"].get("gap_pct") is not None] or [np.nan])),
            "all_served_within_capacity": {n: served_all(n) for n in
                                           ("fleet-optimal", "fleet-lagrange", "fcfs", "ignore-capacity")},
            "runs": out}


def scaling(sizes, cap_s: float) -> list[dict]:
    out = []
    for n in sizes:
        t = time.perf_counter()
        fleet = random_fleet(7, devices=n, edges=20, models=3, bits=(2, 4, 6, 8), cuts=4, epochs=(20, 130),
                             capacity_share=0.8)
        gen_s = time.perf_counter() - t
        rec = {"devices": n, "edges": 20, "options_per_candidate": 80, "generate_s": gen_s}
        for name in ("fleet-lagrange", "fcfs", "ignore-capacity"):
            sol, t = timed(fleet, name, **({"time_limit_s": cap_s} if name == "fleet-lagrange" else {}))
            rec[name] = row(sol, t)
        out.append(rec)
        print(f"scaling {n}: lagrange {rec['fleet-lagrange']['plan_s']:.2f} s "
              f"({rec['fleet-lagrange']['plan_cpu_s']:.2f} s CPU)", flush=True,
              file=__import__("sys").stderr)
    return out


def scenario(path: str, cap_s: float) -> dict:
    from jqodi.core.fleet import compile_fleet
    from jqodi.core.scenario import load_scenario

    t, c = time.perf_counter(), time.process_time()
    fleet = compile_fleet(load_scenario(path))
    rec = {"scenario": path, "devices": len(fleet.members), "edges": len(fleet.edges),
           "compile_s": time.perf_counter() - t, "compile_cpu_s": time.process_time() - c}
    for name in ("fleet-lagrange", "fcfs", "ignore-capacity"):
        sol, t = timed(fleet, name, **({"time_limit_s": cap_s} if name == "fleet-lagrange" else {}))
        rec[name] = row(sol, t)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 small fleets, sizes up to 300")
    ap.add_argument("--fleets", type=int, default=None, help="number of small fleets (default 50)")
    ap.add_argument("--scenario", help="also compile and plan this fleet scenario")
    ap.add_argument("--cap-s", type=float, default=120.0,
                    help="fleet-lagrange's wall-clock safety cap for the large fleets (default 120 s, its own); "
                         "raise it on a loaded host so that every run does its whole work budget")
    ap.add_argument("--out", default=str(RESULTS / "fleet_planner.json"))
    args = ap.parse_args()
    n = args.fleets or (10 if args.quick else 50)
    sizes = (100, 300) if args.quick else (100, 300, 1000)
    res = {"command": "benchmarks/fleet_planner.py " + " ".join(__import__("sys").argv[1:]),
           "load_average_start": os.getloadavg()[0], "cpus": os.cpu_count()}
    res["small"] = small_fleets(n)
    res["scaling"] = scaling(sizes, args.cap_s)
    if args.scenario:
        res["scenario"] = scenario(args.scenario, args.cap_s)
    res["load_average_end"] = os.getloadavg()[0]
    text = json.dumps(res, indent=2)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
