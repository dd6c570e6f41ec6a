"""Fleet baselines: ``ignore-capacity`` (every device's own optimum, as if it had the edges to itself;
the overload is reported) and ``fcfs`` (devices planned alone in arrival order, each taking its best
plan among the edge servers that still have room: the contention problem)."""
from __future__ import annotations

import numpy as np

from jqodi.core.fleet import FleetInstance
from jqodi.planner.fleet.candidates import _alone_why, _best_priced, _device_cands, _result
from jqodi.planner.fleet.solution import CAPACITY_RTOL, FleetSolution


def solve_ignore_capacity(fleet: FleetInstance, *, epochs: str = "robust") -> FleetSolution:
    """Every device's own optimum, as if it had every edge to itself; overload is reported."""
    X = len(fleet.edges)
    lam = np.zeros(X)
    plans, why = [], {}
    for i, (m, cands) in enumerate(zip(fleet.members, _device_cands(fleet, epochs))):
        p = _best_priced(cands, lam, X)
        plans.append(p)
        if p is None:
            why[i] = _alone_why(m, epochs)
    sol = _result(fleet, "ignore-capacity", "feasible", plans, epochs, {}, why)
    if not sol.capacity_ok:
        sol.status = "infeasible"
        sol.extra["capacity_violated"] = True
    return sol


def solve_fcfs(fleet: FleetInstance, *, epochs: str = "robust") -> FleetSolution:
    """First come, first served: each device in turn takes its own best plan among the edge servers
    with room left for it (an edge whose remaining capacity its plan would exceed is dropped for
    this device and it plans again); a device left without a plan is not served."""
    X = len(fleet.edges)
    lam = np.zeros(X)
    left = np.array(fleet.capacity_s, dtype=float)
    plans, why = [], {}
    for i, (m, cands) in enumerate(zip(fleet.members, _device_cands(fleet, epochs))):
        banned = left <= 0
        p = None
        while True:
            p = _best_priced(cands, lam, X, banned)
            if p is None:
                break
            over = p.busy > left * (1 + CAPACITY_RTOL) + 1e-12
            if not over.any():
                break
            banned = banned | over
        if p is None:
            alone = _best_priced(cands, lam, X)
            why[i] = _alone_why(m, epochs) if alone is None else \
                "the edge servers it could use were already taken by earlier devices"
        else:
            left -= p.busy
        plans.append(p)
    return _result(fleet, "fcfs", "feasible", plans, epochs, {}, why)
