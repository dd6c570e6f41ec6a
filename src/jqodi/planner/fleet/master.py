"""The column-generation master of fleet-lagrange: given known plans (columns) per device, pick one
per device under every edge's capacity row (a MILP, HiGHS), and the edge prices λ_x (J per busy
second) from the duals of its LP relaxation, which price the next round of columns."""
from __future__ import annotations

import numpy as np

from jqodi.core.fleet import FleetInstance
from jqodi.planner.fleet.budget import _time_limit_hit, highs_output_to_stderr
from jqodi.planner.fleet.candidates import _Plan
from jqodi.planner.fleet.solution import CAPACITY_RTOL


def _master(fleet: FleetInstance, columns: list[dict], served: list[int], node_limit: int, cap_clock,
            cap: np.ndarray | None = None):
    """Pick one column per device (HiGHS): least total energy under every edge's capacity (``cap``
    busy seconds, default the fleet's); a device may stay unserved at a cost above any plan (so the
    most devices are served first). HiGHS stops after ``node_limit`` branch-and-bound nodes (work,
    not time); ``cap_clock`` (a :class:`~jqodi.planner.fleet.budget._Cap`) gives the safety time
    limit and records a hit. None when HiGHS found no plan or its plan overloads an edge."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    X = len(fleet.edges)
    cap = np.asarray(fleet.capacity_s if cap is None else cap, dtype=float)
    cols, cost, A, _ = _master_columns(fleet, columns, served, cap)
    lo = np.r_[np.ones(len(served)), np.full(X, -np.inf)]
    hi = np.r_[np.ones(len(served)), np.full(X, 1.0 - 1e-9)]
    with highs_output_to_stderr():
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


def _master_columns(fleet: FleetInstance, columns: list[dict], served: list[int], cap: np.ndarray | None = None):
    """The master's matrices: one row per served device (pick one column) and one per edge
    (capacity ``cap``, default the fleet's; an edge without room takes no busy second)."""
    from scipy.sparse import csr_matrix

    X = len(fleet.edges)
    cap = np.asarray(fleet.capacity_s if cap is None else cap, dtype=float)
    cols: list[tuple[int, _Plan | None]] = []
    for r, i in enumerate(served):
        for p in columns[i].values():
            cols.append((r, p))
        cols.append((r, None))
    top = max((p.energy_j for _, p in cols if p is not None), default=1.0)
    big = 10.0 * top * max(len(served), 1)
    cost = np.array([(p.energy_j / top) if p is not None else big / top for _, p in cols])
    n, m = len(served), len(cols)
    zero = np.zeros(X)
    busy = np.array([p.busy if p is not None else zero for _, p in cols]).reshape(m, X)
    j, x = np.nonzero(busy)
    with np.errstate(divide="ignore"):
        share = busy[j, x] / cap[x]
    share[~np.isfinite(share)] = 1e12  # an edge with no room left: a column using it never fits
    rows = np.r_[np.fromiter((r for r, _ in cols), np.int64, m), n + x]
    A = csr_matrix((np.r_[np.ones(m), share], (rows, np.r_[np.arange(m), j])), shape=(n + X, m))
    return cols, cost, A, top


def _master_fixed(fleet: FleetInstance, columns: list[dict], served: list[int], node_limit: int, cap_clock
                  ) -> tuple[list, int]:
    """The master for many columns: its LP relaxation (HiGHS dual simplex, a vertex), whose integral
    devices keep their column, and the master MILP over the others only, in the room those leave.

    A vertex of the LP (one row per device, one per edge) has at most as many basic columns as rows,
    so at most X devices (X = edges) are split between columns: the MILP left is small, its root
    node cheap, whatever the fleet's size. Used in place of the whole master MILP above
    ``master_columns`` columns (that MILP's root-node work is not bounded by a node limit). Returns
    (plans, fractional devices); the plans may overload an edge if the small MILP found nothing
    (each of its devices then takes its column of largest LP weight; the caller repairs)."""
    from scipy.optimize import linprog

    X = len(fleet.edges)
    cap = np.asarray(fleet.capacity_s, dtype=float)
    cols, cost, A, _ = _master_columns(fleet, columns, served)
    n = len(served)
    with highs_output_to_stderr():
        res = linprog(cost, A_ub=A[n:], b_ub=np.ones(X), A_eq=A[:n], b_eq=np.ones(n), bounds=(0, 1),
                      method="highs-ds")
    plans: list = [None] * len(fleet.members)
    if res.status != 0:
        return plans, 0
    weight = np.full(n, -1.0)
    for j, (r, p) in enumerate(cols):
        if res.x[j] > weight[r] + 1e-12:
            weight[r] = res.x[j]
            plans[served[r]] = p
    split = [served[r] for r in np.flatnonzero(weight < 1.0 - 1e-6)]
    if not split:
        return plans, 0
    keep = set(split)
    load = sum((plans[i].busy for i in served if i not in keep and plans[i] is not None), np.zeros(X))
    room = np.maximum(cap - load, 0.0)
    got = _master(fleet, columns, split, node_limit, cap_clock, cap=room)
    if got is not None:
        for i in split:
            plans[i] = got[i]
    return plans, len(split)


def _master_duals(fleet: FleetInstance, columns: list[dict], served: list[int]) -> np.ndarray | None:
    """Edge prices (J per busy second) from the duals of the master's LP relaxation (HiGHS)."""
    from scipy.optimize import linprog

    X = len(fleet.edges)
    cap = np.asarray(fleet.capacity_s, dtype=float)
    cols, cost, A, top = _master_columns(fleet, columns, served)
    n = len(served)
    with highs_output_to_stderr():
        res = linprog(cost, A_ub=A[n:], b_ub=np.ones(X), A_eq=A[:n], b_eq=np.ones(n), bounds=(0, 1), method="highs")
    if res.status != 0:
        return None
    return np.maximum(0.0, -np.asarray(res.ineqlin.marginals)) * top / cap
