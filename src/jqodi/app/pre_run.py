"""The run's first plan: which candidate to train, and the time the closed loop keeps in hand.

``jqodi run`` and the main job (``make demo``) plan once before a run; both call :func:`first_plan`.

**Which candidate** (``choice``). ``planner``: the planner's answer (the candidate whose K^rob-epoch
plan costs least, Eq. (13) with K = K^rob). ``expected`` (the default when a closed-loop controller
runs): :func:`jqodi.app.controller.choice.plan_by_expected_energy` — every Ω candidate is planned
alone for its K^rob epochs (so T_max stays safe) and the one of least *expected* energy is trained:
a closed-loop run stops at L_max after its true K epochs and runs its cheapest epochs first, so it
spends the quantization cost and the first K epochs of its plan. K is log-normal with median K^exp
and a spread σ of ln K that :func:`k_spread` derives from what each estimate states:

* an estimate that states K^rob's level q and margin m (``epochs_robust_level``,
  ``epochs_robust_margin`` of :class:`jqodi.core.estimates.LearningEstimate`: the learned prior's
  conformal K^rob): σ = ln(1 + m) / z_q — m being the margin before K^rob was rounded to whole
  epochs (which, for a small K^exp, makes K^rob / K^exp far wider than the margin);
* every other estimate (the probe alone at a cold start, or the learned prior with too few
  conformal residuals, both with K^rob widened to ≥ 1.8·K^exp; the stored runs of a configuration;
  a scenario's static ``learning:`` row; an estimates file written before those fields): K^rob read
  as the 90 % quantile, σ = ln(K^rob / K^exp) / z_0.9 — for a widened K^rob an upper bound of the spread.

Without a controller (``--policy`` none) every planned epoch runs, so the planner's answer is what
the run spends and ``expected`` falls back to it; so does a plan for K^exp (``--epochs-estimate
expected``). Either way the answer says so.

**The time reserve.** Policy ``replan``'s controller keeps ``reserve_epochs`` (1.5) epochs of the
fastest option in hand when it re-plans (:data:`jqodi.app.controller.loop.DEFAULT_RESERVE_EPOCHS`):
what an edge leaving mid-epoch or a slowdown not yet measured costs. A first plan that fills T_max
leaves it none, and a run that goes as planned but a little slow ends late. So the first schedule is
planned for T_max − reserve, the reserve being that many epochs of the trained candidate's fastest
option (what the controller keeps for it at the start) plus the controller's second part, for how
uncertain the planned time is: ``reserve_spread`` × ρ₀ (1 × 0.1) of the planned time before any
epoch is seen (:meth:`jqodi.app.controller.loop.ClosedLoopController.spread_reserve_s`). When no plan
fits T_max − reserve, the plan for T_max is taken and the answer says that the reserve is not kept
(the controller's own rule: the reserve is a preference). The controller itself still sees T_max.

The decision is kept in the solution's ``extra["choice"]`` (and so in ``record.json``'s
``solution`` and the main job's ``summary.json``); :func:`choice_lines` prints it. Its
``extra["excluded"]`` lists, whichever the rule and the deadline planned for, the candidates of the
run's instance (T_max) that can be in no plan: what ``jqodi plan`` with the same solver lists.
"""
from __future__ import annotations

import math
from dataclasses import replace
from statistics import NormalDist
from typing import Iterable

from jqodi.app.controller.choice import ROBUST_LEVEL
from jqodi.app.controller.loop import DEFAULT_SPREAD_CONDITION
from jqodi.errors import JqodiError

__all__ = ["CHOICES", "DEFAULT_CHOICE", "k_spread", "reserve_s", "first_plan", "choice_lines"]

#: how the candidate is chosen before the run (``--choice``)
CHOICES = ("expected", "planner")
DEFAULT_CHOICE = "expected"
#: the level a K^rob that states none is read at: the expected-energy choice's own
DEFAULT_LEVEL = ROBUST_LEVEL


def k_spread(estimate) -> tuple[float | None, str]:
    """σ of ln K for a learning estimate (a :class:`jqodi.core.estimates.LearningEstimate` or ``None``)
    and how it was derived; σ ``None``: from K^rob as the 90 % quantile (see the module docstring)."""
    if estimate is None:
        return None, f"K^rob as the {DEFAULT_LEVEL:.0%} quantile"
    level, margin = getattr(estimate, "epochs_robust_level", None), getattr(estimate, "epochs_robust_margin", None)
    source = str(getattr(estimate, "source", "") or "")
    if level is not None and margin is not None and 0.5 < level < 1.0:
        sigma = math.log1p(max(margin, 0.0)) / NormalDist().inv_cdf(level)
        return sigma, f"{'conformal' if 'conformal' in source else 'stated'} {level:.0%} margin {margin:+.0%}"
    kind = source.removeprefix("measured:").split("(", 1)[0] or "static"
    what = {"probe": "the probe alone", "prior+probe": "the learned prior",
            "static": "the scenario's table"}.get(kind, kind) + (", K^rob widened" if "widened" in source else "")
    return None, f"K^rob as the {DEFAULT_LEVEL:.0%} quantile ({what})"


def reserve_s(candidate, reserve_epochs: float, deadline_s: float | None = None,
              spread_share: float = 0.0, spread_condition: str = DEFAULT_SPREAD_CONDITION) -> float:
    """Seconds the closed loop keeps in hand for ``candidate`` (a :class:`jqodi.core.instance.Candidate`)
    at the start of its run: the controller's rule,
    :func:`jqodi.app.controller.loop.time_reserve_s` — ``reserve_epochs`` × its fastest epoch r, plus
    the spread part ρ₀ × the planned time when ``spread_share`` = ``reserve_spread`` × ρ₀ > 0 (needs
    ``deadline_s`` = T_max) and the part applies to the candidate's options under ``spread_condition``
    (:func:`jqodi.app.controller.loop.spread_applies`, the controller's rule, no edge away yet) — for
    the longest plan that keeps it: a plan of t seconds keeps both when t + r + ρ₀·t ≤ T_max, so the
    plan is made for (T_max − r) / (1 + ρ₀)
    (:func:`jqodi.app.controller.loop.longest_plan_s`). Before any epoch the spread part's cap (the
    time left, T_max) never binds for that plan, so only the product ``reserve_spread`` × ρ₀ matters."""
    from jqodi.app.controller.loop import longest_plan_s, spread_applies, time_reserve_s

    if not candidate.options:
        return 0.0
    fastest_s = min(o.epoch_time_s for o in candidate.options)
    if spread_share <= 0 or deadline_s is None or not spread_applies(candidate.options, spread_condition):
        return time_reserve_s(fastest_s, 0.0, 0.0, reserve_epochs=reserve_epochs, reserve_spread=0.0)
    rule = {"reserve_epochs": reserve_epochs, "reserve_spread": 1.0, "rho": float(spread_share)}
    return time_reserve_s(fastest_s, longest_plan_s(deadline_s, fastest_s, **rule), deadline_s, **rule)


def first_plan(instance, *, choice: str = DEFAULT_CHOICE, solver: str = "jqodi", epochs: str = "robust",
               policy: str | None = "replan", estimates: Iterable | None = None,
               reserve_epochs: float | None = None, spread_share: float | None = None,
               spread_condition: str = DEFAULT_SPREAD_CONDITION):
    """The plan a run starts from (see the module docstring): a :class:`jqodi.core.instance.Solution`
    whose ``extra["choice"]`` says how it was chosen and for which deadline it was planned.

    ``estimates``: the learning estimates the instance was compiled from (their spread, :func:`k_spread`);
    ``reserve_epochs``: ``None`` = the controller's default when ``policy`` is ``replan``, else 0;
    ``spread_share``: the spread part's ``reserve_spread`` × ρ₀ before any epoch is seen (:func:`reserve_s`),
    ``None`` = the controller's defaults when ``policy`` is ``replan``, else 0; ``spread_condition``:
    where that part applies (the controller's ``spread_condition``; default ``trade-off``: only for a
    candidate whose options trade time for energy, :func:`jqodi.app.controller.loop.spread_applies`).
    """
    from jqodi.app.controller.choice import plan_by_expected_energy
    from jqodi.app.controller.loop import check_spread_condition, spread_applies
    from jqodi.planner import solve
    from jqodi.planner.solve import solver_excluded

    if choice not in CHOICES:
        raise JqodiError(f"--choice: must be one of {', '.join(CHOICES)}, got {choice!r}")
    check_spread_condition(spread_condition)
    if reserve_epochs is None:
        from jqodi.app.controller.loop import DEFAULT_RESERVE_EPOCHS

        reserve_epochs = DEFAULT_RESERVE_EPOCHS if policy == "replan" else 0.0
    if spread_share is None:
        from jqodi.app.controller.loop import DEFAULT_RESERVE_SPREAD, DEFAULT_SPREAD_PRIOR

        spread_share = DEFAULT_RESERVE_SPREAD * DEFAULT_SPREAD_PRIOR if policy == "replan" else 0.0
    note = ""
    rule = choice
    if choice == "expected" and policy is None:
        rule, note = "planner", "no closed loop: every planned epoch runs, so the planner's choice"
    elif choice == "expected" and epochs != "robust":
        rule, note = "planner", "a plan for K^exp epochs: the planner's choice"
    spread = {f"{e.model}@{e.bits}": k_spread(e) for e in (estimates or ())}
    sigma = {k: s for k, (s, _) in spread.items() if s is not None}
    t_max = float(instance.deadline_s)
    reserves = {c.key: reserve_s(c, reserve_epochs, t_max, spread_share, spread_condition)
                for c in instance.candidates if c.epochs.robust is not None}

    def plan(deadline_s: float):
        inst = instance if deadline_s == t_max else replace(instance, deadline_s=deadline_s)
        if rule == "expected":
            return plan_by_expected_energy(inst, solver, sigma=sigma)
        return solve(inst, solver, epochs=epochs)

    # plan for T_max less the least reserve; when the plan's candidate keeps a larger one, again for
    # T_max less that (the reserve only grows, so this ends within as many rounds as candidates)
    sol, res, kept = None, min(reserves.values(), default=0.0), False
    while 0 < res < t_max:
        sol = plan(t_max - res)
        if sol.status == "infeasible":
            break
        need = reserves.get(f"{sol.model}@{sol.bits}", 0.0)
        if need <= res * (1 + 1e-9):
            kept = True
            break
        res = need
    if not kept:
        sol = plan(t_max)
        res = reserves.get(f"{sol.model}@{sol.bits}", 0.0) if sol.status != "infeasible" else 0.0
    planned_for = t_max - res if kept else t_max
    trained = next((c for c in instance.candidates if c.key == f"{sol.model}@{sol.bits}"), None)
    applies = bool(trained is not None and spread_share > 0 and spread_applies(trained.options, spread_condition))
    rows = sol.extra.get("choice", {}).get("candidates", []) if rule == "expected" else []
    if rule == "expected" and not any(r.get("feasible") for r in rows):
        rule, note = "planner", "no Ω candidate has a K^rob plan in time: the planner's answer"
    info = {"rule": rule, "asked": choice, "note": note, "deadline_s": t_max, "reserve_s": res,
            "reserve_epochs": float(reserve_epochs), "reserve_spread_share": float(spread_share),
            "spread_condition": spread_condition, "reserve_spread_applies": applies, "reserve_kept": kept,
            "planned_deadline_s": planned_for, "solver": solver, "epochs": epochs}
    for r in rows:
        r["spread"] = spread.get(r["candidate"], (None, k_spread(None)[1]))[1]
    info["candidates"] = rows
    sol.extra["choice"] = info
    if planned_for != t_max:  # the candidates of the run's instance (T_max) that can be in no plan
        sol.extra["excluded"] = solver_excluded(instance, solver, sol, epochs, {})
    return sol


def choice_lines(sol) -> list[str]:
    """The choice and the reserve of :func:`first_plan`'s answer, as lines to print."""
    from jqodi.render.tables import format_table

    c = sol.extra.get("choice") if sol is not None else None
    if not c:
        return []
    lines = []
    if c["reserve_s"] > 0:
        if c["reserve_kept"]:
            spread = c.get("reserve_spread_share", 0.0)
            part = f" and {spread:.0%} of the planned time" if spread > 0 else ""
            if spread > 0 and not c.get("reserve_spread_applies", True):  # a record before the field kept it
                part = " (no spread part: its options do not trade time for energy)"
            lines.append(f"time reserve: the closed loop keeps {c['reserve_epochs']:g} epochs of the fastest "
                         f"option{part} in hand ({c['reserve_s']:.3g} s), so the first schedule is planned for T_max − reserve = "
                         f"{c['deadline_s']:g} − {c['reserve_s']:.3g} = {c['planned_deadline_s']:.3g} s")
        else:
            lines.append(f"time reserve: no plan fits T_max − reserve ({c['deadline_s']:g} − {c['reserve_s']:.3g} s): "
                         f"planned for the whole T_max = {c['deadline_s']:g} s, the controller starts without it")
    if c["rule"] == "expected":
        rows = [[r["candidate"], r.get("epochs_expected", "-"), r.get("epochs_robust", "-"),
                 _fmt(r.get("plan_energy_j")), _fmt(r.get("expected_energy_j")), r.get("spread", "")]
                for r in c["candidates"] if r.get("feasible")]
        missing = [r["candidate"] for r in c["candidates"] if not r.get("feasible")]
        lines.append("choice (expected energy): every Ω candidate planned alone for K^rob epochs; the run stops "
                     "at L_max, so it trains the one of least expected energy (K log-normal, median K^exp):")
        lines.append(format_table(["candidate", "K^exp", "K^rob", "K^rob plan J", "expected J", "spread of K from"],
                                  rows, indent="  "))
        if missing:
            lines.append(f"  no K^rob plan in time: {', '.join(missing)}")
    else:
        k = "K^exp" if c.get("epochs") == "expected" else "K^rob"
        lines.append(f"choice (planner): the candidate whose {k}-epoch plan costs least"
                     + (f" ({c['note']})" if c["note"] else ""))
    return lines


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.1f}"
