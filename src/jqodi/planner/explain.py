"""Plain explanations of infeasible instances.

When no plan meets the deadline and the target loss, a solver returns a :class:`Solution` with
status ``infeasible`` and ``extra["explanation"]``:

* ``unreachable``: candidates whose epoch estimate is ``null`` (they never reach the target loss),
  or that have no feasible option at all (with the reasons the instance gives);
* ``too_slow``: every other candidate's fastest achievable time (τ + K·fastest epoch) vs the deadline;
* ``cannot_serve`` (only with a serving demand): candidates whose inference cannot meet the
  latency bound ``serving.latency_slo_s`` (excluded by every solver), with the reason;
* ``min_deadline_s``: the smallest deadline that would make the problem feasible (the least of
  those fastest times), or ``null`` when no deadline helps;
* ``message``: the same in one paragraph, which the CLI prints.
"""
from __future__ import annotations

from typing import Iterable

from jqodi.core.instance import Candidate, PlanningInstance, Solution


def explain(instance: PlanningInstance, epochs: str, candidates: Iterable[Candidate] | None = None,
            scope: str | None = None) -> dict:
    cands = list(instance.candidates if candidates is None else candidates)
    unreachable, too_slow, cannot_serve = [], [], []
    for c in cands:
        if instance.serving is not None and (c.serving is None or not c.serving.feasible):
            cannot_serve.append({"candidate": c.key, "why": c.serving.reason if c.serving is not None
                                 else "no serving entry",
                                 "fastest_request_time_s": c.serving.fastest_request_time_s
                                 if c.serving is not None else None})
            continue
        K = c.epochs.get(epochs)
        if K is None:
            unreachable.append({"candidate": c.key, "why": f"never reaches target loss "
                                f"{instance.target_loss:g} ({epochs} estimate)"})
            continue
        if not c.options:
            reasons = "; ".join(str(x.get("reason", x)) for x in c.infeasible) or "no option given"
            unreachable.append({"candidate": c.key, "why": f"no feasible (edge, cut): {reasons}"})
            continue
        fastest = min(o.epoch_time_s for o in c.options)
        too_slow.append({"candidate": c.key, "epochs": K,
                         "fastest_time_s": c.quantize_time_s + K * fastest,
                         "deadline_s": instance.deadline_s})
    too_slow.sort(key=lambda r: r["fastest_time_s"])
    min_deadline = too_slow[0]["fastest_time_s"] if too_slow else None
    parts = [f"No plan meets deadline {instance.deadline_s:g} s and target loss "
             f"{instance.target_loss:g}" + (f" among {scope}" if scope else "") + "."]
    missing = list((instance.meta or {}).get("missing_estimates") or []) if not instance.candidates else []
    if not cands and missing:  # what 'jqodi instance' lists: the pairs left out for want of an estimate
        shown = ", ".join(missing[:12]) + (f" (+{len(missing) - 12} more)" if len(missing) > 12 else "")
        parts.append(f"There is no candidate to choose from: no learning estimate (L_a, γ, K^exp, K^rob) "
                     f"for {shown}; add 'learning:' rows to the scenario, or measure them with "
                     f"'jqodi estimate --target-loss {instance.target_loss:g}' and pass --estimates FILE.")
    elif not cands:
        parts.append("There is no candidate to choose from.")
    if unreachable:
        parts.append("Cannot reach the target: " + ", ".join(
            f"{u['candidate']} ({u['why']})" for u in unreachable) + ".")
    if cannot_serve:
        parts.append(f"Cannot serve a request within latency_slo_s {instance.serving.latency_slo_s:g} s "
                     "(excluded): " + ", ".join(f"{u['candidate']} ({u['why']})" for u in cannot_serve[:8])
                     + (f" (+{len(cannot_serve) - 8} more)" if len(cannot_serve) > 8 else "") + ".")
    if too_slow:
        shown = too_slow[:8]
        parts.append("Too slow even on the fastest option: " + ", ".join(
            f"{r['candidate']} needs {r['fastest_time_s']:.4g} s for {r['epochs']} epochs"
            for r in shown) + (f" (+{len(too_slow) - len(shown)} more)" if len(too_slow) > len(shown) else "")
            + ".")
        parts.append(f"The smallest deadline that makes it feasible is {min_deadline:.6g} s.")
    elif not (not cands and missing):
        parts.append("No deadline would help: change the target loss or the candidates.")
    out = {"unreachable": unreachable, "too_slow": too_slow, "min_deadline_s": min_deadline,
           "message": " ".join(parts)}
    if instance.serving is not None:
        out["cannot_serve"] = cannot_serve
    return out


def infeasible_solution(instance: PlanningInstance, solver: str, epochs: str, *,
                        candidates: Iterable[Candidate] | None = None, scope: str | None = None,
                        **extra) -> Solution:
    ex = {"epochs_estimate": epochs, "explanation": explain(instance, epochs, candidates, scope)}
    ex.update(extra)
    return Solution("infeasible", solver, extra=ex)
