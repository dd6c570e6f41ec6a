"""``fleet-lagrange``: Lagrangian relaxation of the edge capacity rows.

With prices λ_x ≥ 0 (joules per busy second of ES_x) the fleet problem splits into one problem per
device with priced epoch energies e + λ_x·b. (1) subgradient steps (Polyak's rule) on every
device's LP relaxation, vectorised over the fleet (:class:`_LPArrays`); (2) column generation with
the master LP's capacity duals as prices (:mod:`jqodi.planner.fleet.master`), whose Lagrangian value
is a proven lower bound (``lower_bound_j``); (3) the master MILP picks one column per device;
(4) repair and improvement (:mod:`jqodi.planner.fleet.repair`). Every phase stops on counted work
(:class:`~jqodi.planner.fleet.budget.WorkBudget`), so the plan does not depend on the machine's
load; ``time_limit_s`` is only a safety cap (:mod:`jqodi.planner.fleet.budget`).
"""
from __future__ import annotations

import math

import numpy as np

from jqodi.core.fleet import FleetInstance
from jqodi.planner.fleet.budget import WorkBudget, _Cap
from jqodi.planner.fleet.candidates import _alone_why, _best_priced, _Cand, _device_cands, _result
from jqodi.planner.fleet.master import _master, _master_duals, _master_fixed
from jqodi.planner.fleet.repair import _improve, _improve_exact, _make_feasible, _neighbourhoods
from jqodi.planner.fleet.solution import CAPACITY_RTOL, FleetSolution

#: fleet-lagrange's safety cap on wall-clock seconds (well above the ≈ 7 s of CPU its default work takes
#: on the 1,000-device example on a quiet 2-core host, so that a loaded host still gets the same plan).
TIME_CAP_S = 120.0


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


def solve_lagrange(fleet: FleetInstance, *, epochs: str = "robust", budget: WorkBudget | None = None,
                   time_limit_s: float = TIME_CAP_S, **work) -> FleetSolution:
    """Lagrangian prices on edge time, exact per-device plans as columns, column generation, a
    master MILP over the columns and a repair step (module docstring).

    ``budget`` (or its fields as keywords, e.g. ``price_steps=10``) bounds the work of every phase:
    the same fleet gets the same plan on any machine. ``time_limit_s`` is a safety cap only: if it
    is hit the result may differ from run to run, and ``extra["time_cap_hit"]`` says so."""
    budget = budget or WorkBudget()
    if work:
        from dataclasses import replace

        unknown = set(work) - set(budget.to_dict())
        if unknown:
            raise TypeError(f"solve_lagrange: unknown work budget {', '.join(sorted(unknown))}")
        budget = replace(budget, **work)
    cap_clock = _Cap(time_limit_s)

    X = len(fleet.edges)
    cap = np.asarray(fleet.capacity_s, dtype=float)
    cands_all = _device_cands(fleet, epochs)
    zero = np.zeros(X)
    alone = [_best_priced(c, zero, X) if c else None for c in cands_all]
    served = [i for i, p in enumerate(alone) if p is not None]
    why = {i: _alone_why(fleet.members[i], epochs) for i, p in enumerate(alone) if p is None}
    load0 = sum((alone[i].busy for i in served), np.zeros(X))
    extra: dict = {"iterations": 0, "work_budget": budget.to_dict()}
    if not (load0 > cap * (1 + CAPACITY_RTOL) + 1e-12).any():
        # capacity never binds: each device's own exact optimum is the fleet optimum
        extra["lower_bound_j"] = float(sum(alone[i].energy_j for i in served))
        cap_clock.record(extra)
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
    #    towards a target above the best bound), at most ``price_steps`` of them
    lp = _LPArrays(cands_all, served)
    lam = np.zeros(X)
    best_lb, best_lam, theta, stall = -math.inf, lam.copy(), 1.0, 0
    it = 0
    for it in range(1, budget.price_steps + 1):
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
        if gg <= 1e-18 * max(1.0, float(cap @ cap)) or theta < 1e-3 or cap_clock.spent("price search"):
            break
        target = best_lb + theta * 0.05 * abs(best_lb)
        lam = np.maximum(0.0, lam + max(target - lb, 1e-9 * abs(lb)) / gg * g)
    # 2. columns at the best prices; 3. column generation: the master LP's capacity duals are
    #    prices, and each device's exact plan at them is its column of least reduced cost
    at_best = [None] * len(fleet.members)
    total = 0.0
    for i in served:
        at_best[i] = p = _best_priced(cands_all[i], best_lam, X)
        add(i, p)
        total += p.energy_j + float(best_lam @ p.busy)
    best_lb = max(best_lb, total - float(best_lam @ cap))
    # each device's plan using the edges least (every edge priced far above energy): the column
    # that lets the master serve the most devices when capacity is short
    busy0 = float(load0.sum())
    steep = np.full(X, 1e3 * sum(alone[i].energy_j for i in served) / max(busy0, 1e-12))
    for i in served:
        add(i, _best_priced(cands_all[i], steep, X))
    cg_rounds = 0
    rounds = budget.pricing_solves // max(len(served), 1)  # whole rounds of device subproblems
    while cg_rounds < min(budget.cg_rounds, rounds) and not cap_clock.spent("column generation"):
        lam_cg = _master_duals(fleet, columns, served)
        if lam_cg is None:
            break
        cg_rounds += 1
        before = sum(len(columns[i]) for i in served)
        best_lb = max(best_lb, price_all(lam_cg))
        if sum(len(columns[i]) for i in served) == before:
            break
    # diversification, ``price_vectors`` of them (within ``pricing_solves``) in edge order: per edge,
    # each device's plan avoiding it and with it dearer (at the last prices), so the integer master
    # can trade edges between devices
    lam_last = _master_duals(fleet, columns, served)
    lam_last = best_lam if lam_last is None else lam_last
    diversified = 0
    vectors = min(budget.price_vectors, rounds - cg_rounds)
    for x, mult in [(x, m) for x in range(X) for m in (None, 3.0)][:max(0, vectors)]:
        if cap_clock.spent("diversification"):
            break
        lam2, ban = lam_last.copy(), np.zeros(X, bool)
        if mult is None:
            ban[x] = True
        else:
            lam2[x] = lam2[x] * mult + max(float(lam_last.max()), 1e-9)
        for i in served:
            add(i, _best_priced(cands_all[i], lam2, X, ban))
        diversified += 1
    extra["diversified_price_vectors"] = diversified
    extra.update(iterations=it, column_generation_rounds=cg_rounds, lower_bound_j=best_lb,
                 prices_j_per_s={x: float(best_lam[k]) for k, x in enumerate(fleet.edges)})
    # 4. master: one column per device (or not served) under the capacity rows
    n_columns = int(sum(len(columns[i]) for i in served))
    milp_master = n_columns <= budget.master_columns
    split = None
    if milp_master:
        plans = _master(fleet, columns, served, budget.master_nodes, cap_clock)
        master_ok = plans is not None
    else:  # too many columns for the whole MILP's root node: the LP, and the MILP over its split devices
        plans, split = _master_fixed(fleet, columns, served, budget.master_nodes, cap_clock)
        master_ok = True
    moved = dropped = 0
    if plans is None:  # HiGHS found nothing within its nodes: the plans at the best prices
        plans = [None] * len(fleet.members)
        for i in served:
            plans[i] = at_best[i]
    plans, moved, dropped = _make_feasible(fleet, columns, plans, why)  # nothing to do when feasible
    for i in served:
        if plans[i] is None and i not in why:
            why[i] = "edge capacity: no plan of this device fits beside the others'"
    plans = _improve(fleet, cands_all, columns, plans, why)
    plans, exact_moves = _improve_exact(fleet, cands_all, plans, why, budget.exact_replans, cap_clock)
    tries = min(budget.lns_tries, budget.lns_tries_per_device * len(served))
    plans, lns_moves = _neighbourhoods(fleet, cands_all, plans, why, tries, budget.lns_nodes, cap_clock,
                                       group_max=budget.lns_group_max, stall_max=budget.lns_stall, bound_j=best_lb)
    extra["exact_improvements"] = exact_moves
    extra["neighbourhood_improvements"] = lns_moves
    extra["columns"] = int(sum(len(c) for c in columns))
    extra["repair"] = {"master_milp": master_ok, "master": "milp" if milp_master else "lp-then-milp",
                       "moved": moved, "dropped": dropped}
    if split is not None:
        extra["repair"]["lp_split_devices"] = split
    cap_clock.record(extra)
    sol = _result(fleet, "fleet-lagrange", "feasible", plans, epochs, extra, why)
    if sol.status != "infeasible" and sol.energy_j > 0:
        sol.extra["gap_to_bound_pct"] = 100.0 * (sol.energy_j - best_lb) / sol.energy_j
    return sol
