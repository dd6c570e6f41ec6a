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


#: Why a candidate can be in no plan (``excluded[].reason``; see :func:`excluded_candidates`), in the
#: order they are checked; the names below are the codes the planner and its renderers use.
EXCLUSION_REASONS = ("no-estimate", "outside-omega", "latency", "target", "options", "deadline")
NO_ESTIMATE, OUTSIDE_OMEGA, LATENCY, TARGET, OPTIONS, DEADLINE = EXCLUSION_REASONS


def _ruled_out(instance: PlanningInstance, c: Candidate, epochs: str) -> str | None:
    """Which of :data:`LATENCY`, :data:`TARGET`, :data:`OPTIONS` (checked in that order) puts ``c`` in
    no plan whatever the deadline, or ``None``: then only :data:`DEADLINE` can. The one check behind
    :func:`explain` and :func:`excluded_candidates`."""
    if instance.serving is not None and (c.serving is None or not c.serving.feasible):
        return LATENCY
    if c.epochs.get(epochs) is None:
        return TARGET
    if not c.options:
        return OPTIONS
    return None


def _no_options_why(c: Candidate) -> str:
    reasons = "; ".join(str(x.get("reason", x)) for x in c.infeasible) or "no option given"
    return f"no feasible (edge, cut): {reasons}"


def explain(instance: PlanningInstance, epochs: str, candidates: Iterable[Candidate] | None = None,
            scope: str | None = None) -> dict:
    cands = list(instance.candidates if candidates is None else candidates)
    unreachable, too_slow, cannot_serve = [], [], []
    for c in cands:
        reason = _ruled_out(instance, c, epochs)
        if reason == LATENCY:
            cannot_serve.append({"candidate": c.key, "why": c.serving.reason if c.serving is not None
                                 else "no serving entry",
                                 "fastest_request_time_s": c.serving.fastest_request_time_s
                                 if c.serving is not None else None})
            continue
        if reason == TARGET:
            unreachable.append({"candidate": c.key, "why": f"never reaches target loss "
                                f"{instance.target_loss:g} ({epochs} estimate)"})
            continue
        if reason == OPTIONS:
            unreachable.append({"candidate": c.key, "why": _no_options_why(c)})
            continue
        K = c.epochs.get(epochs)
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


def missing_estimate_pairs(instance: PlanningInstance) -> list[tuple[str, str, int]]:
    """``(key, model, bits)`` of each pair listed in ``meta.missing_estimates`` (``model@bits``: left out
    of the instance for want of a learning estimate); a key without whole bits is skipped."""
    out = []
    for key in (instance.meta or {}).get("missing_estimates") or []:
        model, _, bits = str(key).rpartition("@")
        if bits.isdigit():
            out.append((str(key), model, int(bits)))
    return out


def excluded_candidates(instance: PlanningInstance, epochs: str, candidates: Iterable[Candidate],
                        *, omega: Iterable[int] | None = None, missing_bits: Iterable[int] = ()) -> list[dict]:
    """The candidates a solver searched (``candidates``) that can be in no plan, and why — what
    ``jqodi plan`` lists under "excluded", so a user sees why a favourite model was not chosen.

    One row per candidate: ``candidate`` (``model@bits``), ``model``, ``bits``, ``reason`` (one of
    :data:`EXCLUSION_REASONS`) and ``why`` (the same in words). Reasons, in the order checked:
    ``latency`` (cannot serve a request within ``serving.latency_slo_s``), ``target`` (the epoch
    estimate is null: it never reaches L_max), ``options`` (no feasible (edge, cut)), ``deadline``
    (even its fastest option misses T_max: τ_(a,q) + K·min epoch time; the row adds ``epochs`` and
    ``fastest_time_s``). ``omega``: the solver searches only these bit-widths (Ω); the instance's
    other candidates get ``outside-omega``. ``missing_bits``: the bit-widths whose pairs listed in
    ``meta.missing_estimates`` (left out of the instance: no learning estimate) get ``no-estimate``.
    A candidate not listed can meet the deadline and the target: a plan chose another for its energy.
    """
    from jqodi.planner.common import deadline_limit_s, option_arrays

    k_name = "K^rob" if epochs == "robust" else "K^exp"
    out = []
    wanted = set(missing_bits)
    for key, model, bits in missing_estimate_pairs(instance):
        if bits in wanted:
            out.append({"candidate": key, "model": model, "bits": bits, "reason": NO_ESTIMATE,
                        "why": "no learning estimate (L_a, γ, K^exp, K^rob): left out of the instance"})
    searched = list(candidates)
    if omega is not None:
        omega = set(omega)
        ids = {id(c) for c in searched}
        for c in instance.candidates:
            if id(c) not in ids and c.bits not in omega:
                out.append({"candidate": c.key, "model": c.model, "bits": c.bits, "reason": OUTSIDE_OMEGA,
                            "why": f"not searched: {c.bits} bits is a baseline bit-width, outside Ω "
                                   f"(bits {', '.join(map(str, sorted(omega)))})"})
    limit = deadline_limit_s(instance.deadline_s)
    for c in searched:
        row = {"candidate": c.key, "model": c.model, "bits": c.bits}
        reason = _ruled_out(instance, c, epochs)
        if reason == LATENCY:
            why = c.serving.reason if c.serving is not None else "no serving entry"
            row.update(reason=LATENCY, why=f"cannot serve within latency_slo_s "
                                           f"{instance.serving.latency_slo_s:g} s ({why})")
        elif reason == TARGET:
            row.update(reason=TARGET, why=f"never reaches target loss {instance.target_loss:g} ({k_name}: none)")
        elif reason == OPTIONS:
            row.update(reason=OPTIONS, why=_no_options_why(c))
        else:
            K = c.epochs.get(epochs)
            fastest = c.quantize_time_s + K * float(option_arrays(c).time_s.min())
            if fastest <= limit:
                continue
            row.update(reason=DEADLINE, epochs=K, fastest_time_s=fastest,
                       why=f"misses T_max {instance.deadline_s:g} s on every (edge, cut): "
                           f"≥ {fastest:.4g} s for {K} epochs ({k_name})")
        out.append(row)
    return out


def infeasible_solution(instance: PlanningInstance, solver: str, epochs: str, *,
                        candidates: Iterable[Candidate] | None = None, scope: str | None = None,
                        **extra) -> Solution:
    ex = {"epochs_estimate": epochs, "explanation": explain(instance, epochs, candidates, scope)}
    ex.update(extra)
    return Solution("infeasible", solver, extra=ex)
