"""``jqodi instance``: compile a scenario into the planning instance (DESIGN.md contract)."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "compile a scenario into a planning instance: candidates x options with per-epoch time/energy"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", nargs="?", default=None,
                   help="scenario YAML (default: the packaged paper Data 1 scenario)")
    p.add_argument("--estimates", metavar="FILE", default=None,
                   help="learning estimates JSON (from 'jqodi estimate'); overrides the scenario's table")
    p.add_argument("--cost-model", choices=("paper", "extended"), default=None,
                   help="override the scenario's cost model")
    p.add_argument("--json", action="store_true", help="print the instance as JSON")
    p.add_argument("--out", metavar="FILE", default=None, help="also write the instance JSON to FILE")
    p.add_argument("--options", action="store_true", help="list every option of every candidate")


def run(args: argparse.Namespace) -> int:
    from jqodi.costs import compile_instance
    from jqodi.errors import JqodiError, ScenarioError
    from jqodi.learning.table import load_estimates
    from jqodi.scenario import default_scenario_path, load_scenario

    path = Path(args.scenario) if args.scenario else default_scenario_path()
    scenario = load_scenario(path)
    estimates = load_estimates(args.estimates) if args.estimates else None
    try:
        inst = compile_instance(scenario, estimates, cost_model=args.cost_model)
    except ScenarioError as e:  # e.g. a model that cannot be built for data.input_shape
        raise ScenarioError(f"{path}: {e}") from e
    text = inst.to_json()
    if args.out:
        try:
            Path(args.out).write_text(text + "\n")
        except OSError as e:
            raise JqodiError(f"cannot write {args.out}: {e.strerror or e}") from e
    if args.json:
        print(text)
        return 0
    print(render_instance(inst, show_options=args.options))
    return 0


def render_instance(inst, show_options: bool = False) -> str:
    """A readable summary of a :class:`PlanningInstance`: one row per candidate."""
    from jqodi.cli._table import fmt_j, fmt_s, format_table

    meta = inst.meta or {}
    lines = [f"instance of {meta.get('scenario', '?')} ({meta.get('cost_model', '?')} cost model): "
             f"deadline {inst.deadline_s:g} s, target loss {inst.target_loss:g}, "
             f"{len(inst.candidates)} candidates, search bits {meta.get('search_bits')}, "
             f"baseline bits {meta.get('baseline_bits')}"]
    rows = []
    for c in inst.candidates:
        k_exp, k_rob = c.epochs.expected, c.epochs.robust
        if c.options:
            fast = min(c.options, key=lambda o: (o.epoch_time_s, o.epoch_energy_j))
            cheap = min(c.options, key=lambda o: (o.epoch_energy_j, o.epoch_time_s))
            fast_s = f"{fast.edge}/cut{fast.cut} {fmt_s(fast.epoch_time_s)} s"
            cheap_s = f"{cheap.edge}/cut{cheap.cut} {fmt_j(cheap.epoch_energy_j)} J"
            if k_rob is None:
                verdict = "target out of reach"
            else:
                t_rob = c.quantize_time_s + k_rob * fast.epoch_time_s
                verdict = (f"{t_rob:.0f} s ≤ deadline" if t_rob <= inst.deadline_s
                           else f"{t_rob:.0f} s > deadline")
        else:
            fast_s = cheap_s = "-"
            verdict = "no feasible option"
        rows.append([c.model, c.bits, "∞" if k_exp is None else k_exp, "∞" if k_rob is None else k_rob,
                     fmt_s(c.quantize_time_s), fmt_j(c.quantize_energy_j), len(c.options), fast_s, cheap_s,
                     verdict])
    lines.append(format_table(["model", "bits", "K^exp", "K^rob", "τ_q s", "ε_q J", "options",
                               "fastest epoch", "cheapest epoch", "K^rob epochs at fastest"], rows))
    if meta.get("missing_estimates"):
        lines.append(f"no learning estimate (left out): {', '.join(meta['missing_estimates'])}")
    if show_options:
        for c in inst.candidates:
            lines.append(f"\n{c.model} @ {c.bits} bits")
            rows = [[o.edge, o.cut, fmt_s(o.epoch_time_s), fmt_j(o.epoch_energy_j)] for o in c.options]
            rows += [[i["edge"], i["cut"], "∞", "∞ (" + str(i.get("reason")) + ")"] for i in c.infeasible]
            lines.append(format_table(["edge", "cut", "epoch s", "epoch J"], rows, indent="  "))
    return "\n".join(lines)


