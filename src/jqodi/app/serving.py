"""Whole-life energy versus the number of requests (issue 17; docs/serving.md).

Each candidate (model a, bits q) of Ω is a line in the number of requests R:
``E_a,q(R) = F_a,q + R · e_req(a, q)``, with F its least fine-tuning energy (the ``optimal``
solver on that candidate alone) and e_req the per-request energy of its serving configuration
(:mod:`jqodi.core.serving`). The plan chosen at R follows the lower envelope of these lines; the
envelope's breakpoints are the *crossovers*: the request counts beyond which fewer bits or a
smaller model starts to pay. :func:`serving_sweep` computes the lines, the crossovers and the
plans every solver chooses at a few request counts (solved, not read off the lines).
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from jqodi.core.instance import PlanningInstance, ServingDemand
from jqodi.planner.common import search_candidates

__all__ = ["ServingLine", "ServingSweep", "serving_sweep", "serving_sweep_scenario", "lower_envelope",
           "DEFAULT_REQUESTS"]

#: The request counts at which the sweep reports the chosen plans (issue 17).
DEFAULT_REQUESTS = (0.0, 1e4, 1e6, 1e8)


@dataclass(frozen=True)
class ServingLine:
    """One candidate's whole-life energy line: ``finetune_energy_j + R · request_energy_j``."""

    model: str
    bits: int
    finetune_energy_j: float
    request_energy_j: float
    request_time_s: float
    mode: str
    edge: str | None
    cut: int | None

    @property
    def key(self) -> str:
        return f"{self.model}@{self.bits}"

    def energy_j(self, requests: float) -> float:
        return self.finetune_energy_j + requests * self.request_energy_j


@dataclass
class ServingSweep:
    """Lines of every servable candidate, the envelope's crossovers and the chosen plans."""

    scenario: str
    latency_slo_s: float
    lines: list[ServingLine]
    crossovers: list[dict[str, Any]]
    chosen: list[dict[str, Any]]
    excluded: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)


def lower_envelope(lines: Sequence[ServingLine]) -> list[tuple[float, ServingLine]]:
    """The lower envelope of the lines over R ≥ 0 as (R where it starts, line), R ascending.

    At R = 0 the least fine-tuning energy wins (ties: the smaller per-request energy); then, from
    each breakpoint, the next line to take over is the one with a smaller slope that crosses first.
    """
    if not lines:
        return []
    cur = min(lines, key=lambda ln: (ln.finetune_energy_j, ln.request_energy_j))
    out = [(0.0, cur)]
    r0 = 0.0
    while True:
        nxt = None
        for ln in lines:
            if ln.request_energy_j >= cur.request_energy_j:
                continue
            r = (ln.finetune_energy_j - cur.finetune_energy_j) / (cur.request_energy_j - ln.request_energy_j)
            r = max(r, r0)
            if nxt is None or (r, ln.request_energy_j) < (nxt[0], nxt[1].request_energy_j):
                nxt = (r, ln)
        if nxt is None:
            return out
        r0, cur = nxt
        out.append(nxt)


def serving_sweep(instance: PlanningInstance, *, solve: Callable[..., Any],
                  requests: Sequence[float] = DEFAULT_REQUESTS, solvers: Sequence[str] = ("jqodi", "optimal"),
                  epochs: str = "robust", name: str = "scenario") -> ServingSweep:
    """Lines, crossovers and chosen plans for an instance that carries serving entries."""
    if instance.serving is None:
        raise ValueError("the instance has no serving demand (compile a scenario with a 'serving:' block)")
    lines, excluded = [], []
    for c in search_candidates(instance):
        sv = c.serving
        if sv is None or not sv.feasible:
            excluded.append({"candidate": c.key, "why": sv.reason if sv is not None else "no serving entry"})
            continue
        alone = PlanningInstance(instance.deadline_s, instance.target_loss, (c,), {})
        sol = solve(alone, "optimal", epochs=epochs)
        if sol.status == "infeasible":
            excluded.append({"candidate": c.key, "why": "cannot be fine-tuned within the deadline / target"})
            continue
        lines.append(ServingLine(c.model, c.bits, float(sol.energy_j), float(sv.request_energy_j),
                                 float(sv.request_time_s), sv.mode, sv.edge, sv.cut))
    env = lower_envelope(lines)
    crossovers = [{"requests": r, "from": a[1].key, "to": b.key}
                  for a, (r, b) in zip(env, env[1:])]
    chosen = []
    for r in requests:
        inst = dataclasses.replace(instance, serving=ServingDemand(float(r), instance.serving.latency_slo_s))
        for s in solvers:
            sol = solve(inst, s, epochs=epochs)
            row = {"requests": float(r), "solver": s, "status": sol.status, "model": sol.model, "bits": sol.bits,
                   "energy_j": sol.energy_j, "finetune_energy_j": sol.extra.get("finetune_energy_j"),
                   "serving_energy_j": (sol.extra.get("serving") or {}).get("energy_j")}
            chosen.append(row)
    return ServingSweep(name, instance.serving.latency_slo_s, lines, crossovers, chosen, excluded)


def serving_sweep_scenario(path: str | os.PathLike, *, latency_slo_s: float | None = None,
                           estimates: str | os.PathLike | None = None,
                           requests: Sequence[float] = DEFAULT_REQUESTS, epochs: str = "robust",
                           out_dir: str | os.PathLike | None = None,
                           allow_estimate_mismatch: bool = False) -> ServingSweep:
    """Compile the scenario (its ``serving:`` block, or one with ``latency_slo_s`` if given) and
    sweep; with ``out_dir`` write ``serving.json`` and ``serving_crossover.png`` there."""
    from pathlib import Path

    from jqodi.core.costs import compile_instance
    from jqodi.core.scenario import ServingSpec, load_scenario
    from jqodi.errors import ScenarioError
    from jqodi.planner import solve

    scenario = load_scenario(path)
    if latency_slo_s is not None:
        if not (isinstance(latency_slo_s, (int, float)) and math.isfinite(latency_slo_s) and latency_slo_s > 0):
            raise ScenarioError(f"--latency-slo-s: must be a finite number > 0, got {latency_slo_s!r}")
        devices = scenario.serving.devices if scenario.serving is not None else ["split", "end-only"]
        scenario = scenario.model_copy(update={"serving": ServingSpec(requests=0, latency_slo_s=latency_slo_s,
                                                                      devices=devices)})
    if scenario.serving is None:
        raise ScenarioError(f"{path}: serving: the scenario has no 'serving:' block (add one, or give --latency-slo-s)")
    measured = None
    if estimates is not None:
        from jqodi.app.estimates import estimates_for_scenario

        measured = estimates_for_scenario(estimates, scenario, allow_mismatch=allow_estimate_mismatch,
                                          note=lambda line: None)   # evaluate_scenario said them
    sweep = serving_sweep(compile_instance(scenario, measured), solve=solve, requests=requests, epochs=epochs,
                          name=scenario.name)
    if out_dir is not None:
        from jqodi.render.report import save_json
        from jqodi.render.serving import plot_serving_crossover

        out = Path(out_dir)
        sweep.files["serving_crossover"] = str(plot_serving_crossover(sweep, out / "serving_crossover.png"))
        sweep.files["serving_json"] = str(out / "serving.json")
        save_json(out / "serving.json", sweep)
    return sweep
