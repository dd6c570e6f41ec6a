"""``fleet-optimal``: the exact fleet MILP with HiGHS (``scipy.optimize.milp``).

Binaries z_(i,c) pick one candidate per device, integers n_(i,c,o) count its epochs per option;
rows: Σ_c z_(i,c) = 1, Σ_o n = K_c·z, Σ_o t·n ≤ budget·z per device (Eq. 13) and one capacity row
Σ b·n ≤ c_x·W per edge server. Options another option of the same candidate on the same edge beats
in time, energy and edge time are dropped first (:func:`_prune_same_edge`). :func:`_milp_plans` also
serves fleet-lagrange's exact improvement steps (one device, or a group, in the room others leave).
"""
from __future__ import annotations

import math
import time

import numpy as np

from jqodi.core.fleet import FleetInstance
from jqodi.planner.fleet.budget import _time_limit_hit
from jqodi.planner.fleet.candidates import _alone_why, _best_priced, _Cand, _device_cands, _make_plan, _result
from jqodi.planner.fleet.solution import CAPACITY_RTOL, FleetSolution


def _prune_same_edge(c: _Cand) -> np.ndarray:
    """Options of ``c`` that no other option on the same edge beats in time, energy and edge time
    (a beaten option can always be swapped for its better twin at any edge price: dropping it loses
    nothing, for the LP relaxation or the MILP). Ties keep the first."""
    t, e, b, x = c.t, c.e, c.b, c.x
    n = len(t)
    weak = ((x[:, None] == x[None, :]) & (t[:, None] <= t[None, :]) & (e[:, None] <= e[None, :])
            & (b[:, None] <= b[None, :]))
    strict = (t[:, None] < t[None, :]) | (e[:, None] < e[None, :]) | (b[:, None] < b[None, :])
    idx = np.arange(n)
    dom = weak & (strict | (idx[:, None] < idx[None, :]))
    np.fill_diagonal(dom, False)
    return np.flatnonzero(~dom.any(axis=0))



def solve_fleet_optimal(fleet: FleetInstance, *, epochs: str = "robust", time_limit_s: float | None = 30.0,
                        mip_rel_gap: float = 1e-7) -> FleetSolution:
    """The exact MILP (HiGHS); ``optimal`` when HiGHS proves it within ``mip_rel_gap``."""
    clock = time.perf_counter()
    X = len(fleet.edges)
    cands_all = _device_cands(fleet, epochs)
    why = {i: _alone_why(fleet.members[i], epochs) for i, cs in enumerate(cands_all)
           if _best_priced(cs, np.zeros(X), X) is None}
    plans, status, extra = _milp_plans(fleet, cands_all, why, np.asarray(fleet.capacity_s, dtype=float),
                                       time_limit_s, mip_rel_gap)
    sol = _result(fleet, "fleet-optimal", status, plans, epochs, extra, why)
    sol.extra["plan_time_ms"] = (time.perf_counter() - clock) * 1e3
    return sol


def _milp_plans(fleet, cands_all, why, cap, time_limit_s, mip_rel_gap, node_limit: int | None = None):
    """The fleet MILP over the devices not in ``why`` with capacities ``cap`` (busy seconds).
    Returns (plans, status, extra); when HiGHS proves no plan serves them all, every plan is None
    and ``why`` says so. ``node_limit`` bounds HiGHS's branch-and-bound nodes (deterministic work);
    ``extra["time_limit_hit"]`` says whether ``time_limit_s`` stopped it instead."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    X = len(fleet.edges)
    cols_cost, cols_int, cols_ub = [], [], []
    rows, cols, vals = [], [], []
    lo, hi = [], []
    layout = []  # per device: list of (cand, z column, option indices, first n column)
    r = 0

    def add(row, col, v):
        rows.append(row); cols.append(col); vals.append(v)

    scale_e = max((float(np.max(c.e)) for cs in cands_all for c in cs), default=1.0) or 1.0
    edge_rows = []
    for i, cands in enumerate(cands_all):
        if i in why:
            layout.append([])
            continue
        dev, pick_row = [], r
        r += 1
        lo.append(1.0); hi.append(1.0)
        for c in cands:
            keep = _prune_same_edge(c)
            keep = keep[cap[c.x[keep]] > 1e-9]  # an edge without room takes no epoch
            z = len(cols_cost)
            cols_cost.append(c.qe / scale_e); cols_int.append(1); cols_ub.append(1.0)
            add(pick_row, z, 1.0)
            first = len(cols_cost)
            k_row, t_row = r, r + 1
            r += 2
            lo += [0.0, -np.inf]; hi += [0.0, 0.0]
            add(k_row, z, -float(c.K))
            add(t_row, z, -1.0)
            for j, o in enumerate(keep):
                col = first + j
                cols_cost.append(c.e[o] / scale_e); cols_int.append(1); cols_ub.append(float(c.K))
                add(k_row, col, 1.0)
                add(t_row, col, c.t[o] / c.budget_s)
                edge_rows.append((int(c.x[o]), col, c.b[o]))
            dev.append((c, z, keep, first, t_row))
        layout.append(dev)
    base = r
    for x, col, b in edge_rows:
        add(base + x, col, b / max(cap[x], 1e-300))
    lo += [-np.inf] * X
    hi += [1.0] * X
    nrows = base + X
    status = "optimal"
    time_hit = False
    plans: list = [None] * len(fleet.members)
    if cols_cost:
        A = coo_matrix((vals, (rows, cols)), shape=(nrows, len(cols_cost))).tocsr()
        opts = {"mip_rel_gap": mip_rel_gap, "presolve": True}
        if time_limit_s is not None:
            opts["time_limit"] = float(time_limit_s)
        if node_limit is not None:
            opts["node_limit"] = int(node_limit)
        lo_a, hi_a = np.array(lo), np.array(hi)
        for _attempt in range(4):
            res = milp(np.array(cols_cost), integrality=np.array(cols_int), bounds=Bounds(0, np.array(cols_ub)),
                       constraints=LinearConstraint(A, lo_a, hi_a), options=opts)
            time_hit = time_hit or _time_limit_hit(res)
            if res.x is None:
                reason = ("edge capacity: the edge servers cannot serve every device together (proven by "
                          "HiGHS); fleet-lagrange reports which devices fit" if res.status == 2 else
                          f"HiGHS stopped without a plan: {res.message}")
                why.update({i: reason for i in range(len(fleet.members)) if i not in why})
                plans = [None] * len(fleet.members)
                break
            xv = np.rint(res.x)
            violated = False
            for i, dev in enumerate(layout):
                plans[i] = None
                for c, z, keep, first, t_row in dev:
                    if xv[z] < 0.5:
                        continue
                    counts = [(int(o), int(xv[first + j])) for j, o in enumerate(keep) if xv[first + j] > 0]
                    p = _make_plan(c, counts, X)
                    used = math.fsum(c.t[o] * n for o, n in counts)
                    if used > c.budget_s or sum(n for _, n in counts) != c.K:
                        hi_a[t_row] -= (used - c.budget_s) / c.budget_s + 1e-12
                        violated = True
                    plans[i] = p
            load = sum((p.busy for p in plans if p is not None), np.zeros(X))
            for x in range(X):
                if load[x] > cap[x] * (1 + CAPACITY_RTOL):
                    hi_a[base + x] -= (load[x] - cap[x]) / cap[x] + 1e-12
                    violated = True
            if not violated:
                break
        if res.x is not None and (res.status != 0 or violated):
            status = "feasible"
        bound = getattr(res, "mip_dual_bound", None)
    else:
        bound = None
    extra = {"variables": len(cols_cost), "rows": nrows, "time_limit_hit": time_hit}
    if bound is not None and np.isfinite(bound):
        extra["lower_bound_j"] = float(bound) * scale_e
    return plans, status, extra
