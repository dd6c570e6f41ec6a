"""``optimal``: the exact minimum-energy plan with per-epoch switching (Eq. 13 over multisets).

With static resources epochs are interchangeable, so for a candidate (model a, bits q) with K
epochs (K^rob or K^exp) a plan is a count n_o per option o = (edge, cut):

    min  ε_(a,q) + Σ_o e_o·n_o     s.t.  Σ_o n_o = K,   τ_(a,q) + Σ_o t_o·n_o ≤ T_max,   n_o ∈ ℤ≥0

and the answer is the best candidate. Each candidate's problem is a small integer program (one
cardinality row, one time row). How it is solved exactly and fast:

1. *Dominance*: an option that is no faster and no cheaper than another is never needed (swap it
   for the other: time and energy do not grow), so only the Pareto front is kept.
2. *LP bound*: the LP relaxation is the lower convex hull of the front evaluated at the average
   time per epoch B/K; it mixes ≤ 2 adjacent hull options and is solved in closed form
   (:func:`~jqodi.planner.common.lp_bound`). Rounding it (as many epochs on the cheaper hull option
   as fit) gives a feasible incumbent.
3. *Candidate pruning*: candidates are visited in order of their LP bound; once a bound reaches the
   best plan found, no remaining candidate can do better.
4. *Reduced-cost fixing*: with the LP duals (λ, μ) any plan using option o at least once costs at
   least LP + (e_o − λ + μ·t_o); options whose reduced cost exceeds the incumbent's gap are fixed to
   zero. Usually two or three options survive.
5. What survives goes to HiGHS (``scipy.optimize.milp``) with ``mip_rel_gap`` = 1e-9; the status is
   ``optimal`` only when HiGHS proves it (or when ≤ 2 options survive, where rounding is exact).

:func:`exact_pareto_dp` is an independent exact method (a dynamic program over epochs with Pareto
sets of (time, energy), no LP, no MILP) used to cross-check ``optimal``.
"""
from __future__ import annotations

import math

import numpy as np

from jqodi.planner.common import (
    LPBound, Stopwatch, check_epochs, epochs_of, lp_bound, make_solution, option_arrays,
    pareto_front, time_budget_s,
)
from jqodi.errors import PlanningError
from jqodi.planner.explain import infeasible_solution
from jqodi.planner.instance import Candidate, PlanningInstance, Solution

#: Relative tolerance for "this bound cannot beat the incumbent" (energy is compared, not time).
ENERGY_RTOL = 1e-9


def _round_lp(t: np.ndarray, lp: LPBound, K: int, budget_s: float) -> list[tuple[int, int]] | None:
    """Feasible integer plan from the LP optimum: as many epochs on the cheaper option as fit."""
    lo, hi = lp.low, lp.high
    if lo == hi or t[hi] <= t[lo]:
        return [(lo, K)] if K * t[lo] <= budget_s else None
    n_hi = int(math.floor((budget_s - K * t[lo]) / (t[hi] - t[lo])))
    n_hi = max(0, min(K, n_hi))
    while n_hi >= 0 and (K - n_hi) * t[lo] + n_hi * t[hi] > budget_s:
        n_hi -= 1
    if n_hi < 0:
        return None
    while n_hi < K and (K - n_hi - 1) * t[lo] + (n_hi + 1) * t[hi] <= budget_s:
        n_hi += 1
    return [(lo, K - n_hi), (hi, n_hi)]


def _plan_cost(t, e, counts) -> tuple[float, float]:
    return (math.fsum(e[i] * n for i, n in counts), math.fsum(t[i] * n for i, n in counts))


def _milp(t: np.ndarray, e: np.ndarray, idx: np.ndarray, K: int, budget_s: float,
          time_limit_s: float | None) -> tuple[str, list[tuple[int, int]] | None]:
    """Solve the candidate's integer program over options ``idx`` with HiGHS.

    Returns (``"optimal"|"feasible"|"infeasible"``, counts). HiGHS works to a feasibility
    tolerance; the rounded answer is re-checked against the exact budget, and if it overshoots the
    row is tightened by the overshoot and the problem solved again.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    n = len(idx)
    tt, ee = t[idx], e[idx]
    scale = max(float(ee.max()), 1e-12)
    A = np.vstack([np.ones(n), tt / budget_s])
    limit = 1.0
    options = {"mip_rel_gap": 1e-9, "presolve": True}
    if time_limit_s is not None:
        options["time_limit"] = float(time_limit_s)
    for _ in range(4):
        res = milp(ee / scale, integrality=np.ones(n), bounds=Bounds(0, K),
                   constraints=LinearConstraint(A, [K, -np.inf], [K, limit]), options=options)
        if res.x is None:
            return ("infeasible" if res.status == 2 else "unknown"), None
        x = np.rint(res.x).astype(np.int64)
        counts = [(int(idx[i]), int(x[i])) for i in range(n) if x[i] > 0]
        if int(x.sum()) == K:
            _, used = _plan_cost(t, e, counts)
            if used <= budget_s:
                return ("optimal" if res.status == 0 else "feasible"), counts
            limit -= (used - budget_s) / budget_s + 1e-12
        else:  # pragma: no cover - integrality tolerance trouble
            limit -= 1e-9
    return "unknown", None


def solve_candidate(cand: Candidate, K: int, budget_s: float, *, upper_bound_j: float = math.inf,
                    time_limit_s: float | None = None, method: str = "auto",
                    ) -> tuple[str, list[tuple[int, int]] | None, float]:
    """Exact epoch plan of one candidate. ``upper_bound_j`` (epoch energy only) lets it skip work.

    ``method="milp"`` skips the shortcuts (rounding proof, reduced-cost fixing) and hands the
    whole Pareto front to HiGHS: slower, same answer; for checks and benchmarks.

    Returns (status, counts, lp_value_j): status ``optimal`` (counts proven best, or ``None`` when
    nothing beats ``upper_bound_j``), ``feasible`` (time limit hit) or ``infeasible``.
    """
    arr = option_arrays(cand)
    t, e = arr.time_s, arr.energy_j
    front = pareto_front(t, e)
    lp = lp_bound(t, e, front, K, budget_s)
    if lp is None:
        return "infeasible", None, math.inf
    tol = ENERGY_RTOL * max(abs(lp.value_j), 1.0)
    if method == "milp":
        status, counts = _milp(t, e, front, K, budget_s, time_limit_s)
        status = {"unknown": "feasible"}.get(status, status)
        if counts is not None and _plan_cost(t, e, counts)[0] > upper_bound_j:
            counts = None
        return status, counts, lp.value_j
    best_counts = _round_lp(t, lp, K, budget_s)
    best_j = _plan_cost(t, e, best_counts)[0] if best_counts else math.inf
    if best_j <= lp.value_j + tol:
        return "optimal", best_counts, lp.value_j
    ub = min(best_j, upper_bound_j)
    if lp.value_j >= ub - tol:
        return "optimal", (best_counts if best_j <= upper_bound_j else None), lp.value_j
    # reduced-cost fixing: any plan using o costs ≥ LP + rc_o
    rc = e[front] - lp.lam + lp.mu * t[front]
    keep = front[rc <= (ub - lp.value_j) + tol]
    if len(keep) <= 2 and set(keep.tolist()) <= {lp.low, lp.high}:
        # only the two LP options can improve: the rounding is already exact
        return "optimal", (best_counts if best_j <= upper_bound_j else None), lp.value_j
    status, counts = _milp(t, e, keep, K, budget_s, time_limit_s)
    if counts is not None:
        got = _plan_cost(t, e, counts)[0]
        if got < best_j:
            best_counts, best_j = counts, got
    if status == "infeasible":
        # nothing with those options beats the bound: the incumbent (if any) is optimal
        status = "optimal"
    if status == "unknown":
        status = "feasible"
    if best_j > upper_bound_j:
        best_counts = None
    return status, best_counts, lp.value_j


def solve_optimal(instance: PlanningInstance, *, epochs: str = "robust",
                  time_limit_s: float | None = 30.0, method: str = "auto") -> Solution:
    """The exact minimum-energy plan over every candidate (see the module docstring).

    ``time_limit_s`` bounds each HiGHS call (the answer is ``feasible``, not ``optimal``, if one
    stops early); ``method="milp"`` disables the shortcuts of steps 2–4 (candidate pruning stays).
    """
    check_epochs(epochs)
    if method not in ("auto", "milp"):
        raise PlanningError(f"optimal method must be auto or milp, got {method!r}")
    clock = Stopwatch()
    rows = []
    for c in instance.candidates:
        K = epochs_of(c, epochs)
        if K is None or not c.options:
            continue
        budget = time_budget_s(instance, c)
        if budget <= 0:
            continue
        arr = option_arrays(c)
        front = pareto_front(arr.time_s, arr.energy_j)
        lp = lp_bound(arr.time_s, arr.energy_j, front, K, budget)
        if lp is None:
            continue
        rows.append((c.quantize_energy_j + lp.value_j, c, K, budget))
    if not rows:
        return infeasible_solution(instance, "optimal", epochs, plan_time_ms=clock.ms)
    rows.sort(key=lambda r: r[0])
    best: tuple[float, Candidate, list] | None = None
    proven = True
    explored = 0
    for bound, c, K, budget in rows:
        if best is not None and bound >= best[0] - ENERGY_RTOL * max(abs(best[0]), 1.0):
            break
        explored += 1
        ub = math.inf if best is None else best[0] - c.quantize_energy_j
        status, counts, _ = solve_candidate(c, K, budget, upper_bound_j=ub, time_limit_s=time_limit_s,
                                            method=method)
        if status == "feasible":
            proven = False
        if counts:
            total = c.quantize_energy_j + _plan_cost(option_arrays(c).time_s, option_arrays(c).energy_j,
                                                     counts)[0]
            if best is None or total < best[0]:
                best = (total, c, counts)
    if best is None:  # every MILP timed out without a plan (never seen in practice)
        return infeasible_solution(instance, "optimal", epochs, plan_time_ms=clock.ms)
    total, c, counts = best
    lower = min(rows[0][0], total)
    return make_solution("optimal", "optimal" if proven else "feasible", c, sorted(counts), epochs,
                         {"lower_bound_j": lower, "candidates_solved": explored,
                          "plan_time_ms": clock.ms})


# --------------------------------------------------------------------------- independent check
def exact_pareto_dp(instance: PlanningInstance, *, epochs: str = "robust",
                    max_states: int = 2_000_000) -> tuple[float, str, int, list[tuple[int, int]]] | None:
    """Independent exact optimum: per candidate, a DP over epochs with Pareto sets.

    ``F[k]`` is the set of (time, energy, plan) reachable with k epochs that is Pareto-minimal in
    (time, energy); options are added one at a time (unbounded-knapsack order, so an option can
    repeat). States that cannot finish in time even with the fastest option are dropped. Nothing
    is relaxed, so the result is exact; the cost grows with the number of Pareto states, so use it
    on small and medium instances. Returns (energy_j incl. ε, model, bits, counts) or ``None``.
    """
    check_epochs(epochs)
    best = None
    for c in instance.candidates:
        K = epochs_of(c, epochs)
        if K is None or not c.options:
            continue
        budget = time_budget_s(instance, c)
        t = [o.epoch_time_s for o in c.options]
        e = [o.epoch_energy_j for o in c.options]
        tmin = min(t)
        if K * tmin > budget:
            continue
        F: list[list[tuple[float, float, tuple]]] = [[] for _ in range(K + 1)]
        F[0] = [(0.0, 0.0, ())]
        total = 0
        for i in range(len(t)):
            for k in range(1, K + 1):
                new = [(ts + t[i], es + e[i], plan + (i,)) for ts, es, plan in F[k - 1]
                       if ts + t[i] + (K - k) * tmin <= budget]
                if not new:
                    continue
                merged = sorted(F[k] + new, key=lambda s: (s[0], s[1]))
                front, emin = [], math.inf
                for s in merged:
                    if s[1] < emin:
                        front.append(s)
                        emin = s[1]
                F[k] = front
                total += len(front)
                if total > max_states:
                    raise RuntimeError("exact_pareto_dp: too many states for this instance")
        finals = [s for s in F[K] if s[0] <= budget]
        if not finals:
            continue
        ts, es, plan = min(finals, key=lambda s: s[1])
        energy = c.quantize_energy_j + es
        if best is None or energy < best[0]:
            counts = sorted((i, plan.count(i)) for i in set(plan))
            best = (energy, c.model, c.bits, counts)
    return best
