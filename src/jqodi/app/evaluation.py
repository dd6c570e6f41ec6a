"""The paper's evaluation (Section V), reproduced from the planner's output.

For one scenario this module runs every strategy of Section V-A (JQODI, the optimum, Full Model,
Minimal Model) on the compiled planning instance and derives:

- per strategy, the trajectory epoch by epoch: cumulative energy, cumulative time and loss
  (Fig. 7(a)/(b), 11(a)/(b)), ending in a circle when the target loss is reached and a square
  when it is not (Fig. 7(c), 11(c));
- per strategy, the time and energy spent on each node (SD, ES, CS) and link (Fig. 8, 12), from
  the cost model's terms :func:`jqodi.core.costs.epoch_costs` × the schedule;
- the epoch estimates per (model, bits) beside the paper's Tables VI/VII;
- our figures beside the paper's reported ones (Section V-C/D), with the choices each made.

Strategies. ``jqodi`` is Algorithms 1-4; ``static`` is the paper's *Optimum* (brute force over
one fixed (model, bits, cut, edge) for all epochs: the paper notes its choice "is relatively
fixed" across epochs); ``optimal`` is the exact optimum when epochs may mix options, which can
only be cheaper (shown beside, not in the paper); ``full-model`` / ``minimal-model`` are the
fp32 and 1-bit baselines.

Baselines that cannot meet the constraints are still shown, as in the paper:
- no plan within the deadline (Full Model on Data 1) → the instance is solved again with the
  deadline moved to the shortest time the strategy can achieve at all: the plan that misses the
  deadline least (least energy among those). Lifting the deadline entirely would instead show
  the least-energy plan at any speed, which in a calibrated testbed can run for hours on the SD
  (the planner's ``best_ignoring_deadline``, quoted in the note). Marked ``meets_deadline: false``.
- the target loss is out of reach (Minimal Model on Data 1, K = ∞) → the option with the least
  energy per epoch among the strategy's candidates (what its brute force picks once the loss
  constraint is dropped) runs for as many epochs as the deadline allows (at least one); marked
  ``reaches_target: false`` (a square in Fig. 7(c)).

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
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from jqodi.errors import InfeasibleError, JqodiError, PlanningError
from jqodi.core.instance import Candidate, LossEstimates, PlanningInstance, ScheduleEntry, Solution

__all__ = ["STRATEGIES", "PAPER", "StrategyResult", "Evaluation", "evaluate_scenario",
           "evaluate_instance", "geometric_loss_trajectory", "loss_anchors_from_estimates", "node_breakdown", "write_outputs",
           "NODE_TERMS"]

STRATEGIES: tuple[tuple[str, str], ...] = (
    ("JQODI", "jqodi"),
    ("Optimum", "static"),
    ("Optimal (mixed)", "optimal"),
    ("Full Model", "full-model"),
    ("Minimal Model", "minimal-model"),
)
"""(label, solver name) of every strategy, in the order they are shown."""

#: The node (or link) each cost term of Eq. (1)-(10) is spent on (Fig. 8/12). The one-off
#: quantization τ_(a,q), ε_(a,q) is work on the CS and is added there.
NODE_TERMS: Mapping[str, tuple[str, ...]] = {
    "SD": ("end_compute",),
    "ES": ("edge_compute",),
    "CS": ("cloud_update",),
    "CS-ES link": ("cloud_to_edge", "edge_to_cloud"),
    "ES-SD link": ("edge_to_end", "end_to_edge", "activations"),
}

# What the paper reports (Section V-C/D, Tables V-VII). Reference figures, never used as results.
PAPER: dict[str, dict[str, Any]] = {
    "data1": {
        "deadline_s": 180.0,
        "target_loss": {"lenet": 0.0186, "resnet20": 0.02, "vgg": 0.0188},
        "strategies": {
            "JQODI": {"model": "lenet", "bits": 6, "cut": 1, "edge": "rtx3090",
                      "energy_j": 7651.3, "time_s": 142.335, "reaches_target": True},
            "Optimum": {"model": "lenet", "bits": 8, "cut": 1, "edge": "rtx3090",
                        "energy_j": 6988.1, "time_s": 135.564, "reaches_target": True},
            "Full Model": {"model": "vgg", "bits": 32, "cut": 1, "edge": "rtx4090",
                           "energy_j": 19091.0, "time_s": 330.86, "reaches_target": True},
            "Minimal Model": {"model": "lenet", "bits": 1, "cut": 2, "edge": "rtx3090",
                              "energy_j": None, "time_s": None, "reaches_target": False},
        },
        # Table VI: (model, bits) → (K mean, K ±, K^exp, K^rob); None = ∞
        "epochs": {
            ("lenet", 2): (126, 6, 126, 132), ("lenet", 4): (44, 4, 44, 48),
            ("lenet", 6): (33, 3, 33, 36), ("lenet", 8): (26, 3, 26, 29),
            ("resnet20", 2): None, ("resnet20", 4): (56, 4, 56, 60),
            ("resnet20", 6): (48, 2, 48, 50), ("resnet20", 8): (42, 2, 42, 44),
            ("vgg", 2): (71, 5, 71, 76), ("vgg", 4): (43, 3, 43, 46),
            ("vgg", 6): (39, 3, 39, 42), ("vgg", 8): (29, 2, 29, 31),
        },
    },
    "data2": {
        "deadline_s": 2000.0,
        "target_loss": {"lenet": 0.02, "resnet20": 0.02, "vgg": 0.02},
        "strategies": {
            "JQODI": {"model": "resnet20", "bits": 8, "cut": 1, "edge": "rtx4090",
                      "energy_j": 12091.0, "time_s": None, "reaches_target": True},
            "Optimum": {"model": "resnet20", "bits": 6, "cut": 1, "edge": "rtx4090",
                        "energy_j": None, "time_s": None, "reaches_target": True},
            "Full Model": {"model": "lenet", "bits": 32, "cut": 1, "edge": "rtx3090",
                           "energy_j": None, "time_s": None, "reaches_target": True},
            "Minimal Model": {"model": "vgg", "bits": 1, "cut": 2, "edge": "rtx4090",
                              "energy_j": None, "time_s": None, "reaches_target": True},
        },
        # Table VII
        "epochs": {
            ("lenet", 2): (145, 7, 145, 152), ("lenet", 4): (53, 3, 53, 56),
            ("lenet", 6): (36, 3, 36, 39), ("lenet", 8): (33, 2, 33, 35),
            ("resnet20", 2): None, ("resnet20", 4): (59, 3, 59, 62),
            ("resnet20", 6): (47, 2, 47, 49), ("resnet20", 8): (50, 2, 50, 52),
            ("vgg", 2): (113, 6, 113, 119), ("vgg", 4): (73, 4, 73, 77),
            ("vgg", 6): (69, 3, 69, 72), ("vgg", 8): (58, 2, 58, 60),
        },
    },
}

# ---------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class TrajectoryPoint:
    """State after ``epoch`` epochs (0 = after the one-off quantization, before training).
    Energy (J) and time (s) are cumulative; ``loss`` is the interpolated predicted loss."""

    epoch: int
    energy_j: float
    time_s: float
    loss: float | None


@dataclass
class StrategyResult:
    """One strategy's plan and what it costs.

    ``status`` is the solver's; ``relaxed`` says how the constraints were lifted to show a
    baseline that cannot meet them (``""``, ``"deadline"`` or ``"target"``). ``breakdown``
    maps node → {"time_s", "energy_j"} (Fig. 8/12), ``None`` when no cost terms were given.
    """

    label: str
    solver: str
    status: str
    model: str | None = None
    bits: int | None = None
    schedule: tuple[ScheduleEntry, ...] = ()
    energy_j: float | None = None
    time_s: float | None = None
    epochs: int = 0
    reaches_target: bool = False
    meets_deadline: bool = False
    relaxed: str = ""
    note: str = ""
    plan_time_s: float = 0.0
    trajectory: list[TrajectoryPoint] = field(default_factory=list, repr=False)
    breakdown: dict[str, dict[str, float]] | None = field(default=None, repr=False)

    @property
    def main_option(self) -> ScheduleEntry | None:
        """The schedule entry with most epochs (what the paper names as "the" choice)."""
        return max(self.schedule, key=lambda e: e.epochs) if self.schedule else None

    def choice(self) -> str:
        """``lenet 6-bit cut 1 @ rtx3090``; a mixed schedule lists cut×epochs, e.g.
        ``lenet 8-bit @ rtx3090, cuts 1×4 3×24``."""
        if self.model is None:
            return "-"
        bits = "fp32" if self.bits == 32 else f"{self.bits}-bit"
        if len(self.schedule) == 1:
            e = self.schedule[0]
            return f"{self.model} {bits} cut {e.cut} @ {e.edge}"
        entries = sorted(self.schedule, key=lambda e: (e.edge, e.cut))
        edges = {e.edge for e in entries}
        if len(edges) == 1:
            cuts = " ".join(f"{e.cut}×{e.epochs}" for e in entries)
            return f"{self.model} {bits} @ {entries[0].edge}, cuts {cuts}"
        return f"{self.model} {bits}, " + " ".join(f"{e.cut}@{e.edge}×{e.epochs}" for e in entries)


@dataclass
class Evaluation:
    """Everything one scenario's evaluation produced (saved as ``evaluation.json``)."""

    scenario: str
    paper_key: str | None
    deadline_s: float
    target_loss: float
    strategies: list[StrategyResult]
    epochs_table: list[dict[str, Any]] = field(repr=False)
    comparison: list[dict[str, Any]] = field(repr=False)
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def strategy(self, label: str) -> StrategyResult:
        for s in self.strategies:
            if s.label == label:
                return s
        raise KeyError(label)


# ---------------------------------------------------------------------------------------------
# loss trajectory


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


def _anchors_of(cand: Candidate, anchors: Mapping[tuple[str, int], LossEstimates]
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
      :func:`evaluate_scenario` lists those candidates in the notes;
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


def _trajectory(instance: PlanningInstance, cand: Candidate, schedule: Sequence[ScheduleEntry],
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


# ---------------------------------------------------------------------------------------------
# per-node breakdown (Fig. 8/12)


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


# ---------------------------------------------------------------------------------------------
# running the strategies


SolveFn = Callable[..., Solution]


def _candidate(instance: PlanningInstance, model: str | None, bits: int | None) -> Candidate | None:
    for c in instance.candidates:
        if c.model == model and c.bits == bits:
            return c
    return None


def _baseline_bits(instance: PlanningInstance, solver: str) -> int | None:
    bits = sorted({c.bits for c in instance.candidates})
    if not bits:
        return None
    if solver == "full-model":
        return 32 if 32 in bits else None
    if solver == "minimal-model":
        return bits[0]
    return None


def _fastest_time_s(instance: PlanningInstance, bits: int, epochs: str) -> float | None:
    """The shortest total time any plan of the ``bits`` candidates can take (τ + K·t_min)."""
    times = [c.quantize_time_s + c.epochs.get(epochs) * min(o.epoch_time_s for o in c.options)
             for c in instance.candidates
             if c.bits == bits and c.options and c.epochs.get(epochs) is not None]
    return min(times) if times else None


def _unreachable_plan(instance: PlanningInstance, bits: int, anchors: Mapping[tuple[str, int], LossEstimates]
                      ) -> tuple[Candidate, ScheduleEntry] | None:
    """For a baseline whose target is out of reach: what its brute-force search picks once the
    loss constraint is dropped, the option with the least energy per epoch over the strategy's
    candidates (ties: the lower predicted loss), run for as many epochs as fit in the deadline
    (≥ 1)."""
    cands = [c for c in instance.candidates if c.bits == bits and c.options]
    if not cands:
        return None

    def plateau(c: Candidate) -> float:
        ls = _anchors_of(c, anchors)
        return ls.final_expected if ls is not None else math.inf

    cand = min(cands, key=lambda c: (min(o.epoch_energy_j for o in c.options), plateau(c)))
    opt = min(cand.options, key=lambda o: (o.epoch_energy_j, o.epoch_time_s))
    budget = instance.deadline_s - cand.quantize_time_s
    epochs = max(1, int(budget // opt.epoch_time_s)) if budget > 0 else 1
    return cand, ScheduleEntry(opt.edge, opt.cut, epochs)


def _run_one(instance: PlanningInstance, label: str, solver: str, solve: SolveFn,
             epoch_cost: Callable | None, epochs: str,
             anchors: Mapping[tuple[str, int], LossEstimates]) -> StrategyResult:
    t0 = time.perf_counter()
    try:
        sol = solve(instance, solver=solver, epochs=epochs)
    except InfeasibleError as e:
        sol = Solution("infeasible", solver, extra={"explanation": str(e)})
    plan_time_s = time.perf_counter() - t0
    res = StrategyResult(label, solver, sol.status, plan_time_s=plan_time_s)
    schedule: tuple[ScheduleEntry, ...] = ()
    cand = None
    reachable = True
    if sol.status != "infeasible" and sol.model is not None:
        cand = _candidate(instance, sol.model, sol.bits)
        schedule = sol.schedule
    elif solver in ("full-model", "minimal-model"):
        bits = _baseline_bits(instance, solver)
        least_late_s = _fastest_time_s(instance, bits, epochs) if bits is not None else None
        sol2 = None
        if least_late_s is not None:
            relaxed = dataclasses.replace(instance, deadline_s=least_late_s * (1 + 1e-6))
            try:
                sol2 = solve(relaxed, solver=solver, epochs=epochs)
            except InfeasibleError:
                sol2 = None
        if sol2 is not None and sol2.status != "infeasible" and sol2.model is not None:
            cand, schedule = _candidate(instance, sol2.model, sol2.bits), sol2.schedule
            res.relaxed = "deadline"
            res.note = (f"no plan meets the deadline; shown: the plan that misses it least "
                        f"(fastest possible: {least_late_s:.1f} s), least energy among those")
            late = sol.extra.get("best_ignoring_deadline")
            if isinstance(late, dict) and late.get("energy_j") is not None:
                res.note += (f"; least energy ignoring time would be {late['model']} "
                             f"{late['bits']}-bit cut {late['cut']} @ {late['edge']}: "
                             f"{late['energy_j']:.1f} J in {late['time_s']:.1f} s")
        else:
            bits = _baseline_bits(instance, solver)
            fallback = _unreachable_plan(instance, bits, anchors) if bits is not None else None
            if fallback is not None:
                cand, entry = fallback
                schedule = (entry,)
                reachable = False
                res.relaxed = "target"
                res.note = ("the target loss is out of reach for every candidate; ran the option "
                            "with the least energy per epoch until the deadline")
    if cand is None:
        res.note = res.note or str(sol.extra.get("explanation", "no plan"))
        return res
    res.model, res.bits, res.schedule = cand.model, cand.bits, tuple(schedule)
    res.trajectory = _trajectory(instance, cand, schedule, reachable, _anchors_of(cand, anchors))
    res.epochs = res.trajectory[-1].epoch
    res.energy_j = res.trajectory[-1].energy_j
    res.time_s = res.trajectory[-1].time_s
    k_exp = cand.epochs.expected
    res.reaches_target = reachable and k_exp is not None and res.epochs >= k_exp
    res.meets_deadline = res.time_s <= instance.deadline_s * (1 + 1e-9)
    if sol.status != "infeasible" and sol.energy_j is not None and \
            not math.isclose(sol.energy_j, res.energy_j, rel_tol=1e-6, abs_tol=1e-6):
        res.note = (f"solver reports {sol.energy_j:.1f} J, the schedule's options add up to "
                    f"{res.energy_j:.1f} J")
    if epoch_cost is not None:
        res.breakdown = node_breakdown(epoch_cost, cand.model, cand.bits, schedule,
                                       quantize_time_s=cand.quantize_time_s,
                                       quantize_energy_j=cand.quantize_energy_j)
    return res


def _epochs_table(instance: PlanningInstance, paper: Mapping | None,
                  anchors: Mapping[tuple[str, int], LossEstimates]) -> list[dict[str, Any]]:
    rows = []
    paper_epochs = (paper or {}).get("epochs", {})
    for c in sorted(instance.candidates, key=lambda c: (c.model, c.bits)):
        row: dict[str, Any] = {"model": c.model, "bits": c.bits,
                               "K_exp": c.epochs.expected, "K_rob": c.epochs.robust,
                               "loss_start": c.loss.start if c.loss else None}
        if c.loss is None and (c.model, c.bits) in anchors:
            row["loss_start"] = anchors[(c.model, c.bits)].start
        if (c.model, c.bits) in paper_epochs:
            p = paper_epochs[(c.model, c.bits)]
            row.update({"paper_K": "∞" if p is None else f"{p[0]}±{p[1]}",
                        "paper_K_exp": None if p is None else p[2],
                        "paper_K_rob": None if p is None else p[3]})
        rows.append(row)
    return rows


def _comparison(results: Sequence[StrategyResult], paper: Mapping | None) -> list[dict[str, Any]]:
    rows = []
    pstrats = (paper or {}).get("strategies", {})
    for r in results:
        m = r.main_option
        row: dict[str, Any] = {
            "strategy": r.label, "ours_choice": r.choice(), "ours_energy_j": r.energy_j,
            "ours_time_s": r.time_s, "ours_epochs": r.epochs or None,
            "ours_reaches_target": r.reaches_target if r.model else None,
            "ours_meets_deadline": r.meets_deadline if r.model else None,
            "ours_model": r.model, "ours_bits": r.bits,
            "ours_cut": m.cut if m else None, "ours_edge": m.edge if m else None,
        }
        p = pstrats.get(r.label)
        if p is not None:
            bits = "fp32" if p["bits"] == 32 else f"{p['bits']}-bit"
            row.update({"paper_choice": f"{p['model']} {bits} cut {p['cut']} @ {p['edge']}",
                        "paper_energy_j": p["energy_j"], "paper_time_s": p["time_s"],
                        "paper_reaches_target": p["reaches_target"],
                        "same_model": p["model"] == r.model, "same_bits": p["bits"] == r.bits,
                        "same_cut": m is not None and p["cut"] == m.cut,
                        "same_edge": m is not None and p["edge"] == m.edge})
        rows.append(row)
    return rows


def paper_key_for(scenario: Any = None, path: str | os.PathLike | None = None) -> str | None:
    """``data1``/``data2`` when the scenario is one of the paper's (by its data split or
    file name), else ``None``."""
    split = getattr(getattr(scenario, "data", None), "split", None)
    name = f"{getattr(scenario, 'name', '')} {Path(path).stem if path else ''}".lower()
    for key in ("data1", "data2"):
        if key in name.replace("-", "").replace("_", ""):
            return key
    return split if split in PAPER else None


def evaluate_instance(instance: PlanningInstance, *, solve: SolveFn,
                      epoch_cost: Callable[[str, int, int, str], Any] | None = None,
                      paper_key: str | None = None, name: str = "scenario",
                      strategies: Sequence[tuple[str, str]] = STRATEGIES, epochs: str = "robust",
                      loss_anchors: Mapping[tuple[str, int], LossEstimates] | None = None,
                      progress: Callable[[str], None] | None = None) -> Evaluation:
    """Run every strategy on ``instance`` and derive the figures' data.

    Args:
        solve: ``jqodi.planner.solve`` (or any function with its signature).
        epoch_cost: ``(model, bits, cut, edge) → EpochCost`` for the per-node breakdown.
        paper_key: ``data1``/``data2`` to put the paper's figures beside ours.
        strategies: (label, solver) pairs; a solver the planner does not know is reported
            with status ``unavailable`` and skipped.
        epochs: ``robust`` (K^rob, the default, as JQODI plans) or ``expected``.
        loss_anchors: (model, bits) → loss anchors for candidates whose ``loss`` is absent
            (see :func:`loss_anchors_from_estimates`); used for the curves only, never given
            to the solvers (JQODI's risk factor must see the instance as it is).
    """
    paper = PAPER.get(paper_key) if paper_key else None
    anchors = dict(loss_anchors or {})
    results = []
    for label, solver in strategies:
        if progress:
            progress(f"{name}: solving {label} ({solver}) …")
        try:
            r = _run_one(instance, label, solver, solve, epoch_cost, epochs, anchors)
        except PlanningError as e:
            if "unknown solver" not in str(e).lower():
                raise
            r = StrategyResult(label, solver, "unavailable", note=str(e))
        results.append(r)
        if progress:
            progress(f"{name}: {label}: {r.status}"
                     + (f", {r.choice()}, {r.energy_j:.1f} J, {r.time_s:.1f} s" if r.model else "")
                     + (f" [{r.relaxed} relaxed]" if r.relaxed else ""))
    notes = []
    if paper is not None and not math.isclose(paper["deadline_s"], instance.deadline_s):
        notes.append(f"the paper's deadline is {paper['deadline_s']:g} s, this scenario's "
                     f"{instance.deadline_s:g} s")
    return Evaluation(name, paper_key, instance.deadline_s, instance.target_loss, results,
                      _epochs_table(instance, paper, anchors), _comparison(results, paper), notes)


def evaluate_scenario(path: str | os.PathLike, *, out_dir: str | os.PathLike | None = None,
                      estimates: str | os.PathLike | None = None,
                      strategies: Sequence[tuple[str, str]] = STRATEGIES, epochs: str = "robust",
                      progress: Callable[[str], None] | None = None) -> Evaluation:
    """Load a scenario, compile it, run every strategy, and (with ``out_dir``) write the JSON
    and the figures there. ``estimates``: a learning-estimates JSON file (``jqodi estimate``)
    that overrides the scenario's static ``learning:`` rows."""
    from jqodi.core.costs import compile_instance, epoch_costs
    from jqodi.planner import solve
    from jqodi.core.scenario import load_scenario

    scenario = load_scenario(path)
    measured = None
    if estimates is not None:
        from jqodi.core.estimates import load_estimates

        measured = load_estimates(estimates)
    instance = compile_instance(scenario, measured)

    def epoch_cost(model: str, bits: int, cut: int, edge: str):
        return epoch_costs(scenario, model, bits, cut, edge)

    rows = {e.key: e for e in scenario.estimates()}
    rows.update({e.key: e for e in measured or ()})
    anchors = loss_anchors_from_estimates(rows.values(), instance.target_loss)
    ev = evaluate_instance(instance, solve=solve, epoch_cost=epoch_cost, loss_anchors=anchors,
                           paper_key=paper_key_for(scenario, path),
                           name=getattr(scenario, "name", Path(path).stem),
                           strategies=strategies, epochs=epochs, progress=progress)
    ev.notes.append(f"cost model: {getattr(scenario, 'cost_model', '?')}; learning estimates: "
                    + (f"{estimates}" if estimates else "the scenario's static table"))
    flat = sorted(f"{m}@{q}" for (m, q), a in anchors.items()
                  if rows[(m, q)].epochs_expected is not None and a.start <= a.final_expected)
    if flat:
        ev.notes.append("loss curves drawn flat (L_a + γ is already ≤ the row's L_max although "
                        "K > 0: the static table has no loss on the SD's own data): "
                        + ", ".join(flat))
    if out_dir is not None:
        write_outputs(ev, out_dir)
    return ev


# ---------------------------------------------------------------------------------------------
# outputs


def _label_of(r: StrategyResult, shown: Sequence[StrategyResult] = ()) -> str:
    extra = " (deadline missed)" if r.model and not r.meets_deadline else ""
    same = _same_as(r, shown)
    if same is not None:
        extra += f" (same plan as {same.label})"
    return f"{r.label}: {r.choice()}{extra}"


def _plan_key(r: StrategyResult) -> tuple:
    """A plan as a multiset: epochs are interchangeable, so the schedule's order does not count."""
    return r.model, r.bits, tuple(sorted((e.edge, e.cut, e.epochs) for e in r.schedule))


def _same_as(r: StrategyResult, shown: Sequence[StrategyResult]) -> StrategyResult | None:
    """The first strategy shown before ``r`` with exactly the same plan, if any."""
    for prev in shown:
        if prev is r:
            return None
        if _plan_key(prev) == _plan_key(r):
            return prev
    return None


def _style(r: StrategyResult, shown: Sequence[StrategyResult]) -> dict:
    """Dashed and thicker for a plan drawn over an identical earlier one, so both stay visible."""
    if _same_as(r, shown) is not None or r.label == "Optimal (mixed)":
        return {"linestyle": (0, (4, 3)), "linewidth": 2.2}
    return {"linestyle": "-", "linewidth": 1.5}


def _shown(ev: Evaluation) -> list[StrategyResult]:
    """Strategies with a plan; the mixed optimum only when it differs from the static one."""
    shown = [r for r in ev.strategies if r.model is not None]
    try:
        static, mixed = ev.strategy("Optimum"), ev.strategy("Optimal (mixed)")
    except KeyError:
        return shown
    if mixed.model and static.model and _plan_key(mixed) == _plan_key(static):
        shown = [r for r in shown if r is not mixed]
    return shown


def plot_time_energy(ev: Evaluation, path: str | os.PathLike) -> Path:
    """Fig. 7(c)/11(c): cumulative time vs energy, epoch by epoch; circle = target reached,
    square = not reached. Left: every strategy; right: zoomed on the deadline (a baseline that
    runs far past it would otherwise flatten the others)."""
    from jqodi.render.report import Series, draw_series, figure

    shown = _shown(ev)
    series = [Series(_label_of(r, shown), [p.time_s for p in r.trajectory],
                     [p.energy_j for p in r.trajectory], marker=".",
                     end_marker="o" if r.reaches_target else "s",
                     linestyle=_style(r, shown)["linestyle"], color=f"C{i}")
              for i, r in enumerate(shown)]
    fig = figure(11.0, 5.0)
    axes = fig.subplots(1, 2)
    x_zoom = 1.15 * ev.deadline_s
    y_zoom = max([y for s in series for x, y in zip(s.x, s.y) if x <= x_zoom] or [1.0]) * 1.1
    for ax, zoom in ((axes[0], False), (axes[1], True)):
        draw_series(ax, series)
        ax.axvline(ev.deadline_s, color="grey", linestyle=":", linewidth=1)
        _label_deadline(ax, ev.deadline_s)
        if zoom:
            ax.set_xlim(0, x_zoom)
            ax.set_ylim(0, y_zoom)
        ax.set_xlabel("time taken (s)")
        ax.set_ylabel("energy (J)")
        ax.grid(True, alpha=0.3)
    axes[0].set_title(f"{ev.scenario}: (c) time vs energy (○ L_max reached, □ not)", fontsize=10)
    axes[1].set_title(f"zoom: t ≤ {x_zoom:g} s", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return _save(fig, path)


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _label_deadline(ax, deadline_s: float) -> None:
    ax.annotate(f"T_max = {deadline_s:g} s", (deadline_s, 0.98), xycoords=("data", "axes fraction"),
                ha="right", va="top", fontsize=8, color="grey", rotation=90, xytext=(-2, 0),
                textcoords="offset points")


def plot_loss_curves(ev: Evaluation, path: str | os.PathLike) -> Path | None:
    """Fig. 7(a)/(b), 11(a)/(b): loss (log axis) vs cumulative energy and vs time, side by
    side, up to 1.15 T_max; a strategy that runs past that is named in an "off chart" note."""
    from jqodi.render.report import Series, figure

    shown = [r for r in _shown(ev) if r.trajectory and r.trajectory[0].loss is not None]
    if not shown:
        return None
    fig = figure(11.0, 5.0)
    axes = fig.subplots(1, 2)
    # the same window as the zoomed time-energy panel: up to 1.15 T_max
    t_max = 1.15 * ev.deadline_s
    e_max = max([p.energy_j for r in shown for p in r.trajectory if p.time_s <= t_max] or [1.0])
    x_max = {"time_s": t_max, "energy_j": 1.1 * e_max}
    for ax, key, xlabel in ((axes[0], "energy_j", "energy (J)"), (axes[1], "time_s", "time taken (s)")):
        for i, r in enumerate(shown):
            s = Series(_label_of(r, shown), [getattr(p, key) for p in r.trajectory],
                       [p.loss for p in r.trajectory])
            ax.plot(s.x, s.y, color=f"C{i}", label=s.label, **_style(r, shown))
            ax.plot([s.x[-1]], [s.y[-1]], marker="o" if r.reaches_target else "s", color=f"C{i}",
                    markerfacecolor="white", markeredgewidth=2, markersize=8, linestyle="none")
        ax.axhline(ev.target_loss, color="grey", linestyle="--", linewidth=1)
        ax.annotate(f"L_max = {ev.target_loss:g}", (0.02, ev.target_loss),
                    xycoords=("axes fraction", "data"), ha="left", va="top", fontsize=8,
                    color="grey", xytext=(0, -2), textcoords="offset points")
        if key == "time_s":
            ax.axvline(ev.deadline_s, color="grey", linestyle=":", linewidth=1)
            _label_deadline(ax, ev.deadline_s)
        ax.set_yscale("log")
        ax.set_xlim(0, x_max[key])
        off = [r for r in shown if getattr(r.trajectory[-1], key) > x_max[key]]
        if off:
            xlabel += "\n(off chart: " + "; ".join(
                f"{r.label} ends at {r.trajectory[-1].time_s:.0f} s, {r.trajectory[-1].energy_j:.0f} J"
                for r in off) + ")"
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation loss (predicted, log scale)")
        ax.grid(True, alpha=0.3)
    axes[0].set_title(f"{ev.scenario}: (a) loss vs energy", fontsize=10)
    axes[1].set_title(f"{ev.scenario}: (b) loss vs time", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return _save(fig, path)


def plot_breakdown(ev: Evaluation, path: str | os.PathLike) -> Path | None:
    """Fig. 8/12: time and energy on each node/link per strategy (grouped bars, log axis)."""
    from jqodi.render.report import figure

    shown = [r for r in _shown(ev) if r.breakdown]
    if not shown:
        return None
    nodes = [n for n in list(NODE_TERMS) + ["other"]
             if any(n in r.breakdown and (r.breakdown[n]["time_s"] or r.breakdown[n]["energy_j"])
                    for r in shown)]
    fig = figure(11.0, 4.4)
    axes = fig.subplots(1, 2)
    width = 0.8 / max(1, len(nodes))
    for ax, key, ylabel in ((axes[0], "time_s", "time (s)"), (axes[1], "energy_j", "energy (J)")):
        for j, node in enumerate(nodes):
            xs = [i + (j - (len(nodes) - 1) / 2) * width for i in range(len(shown))]
            ys = [max(r.breakdown.get(node, {}).get(key, 0.0), 0.0) for r in shown]
            ax.bar(xs, ys, width=width, label=node, color=f"C{j}")
        ax.set_xticks(range(len(shown)))
        ax.set_xticklabels([r.label for r in shown], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_title(f"{ev.scenario}: (a) time per node", fontsize=10)
    axes[1].set_title(f"{ev.scenario}: (b) energy per node", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(nodes), fontsize=8,
               frameon=False)
    return _save(fig, path)


def summary_tables(ev: Evaluation) -> str:
    """The text tables: strategies (ours vs the paper's) and epoch estimates (Tables VI/VII)."""
    from jqodi.render.report import format_table

    cols = [("strategy", "strategy"), ("ours_choice", "ours"), ("ours_energy_j", "E (J)"),
            ("ours_time_s", "T (s)"), ("ours_epochs", "epochs"),
            ("ours_reaches_target", "L_max?"), ("ours_meets_deadline", "T_max?")]
    if ev.paper_key:
        cols += [("paper_choice", "paper"), ("paper_energy_j", "paper E (J)"),
                 ("paper_time_s", "paper T (s)")]
    parts = [format_table(ev.comparison, cols,
                          title=f"{ev.scenario}: T_max = {ev.deadline_s:g} s, "
                                f"L_max = {ev.target_loss:g}")]
    ecols = [("model", "model"), ("bits", "bits"), ("K_exp", "K^exp"), ("K_rob", "K^rob")]
    if ev.paper_key:
        ecols += [("paper_K", "paper K"), ("paper_K_exp", "paper K^exp"),
                  ("paper_K_rob", "paper K^rob")]
    parts.append(format_table(ev.epochs_table, ecols, title="epoch estimates (Tables VI/VII)"))
    return "\n\n".join(parts)


def write_outputs(ev: Evaluation, out_dir: str | os.PathLike) -> dict[str, str]:
    """Write ``evaluation.json``, ``summary.txt`` and the PNGs into ``out_dir``."""
    from jqodi.render.report import save_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"time_energy": plot_time_energy(ev, out / "time_energy.png")}
    loss = plot_loss_curves(ev, out / "loss_curves.png")
    if loss is not None:
        files["loss_curves"] = loss
    bd = plot_breakdown(ev, out / "breakdown.png")
    if bd is not None:
        files["breakdown"] = bd
    txt = out / "summary.txt"
    txt.write_text(summary_tables(ev) + "\n")
    files["summary"] = txt
    ev.files = {k: str(v) for k, v in files.items()}
    ev.files["json"] = str(out / "evaluation.json")
    save_json(out / "evaluation.json", ev)
    return ev.files
