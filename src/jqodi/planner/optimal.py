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
4. *Reduced-cost fixing*: with the LP duals (λ, μ) every plan costs
   LP + Σ_o rc_o·n_o + μ·(unused time), rc_o = e_o − λ + μ·t_o ≥ 0, so options whose reduced cost
   exceeds the incumbent's gap are fixed to zero. Usually two or three options survive, and when
   only the two LP options do, the rounding is already exact.
5. *Exact search in the gap*, in three tiers, each exact:
   a. enumerate the multisets of non-LP options whose summed reduced cost fits in the gap, each
      completed by the best mix of the two LP options (closed form) — microseconds when the gap
      is small (5 000 nodes at most);
   b. otherwise a layered DP over epochs: per epoch count, the Pareto-minimal (time, energy) pairs
      whose energy plus a bound of the remaining epochs (the LP's; in large layers also an exact
      grid bound that counts whole epochs) beats the incumbent (50 000 pairs per layer at most);
   c. otherwise HiGHS (``scipy.optimize.milp``, ``mip_rel_gap`` = 1e-9, ``time_limit_s``).
   The status is ``optimal`` only when one of them proves it; a HiGHS time-out gives ``feasible``.
   (HiGHS alone, ``method="milp"``, took 8.8 s on one 10-cut instance and did not prove a 40-cut
   one within 30 s; tiers a + b prove them in 9 ms and 138 ms; see docs/planner.md.)

:func:`exact_pareto_dp` is an independent exact method (a dynamic program over epochs with Pareto
sets of (time, energy), no LP, no MILP) used to cross-check ``optimal``.
"""
from __future__ import annotations

import math

import numpy as np

from jqodi.planner.common import (
    LPBound, Stopwatch, check_epochs, epochs_of, fixed_energy_j, lp_bound, make_solution, option_arrays,
    pareto_front, search_candidates, time_budget_s,
)
from jqodi.errors import PlanningError
from jqodi.planner.explain import infeasible_solution
from jqodi.core.instance import Candidate, PlanningInstance, Solution

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


def _gap_search(t: np.ndarray, e: np.ndarray, lp: LPBound, keep: np.ndarray, K: int, budget_s: float,
                ub: float, tol: float, node_limit: int):
    """Exact search inside the LP gap (step 5 of the module docstring).

    Every plan costs LP + Σ_o rc_o·n_o + μ·(unused time) with rc_o ≥ 0 and rc = 0 for the two LP
    options (lo, hi). So a plan beating ``ub`` uses the *other* options only while their summed
    reduced cost stays below ``ub − LP``: enumerate those multisets depth-first (options sorted by
    reduced cost, so a branch stops at the first too-expensive option) and complete each with the
    best lo/hi mix, which is exact in closed form (as many epochs on the cheaper hi as fit).
    Returns (``"optimal"`` | ``"unknown"`` when ``node_limit`` nodes did not suffice, best plan).
    """
    lo, hi = lp.low, lp.high
    others = np.array([i for i in keep.tolist() if i not in (lo, hi)], dtype=np.int64)
    rc = e[others] - lp.lam + lp.mu * t[others]
    order = np.argsort(rc, kind="stable")
    others, rc = others[order].tolist(), rc[order].tolist()
    to, eo = [float(t[i]) for i in others], [float(e[i]) for i in others]
    tlo, thi, elo, ehi = float(t[lo]), float(t[hi]), float(e[lo]), float(e[hi])
    tfast = min([tlo] + to)
    best = None
    stack = [(0, 0, 0.0, 0.0, 0.0, ())]
    nodes = 0
    while stack:
        i, m, T, E, r, picks = stack.pop()
        if m and lp.value_j + r >= ub - tol:
            continue
        nodes += 1
        if nodes > node_limit:
            return "unknown", _counts(best, lo, hi)
        mm, room = K - m, budget_s - T
        if mm == 0:
            fill = (0, 0) if room >= 0 else None
        elif lo == hi or thi <= tlo:
            fill = (mm, 0) if mm * tlo <= room else None
        elif mm * tlo > room:
            fill = None
        else:
            n_hi = max(0, min(mm, int(math.floor((room - mm * tlo) / (thi - tlo)))))
            while n_hi > 0 and (mm - n_hi) * tlo + n_hi * thi > room:
                n_hi -= 1
            while n_hi < mm and (mm - n_hi - 1) * tlo + (n_hi + 1) * thi <= room:
                n_hi += 1
            fill = (mm - n_hi, n_hi)
        if fill is not None:
            total = E + fill[0] * elo + fill[1] * ehi
            if total < ub:
                ub = total
                best = (picks, fill)
        if mm == 0:
            continue
        for j in range(i, len(others)):
            r2 = r + rc[j]
            if lp.value_j + r2 >= ub - tol:
                break
            T2 = T + to[j]
            if T2 + (mm - 1) * tfast > budget_s:
                continue
            stack.append((j, m + 1, T2, E + eo[j], r2, picks + (others[j],)))
    return "optimal", _counts(best, lo, hi)


def _hull(t: np.ndarray, e: np.ndarray, front: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of the lower convex hull of the front (time ascending)."""
    ft, fe = t[front], e[front]
    hull: list[int] = []
    for k in range(len(ft)):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            if (ft[b] - ft[a]) * (fe[k] - fe[a]) - (fe[b] - fe[a]) * (ft[k] - ft[a]) <= 0:
                hull.pop()
            else:
                break
        hull.append(k)
    return ft[hull], fe[hull]


def _grid_bound(tk: np.ndarray, ek: np.ndarray, rows: int, span_s: float, cells: int):
    """Lower bounds on the least energy of r epochs (r < ``rows``) of the options (tk, ek) in a
    given time: ``G[r, g]`` is the least energy of r epochs whose times *above the fastest option's*,
    each rounded down to whole cells of δ = ``span_s``/``cells`` seconds, sum to at most g cells.
    Rounding down only relaxes the time row, so for a real room R, G[r, ⌊(R − r·t_fast)/δ⌋] is a
    valid bound — and unlike the LP bound it sees that epochs come whole (where the LP's gap is)."""
    d = span_s / cells
    u = np.maximum(np.floor((tk - float(tk.min())) / d - 1e-9), 0).astype(np.int64)
    G = np.full((rows, cells + 1), np.inf)
    G[0] = 0.0
    for r in range(1, rows):
        for o in np.flatnonzero(u <= cells):
            np.minimum(G[r, u[o]:], G[r - 1, :cells + 1 - u[o]] + ek[o], out=G[r, u[o]:])
    return G, d


#: the layered DP builds :func:`_grid_bound` once a layer holds this many pairs ...
GRID_AFTER_STATES = 2_000
#: ... with at most this many cells in all (memory: 8 bytes each), 100,000 per epoch count at most;
#: it is dropped after a layer where it removed fewer than this share of the LP's survivors
GRID_CELLS = 3_000_000
GRID_MIN_PRUNED = 0.05


def _layered_dp(t: np.ndarray, e: np.ndarray, keep: np.ndarray, front: np.ndarray, K: int,
                budget_s: float, ub: float, tol: float, max_states: int):
    """Exact DP over epochs (step 5, when the gap holds too many plans to list).

    Layer k holds the (time, energy) pairs reachable with k epochs of the kept options that are
    Pareto-minimal — a plan's future depends only on (k, time), so a pair beaten in both is never
    needed — and whose energy plus a lower bound of the remaining epochs in the remaining time
    stays below the incumbent. The bound is the LP's and, once a layer holds more than
    ``GRID_AFTER_STATES`` pairs, also :func:`_grid_bound`'s (integer epochs, times rounded down to a
    grid): exact pruning, the same plan, far fewer pairs when near-equal options make the LP's gap
    hold many of them (a priced fleet subproblem: 205,000 pairs a layer before the Pareto filter →
    41,000, 6× less CPU; docs/fleet.md). Back-pointers rebuild the plan. Returns (``"optimal"`` |
    ``"unknown"`` when a layer exceeds ``max_states``, counts or ``None`` when nothing beats ``ub``).
    """
    hx, hy = _hull(t, e, front)
    tk, ek = t[keep], e[keep]
    tfast = float(tk.min())
    T = np.zeros(1)
    E = np.zeros(1)
    grid = None
    parents: list[tuple[np.ndarray, np.ndarray]] = []
    for k in range(1, K + 1):
        T2 = (T[:, None] + tk[None, :]).ravel()
        E2 = (E[:, None] + ek[None, :]).ravel()
        par = np.repeat(np.arange(len(T)), len(tk))
        opt = np.tile(np.arange(len(tk)), len(T))
        rem = K - k
        room = budget_s - T2
        ok = room >= rem * tfast
        if rem:
            avg = np.maximum(room, 0) / rem
            lb = E2 + rem * np.interp(avg, hx, hy)  # hull is flat beyond its ends
            lb = np.where(avg < hx[0] * (1 - 1e-12), np.inf, lb)
            ok &= lb < ub - tol
            if grid:
                G, d = grid
                w = np.flatnonzero(ok)
                g = np.floor(np.maximum(room[w] - rem * tfast, 0.0) / d + 1e-6).astype(np.int64)
                gb = G[rem, np.minimum(g, G.shape[1] - 1)]
                cut = E2[w] + gb - 1e-9 * np.abs(gb) >= ub - tol
                ok[w[cut]] = False
                if cut.sum() < GRID_MIN_PRUNED * len(w):  # it hardly prunes here: not worth its look-ups
                    grid = False
        else:
            ok &= E2 < ub - tol
        T2, E2, par, opt = T2[ok], E2[ok], par[ok], opt[ok]
        if len(T2) == 0:
            return "optimal", None
        order = np.lexsort((E2, T2))
        Es = E2[order]
        prev = np.minimum.accumulate(np.concatenate(([np.inf], Es[:-1])))
        order = order[Es < prev]
        T, E, par, opt = T2[order], E2[order], par[order], opt[order]
        if len(T) > max_states:
            return "unknown", None
        parents.append((par, opt))
        span = budget_s - K * tfast  # the most time any plan spends above K epochs of the fastest option
        if grid is None and len(T) > GRID_AFTER_STATES and K - k > 1 and span > 0:  # (False: dropped)
            grid = _grid_bound(tk, ek, K - k, span, min(100_000, GRID_CELLS // (K - k)))
    i = int(np.argmin(E))
    counts: dict[int, int] = {}
    for k in range(K - 1, -1, -1):
        par, opt = parents[k]
        o = int(keep[opt[i]])
        counts[o] = counts.get(o, 0) + 1
        i = int(par[i])
    return "optimal", sorted(counts.items())


def _counts(best, lo: int, hi: int) -> list[tuple[int, int]] | None:
    if best is None:
        return None
    picks, (n_lo, n_hi) = best
    counts: dict[int, int] = {}
    for i in picks:
        counts[i] = counts.get(i, 0) + 1
    counts[lo] = counts.get(lo, 0) + n_lo
    counts[hi] = counts.get(hi, 0) + n_hi
    return sorted((i, n) for i, n in counts.items() if n > 0)


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
    return solve_arrays(arr.time_s, arr.energy_j, K, budget_s, upper_bound_j=upper_bound_j,
                        time_limit_s=time_limit_s, method=method)


def solve_arrays(t: np.ndarray, e: np.ndarray, K: int, budget_s: float, *, upper_bound_j: float = math.inf,
                 time_limit_s: float | None = None, method: str = "auto",
                 ) -> tuple[str, list[tuple[int, int]] | None, float]:
    """:func:`solve_candidate` on bare arrays of per-epoch time ``t`` and energy ``e`` (the fleet
    planner prices energy with edge-time prices and calls this directly)."""
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
    status, counts = _gap_search(t, e, lp, keep, K, budget_s, ub, tol, node_limit=5_000)
    if status == "unknown":  # the gap holds too many plans to list: layered DP
        if counts is not None:
            got = _plan_cost(t, e, counts)[0]
            if got < best_j:
                best_counts, best_j = counts, got
                ub = min(ub, got)
        status, counts = _layered_dp(t, e, keep, front, K, budget_s, ub, tol, max_states=50_000)
    if status == "unknown":  # still too many: let HiGHS decide
        status, counts2 = _milp(t, e, keep, K, budget_s, time_limit_s)
        if counts2 is not None and (counts is None or _plan_cost(t, e, counts2)[0]
                                    < _plan_cost(t, e, counts)[0]):
            counts = counts2
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
    for c in search_candidates(instance):
        K = epochs_of(c, epochs)
        fixed = fixed_energy_j(instance, c)  # ε_(a,q) + serving (inf: cannot serve in time)
        if K is None or not c.options or not math.isfinite(fixed):
            continue
        budget = time_budget_s(instance, c)
        if budget <= 0:
            continue
        arr = option_arrays(c)
        front = pareto_front(arr.time_s, arr.energy_j)
        lp = lp_bound(arr.time_s, arr.energy_j, front, K, budget)
        if lp is None:
            continue
        rows.append((fixed + lp.value_j, c, K, budget))
    if not rows:
        return infeasible_solution(instance, "optimal", epochs, candidates=search_candidates(instance),
                                   plan_time_ms=clock.ms)
    rows.sort(key=lambda r: r[0])
    best: tuple[float, Candidate, list] | None = None
    proven = True
    explored = 0
    for bound, c, K, budget in rows:
        if best is not None and bound >= best[0] - ENERGY_RTOL * max(abs(best[0]), 1.0):
            break
        explored += 1
        ub = math.inf if best is None else best[0] - fixed_energy_j(instance, c)
        status, counts, _ = solve_candidate(c, K, budget, upper_bound_j=ub, time_limit_s=time_limit_s,
                                            method=method)
        if status == "feasible":
            proven = False
        if counts:
            total = fixed_energy_j(instance, c) + _plan_cost(option_arrays(c).time_s, option_arrays(c).energy_j,
                                                     counts)[0]
            if best is None or total < best[0]:
                best = (total, c, counts)
    if best is None:  # every MILP timed out without a plan (never seen in practice)
        return infeasible_solution(instance, "optimal", epochs, candidates=search_candidates(instance),
                                   plan_time_ms=clock.ms)
    total, c, counts = best
    lower = min(rows[0][0], total)
    return make_solution("optimal", "optimal" if proven else "feasible", c, sorted(counts), epochs,
                         {"lower_bound_j": lower, "candidates_solved": explored, "method": method,
                          "plan_time_ms": clock.ms}, instance)


# --------------------------------------------------------------------------- independent check
def exact_pareto_dp(instance: PlanningInstance, *, epochs: str = "robust",
                    max_states: int = 2_000_000) -> tuple[float, str, int, list[tuple[int, int]]] | None:
    """Independent exact optimum: per candidate, a DP over epochs with Pareto sets.

    ``F[k]`` is the set of (time, energy, plan) reachable with k epochs that is Pareto-minimal in
    (time, energy); options are added one at a time (unbounded-knapsack order, so an option can
    repeat). States that cannot finish in time even with the fastest option are dropped. Nothing
    is relaxed, so the result is exact; the cost grows with the number of Pareto states, so use it
    on small and medium instances. Returns (energy_j incl. ε and serving, model, bits, counts) or
    ``None``.
    """
    check_epochs(epochs)
    best = None
    for c in search_candidates(instance):
        K = epochs_of(c, epochs)
        fixed = fixed_energy_j(instance, c)
        if K is None or not c.options or not math.isfinite(fixed):
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
        energy = fixed + es
        if best is None or energy < best[0]:
            counts = sorted((i, plan.count(i)) for i in set(plan))
            best = (energy, c.model, c.bits, counts)
    return best
