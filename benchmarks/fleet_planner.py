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
Every run also plans ``examples/fleet-small.yaml`` (6 devices, 2 edges) with fleet-lagrange and
records its CPU seconds (``fleet_small``): compile, then the plan, each in process time.

``--compare-src OLD_SRC`` (e.g. the ``src`` of a checkout of main) instead plans every instance
above — the small fleets, the scaling fleets and every ``examples/fleet*.yaml`` — with fleet-lagrange
under both source trees, in fresh processes that alternate (old, new, per instance), and reports
each one's energy, devices served and CPU seconds side by side.

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
ROOT = Path(__file__).resolve().parent.parent


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
        fleet = _instance({"kind": "small", "seed": 1000 + seed, "devices": devices, "edges": edges, "share": share})
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
        fleet = _instance({"kind": "scaling", "devices": n})
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


def fleet_small(path: str = "examples/fleet-small.yaml", repeats: int = 3) -> dict:
    """``path``'s compile and fleet-lagrange plan, in CPU seconds (the walkthrough's 5.4 s case):
    ``repeats`` plans (the same plan each time: counted work), each one's CPU seconds and the least
    (a shared host's load inflates CPU time too)."""
    from jqodi.core.fleet import compile_fleet
    from jqodi.core.scenario import load_scenario

    c = time.process_time()
    fleet = compile_fleet(load_scenario(str(ROOT / path)))
    rec = {"scenario": path, "devices": len(fleet.members), "compile_cpu_s": time.process_time() - c,
           "command": f"jqodi plan {path}"}
    runs = [row(*timed(fleet, "fleet-lagrange")) for _ in range(repeats)]
    rec["fleet-lagrange"] = min(runs, key=lambda r: r["plan_cpu_s"])
    rec["plan_cpu_s_runs"] = [r["plan_cpu_s"] for r in runs]
    rec["same_plan_every_run"] = len({(r["energy_j"], r["served"]) for r in runs}) == 1
    return rec


def _instances(n_small: int, sizes) -> list[dict]:
    """The instances of ``--compare-src``: what :func:`small_fleets`, :func:`scaling` and the fleet
    examples plan, as arguments of :func:`_instance`."""
    rng = np.random.default_rng(0)
    out = []
    for seed in range(n_small):  # the same draws as small_fleets
        devices, edges = int(rng.integers(8, 13)), int(rng.integers(2, 4))
        share = float(rng.uniform(0.7, 0.9))
        out.append({"kind": "small", "seed": 1000 + seed, "devices": devices, "edges": edges, "share": share})
    out += [{"kind": "scaling", "devices": n} for n in sizes]
    out += [{"kind": "scenario", "path": str(p.relative_to(ROOT))} for p in sorted((ROOT / "examples").glob("fleet*.yaml"))]
    return out


def _instance(spec: dict):
    if spec["kind"] == "small":
        return random_fleet(spec["seed"], devices=spec["devices"], edges=spec["edges"], epochs=(5, 20),
                            capacity_share=spec["share"])
    if spec["kind"] == "scaling":
        return random_fleet(7, devices=spec["devices"], edges=20, models=3, bits=(2, 4, 6, 8), cuts=4,
                            epochs=(20, 130), capacity_share=0.8)
    from jqodi.core.fleet import compile_fleet
    from jqodi.core.scenario import load_scenario

    return compile_fleet(load_scenario(str(ROOT / spec["path"])))


def _worker(spec_json: str) -> None:
    """One instance's fleet-lagrange plan (at a safety cap that is not hit), as one JSON line."""
    import scipy.optimize  # noqa: F401  (imported before the clock)

    fleet = _instance(json.loads(spec_json))
    sol, t = timed(fleet, "fleet-lagrange", time_limit_s=3000)
    print(json.dumps(row(sol, t)))


def compare(old_src: str, n_small: int, sizes) -> dict:
    """Each instance planned under ``old_src`` and under this tree, alternating, in fresh processes."""
    import subprocess
    import sys

    trees = {"old": str(Path(old_src).resolve()), "new": str(ROOT / "src")}
    runs = []
    specs = _instances(n_small, sizes)
    for k, spec in enumerate(specs):
        rec = {"instance": spec}
        for name, src in trees.items():
            env = dict(os.environ, PYTHONPATH=src)
            out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env, text=True,
                                 capture_output=True, timeout=1800, check=True).stdout
            rec[name] = json.loads(out.strip().splitlines()[-1])
        o, n = rec["old"], rec["new"]
        rec["energy_change_pct"] = 100 * (n["energy_j"] / o["energy_j"] - 1) if o["energy_j"] else 0.0
        rec["same_or_better"] = bool(n["served"] > o["served"] or (n["served"] == o["served"]
                                     and n["energy_j"] <= o["energy_j"] * (1 + 1e-12)))
        runs.append(rec)
        print(f"compare {k + 1}/{len(specs)} {spec}: old {o['energy_j']:.6g} J {o['plan_cpu_s']:.2f} s CPU, "
              f"new {n['energy_j']:.6g} J {n['plan_cpu_s']:.2f} s CPU", flush=True, file=sys.stderr)
    cpu = {name: sum(r[name]["plan_cpu_s"] for r in runs) for name in trees}
    return {"old_src": trees["old"], "instances": len(runs),
            "same_or_better": sum(r["same_or_better"] for r in runs),
            "identical_energy": sum(r["old"]["energy_j"] == r["new"]["energy_j"] for r in runs),
            "better": sum(r["same_or_better"] and r["old"]["energy_j"] != r["new"]["energy_j"] for r in runs),
            "plan_cpu_s_total": cpu, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 small fleets, sizes up to 300")
    ap.add_argument("--fleets", type=int, default=None, help="number of small fleets (default 50)")
    ap.add_argument("--scenario", help="also compile and plan this fleet scenario")
    ap.add_argument("--cap-s", type=float, default=120.0,
                    help="fleet-lagrange's wall-clock safety cap for the large fleets (default 120 s, its own); "
                         "raise it on a loaded host so that every run does its whole work budget")
    ap.add_argument("--compare-src", metavar="OLD_SRC",
                    help="plan every instance with fleet-lagrange under OLD_SRC and this tree, side by side")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None,
                    help="default benchmarks/results/fleet_planner.json (fleet_planner_compare.json with --compare-src)")
    args = ap.parse_args()
    if args.worker:
        _worker(args.worker)
        return
    n = args.fleets or (10 if args.quick else 50)
    sizes = (100, 300) if args.quick else (100, 300, 1000)
    res = {"command": "benchmarks/fleet_planner.py " + " ".join(__import__("sys").argv[1:]),
           "load_average_start": os.getloadavg()[0], "cpus": os.cpu_count()}
    if args.compare_src:
        res["compare"] = compare(args.compare_src, n, sizes)
        _write(res, args.out or str(RESULTS / "fleet_planner_compare.json"))
        return
    res["fleet_small"] = fleet_small()
    res["small"] = small_fleets(n)
    res["scaling"] = scaling(sizes, args.cap_s)
    if args.scenario:
        res["scenario"] = scenario(args.scenario, args.cap_s)
    _write(res, args.out or str(RESULTS / "fleet_planner.json"))


def _write(res: dict, out: str) -> None:
    res["load_average_end"] = os.getloadavg()[0]
    text = json.dumps(res, indent=2)
    print(text)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)


if __name__ == "__main__":
    main()
