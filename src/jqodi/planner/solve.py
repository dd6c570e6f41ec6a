"""One entry point for every solver, and a comparison table across them.

Solvers only decide: each takes a :class:`PlanningInstance` and returns a :class:`Solution`
(status ``optimal`` | ``feasible`` | ``infeasible``); they never run anything.
"""
from __future__ import annotations

import inspect
from typing import Iterable

from jqodi.errors import PlanningError
from jqodi.planner.common import Stopwatch, check_epochs, search_bits, search_candidates
from jqodi.planner.registry import SOLVERS
from jqodi.core.instance import PlanningInstance, Solution


def solve(instance: PlanningInstance | dict, solver: str = "jqodi", *, epochs: str = "robust",
          **opts) -> Solution:
    """Plan ``instance`` with ``solver``; ``epochs`` picks K^rob (default, safe) or K^exp.

    ``opts`` go to the solver: ``jqodi`` takes ``mode``, ``buckets``, ``prune_dominated``;
    ``optimal`` takes ``time_limit_s``; ``partition-only`` needs ``model`` and ``bits``.
    ``extra["plan_time_ms"]`` of the answer is the solver's wall time; ``extra["excluded"]``
    (:func:`solver_excluded`), computed after it and not counted there, lists the candidates it searched
    that can be in no plan.
    """
    if isinstance(instance, dict):
        instance = PlanningInstance.from_dict(instance)
    check_epochs(epochs)
    fn = SOLVERS.get(solver)  # an unknown name: one line listing the registered solvers
    accepted = set(inspect.signature(fn).parameters) - {"instance", "epochs"}
    unknown = set(opts) - accepted
    if unknown:
        raise PlanningError(f"solver {solver!r} does not take {', '.join(sorted(unknown))}"
                            + (f" (it takes {', '.join(sorted(accepted))})" if accepted else ""))
    clock = Stopwatch()
    sol = fn(instance, epochs=epochs, **opts)
    sol.extra["plan_time_ms"] = clock.ms
    sol.extra.setdefault("excluded", solver_excluded(instance, solver, sol, epochs, opts))
    return sol


#: The built-in solvers that search only Ω (``meta.search_bits``; jqodi.planner.common.search_candidates).
OMEGA_SOLVERS = ("jqodi", "optimal", "static")


def solver_excluded(instance: PlanningInstance, solver: str, sol: Solution, epochs: str, opts: dict) -> list[dict]:
    """``extra["excluded"]``: the candidates ``solver`` searched that can be in no plan, and why
    (:func:`jqodi.planner.explain.excluded_candidates`), each built-in solver over its own space."""
    from jqodi.planner.explain import excluded_candidates, missing_estimate_pairs

    all_bits = {c.bits for c in instance.candidates} | {bits for _, _, bits in missing_estimate_pairs(instance)}
    omega = search_bits(instance) if solver in OMEGA_SOLVERS else None
    if omega is not None:
        cands, missing = search_candidates(instance), set(omega)
    elif solver == "full-model":
        cands = [c for c in instance.candidates if c.bits >= 32]
        missing = {b for b in all_bits if b >= 32}
    elif solver == "minimal-model":  # the fewest bits present; a pair left out below them explains why
        q = sol.extra.get("bits_used")
        cands = [c for c in instance.candidates if c.bits == q]
        missing = {b for b in all_bits if q is None or b <= q}
    elif solver == "partition-only":
        cands = [c for c in instance.candidates if (c.model, c.bits) == (opts.get("model"), opts.get("bits"))]
        missing = set()
    else:  # a registered solver: its space is the instance's
        cands, missing = list(instance.candidates), all_bits
    return excluded_candidates(instance, epochs, cands, omega=omega, missing_bits=missing)


def schedule_text(sol: Solution) -> str:
    if not sol.schedule:
        return "-"
    return " + ".join(f"{s.epochs}×({s.edge}, cut {s.cut})" for s in sol.schedule)


def default_partition_choice(instance: PlanningInstance) -> tuple[str, int] | None:
    """Model and bits that ``compare`` gives ``partition-only`` when the user names none:
    the first model of the instance at its highest bit-width (the model one would deploy anyway,
    least compressed)."""
    if not instance.candidates:
        return None
    model = instance.candidates[0].model
    bits = max(c.bits for c in instance.candidates if c.model == model)
    return model, bits


def compare(instance: PlanningInstance | dict, solvers: Iterable[str] | None = None, *,
            epochs: str = "robust", model: str | None = None, bits: int | None = None,
            **opts) -> list[dict]:
    """Run several solvers on one instance; one row per solver for a comparison table.

    Row: ``solver, status, model, bits, schedule`` (text), ``epochs, energy_j, time_s,
    plan_time_ms``, ``vs_optimal_pct`` (extra energy over ``optimal``, when it ran and is feasible),
    ``optimal_saves_pct`` (what ``optimal`` saves over this row), ``in_search_space`` (the plan's
    bit-width is in Ω, ``meta.search_bits``, which ``optimal`` searches: only then is
    ``vs_optimal_pct`` ≥ 0 guaranteed; a baseline outside Ω, e.g. *Full Model*'s 32 bits, may beat
    the optimum over Ω), ``misses`` (for an infeasible row: ``"deadline"`` when some candidate
    reaches the target loss but none in time, ``"target"`` when none reaches it, ``"latency"``
    when none can serve within the bound, else ``"candidates"``; ``None`` for a plan), and
    ``solution`` (the :class:`Solution`). ``opts`` are keyed ``"solver.option"`` (e.g.
    ``{"jqodi.buckets": 4096}``).
    """
    if isinstance(instance, dict):
        instance = PlanningInstance.from_dict(instance)
    names = list(solvers) if solvers is not None else SOLVERS.names()
    rows = []
    for name in names:
        kw = {k.split(".", 1)[1]: v for k, v in opts.items() if k.startswith(name + ".")}
        if name == "partition-only":
            choice = (model, bits) if model is not None and bits is not None else \
                default_partition_choice(instance)
            if choice is None:
                continue
            kw.update(model=choice[0], bits=int(choice[1]))
        sol = solve(instance, name, epochs=epochs, **kw)
        rows.append({"solver": name, "status": sol.status, "model": sol.model, "bits": sol.bits,
                     "schedule": schedule_text(sol), "epochs": sol.epochs if sol.schedule else None,
                     "energy_j": sol.energy_j, "time_s": sol.time_s,
                     "plan_time_ms": sol.extra.get("plan_time_ms"), "solution": sol})
    ref = next((r for r in rows if r["solver"] == "optimal" and r["status"] != "infeasible"), None)
    omega = search_bits(instance)
    for r in rows:
        r["in_search_space"] = omega is None or r["bits"] is None or r["bits"] in omega
        r["misses"] = what_it_misses(r["solution"])
        r["vs_optimal_pct"] = r["optimal_saves_pct"] = None
        if ref is not None and r["energy_j"] is not None and ref["energy_j"] > 0:
            r["vs_optimal_pct"] = 100.0 * (r["energy_j"] / ref["energy_j"] - 1.0)
            r["optimal_saves_pct"] = 100.0 * (1.0 - ref["energy_j"] / r["energy_j"]) if r["energy_j"] > 0 else 0.0
    return rows


def what_it_misses(sol: Solution) -> str | None:
    """Why an infeasible solution has no plan, in one word (see :func:`compare`); ``None`` for a plan."""
    if sol.status != "infeasible":
        return None
    why = sol.extra.get("explanation") or {}
    if why.get("too_slow"):
        return "deadline"
    if why.get("unreachable"):
        return "target"
    if why.get("cannot_serve"):
        return "latency"
    return "candidates"
