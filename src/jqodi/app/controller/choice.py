"""Which candidate to train: the one with the least *expected* energy under the K estimate's spread.

The planner ranks candidates (model, bits) by the energy of their K^rob-epoch plans (Eq. (13)
with K = K^rob): a safe figure for the deadline, but not what a closed-loop run spends. A run
stops at L_max, after its true K epochs, and runs its cheapest epochs first
(:func:`~jqodi.app.controller.remaining.order_cheapest_first`), so it spends the quantization
cost and the cost of the first K epochs of its plan. The K^rob plan of a candidate whose estimate
is wide (a robust K far above the expected one) looks costly although the run is likely to stop
long before its last epochs; and the candidate whose K^rob is lowest is not the one that is
likely to stop first.

:func:`plan_by_expected_energy` therefore plans every candidate of Ω for its K^rob epochs (the
deadline stays safe: every candidate it may pick has a plan that meets T_max with K^rob epochs)
and picks the one whose expected energy is least, with K log-normal: median K^exp and 90 %
quantile K^rob (the level of the estimators' K^rob), i.e.
σ = ln(K^rob / K^exp) / z_0.9; for K beyond the plan's epochs every extra epoch costs the
candidate's fastest option (what a run short of time would add). Candidates whose K^rob is ∞, or
with no plan in time, are not picked; if none has one, the planner's own answer stands.
"""
from __future__ import annotations

import math
from dataclasses import replace
from statistics import NormalDist
from typing import Mapping

from jqodi.core.instance import Candidate, PlanningInstance, Solution

__all__ = ["plan_by_expected_energy", "epoch_distribution", "ROBUST_LEVEL"]

#: The quantile K^rob stands for (the conformal level of the learned prior, the probe's 90 %).
ROBUST_LEVEL = 0.9
#: σ of ln K when K^rob = K^exp (a point estimate is never exact).
MIN_SIGMA = 0.05


def epoch_distribution(expected: int, robust: int, *, level: float = ROBUST_LEVEL,
                       sigma: float | None = None) -> list[tuple[int, float]]:
    """P(K = k) for k = 1, 2, …: K log-normal, median ``expected``, ``level`` quantile ``robust``
    (rounded to whole epochs, truncated at 3 σ above the median and renormalised). ``sigma``: σ of
    ln K when the estimate states it (then ``robust`` only extends the support)."""
    z = NormalDist().inv_cdf(level)
    sigma = max(math.log(max(robust, expected) / expected) / z if sigma is None else float(sigma), MIN_SIGMA)
    dist = NormalDist(math.log(expected), sigma)
    top = max(robust, int(math.ceil(expected * math.exp(3 * sigma))))
    ps = []
    for k in range(1, top + 1):
        lo = dist.cdf(math.log(k - 0.5)) if k > 1 else 0.0
        ps.append((k, dist.cdf(math.log(k + 0.5)) - lo))
    total = sum(p for _, p in ps)
    return [(k, p / total) for k, p in ps if p > 0]


def _expected_energy(cand: Candidate, sol: Solution, sigma: float | None = None) -> float:
    """Expected energy of ``sol`` for ``cand`` when the run stops at L_max, cheapest epochs first."""
    cost = {(o.edge, o.cut): o.epoch_energy_j for o in cand.options}
    epochs = sorted(cost[(s.edge, s.cut)] for s in sol.schedule for _ in range(s.epochs))
    planned = sum(epochs)
    fixed = float(sol.energy_j) - planned  # quantization (and serving) energy
    extra = min(cand.options, key=lambda o: (o.epoch_time_s, o.epoch_energy_j)).epoch_energy_j
    prefix = [0.0]
    for e in epochs:
        prefix.append(prefix[-1] + e)
    exp = 0.0
    for k, p in epoch_distribution(cand.epochs.expected, cand.epochs.robust, sigma=sigma):
        spent = prefix[k] if k < len(prefix) else prefix[-1] + (k - len(epochs)) * extra
        exp += p * spent
    return fixed + exp


def plan_by_expected_energy(instance: PlanningInstance, solver: str = "optimal", *,
                            sigma: Mapping[str, float] | None = None) -> Solution:
    """The plan of the candidate with the least expected energy (see the module docstring).

    Every candidate of Ω with finite K^exp and K^rob is planned alone for K^rob epochs
    (``solver``); the answer is that candidate's plan, with ``extra["choice"]`` listing each
    candidate's expected and K^rob-plan energy, and ``extra["excluded"]`` the candidates of the whole
    ``instance`` that can be in no plan (what ``solve(instance, solver)`` lists, by the planner's own
    function: a candidate planned alone has none of the others). With no such plan,
    ``solve(instance, solver)``.
    ``sigma``: σ of ln K per candidate key (``model@bits``) where the estimate states it; the
    others take it from K^rob as the :data:`ROBUST_LEVEL` quantile.
    """
    from jqodi.planner import solve
    from jqodi.planner.solve import solver_excluded

    omega = instance.meta.get("search_bits") if isinstance(instance.meta, dict) else None
    rows, best = [], None
    for c in instance.candidates:
        if omega and c.bits not in omega:
            continue
        if c.epochs.expected is None or c.epochs.robust is None or not c.options:
            continue
        alone = replace(instance, candidates=(c,), meta={k: v for k, v in instance.meta.items() if k != "search_bits"})
        sol = solve(alone, solver)
        if sol.status == "infeasible":
            rows.append({"candidate": c.key, "feasible": False})
            continue
        sig = (sigma or {}).get(c.key)
        exp_j = _expected_energy(c, sol, sig)
        rows.append({"candidate": c.key, "feasible": True, "expected_energy_j": exp_j, "plan_energy_j": sol.energy_j,
                     "epochs_expected": c.epochs.expected, "epochs_robust": c.epochs.robust}
                    | ({} if sig is None else {"sigma_ln_k": float(sig)}))
        if best is None or (exp_j, sol.energy_j) < best[0]:
            best = ((exp_j, sol.energy_j), sol)
    if best is None:
        return solve(instance, solver)
    sol = best[1]
    sol.extra["excluded"] = solver_excluded(instance, solver, sol, "robust", {})
    sol.extra["choice"] = {"rule": "least expected energy under the K estimate's spread", "candidates": rows}
    return sol
