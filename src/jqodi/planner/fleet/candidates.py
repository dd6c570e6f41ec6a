"""Per-device arrays of the fleet problem and the step from chosen plans to a :class:`FleetSolution`.

Each device's search candidates (model, bits) become :class:`_Cand` arrays (epoch time t, energy e,
edge busy time b and fleet edge index x per option, K epochs, time budget); :func:`_best_priced` is
the device's exact plan for priced epoch energies e + λ_x·b (the per-device subproblem of the
Lagrangian relaxation of the capacity rows, Eq. 13 per device), solved with
:func:`jqodi.planner.optimal.solve_arrays`. Shared by every fleet solver.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from jqodi.core.fleet import FleetInstance
from jqodi.core.instance import Solution
from jqodi.planner.common import epochs_of, lp_bound, make_solution, option_arrays, pareto_front, search_candidates, \
    time_budget_s
from jqodi.planner.explain import infeasible_solution
from jqodi.planner.fleet.solution import FleetSolution
from jqodi.planner.optimal import ENERGY_RTOL, solve_arrays


@dataclass
class _Cand:
    cand: object       # Candidate
    K: int
    budget_s: float
    t: np.ndarray
    e: np.ndarray
    b: np.ndarray      # edge busy seconds per epoch
    x: np.ndarray      # fleet edge index per option
    qe: float


@dataclass
class _Plan:
    cand: _Cand
    counts: list[tuple[int, int]]
    energy_j: float                 # true energy, quantization included
    busy: np.ndarray                # busy seconds per fleet edge


def _device_cands(fleet: FleetInstance, epochs: str) -> list[list[_Cand]]:
    index = {x: i for i, x in enumerate(fleet.edges)}
    out = []
    for m in fleet.members:
        cands = []
        busy_of = {id(c): b for c, b in zip(m.instance.candidates, m.edge_busy_s)}
        for c in search_candidates(m.instance):
            K = epochs_of(c, epochs)
            budget = time_budget_s(m.instance, c)
            if K is None or not c.options or budget <= 0:
                continue
            arr = option_arrays(c)
            x = np.array([index[o.edge] for o in c.options], dtype=np.int64)
            cands.append(_Cand(c, K, budget, arr.time_s, arr.energy_j, np.asarray(busy_of[id(c)], float), x,
                               c.quantize_energy_j))
        out.append(cands)
    return out


def _make_plan(c: _Cand, counts, n_edges: int) -> _Plan:
    busy = np.zeros(n_edges)
    energy = c.qe
    for o, n in counts:
        busy[c.x[o]] += c.b[o] * n
        energy += c.e[o] * n
    return _Plan(c, sorted(counts), float(energy), busy)


def _best_priced(cands: list[_Cand], lam: np.ndarray, n_edges: int, banned: np.ndarray | None = None
                 ) -> _Plan | None:
    """The device's exact best plan for priced energies e + λ_x·b (options on ``banned`` edges removed)."""
    rows = []
    for c in cands:
        ep = c.e + lam[c.x] * c.b
        idx = None
        tt = c.t
        if banned is not None and banned[c.x].any():
            idx = np.flatnonzero(~banned[c.x])
            if len(idx) == 0:
                continue
            tt, ep = c.t[idx], ep[idx]
        front = pareto_front(tt, ep)
        lp = lp_bound(tt, ep, front, c.K, c.budget_s)
        if lp is None:
            continue
        rows.append((c.qe + lp.value_j, c, tt, ep, idx))
    rows.sort(key=lambda r: r[0])
    best = None
    for bound, c, tt, ep, idx in rows:
        if best is not None and bound >= best[0] - ENERGY_RTOL * max(abs(best[0]), 1.0):
            break
        ub = math.inf if best is None else best[0] - c.qe
        _, counts, _ = solve_arrays(tt, ep, c.K, c.budget_s, upper_bound_j=ub)
        if counts:
            val = c.qe + math.fsum(ep[o] * n for o, n in counts)
            if best is None or val < best[0]:
                if idx is not None:
                    counts = [(int(idx[o]), n) for o, n in counts]
                best = (val, c, counts)
    return None if best is None else _make_plan(best[1], best[2], n_edges)



def _result(fleet: FleetInstance, solver: str, status: str, plans: list[_Plan | None], epochs: str,
            extra: dict, unserved_why: dict[int, str] | None = None) -> FleetSolution:
    sols: dict[str, Solution] = {}
    load = np.zeros(len(fleet.edges))
    total = 0.0
    for i, (m, p) in enumerate(zip(fleet.members, plans)):
        if p is None:
            why = (unserved_why or {}).get(i)
            sol = infeasible_solution(m.instance, solver, epochs, candidates=search_candidates(m.instance))
            if why:
                sol.extra["fleet_reason"] = why
            sols[m.name] = sol
            continue
        load += p.busy
        total += p.energy_j
        sols[m.name] = make_solution(solver, "feasible", p.cand.cand, p.counts, epochs,
                                     {"edge_busy_s": {fleet.edges[x]: float(p.busy[x])
                                                      for x in np.flatnonzero(p.busy)}})
    if any(p is None for p in plans):
        status = "infeasible"
    return FleetSolution(solver, status, sols, float(total),
                         {x: float(load[k]) for k, x in enumerate(fleet.edges)},
                         {x: float(c) for x, c in zip(fleet.edges, fleet.capacity_s)}, extra)


def _alone_why(m, epochs: str) -> str:
    from jqodi.planner.explain import explain

    ex = explain(m.instance, epochs, search_candidates(m.instance))
    if ex["min_deadline_s"] is not None:
        return f"cannot meet its deadline even alone: needs a deadline ≥ {ex['min_deadline_s']:.6g} s"
    return "no candidate can reach the target loss on any edge server"
