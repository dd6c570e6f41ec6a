"""Compiling a scenario into the planning instance (the docs/interfaces.md contract).

:func:`compile_instance` joins the cost tables of every candidate (:mod:`jqodi.core.costs.table`,
Eq. (1)–(10)), the one-off quantization cost τ_(a,q), ε_(a,q), the learning estimates (epochs
K^exp/K^rob, losses) and, with a ``serving`` block, each candidate's serving entry.
"""
from __future__ import annotations

import math
from typing import Iterable

from jqodi.core.costs.table import cost_table
from jqodi.core.estimates import LearningEstimate
from jqodi.core.profile import ModelProfile
from jqodi.core.scenario import Scenario

__all__ = ["compile_instance"]


def _merge_estimates(scenario: Scenario, estimates: Iterable[LearningEstimate] | None
                     ) -> tuple[dict[tuple[str, int], LearningEstimate], list[str]]:
    table = {e.key: e for e in scenario.estimates()}
    unused: list[str] = []
    if estimates is not None:
        wanted = {(m.name, q) for m in scenario.models for q in scenario.all_bits}
        for e in estimates:
            if e.key in wanted:
                table[e.key] = e
            else:
                unused.append(f"{e.model}@{e.bits}")
    return table, unused


def compile_instance(scenario: Scenario, estimates: Iterable[LearningEstimate] | None = None,
                     profiles: dict[str, ModelProfile] | None = None, cost_model: str | None = None,
                     tables: dict | None = None):
    """Compile a scenario into a :class:`jqodi.planner.PlanningInstance` (docs/interfaces.md contract).

    ``estimates`` (e.g. measured by ``jqodi estimate``) override the scenario's static
    ``learning:`` rows for the same (model, bits). A (model, bits) with no estimate at all is
    left out and listed in ``meta.missing_estimates``. ``meta.search_bits`` is Ω (the bits
    JQODI searches); ``meta.baseline_bits`` the extra bit-widths compiled for the baselines.
    ``tables`` (model → :class:`~jqodi.core.costs.table.CostTable` of this scenario and cost
    model, e.g. computed by the caller for more than the instance) are used instead of recomputing.
    """
    from jqodi.core.instance import Candidate, EpochEstimates, LossEstimates, Option, PlanningInstance

    table, unused = _merge_estimates(scenario, estimates)
    profiles = dict(profiles or {})
    missing: list[str] = []
    candidates = []
    for m in scenario.models:
        prof = profiles.get(m.name)
        ct = (tables or {}).get(m.name) or cost_table(scenario, m.name, prof, cost_model=cost_model)
        for b, q in enumerate(ct.bits):
            est = table.get((m.name, q))
            if est is None:
                missing.append(f"{m.name}@{q}")
                continue
            options, infeasible = [], []
            for jj, j in enumerate(ct.cuts):
                for x, edge in enumerate(ct.edges):
                    t, e = float(ct.time_s[b, jj, x]), float(ct.energy_j[b, jj, x])
                    if math.isfinite(t) and math.isfinite(e) and t > 0:
                        options.append(Option(edge, j, t, e))
                    else:
                        infeasible.append({"edge": edge, "cut": j,
                                           "reason": ct.reasons[b, jj, x] or "non-finite cost"})
            loss = None
            if est.final_loss_expected is not None and est.final_loss_robust is not None:
                loss = LossEstimates(est.base_loss + est.gamma, est.final_loss_expected, est.final_loss_robust)
            candidates.append(Candidate(
                model=m.name, bits=q, quantize_time_s=float(ct.quantize_time_s[b]),
                quantize_energy_j=float(ct.quantize_energy_j[b]),
                epochs=EpochEstimates(est.epochs_expected, est.epochs_robust),
                options=tuple(options), loss=loss, infeasible=tuple(infeasible),
                serving=_serving_entry(scenario, ct.profile, q, ct.cost_model)))
    meta = {"scenario": scenario.name, "cost_model": cost_model or scenario.cost_model,
            "search_bits": list(scenario.bits), "baseline_bits": list(scenario.baseline_bits),
            "end_device": scenario.end_device.name, "edges": [e.name for e in scenario.edges],
            "train_size": scenario.data.train_size, "val_size": scenario.data.val_size}
    if missing:
        meta["missing_estimates"] = missing
    if unused:
        meta["unused_estimates"] = unused
    demand = None
    if scenario.serving is not None:  # the inference after fine-tuning (jqodi.core.serving)
        from jqodi.core.instance import ServingDemand
        from jqodi.core.serving import check_serving_bound

        check_serving_bound(scenario, candidates)
        demand = ServingDemand(scenario.serving.total_requests, scenario.serving.latency_slo_s)
    return PlanningInstance(scenario.deadline_s, scenario.target_loss, tuple(candidates), meta, demand)


def _serving_entry(scenario: Scenario, profile: ModelProfile, bits: int, cost_model: str):
    """The candidate's serving entry (priced in the epochs' ``cost_model``) when the scenario has a
    ``serving`` block, else None."""
    if scenario.serving is None:
        return None
    from jqodi.core.serving import candidate_serving

    return candidate_serving(scenario, profile, bits, cost_model=cost_model)
