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

Module map: the paper's reference figures are in :mod:`jqodi.app.paper`, the trajectories and
the per-node breakdown in :mod:`jqodi.app.trajectories`, the figures in :mod:`jqodi.render.plots`
and the text tables in :mod:`jqodi.render.evaluation`.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from jqodi.app.paper import PAPER, comparison, epochs_table, paper_key_for
from jqodi.app.trajectories import (TrajectoryPoint, anchors_of, cut_sweep, loss_anchors_from_estimates, node_breakdown,
                                    phase_breakdown, trajectory)
from jqodi.core.instance import Candidate, LossEstimates, PlanningInstance, ScheduleEntry, Solution
from jqodi.errors import InfeasibleError, PlanningError

__all__ = ["STRATEGIES", "StrategyResult", "Evaluation", "evaluate_scenario", "evaluate_instance", "write_outputs"]

STRATEGIES: tuple[tuple[str, str], ...] = (
    ("JQODI", "jqodi"),
    ("Optimum", "static"),
    ("Optimal (mixed)", "optimal"),
    ("Full Model", "full-model"),
    ("Minimal Model", "minimal-model"),
)
"""(label, solver name) of every strategy, in the order they are shown."""


@dataclass
class StrategyResult:
    """One strategy's plan and what it costs.

    ``status`` is the solver's; ``relaxed`` says how the constraints were lifted to show a
    baseline that cannot meet them (``""``, ``"deadline"`` or ``"target"``). ``breakdown``
    maps node → {"time_s", "energy_j"} (Fig. 8/12), ``None`` when no cost terms were given;
    ``phases`` the same per cost term (:func:`jqodi.app.trajectories.phase_breakdown`).
    ``plan_time_s`` is the solver's wall time on this host, ``plan_cpu_s`` its CPU time (this
    process's, all threads: what the solve costs, not how long it waited for a core on a busy
    host; Table V's planning energy is priced by it); ``plan_energy_j`` what planning cost
    (Table V's "JQODI Energy") when a meter measured it, else ``None``.
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
    phases: dict[str, dict[str, float]] | None = field(default=None, repr=False)
    plan_energy_j: float | None = None
    plan_cpu_s: float = 0.0

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
    cut_sweep: list[dict[str, Any]] = field(default_factory=list, repr=False)
    """One epoch's time and energy per (model, bits, edge, cut): Fig. 3 / Observation 4."""

    def strategy(self, label: str) -> StrategyResult:
        for s in self.strategies:
            if s.label == label:
                return s
        raise KeyError(label)


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
        ls = anchors_of(c, anchors)
        return ls.final_expected if ls is not None else math.inf

    cand = min(cands, key=lambda c: (min(o.epoch_energy_j for o in c.options), plateau(c)))
    opt = min(cand.options, key=lambda o: (o.epoch_energy_j, o.epoch_time_s))
    budget = instance.deadline_s - cand.quantize_time_s
    epochs = max(1, int(budget // opt.epoch_time_s)) if budget > 0 else 1
    return cand, ScheduleEntry(opt.edge, opt.cut, epochs)


def _run_one(instance: PlanningInstance, label: str, solver: str, solve: SolveFn,
             epoch_cost: Callable | None, epochs: str,
             anchors: Mapping[tuple[str, int], LossEstimates]) -> StrategyResult:
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        sol = solve(instance, solver=solver, epochs=epochs)
    except InfeasibleError as e:
        sol = Solution("infeasible", solver, extra={"explanation": str(e)})
    plan_time_s, plan_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    res = StrategyResult(label, solver, sol.status, plan_time_s=plan_time_s, plan_cpu_s=plan_cpu_s)
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
    res.trajectory = trajectory(instance, cand, schedule, reachable, anchors_of(cand, anchors))
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
        res.phases = phase_breakdown(epoch_cost, cand.model, cand.bits, schedule)
    return res


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
                      epochs_table(instance, paper, anchors), comparison(results, paper), notes,
                      cut_sweep=cut_sweep(instance))


def evaluate_scenario(path: str | os.PathLike, *, out_dir: str | os.PathLike | None = None,
                      estimates: str | os.PathLike | None = None,
                      strategies: Sequence[tuple[str, str]] = STRATEGIES, epochs: str = "robust",
                      progress: Callable[[str], None] | None = None,
                      allow_estimate_mismatch: bool = False) -> Evaluation:
    """Load a scenario, compile it, run every strategy, and (with ``out_dir``) write the JSON
    and the figures there. ``estimates``: a learning-estimates JSON file (``jqodi estimate``)
    that overrides the scenario's static ``learning:`` rows, refused when made for another model,
    data or target unless ``allow_estimate_mismatch`` (:mod:`jqodi.app.estimates`)."""
    from jqodi.core.costs import compile_instance, epoch_costs
    from jqodi.planner import solve
    from jqodi.core.scenario import load_scenario

    scenario = load_scenario(path)
    measured = None
    if estimates is not None:
        from jqodi.app.estimates import estimates_for_scenario

        measured = estimates_for_scenario(estimates, scenario, allow_mismatch=allow_estimate_mismatch)
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


def write_outputs(ev: Evaluation, out_dir: str | os.PathLike) -> dict[str, str]:
    """Write ``evaluation.json``, ``summary.txt`` and the PNGs into ``out_dir``."""
    from jqodi.render.evaluation import summary_tables
    from jqodi.render.plots import plot_breakdown, plot_loss_curves, plot_time_energy
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
