"""Predicted trajectories of a plan: loss, cumulative time and energy epoch by epoch, and the
time and energy each node and link spends (Fig. 7/8, 11/12).

Loss trajectories. The planning instance carries, per candidate, only anchor points: the loss
before fine-tuning L_a + γ_(a,q) (``loss.start``) and the predicted losses after K^exp and
K^rob epochs (``loss.final_expected``/``final_robust``). Between anchors the loss is
interpolated geometrically (a straight line on a log axis: a constant per-epoch rate of
decrease), and held constant after the last anchor. For an unreachable target the curve decays
geometrically to ``final_expected`` (the plateau) over the epochs run. When the instance has no
``loss`` (the paper's tables give no final losses, so the paper scenarios compile without it),
the anchors come from the scenario's learning estimates (:func:`loss_anchors_from_estimates`):
start L_a + γ, the row's L_max at K^exp. These curves are *predictions drawn through a few
points*, not measured training curves; the runtime's measured losses are the real ones.

Per-node breakdown: the cost model's terms (:func:`jqodi.core.costs.epoch_costs`) × the
schedule, grouped by the node or link each is spent on (:data:`NODE_TERMS`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from jqodi.core.instance import Candidate, LossEstimates, PlanningInstance, ScheduleEntry
from jqodi.errors import PlanningError

__all__ = ["NODE_TERMS", "TrajectoryPoint", "geometric_loss_trajectory", "loss_anchors_from_estimates", "anchors_of",
           "trajectory", "node_breakdown", "phase_breakdown", "cut_sweep"]

#: The node (or link) each cost term of Eq. (1)-(10) is spent on (Fig. 8/12). The one-off
#: quantization τ_(a,q), ε_(a,q) is work on the CS and is added there; a node's idle energy
#: (extended model, ``idle_energy: true``; energy only) is spent on that node.
NODE_TERMS: Mapping[str, tuple[str, ...]] = {
    "SD": ("end_compute", "end_idle"),
    "ES": ("edge_compute", "edge_idle"),
    "CS": ("cloud_update", "cloud_idle"),
    "CS-ES link": ("cloud_to_edge", "edge_to_cloud"),
    "ES-SD link": ("edge_to_end", "end_to_edge", "activations"),
}


@dataclass(frozen=True)
class TrajectoryPoint:
    """State after ``epoch`` epochs (0 = after the one-off quantization, before training).
    Energy (J) and time (s) are cumulative; ``loss`` is the interpolated predicted loss."""

    epoch: int
    energy_j: float
    time_s: float
    loss: float | None


def _geometric(l0: float, l1: float, frac: float) -> float:
    if l0 > 0 and l1 > 0:
        return l0 * (l1 / l0) ** frac
    return l0 + (l1 - l0) * frac  # a zero loss: fall back to linear


def geometric_loss_trajectory(candidate: Candidate, epochs: int, *, reachable: bool = True,
                              loss: LossEstimates | None = None) -> list[float | None]:
    """Predicted loss after 0..``epochs`` epochs (a list of ``epochs + 1`` values), *geometric*
    between anchors: the curve the evaluation reports and plots for a strategy's plan.

    Geometric because measured fine-tuning losses decay roughly exponentially; the planner's
    risk factor uses :func:`jqodi.planner.jqodi.linear_loss_trajectory` instead (see there).

    Anchors: (0, ``loss.start``), (K^exp, ``final_expected``), (K^rob, ``final_robust``);
    geometric interpolation between anchors, constant after the last. When the target is
    unreachable (``reachable=False``, or K unknown) the loss decays geometrically from
    ``start`` to ``final_expected`` over the ``epochs`` run. ``loss`` overrides the
    candidate's own anchors. ``None`` values without anchors.
    """
    ls = loss if loss is not None else candidate.loss
    if ls is None:
        return [None] * (epochs + 1)
    k_exp, k_rob = candidate.epochs.expected, candidate.epochs.robust
    if not reachable or k_exp is None:
        span = max(1, epochs)
        return [_geometric(ls.start, ls.final_expected, min(1.0, k / span)) for k in range(epochs + 1)]
    anchors = [(0, ls.start), (k_exp, ls.final_expected)]
    if k_rob is not None and k_rob > k_exp:
        anchors.append((k_rob, ls.final_robust))
    out = []
    for k in range(epochs + 1):
        if k >= anchors[-1][0]:
            out.append(anchors[-1][1])
            continue
        for (k0, l0), (k1, l1) in zip(anchors, anchors[1:]):
            if k0 <= k <= k1:
                out.append(_geometric(l0, l1, (k - k0) / (k1 - k0)))
                break
    return out


def anchors_of(cand: Candidate, anchors: Mapping[tuple[str, int], LossEstimates]
                ) -> LossEstimates | None:
    return cand.loss if cand.loss is not None else anchors.get((cand.model, cand.bits))


def loss_anchors_from_estimates(estimates: Iterable[Any], target_loss: float
                                ) -> dict[tuple[str, int], LossEstimates]:
    """Loss anchors from learning estimates (:class:`~jqodi.core.estimates.LearningEstimate`)
    that give no predicted final losses (the paper's tables give none):

    - start = L_a + γ_(a,q) (``base_loss + gamma``, what the instance's ``loss.start`` is);
    - reachable (K^exp known): the estimate's own L_max (``target_loss``, else the instance's)
      is the loss at K^exp; the same per-epoch rate continues to K^rob. When the start is
      already at or below that L_max (the table's L_a is the cloud model's loss, not the loss
      on the SD's data, and γ = 0 for fp32) the anchors contradict K and the curve is flat;
      :func:`jqodi.app.evaluation.evaluate_scenario` lists those candidates in the notes;
    - unreachable (K = ∞): a plateau at the geometric mean of the start and the target, an
      illustrative value (the tables only say the target is never reached), drawn with a square.

    Rows that do carry ``final_loss_expected``/``final_loss_robust`` use them as they are.
    """
    out = {}
    for e in estimates:
        start = float(e.base_loss) + float(e.gamma)
        target = float(e.target_loss) if getattr(e, "target_loss", None) else float(target_loss)
        fe, fr = getattr(e, "final_loss_expected", None), getattr(e, "final_loss_robust", None)
        if fe is not None and fr is not None:
            out[(e.model, e.bits)] = LossEstimates(start, float(fe), float(fr))
        elif e.epochs_expected is not None:
            k_exp, k_rob = e.epochs_expected, e.epochs_robust or e.epochs_expected
            final = min(target, start)  # a start already below L_max: flat, never rising
            rate = (final / start) ** (1.0 / k_exp) if start > 0 and final > 0 else 1.0
            out[(e.model, e.bits)] = LossEstimates(start, final, final * rate ** (k_rob - k_exp))
        else:
            plateau = math.sqrt(start * target) if start > target > 0 else start
            out[(e.model, e.bits)] = LossEstimates(start, plateau, plateau)
    return out


def trajectory(instance: PlanningInstance, cand: Candidate, schedule: Sequence[ScheduleEntry],
                reachable: bool, loss: LossEstimates | None = None) -> list[TrajectoryPoint]:
    options = {(o.edge, o.cut): o for o in cand.options}
    n = sum(e.epochs for e in schedule)
    losses = geometric_loss_trajectory(cand, n, reachable=reachable, loss=loss)
    e_j, t_s = cand.quantize_energy_j, cand.quantize_time_s
    pts = [TrajectoryPoint(0, e_j, t_s, losses[0])]
    k = 0
    for entry in sorted(schedule, key=lambda e: (e.edge, e.cut)):  # one canonical epoch order
        opt = options.get((entry.edge, entry.cut))
        if opt is None:
            raise PlanningError(f"schedule uses (edge={entry.edge!r}, cut={entry.cut}), which is "
                                f"not an option of {cand.key}")
        for _ in range(entry.epochs):
            k += 1
            e_j += opt.epoch_energy_j
            t_s += opt.epoch_time_s
            pts.append(TrajectoryPoint(k, e_j, t_s, losses[k]))
    return pts


def _term(cost: Any, name: str, unit: str) -> float:
    v = getattr(cost, f"{name}_{unit}", None)
    if v is None and isinstance(cost, Mapping):
        v = cost.get(f"{name}_{unit}")
    return float(v) if v is not None and math.isfinite(float(v)) else 0.0


def node_breakdown(epoch_cost: Callable[[str, int, int, str], Any], model: str, bits: int,
                   schedule: Sequence[ScheduleEntry], *, quantize_time_s: float = 0.0,
                   quantize_energy_j: float = 0.0) -> dict[str, dict[str, float]]:
    """Time (s) and energy (J) per node and link over a whole schedule.

    ``epoch_cost(model, bits, cut, edge)`` returns one epoch's cost terms (an
    :class:`~jqodi.core.costs.EpochCost`, or a mapping) with ``<term>_s`` / ``<term>_j`` for the
    terms of :data:`NODE_TERMS`; each is multiplied by the entry's epochs. The one-off
    quantization is added to the CS. If the terms do not add up to the epoch's ``time_s`` /
    ``energy_j``, the rest is reported as ``other`` (never silently dropped).
    """
    out = {node: {"time_s": 0.0, "energy_j": 0.0} for node in NODE_TERMS}
    out["CS"]["time_s"] += quantize_time_s
    out["CS"]["energy_j"] += quantize_energy_j
    other = {"time_s": 0.0, "energy_j": 0.0}
    for entry in schedule:
        cost = epoch_cost(model, bits, entry.cut, entry.edge)
        sums = {"time_s": 0.0, "energy_j": 0.0}
        for node, terms in NODE_TERMS.items():
            for term in terms:
                t, e = _term(cost, term, "s"), _term(cost, term, "j")
                out[node]["time_s"] += t * entry.epochs
                out[node]["energy_j"] += e * entry.epochs
                sums["time_s"] += t
                sums["energy_j"] += e
        for key, unit in (("time_s", "time_s"), ("energy_j", "energy_j")):
            total = getattr(cost, unit, None) if not isinstance(cost, Mapping) else cost.get(unit)
            if total is not None and math.isfinite(total):
                rest = float(total) - sums[key]
                if abs(rest) > 1e-9 * max(1.0, abs(total)):
                    other[key] += rest * entry.epochs
    if other["time_s"] or other["energy_j"]:
        out["other"] = other
    return out


def phase_breakdown(epoch_cost: Callable[[str, int, int, str], Any], model: str, bits: int,
                    schedule: Sequence[ScheduleEntry]) -> dict[str, dict[str, float]]:
    """Time (s) and energy (J) per cost term of Eq. (1)-(10) over a whole schedule (the per-phase
    view of Fig. 8/12): each term of :data:`NODE_TERMS` × the entry's epochs, in that order;
    terms that are zero for every entry are left out. The one-off quantization is not a phase
    (see :func:`node_breakdown`, which adds it to the CS)."""
    out = {term: {"time_s": 0.0, "energy_j": 0.0} for terms in NODE_TERMS.values() for term in terms}
    for entry in schedule:
        cost = epoch_cost(model, bits, entry.cut, entry.edge)
        for term, acc in out.items():
            acc["time_s"] += _term(cost, term, "s") * entry.epochs
            acc["energy_j"] += _term(cost, term, "j") * entry.epochs
    return {term: acc for term, acc in out.items() if acc["time_s"] or acc["energy_j"]}


def cut_sweep(instance: PlanningInstance) -> list[dict[str, Any]]:
    """One epoch's time (s) and energy (J) at every partition point, per (model, bits, edge):
    the data of the paper's Fig. 3 and Observation 4 (energy first falls, then rises with the
    cut), read from the instance's options t(k), e(k) of Eq. (5)-(6)."""
    rows = []
    for c in sorted(instance.candidates, key=lambda c: (c.model, c.bits)):
        for o in sorted(c.options, key=lambda o: (o.edge, o.cut)):
            rows.append({"model": c.model, "bits": c.bits, "edge": o.edge, "cut": o.cut,
                         "epoch_time_s": o.epoch_time_s, "epoch_energy_j": o.epoch_energy_j})
    return rows
