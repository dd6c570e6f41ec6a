"""Per-device arrays of the fleet problem and the step from chosen plans to a :class:`FleetSolution`.

Each device's search candidates (model, bits) become :class:`_Cand` arrays (epoch time t, energy e,
edge busy time b and fleet edge index x per option, K epochs, time budget); :func:`_best_priced` is
the device's exact plan for priced epoch energies e + λ_x·b (the per-device subproblem of the
Lagrangian relaxation of the capacity rows, Eq. 13 per device), solved with
:func:`jqodi.planner.optimal.solve_arrays`. Shared by every fleet solver.
"""
from __future__ import annotations

import heapq
import math
import operator
from dataclasses import dataclass

import numpy as np

from jqodi.core.fleet import FleetInstance
from jqodi.core.instance import Solution
from jqodi.planner.common import epochs_of, lp_bound, make_solution, option_arrays, pareto_front, search_candidates, \
    time_budget_s
from jqodi.planner.explain import infeasible_solution
from jqodi.planner.fleet.solution import FleetSolution
from jqodi.planner.optimal import ENERGY_RTOL, solve_arrays


_EDGE = operator.attrgetter("edge")


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
    kept: np.ndarray | None = None  # options no same-edge twin beats (fleet.milp._prune_same_edge, cached)


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
            x = np.fromiter(map(index.__getitem__, map(_EDGE, c.options)), np.int64, len(c.options))
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
    """The device's exact best plan for priced energies e + λ_x·b (options on ``banned`` edges removed).

    Candidates are solved exactly in the order of their LP bounds, until a bound reaches the best
    plan found. The LP bound (a Pareto front and its convex hull per candidate) is computed only
    for the candidates that can come next in that order: a candidate whose cheap bound
    qe + K·min(e) (every epoch on its cheapest option, deadline ignored; ≤ its LP bound) is above
    the smallest LP bound known so far cannot, so the order, the solves and the plan are those of
    bounding every candidate first — at a fraction of the cost (most devices solve one or two of
    their candidates)."""
    pending = []  # (cheap bound, position, ...) of candidates whose LP bound is not computed yet
    for i, c in enumerate(cands):
        ep = c.e + lam[c.x] * c.b
        idx = None
        tt = c.t
        off = banned[c.x] if banned is not None else None
        if off is not None and off.any():
            idx = (~off).nonzero()[0]
            if len(idx) == 0:
                continue
            tt, ep = c.t[idx], ep[idx]
        cheap = c.qe + c.K * float(ep.min())
        pending.append((cheap - 1e-9 * max(abs(cheap), 1.0), i, c, tt, ep, idx))  # margin: rounding
    pending.sort(key=lambda r: (r[0], r[1]))
    bounded: list[tuple] = []  # heap of (LP bound, position, ...): the order of the full sort
    best = None
    k = 0
    while True:
        while k < len(pending) and (not bounded or pending[k][0] <= bounded[0][0]):
            _, i, c, tt, ep, idx = pending[k]
            k += 1
            lp = lp_bound(tt, ep, pareto_front(tt, ep), c.K, c.budget_s)
            if lp is not None:
                heapq.heappush(bounded, (c.qe + lp.value_j, i, c, tt, ep, idx))
        if not bounded:
            break
        bound, _, c, tt, ep, idx = heapq.heappop(bounded)
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
