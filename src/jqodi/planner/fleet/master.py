"""The column-generation master of fleet-lagrange: given known plans (columns) per device, pick one
per device under every edge's capacity row (a MILP, HiGHS), and the edge prices λ_x (J per busy
second) from the duals of its LP relaxation, which price the next round of columns."""
from __future__ import annotations

import numpy as np

from jqodi.core.fleet import FleetInstance
from jqodi.planner.fleet.budget import _time_limit_hit
from jqodi.planner.fleet.candidates import _Plan
from jqodi.planner.fleet.solution import CAPACITY_RTOL


def _master(fleet: FleetInstance, columns: list[dict], served: list[int], node_limit: int, cap_clock):
    """Pick one column per device (HiGHS): least total energy under every edge's capacity; a device
    may stay unserved at a cost above any plan (so the most devices are served first). HiGHS stops
    after ``node_limit`` branch-and-bound nodes (work, not time); ``cap_clock`` (a
    :class:`~jqodi.planner.fleet.budget._Cap`) gives the safety time limit and records a hit."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    X = len(fleet.edges)
    cap = np.asarray(fleet.capacity_s, dtype=float)
    cols, cost, A, _ = _master_columns(fleet, columns, served)
    lo = np.r_[np.ones(len(served)), np.full(X, -np.inf)]
    hi = np.r_[np.ones(len(served)), np.full(X, 1.0 - 1e-9)]
    res = milp(cost, integrality=np.ones(len(cols)), bounds=Bounds(0, 1), constraints=LinearConstraint(A, lo, hi),
               options={"time_limit": cap_clock.highs_limit(), "node_limit": int(node_limit),
                        "mip_rel_gap": 1e-4, "presolve": True})
    if _time_limit_hit(res):
        cap_clock.hit("master")
    if res.x is None:
        return None
    plans: list = [None] * len(fleet.members)
    for j in np.flatnonzero(res.x > 0.5):
        r, p = cols[j]
        plans[served[r]] = p
    load = sum((p.busy for p in plans if p is not None), np.zeros(X))
    if (load > cap * (1 + CAPACITY_RTOL) + 1e-12).any():
        return None
    return plans


def _master_columns(fleet: FleetInstance, columns: list[dict], served: list[int]):
    """The master's matrices: one row per served device (pick one column) and one per edge (capacity)."""
    from scipy.sparse import coo_matrix

    X = len(fleet.edges)
    cap = np.asarray(fleet.capacity_s, dtype=float)
    cols: list[tuple[int, _Plan | None]] = []
    for r, i in enumerate(served):
        for p in columns[i].values():
            cols.append((r, p))
        cols.append((r, None))
    top = max((p.energy_j for _, p in cols if p is not None), default=1.0)
    big = 10.0 * top * max(len(served), 1)
    cost = np.array([(p.energy_j / top) if p is not None else big / top for _, p in cols])
    rr, cc, vv = [], [], []
    for j, (r, p) in enumerate(cols):
        rr.append(r); cc.append(j); vv.append(1.0)
        if p is not None:
            for x in np.flatnonzero(p.busy):
                rr.append(len(served) + x); cc.append(j); vv.append(p.busy[x] / cap[x])
    A = coo_matrix((vv, (rr, cc)), shape=(len(served) + X, len(cols))).tocsr()
    return cols, cost, A, top


def _master_rounded(fleet: FleetInstance, columns: list[dict], served: list[int]) -> list:
    """The master's LP relaxation (HiGHS) rounded: each device takes its column of largest weight
    (``None``: not served). It may overload an edge; the caller repairs it. Used in place of the
    master MILP when the fleet has more columns than the MILP's root node can take in a bounded time
    (its root work is not bounded by a node limit)."""
    from scipy.optimize import linprog

    X = len(fleet.edges)
    cols, cost, A, _ = _master_columns(fleet, columns, served)
    n = len(served)
    res = linprog(cost, A_ub=A[n:], b_ub=np.ones(X), A_eq=A[:n], b_eq=np.ones(n), bounds=(0, 1), method="highs")
    plans: list = [None] * len(fleet.members)
    if res.status != 0:
        return plans
    best = np.full(n, -1.0)
    for j, (r, p) in enumerate(cols):
        if res.x[j] > best[r] + 1e-12:
            best[r] = res.x[j]
            plans[served[r]] = p
    return plans


def _master_duals(fleet: FleetInstance, columns: list[dict], served: list[int]) -> np.ndarray | None:
    """Edge prices (J per busy second) from the duals of the master's LP relaxation (HiGHS)."""
    from scipy.optimize import linprog

    X = len(fleet.edges)
    cap = np.asarray(fleet.capacity_s, dtype=float)
    cols, cost, A, top = _master_columns(fleet, columns, served)
    n = len(served)
    res = linprog(cost, A_ub=A[n:], b_ub=np.ones(X), A_eq=A[:n], b_eq=np.ones(n), bounds=(0, 1), method="highs")
    if res.status != 0:
        return None
    return np.maximum(0.0, -np.asarray(res.ineqlin.marginals)) * top / cap
