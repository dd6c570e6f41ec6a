"""``jqodi instance``: compile a scenario into the planning instance (docs/interfaces.md contract)."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "compile a scenario into a planning instance: candidates x options with per-epoch time/energy"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", nargs="?", default=None,
                   help="scenario YAML (default: the packaged paper Data 1 scenario)")
    p.add_argument("--estimates", metavar="FILE", default=None,
                   help="learning estimates JSON (from 'jqodi estimate'); overrides the scenario's table; "
                        "refused when made for another model, data or target")
    p.add_argument("--allow-estimate-mismatch", action="store_true",
                   help="use --estimates even when made for another model, data or target (with a note)")
    p.add_argument("--cost-model", choices=("paper", "extended"), default=None,
                   help="override the scenario's cost model")
    p.add_argument("--json", action="store_true", help="print the instance as JSON")
    p.add_argument("--out", metavar="FILE", default=None, help="also write the instance JSON to FILE")
    p.add_argument("--options", action="store_true", help="list every option of every candidate")


def run(args: argparse.Namespace) -> int:
    from jqodi.core.costs import compile_instance
    from jqodi.errors import JqodiError, ScenarioError
    from jqodi.core.scenario import default_scenario_path, load_scenario

    path = Path(args.scenario) if args.scenario else default_scenario_path()
    scenario = load_scenario(path)
    estimates = None
    if args.estimates:
        from jqodi.app.estimates import estimates_for_scenario

        estimates = estimates_for_scenario(args.estimates, scenario, allow_mismatch=args.allow_estimate_mismatch)
    from jqodi.cli._onetime import announce_profiling

    try:
        with announce_profiling(scenario):
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
    from jqodi.render.instance import render_instance

    print(render_instance(inst, show_options=args.options))
    return 0
