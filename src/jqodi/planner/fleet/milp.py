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
from jqodi.planner.fleet.budget import _time_limit_hit, highs_output_to_stderr
from jqodi.planner.fleet.candidates import _alone_why, _best_priced, _Cand, _device_cands, _make_plan, _result
from jqodi.planner.fleet.solution import CAPACITY_RTOL, FleetSolution


def _prune_same_edge(c: _Cand) -> np.ndarray:
    """Options of ``c`` that no other option on the same edge beats in time, energy and edge time
    (a beaten option can always be swapped for its better twin at any edge price: dropping it loses
    nothing, for the LP relaxation or the MILP). Ties keep the first. Cached on ``c``."""
    if c.kept is not None:
        return c.kept
    t, e, b, x = c.t, c.e, c.b, c.x
    n = len(t)
    weak = ((x[:, None] == x[None, :]) & (t[:, None] <= t[None, :]) & (e[:, None] <= e[None, :])
            & (b[:, None] <= b[None, :]))
    strict = (t[:, None] < t[None, :]) | (e[:, None] < e[None, :]) | (b[:, None] < b[None, :])
    idx = np.arange(n)
    dom = weak & (strict | (idx[:, None] < idx[None, :]))
    np.fill_diagonal(dom, False)
    c.kept = np.flatnonzero(~dom.any(axis=0))
    return c.kept



#: fleet-optimal's work limit: HiGHS branch-and-bound nodes (deterministic, unlike seconds).
NODE_LIMIT = 50_000
#: fleet-optimal's wall-clock safety cap (seconds): HiGHS's root node (presolve, LP, cuts) is not
#: bounded by the node limit, so a huge fleet could otherwise run for hours.
TIME_CAP_S = 120.0


def solve_fleet_optimal(fleet: FleetInstance, *, epochs: str = "robust", node_limit: int | None = NODE_LIMIT,
                        time_limit_s: float | None = TIME_CAP_S, mip_rel_gap: float = 1e-7) -> FleetSolution:
    """The exact MILP (HiGHS); ``optimal`` when HiGHS proves it within ``mip_rel_gap``.

    HiGHS stops after ``node_limit`` branch-and-bound nodes: counted work, so the same fleet gets
    the same plan (and the same status) on a quiet or a loaded machine. ``time_limit_s`` is only a
    safety cap on wall-clock seconds; when it stops HiGHS first, the plan may differ from run to
    run and ``extra["time_limit_hit"]`` says so. Either stop before the proof gives status
    ``feasible`` (HiGHS's best plan, ``lower_bound_j`` its bound) instead of ``optimal``."""
    clock = time.perf_counter()
    X = len(fleet.edges)
    cands_all = _device_cands(fleet, epochs)
    why = {i: _alone_why(fleet.members[i], epochs) for i, cs in enumerate(cands_all)
           if _best_priced(cs, np.zeros(X), X) is None}
    plans, status, extra = _milp_plans(fleet, cands_all, why, np.asarray(fleet.capacity_s, dtype=float),
                                       time_limit_s, mip_rel_gap, node_limit)
    extra.update(node_limit=node_limit, time_cap_s=time_limit_s)
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
    cost_parts, ub_parts = [], []      # per candidate: its z column, then its kept options' n columns
    rr, cc, vv = [], [], []            # matrix entries, per candidate as arrays
    ex, ecol, eb = [], [], []          # capacity entries: (edge, column, busy seconds)
    lo, hi = [], []
    layout = []  # per device: list of (cand, z column, option indices, first n column, time row)
    r = ncol = 0
    scale_e = max((float(np.max(c.e)) for cs in cands_all for c in cs), default=1.0) or 1.0
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
            k = len(keep)
            z, k_row, t_row = ncol, r, r + 1
            ncol += 1 + k
            r += 2
            lo += [0.0, -np.inf]; hi += [0.0, 0.0]
            cost_parts.append(np.r_[c.qe, c.e[keep]] / scale_e)
            ub_parts.append(np.r_[1.0, np.full(k, float(c.K))])
            n_cols = np.arange(z + 1, z + 1 + k)
            rr.append(np.r_[pick_row, k_row, t_row, np.full(k, k_row), np.full(k, t_row)])
            cc.append(np.r_[z, z, z, n_cols, n_cols])
            vv.append(np.r_[1.0, -float(c.K), -1.0, np.ones(k), c.t[keep] / c.budget_s])
            ex.append(c.x[keep]); ecol.append(n_cols); eb.append(c.b[keep])
            dev.append((c, z, keep, z + 1, t_row))
        layout.append(dev)
    base = r
    if ex:
        x_all = np.concatenate(ex)
        rr.append(base + x_all); cc.append(np.concatenate(ecol))
        vv.append(np.concatenate(eb) / np.maximum(cap[x_all], 1e-300))
    lo += [-np.inf] * X
    hi += [1.0] * X
    nrows = base + X
    status = "optimal"
    time_hit = stopped = False
    plans: list = [None] * len(fleet.members)
    if ncol:
        A = coo_matrix((np.concatenate(vv), (np.concatenate(rr), np.concatenate(cc))), shape=(nrows, ncol)).tocsr()
        cols_cost, cols_ub = np.concatenate(cost_parts), np.concatenate(ub_parts)
        opts = {"mip_rel_gap": mip_rel_gap, "presolve": True}
        if time_limit_s is not None:
            opts["time_limit"] = float(time_limit_s)
        if node_limit is not None:
            opts["node_limit"] = int(node_limit)
        lo_a, hi_a = np.array(lo), np.array(hi)
        for _attempt in range(4):
            with highs_output_to_stderr():
                res = milp(cols_cost, integrality=np.ones(ncol), bounds=Bounds(0, cols_ub),
                           constraints=LinearConstraint(A, lo_a, hi_a), options=opts)
            time_hit = time_hit or _time_limit_hit(res)
            stopped = stopped or (res.status not in (0, 2) and not _time_limit_hit(res))
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
    extra = {"variables": ncol, "rows": nrows, "time_limit_hit": time_hit,
             "work_limit_hit": bool(stopped and not time_hit)}
    if bound is not None and np.isfinite(bound):
        extra["lower_bound_j"] = float(bound) * scale_e
    return plans, status, extra
