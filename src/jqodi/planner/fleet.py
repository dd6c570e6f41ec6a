"""Joint planning of a fleet: every end device's (model, bits, per-epoch edge and cut) under every
edge server's capacity, minimising the fleet's total energy.

The problem (the sum over devices of Eq. 13, plus one capacity row per edge server)::

    min  Σ_i [ ε_(c_i) + Σ_o e_(i,o)·n_(i,o) ]
    s.t. per device i: one candidate c_i, Σ_o n_(i,o) = K_(c_i), τ_(c_i) + Σ_o t_(i,o)·n_(i,o) ≤ T_max,i
         per edge x:   Σ_i Σ_(o on x) b_(i,o)·n_(i,o) ≤ c_x·W          (b = the option's edge compute time)

(the capacity model is in :mod:`jqodi.core.fleet`). Solvers, in :data:`FLEET_SOLVERS`:

* ``fleet-optimal``: the exact MILP with HiGHS (``scipy.optimize.milp``): binaries z_(i,c) pick a
  candidate, integers n_(i,c,o) count epochs. Options that another option of the same candidate on
  the same edge beats in time, energy and edge time are dropped first (swapping never hurts).
  Proven optimal for small fleets; the time grows quickly with the fleet.
* ``fleet-lagrange``: Lagrangian relaxation of the capacity rows. With prices λ_x ≥ 0 (joules per
  busy second of ES_x) the problem splits into one single-device problem per device with priced
  epoch energies e + λ_x·b, solved by the exact per-device solver of :mod:`jqodi.planner.optimal`.
  (1) subgradient steps (Polyak's rule) on every device's LP relaxation, vectorised over the fleet
  (:class:`_LPArrays`); (2) column generation: each device's exact plan at the prices of the
  master LP's capacity duals, whose Lagrangian value is a proven lower bound (``lower_bound_j``);
  (3) a master MILP picks one column per device under the capacity rows (a device may stay
  unserved at a cost above any plan); (4) repair and improvement: greedy repair if the master
  fails, each device re-planned exactly in the room the others leave, then large-neighbourhood
  search (groups of devices re-planned jointly by the exact MILP) within ``time_limit_s``.
  A device no plan can serve is reported as not served, with the reason.
* ``fcfs``: devices planned alone in arrival order, each taking its own best plan among the edge
  servers that still have room for it (the contention problem: first comers take the cheap
  options, later ones are pushed to costly ones or miss their deadlines).
* ``ignore-capacity``: every device's own best plan as if it had the edges to itself; the
  overload it causes is reported.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from jqodi.core.fleet import FleetInstance
from jqodi.core.instance import Solution
from jqodi.errors import PlanningError
from jqodi.planner.common import (check_epochs, epochs_of, lp_bound, make_solution, option_arrays, pareto_front,
                                  search_candidates, time_budget_s)
from jqodi.planner.explain import infeasible_solution
from jqodi.planner.optimal import ENERGY_RTOL, solve_arrays

__all__ = ["FleetSolution", "FLEET_SOLVERS", "solve_fleet", "compare_fleet", "fleet_lower_bound", "random_fleet"]

#: Relative slack of the capacity rows (the same role as TIME_RTOL for deadlines).
CAPACITY_RTOL = 1e-9
#: fleet-lagrange takes at least this many price steps and column-generation rounds, even past its
#: soft time budget (without them a big, heavily contended fleet gets no useful columns).
MIN_PRICE_STEPS = 8
MIN_CG_ROUNDS = 1


@dataclass
class FleetSolution:
    """A fleet plan: one :class:`Solution` per device (``infeasible`` = not served), totals and loads."""

    solver: str
    status: str                       # optimal | feasible | infeasible (some device not served)
    plans: dict[str, Solution]
    energy_j: float                   # total over the served devices
    edge_load_s: dict[str, float]     # busy seconds planned on each edge
    edge_capacity_s: dict[str, float]
    extra: dict = field(default_factory=dict)

    @property
    def served(self) -> int:
        return sum(1 for s in self.plans.values() if s.status != "infeasible")

    @property
    def unserved(self) -> list[str]:
        return [n for n, s in self.plans.items() if s.status == "infeasible"]

    @property
    def overload_s(self) -> dict[str, float]:
        return {x: max(0.0, self.edge_load_s[x] - self.edge_capacity_s[x]) for x in self.edge_load_s}

    @property
    def capacity_ok(self) -> bool:
        return all(self.edge_load_s[x] <= self.edge_capacity_s[x] * (1 + CAPACITY_RTOL) + 1e-9
                   for x in self.edge_load_s)

    def edge_devices(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {x: [] for x in self.edge_load_s}
        for n, s in self.plans.items():
            for x in sorted({e.edge for e in s.schedule}):
                out[x].append(n)
        return out

    def to_dict(self) -> dict:
        return {"solver": self.solver, "status": self.status, "energy_j": self.energy_j,
                "devices": len(self.plans), "served": self.served, "unserved": self.unserved,
                "edges": {x: {"load_s": self.edge_load_s[x], "capacity_s": self.edge_capacity_s[x],
                              "overload_s": self.overload_s[x], "devices": len(d)}
                          for x, d in self.edge_devices().items()},
                **self.extra,
                "plans": {n: s.to_dict() for n, s in self.plans.items()}}


# --- per-device arrays -----------------------------------------------------------------------------

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


# --- results ----------------------------------------------------------------------------------------

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


# --- baselines --------------------------------------------------------------------------------------

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


# --- Lagrangian --------------------------------------------------------------------------------------

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


class _LPArrays:
    """Every (device, candidate) LP relaxation at once, for the Lagrangian dual.

    The LP of one candidate (min Σ e'·n, Σ n = K, Σ t·n ≤ B, n ≥ 0 real) is K·h(a), h the lower convex
    hull of its (t, e') points at the average time a = B/K. By LP duality
    h(a) = max_(μ≥0) φ(μ), φ(μ) = min_o e'_o + μ·(t_o − a), a concave function whose slope is the
    time of its minimiser minus a. φ at *any* μ is a lower bound, so a bisection on μ (vectorised
    over all candidates, ``STEPS`` steps in log space) gives a valid bound; the minimisers at the
    two ends of the final bracket (one slower than a, one not) are the hull's two options and
    their mix is the LP's fractional plan (used for the edge loads of the subgradient).
    """

    STEPS = 24

    def __init__(self, cands_all: list[list[_Cand]], devices: list[int]):
        rows = [(k, c) for k, i in enumerate(devices) for c in cands_all[i]]
        P = len(rows)
        O = max((len(c.t) for _, c in rows), default=1)
        self.T = np.full((P, O), np.inf)
        self.E = np.full((P, O), np.inf)
        self.B = np.zeros((P, O))
        self.X = np.zeros((P, O), dtype=np.int64)
        for p, (_, c) in enumerate(rows):
            n = len(c.t)
            self.T[p, :n], self.E[p, :n], self.B[p, :n], self.X[p, :n] = c.t, c.e, c.b, c.x
        self.dev = np.array([k for k, _ in rows], dtype=np.int64)
        self.K = np.array([c.K for _, c in rows], dtype=float)
        self.A = np.array([c.budget_s / c.K for _, c in rows], dtype=float)
        self.Q = np.array([c.qe for _, c in rows], dtype=float)
        self.n_dev = len(devices)
        self.D = np.where(np.isfinite(self.T), self.T - self.A[:, None], 0.0)
        self.fast = self.T <= self.A[:, None]
        self.ok = self.fast.any(axis=1)
        slow_gap = np.where(self.T > self.A[:, None], self.T - self.A[:, None], np.inf).min(axis=1)
        self.slow_gap = slow_gap

    def _phi(self, Ep: np.ndarray, mu: np.ndarray):
        v = Ep + mu[:, None] * self.D   # padding: inf + μ·0
        o = v.argmin(axis=1)
        r = np.arange(len(o))
        return v[r, o], o

    def solve(self, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(each device's priced LP bound, the fractional edge load of its LP optimum)."""
        P = len(self.K)
        r = np.arange(P)
        Ep = self.E + lam[self.X] * self.B
        emin = Ep.min(axis=1)
        emax = np.where(np.isfinite(Ep), Ep, -np.inf).max(axis=1)
        phi0, o0 = self._phi(Ep, np.zeros(P))
        done = self.T[r, o0] <= self.A                    # the cheapest option already fits
        hi = np.where(np.isfinite(self.slow_gap), (emax - emin) / np.maximum(self.slow_gap, 1e-300), 0.0) * 1.01 + 1e-300
        lo = hi * 1e-12
        for _ in range(self.STEPS):
            mid = np.sqrt(lo * hi)
            _, o = self._phi(Ep, mid)
            slow = self.T[r, o] > self.A
            lo = np.where(slow, mid, lo)
            hi = np.where(slow, hi, mid)
        phi_lo, o_lo = self._phi(Ep, lo)
        phi_hi, o_hi = self._phi(Ep, hi)
        h = np.where(done, phi0, np.maximum(phi_lo, phi_hi))
        h = np.where(self.ok, h, np.inf)
        value = self.Q + self.K * h
        order = np.lexsort((value, self.dev))
        _, first = np.unique(self.dev[order], return_index=True)
        pick = order[first]
        dev_value = np.full(self.n_dev, np.inf)
        dev_value[self.dev[pick]] = value[pick]
        load = np.zeros(len(lam))
        pick = pick[np.isfinite(value[pick])]
        single = done[pick] | (self.T[pick, o_lo[pick]] <= self.A[pick])
        ps, pm = pick[single], pick[~single]
        os_ = np.where(done[ps], o0[ps], o_hi[ps])
        np.add.at(load, self.X[ps, os_], self.K[ps] * self.B[ps, os_])
        f, sl = o_hi[pm], o_lo[pm]
        w = (self.A[pm] - self.T[pm, f]) / (self.T[pm, sl] - self.T[pm, f])
        np.add.at(load, self.X[pm, f], self.K[pm] * (1 - w) * self.B[pm, f])
        np.add.at(load, self.X[pm, sl], self.K[pm] * w * self.B[pm, sl])
        return dev_value, load


def fleet_lower_bound(fleet: FleetInstance, lam, epochs: str = "robust") -> float:
    """The Lagrangian dual value at edge prices ``lam`` (J per busy second), with each device's LP
    relaxation: a lower bound on the fleet optimum (devices that cannot be served are left out)."""
    cands_all = _device_cands(fleet, epochs)
    lp = _LPArrays(cands_all, [i for i, c in enumerate(cands_all) if c])
    lam = np.asarray(lam, dtype=float)
    v, _ = lp.solve(lam)
    return float(v[np.isfinite(v)].sum() - lam @ np.asarray(fleet.capacity_s))


def solve_lagrange(fleet: FleetInstance, *, epochs: str = "robust", iterations: int = 30,
                   time_limit_s: float = 8.0) -> FleetSolution:
    """Lagrangian prices on edge time, exact per-device plans as columns, column generation, a
    master MILP over the columns and a repair step (module docstring). ``time_limit_s`` is a soft
    budget: the price search and column generation stop early to leave the master its share."""
    clock = time.perf_counter()

    def elapsed():
        return time.perf_counter() - clock

    X = len(fleet.edges)
    cap = np.asarray(fleet.capacity_s, dtype=float)
    cands_all = _device_cands(fleet, epochs)
    zero = np.zeros(X)
    alone = [_best_priced(c, zero, X) if c else None for c in cands_all]
    served = [i for i, p in enumerate(alone) if p is not None]
    why = {i: _alone_why(fleet.members[i], epochs) for i, p in enumerate(alone) if p is None}
    load0 = sum((alone[i].busy for i in served), np.zeros(X))
    extra: dict = {"iterations": 0}
    if not (load0 > cap * (1 + CAPACITY_RTOL) + 1e-12).any():
        # capacity never binds: each device's own exact optimum is the fleet optimum
        extra["lower_bound_j"] = float(sum(alone[i].energy_j for i in served))
        return _result(fleet, "fleet-lagrange", "optimal", alone, epochs, extra, why)
    columns: list[dict] = [{} for _ in fleet.members]

    def add(i, p):
        if p is not None:
            columns[i].setdefault((id(p.cand), tuple(p.counts)), p)

    def price_all(lam):
        """Every device's exact plan at prices ``lam`` as a column; the Lagrangian bound there."""
        total = 0.0
        for i in served:
            p = _best_priced(cands_all[i], lam, X)
            add(i, p)
            total += p.energy_j + float(lam @ p.busy)
        return total - float(lam @ cap)

    for i in served:
        add(i, alone[i])
    # 1. the dual: subgradient steps on the edge prices with every device's LP (Polyak's rule
    #    towards a target above the best bound), within a quarter of the budget
    lp = _LPArrays(cands_all, served)
    lam = np.zeros(X)
    best_lb, best_lam, theta, stall = -math.inf, lam.copy(), 1.0, 0
    it = 0
    for it in range(1, iterations + 1):
        v, load = lp.solve(lam)
        lb = float(v.sum() - lam @ cap)
        if lb > best_lb + 1e-9 * abs(lb):
            best_lb, best_lam, stall = lb, lam.copy(), 0
        else:
            stall += 1
            if stall >= 3:
                theta, stall = theta / 2, 0
        g = load - cap
        g = np.where((lam <= 0) & (g < 0), 0.0, g)
        gg = float(g @ g)
        if gg <= 1e-18 * max(1.0, float(cap @ cap)) or theta < 1e-3 or \
                (it >= MIN_PRICE_STEPS and elapsed() > 0.25 * time_limit_s):
            break
        target = best_lb + theta * 0.05 * abs(best_lb)
        lam = np.maximum(0.0, lam + max(target - lb, 1e-9 * abs(lb)) / gg * g)
    # 2. columns at the best prices; 3. column generation: the master LP's capacity duals are
    #    prices, and each device's exact plan at them is its column of least reduced cost
    t0 = time.perf_counter()
    at_best = [None] * len(fleet.members)
    total = 0.0
    for i in served:
        at_best[i] = p = _best_priced(cands_all[i], best_lam, X)
        add(i, p)
        total += p.energy_j + float(best_lam @ p.busy)
    best_lb = max(best_lb, total - float(best_lam @ cap))
    per_round = time.perf_counter() - t0
    # each device's plan using the edges least (every edge priced far above energy): the column
    # that lets the master serve the most devices when capacity is short
    busy0 = float(load0.sum())
    steep = np.full(X, 1e3 * sum(alone[i].energy_j for i in served) / max(busy0, 1e-12))
    for i in served:
        add(i, _best_priced(cands_all[i], steep, X))
    cg_rounds = 0
    while (cg_rounds < MIN_CG_ROUNDS or elapsed() + 1.5 * per_round < 0.7 * time_limit_s) and cg_rounds < 25:
        lam_cg = _master_duals(fleet, columns, served)
        if lam_cg is None:
            break
        cg_rounds += 1
        before = sum(len(columns[i]) for i in served)
        t0 = time.perf_counter()
        best_lb = max(best_lb, price_all(lam_cg))
        per_round = time.perf_counter() - t0
        if sum(len(columns[i]) for i in served) == before:
            break
    # diversification while the budget allows: per edge, each device's plan avoiding it and with it
    # dearer (at the last prices), so the integer master can trade edges between devices
    lam_last = _master_duals(fleet, columns, served)
    lam_last = best_lam if lam_last is None else lam_last
    diversified = 0
    for x in range(X):
        for mult in (None, 3.0):
            if elapsed() + per_round > 0.7 * time_limit_s:
                break
            t0 = time.perf_counter()
            lam2, ban = lam_last.copy(), np.zeros(X, bool)
            if mult is None:
                ban[x] = True
            else:
                lam2[x] = lam2[x] * mult + max(float(lam_last.max()), 1e-9)
            for i in served:
                add(i, _best_priced(cands_all[i], lam2, X, ban))
            per_round = time.perf_counter() - t0
            diversified += 1
    extra["diversified_price_vectors"] = diversified
    extra.update(iterations=it, column_generation_rounds=cg_rounds, lower_bound_j=best_lb,
                 prices_j_per_s={x: float(best_lam[k]) for k, x in enumerate(fleet.edges)})
    # 4. master: one column per device (or not served) under the capacity rows
    plans = _master(fleet, columns, served, max(2.0, 0.9 * time_limit_s - elapsed()))
    master_ok = plans is not None
    moved = dropped = 0
    if plans is None:  # HiGHS found nothing in its time: cheap repair from the plans at the best prices
        plans = [None] * len(fleet.members)
        for i in served:
            plans[i] = at_best[i]
        plans, moved, dropped = _make_feasible(fleet, columns, plans, why)
    for i in served:
        if plans[i] is None and i not in why:
            why[i] = "edge capacity: no plan of this device fits beside the others'"
    plans = _improve(fleet, cands_all, columns, plans, why)
    plans, exact_moves = _improve_exact(fleet, cands_all, plans, why, clock + 0.8 * time_limit_s)
    plans, lns_moves = _neighbourhoods(fleet, cands_all, plans, why, clock + time_limit_s, bound_j=best_lb)
    extra["exact_improvements"] = exact_moves
    extra["neighbourhood_improvements"] = lns_moves
    extra["columns"] = int(sum(len(c) for c in columns))
    extra["repair"] = {"master_milp": master_ok, "moved": moved, "dropped": dropped}
    sol = _result(fleet, "fleet-lagrange", "feasible", plans, epochs, extra, why)
    if sol.status != "infeasible" and sol.energy_j > 0:
        sol.extra["gap_to_bound_pct"] = 100.0 * (sol.energy_j - best_lb) / sol.energy_j
    return sol


def _master(fleet: FleetInstance, columns: list[dict], served: list[int], time_limit_s: float):
    """Pick one column per device (HiGHS): least total energy under every edge's capacity; a device
    may stay unserved at a cost above any plan (so the most devices are served first)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    X = len(fleet.edges)
    cap = np.asarray(fleet.capacity_s, dtype=float)
    cols, cost, A, _ = _master_columns(fleet, columns, served)
    lo = np.r_[np.ones(len(served)), np.full(X, -np.inf)]
    hi = np.r_[np.ones(len(served)), np.full(X, 1.0 - 1e-9)]
    res = milp(cost, integrality=np.ones(len(cols)), bounds=Bounds(0, 1), constraints=LinearConstraint(A, lo, hi),
               options={"time_limit": float(time_limit_s), "mip_rel_gap": 1e-4, "presolve": True})
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


def _make_feasible(fleet, columns, plans, why):
    """Cheap repair (when the master MILP found nothing in its time): while an edge x is overloaded,
    its devices, largest users first, switch to their known column that uses x least and fits the
    other edges; a device with none is not served."""
    X = len(fleet.edges)
    cap = np.asarray(fleet.capacity_s, dtype=float)
    limit = cap * (1 + CAPACITY_RTOL) + 1e-12
    load = sum((p.busy for p in plans if p is not None), np.zeros(X))
    moved = dropped = 0
    for x in np.argsort(-(load - cap) / cap):
        if load[x] <= limit[x]:
            continue
        users = sorted((i for i, p in enumerate(plans) if p is not None and p.busy[x] > 0),
                       key=lambda i: -plans[i].busy[x])
        for i in users:
            if load[x] <= limit[x]:
                break
            old = plans[i]
            room = limit - load + old.busy
            fit = [q for q in columns[i].values() if q.busy[x] < old.busy[x] and (q.busy <= room).all()]
            if fit:
                q = min(fit, key=lambda q: (q.busy[x], q.energy_j))
                load += q.busy - old.busy
                plans[i] = q
                moved += 1
            else:
                load -= old.busy
                plans[i] = None
                why[i] = f"edge capacity: {fleet.edges[x]} is full (the repair step found no plan for it)"
                dropped += 1
    return plans, moved, dropped


def _improve(fleet, cands_all, columns, plans, why, passes: int = 2):
    """Local improvement: each device takes its cheapest known column that fits in the room the
    others leave, when that saves energy; a device left unserved for capacity also tries its best
    plan avoiding the full edges."""
    X = len(fleet.edges)
    cap = np.asarray(fleet.capacity_s, dtype=float)
    load = sum((p.busy for p in plans if p is not None), np.zeros(X))
    for _pass in range(passes):
        changed = False
        for i, cands in enumerate(cands_all):
            old = plans[i]
            if not cands or (old is None and not why.get(i, "").startswith("edge capacity")):
                continue
            room = cap * (1 + CAPACITY_RTOL) + 1e-12 - load + (old.busy if old is not None else 0)
            fit = [q for q in columns[i].values() if (q.busy <= room).all()]
            if old is None:  # as first come, first served: drop the edges it would overfill and re-plan
                banned = room <= 1e-9
                while True:
                    q = _best_priced(cands, np.zeros(X), X, banned)
                    if q is None:
                        break
                    over = q.busy > room
                    if not over.any():
                        fit.append(q)
                        break
                    banned = banned | over
            if not fit:
                continue
            q = min(fit, key=lambda q: q.energy_j)
            if old is None or q.energy_j < old.energy_j * (1 - 1e-12):
                load += q.busy - (old.busy if old is not None else 0)
                plans[i] = q
                why.pop(i, None)
                changed = True
        if not changed:
            break
    return plans


def _improve_exact(fleet, cands_all, plans, why, deadline: float):
    """Until ``deadline`` (perf_counter): each device, costliest first, takes its exact best plan
    that fits in the room the others leave (a one-device MILP whose capacity rows are that room)
    — plans no single price produces, such as a mix that exactly fills an edge."""
    X = len(fleet.edges)
    cap = np.asarray(fleet.capacity_s, dtype=float)
    load = sum((p.busy for p in plans if p is not None), np.zeros(X))
    order = sorted((i for i, c in enumerate(cands_all) if c and (plans[i] is not None
                    or why.get(i, "").startswith("edge capacity"))),
                   key=lambda i: -(plans[i].energy_j if plans[i] is not None else math.inf))
    moves = 0
    for i in order:
        if time.perf_counter() > deadline:
            break
        old = plans[i]
        room = np.maximum(cap - load + (old.busy if old is not None else 0), 0.0)
        if (room <= 1e-12).all():
            continue
        sub = FleetInstance((fleet.members[i],), fleet.edges, tuple(room), fleet.window_s)
        got, status, _ = _milp_plans(sub, [cands_all[i]], {}, room,
                                     max(0.05, deadline - time.perf_counter()), 1e-7)
        q = got[0]
        if q is not None and (old is None or q.energy_j < old.energy_j * (1 - 1e-9)):
            load += q.busy - (old.busy if old is not None else 0)
            plans[i] = q
            why.pop(i, None)
            moves += 1
    return plans, moves


def _neighbourhoods(fleet, cands_all, plans, why, deadline: float, group: int = 6, seed: int = 0,
                    bound_j: float = -math.inf):
    """Large-neighbourhood search until ``deadline``: re-plan a group of ``group`` devices jointly
    and exactly (the fleet MILP over the group, in the room the others leave) and keep the result
    when it serves a device left out for capacity, or saves energy. A group starts from such a
    device (first) or from a random one, with devices sharing one of its edges."""
    rng = np.random.default_rng(seed)
    X = len(fleet.edges)
    cap = np.asarray(fleet.capacity_s, dtype=float)
    pending = [i for i, p in enumerate(plans) if p is None and cands_all[i]
               and why.get(i, "").startswith("edge capacity")]
    live = [i for i, p in enumerate(plans) if p is not None]
    if len(live) + len(pending) < 2:
        return plans, 0
    load = sum((plans[i].busy for i in live), np.zeros(X))
    total = sum(plans[i].energy_j for i in live)
    moves = tries = 0
    while time.perf_counter() < deadline and tries < 4 * (len(live) + len(pending)) \
            and (pending or total > bound_j * (1 + 1e-4)):
        tries += 1
        if pending:
            i0 = pending[int(rng.integers(len(pending)))]
            x = int(rng.integers(X))
        else:
            i0 = live[int(rng.integers(len(live)))]
            x = int(rng.choice(np.flatnonzero(plans[i0].busy))) if plans[i0].busy.any() else 0
        mates = [i for i in live if i != i0 and plans[i].busy[x] > 0]
        rng.shuffle(mates)
        others = [i for i in live if i != i0 and i not in mates]
        rng.shuffle(others)
        grp = [i0] + (mates + others)[:group - 1]
        room = np.maximum(cap - load + sum((plans[i].busy for i in grp if plans[i] is not None), np.zeros(X)), 0.0)
        sub = FleetInstance(tuple(fleet.members[i] for i in grp), fleet.edges, tuple(room), fleet.window_s)
        got, _, _ = _milp_plans(sub, [cands_all[i] for i in grp], {}, room,
                                max(0.05, min(2.0, deadline - time.perf_counter())), 1e-6)
        if any(q is None for q in got):
            continue
        old_e = sum(plans[i].energy_j for i in grp if plans[i] is not None)
        newly = i0 in pending
        if newly or sum(q.energy_j for q in got) < old_e * (1 - 1e-9):
            for i, q in zip(grp, got):
                old = plans[i]
                load += q.busy - (old.busy if old is not None else 0)
                total += q.energy_j - (old.energy_j if old is not None else 0)
                plans[i] = q
            if newly:
                pending.remove(i0)
                live.append(i0)
                why.pop(i0, None)
            moves += 1
    return plans, moves


# --- exact MILP -------------------------------------------------------------------------------------

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


def _milp_plans(fleet, cands_all, why, cap, time_limit_s, mip_rel_gap):
    """The fleet MILP over the devices not in ``why`` with capacities ``cap`` (busy seconds).
    Returns (plans, status, extra); when HiGHS proves no plan serves them all, every plan is None
    and ``why`` says so."""
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
    plans: list = [None] * len(fleet.members)
    if cols_cost:
        A = coo_matrix((vals, (rows, cols)), shape=(nrows, len(cols_cost))).tocsr()
        opts = {"mip_rel_gap": mip_rel_gap, "presolve": True}
        if time_limit_s is not None:
            opts["time_limit"] = float(time_limit_s)
        lo_a, hi_a = np.array(lo), np.array(hi)
        for _attempt in range(4):
            res = milp(np.array(cols_cost), integrality=np.array(cols_int), bounds=Bounds(0, np.array(cols_ub)),
                       constraints=LinearConstraint(A, lo_a, hi_a), options=opts)
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
    extra = {"variables": len(cols_cost), "rows": nrows}
    if bound is not None and np.isfinite(bound):
        extra["lower_bound_j"] = float(bound) * scale_e
    return plans, status, extra


# --- registry and comparison -----------------------------------------------------------------------

FLEET_SOLVERS: dict[str, tuple[Callable[..., FleetSolution], str]] = {
    "fleet-lagrange": (solve_lagrange, "Lagrangian prices on edge time, exact per-device plans, repair"),
    "fleet-optimal": (solve_fleet_optimal, "exact MILP over the whole fleet (HiGHS); small fleets"),
    "fcfs": (solve_fcfs, "baseline: devices planned alone in arrival order, first come first served"),
    "ignore-capacity": (solve_ignore_capacity, "baseline: every device's own optimum, capacity ignored"),
}


def solve_fleet(fleet: FleetInstance, solver: str = "fleet-lagrange", *, epochs: str = "robust",
                **opts) -> FleetSolution:
    check_epochs(epochs)
    if solver not in FLEET_SOLVERS:
        raise PlanningError(f"unknown fleet solver {solver!r} (known: {', '.join(FLEET_SOLVERS)})")
    t0 = time.perf_counter()
    sol = FLEET_SOLVERS[solver][0](fleet, epochs=epochs, **opts)
    sol.extra["plan_time_ms"] = (time.perf_counter() - t0) * 1e3
    return sol


def compare_fleet(fleet: FleetInstance, solvers=None, *, epochs: str = "robust") -> list[FleetSolution]:
    return [solve_fleet(fleet, s, epochs=epochs) for s in (solvers or list(FLEET_SOLVERS))]


# --- random fleets (tests, benchmarks) --------------------------------------------------------------

def random_fleet(seed: int = 0, *, devices: int = 4, edges: int = 2, models: int = 2, bits=(4, 8),
                 cuts: int = 3, epochs: tuple[int, int] = (4, 20), capacity_share: float = 0.6) -> FleetInstance:
    """A seeded synthetic fleet: one :func:`~jqodi.planner.generate.random_instance` per device (on
    the same edge names), each option's edge time = its epoch time × the deep share of the work
    (1 − cut/(cuts+1)) × a per-(device, edge) factor in [0.3, 0.8]; each edge's capacity is
    ``capacity_share`` × the load the devices' stand-alone optima put on it (so capacity binds)."""
    from jqodi.core.fleet import FleetMember
    from jqodi.planner.generate import random_instance

    rng = np.random.default_rng(seed)
    members = []
    for i in range(devices):
        inst = random_instance(seed * 100_003 + i, models=models, bits=tuple(bits), edges=edges, cuts=cuts,
                               epochs=epochs, tightness=float(rng.uniform(0.2, 1.0)), p_unreachable=0.0)
        f = rng.uniform(0.3, 0.8, edges)
        busy = tuple(np.array([o.epoch_time_s * (1 - o.cut / (cuts + 1)) * f[int(o.edge[2:])]
                               for o in c.options]) for c in inst.candidates)
        members.append(FleetMember(f"sd{i}", inst, busy))
    names = tuple(f"es{x}" for x in range(edges))
    free = FleetInstance(tuple(members), names, (math.inf,) * edges, math.inf)
    load = np.array(list(solve_ignore_capacity(free).edge_load_s.values()))
    floor = max(float(load.mean()), 1e-6) * capacity_share
    cap = tuple(float(max(capacity_share * l, floor * 0.2)) for l in load)
    return FleetInstance(tuple(members), names, cap, math.inf, {"generator": "random_fleet", "seed": seed})
