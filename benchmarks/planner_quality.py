"""Planning quality: JQODI and the baselines against the exact optimum over random instances.

    .venv/bin/python benchmarks/planner_quality.py [--instances 200] [--seed 0] [--out FILE]

Instances come from ``jqodi.planner.generate.random_instance`` at the paper's size
(3 models × 6 bit-widths × 2 edges × 5 cuts, K ≤ 200); the deadline tightness is drawn per
instance from [0.05, 1.1], the anchor alternates between "random" and "cheapest" (see the
generator's docstring). For each solver: how often it finds a plan when ``optimal`` does, and the
energy gap ``energy / optimal − 1`` (median, p95, max) over those instances; plan time per solver
(median, p95, max, ms; wall and this process's CPU time, since the machine's cores are shared).
``jqodi-energy`` is JQODI's tree search ranking paths by energy alone (``alg4=False``), to separate
what Alg. 4's score costs from what the search misses. Prints JSON; also writes it to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from jqodi.planner import check_solution, solve
from jqodi.planner.generate import random_instance

SOLVERS = ("optimal", "jqodi", "jqodi-energy", "static", "full-model", "minimal-model")
# "jqodi-energy" = the same tree search ranking paths by energy alone (alg4=False): the gap of
# "jqodi" minus this one is what Alg. 4's opportunity/risk score costs in energy.
ALIAS = {"jqodi-energy": ("jqodi", {"alg4": False})}


def stats(xs):
    if not xs:
        return None
    a = np.asarray(xs, float)
    return {"median": float(np.median(a)), "p95": float(np.percentile(a, 95)),
            "max": float(a.max()), "mean": float(a.mean()), "n": int(len(a))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "planner_quality.json"))
    args = ap.parse_args(argv)
    gaps = {s: [] for s in SOLVERS if s != "optimal"}
    times = {s: [] for s in SOLVERS}
    cpu = {s: [] for s in SOLVERS}
    found = {s: 0 for s in SOLVERS}
    opt_feasible = 0
    proven = 0
    same_choice = 0
    problems = []
    solve(random_instance(0), "optimal")  # warm-up: imports scipy's MILP
    t0 = time.perf_counter()
    for n in range(args.instances):
        seed = args.seed + n
        inst = random_instance(seed, epochs=(20, 200), cuts=5,
                               anchor="random" if n % 2 else "cheapest")
        sols = {}
        for s in SOLVERS:
            name, kw = ALIAS.get(s, (s, {}))
            c0 = time.process_time()
            sol = solve(inst, name, **kw)
            cpu[s].append((time.process_time() - c0) * 1e3)
            sols[s] = sol
            times[s].append(sol.extra["plan_time_ms"])
            if check_solution(inst, sol):
                problems.append({"seed": seed, "solver": s, "problems": check_solution(inst, sol)})
        opt = sols["optimal"]
        if opt.status == "infeasible":
            continue
        opt_feasible += 1
        proven += opt.status == "optimal"
        for s in SOLVERS:
            if sols[s].status != "infeasible":
                found[s] += 1
                if s != "optimal":
                    gaps[s].append(100.0 * (sols[s].energy_j / opt.energy_j - 1.0))
        same_choice += (sols["jqodi"].model, sols["jqodi"].bits) == (opt.model, opt.bits)
        if (n + 1) % 50 == 0:
            print(f"{n + 1}/{args.instances} instances", file=sys.stderr)
    out = {
        "benchmark": "planner_quality",
        "command": "python benchmarks/planner_quality.py " + " ".join(argv or sys.argv[1:]),
        "instances": args.instances, "optimal_feasible": opt_feasible,
        "optimal_proven": proven,
        "found_plan_when_optimal_did": found,
        "energy_gap_vs_optimal_pct": {s: stats(v) for s, v in gaps.items()},
        "jqodi_same_candidate_as_optimal": same_choice,
        "plan_time_ms": {s: stats(v) for s, v in times.items()},
        "plan_cpu_ms": {s: stats(v) for s, v in cpu.items()},
        "infeasible_or_wrong_plans": problems,
        "wall_s": time.perf_counter() - t0,
        "machine": {"python": platform.python_version(), "processor": platform.processor(),
                    "note": "2 shared cores (other engineers' jobs ran at the same time)"},
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
