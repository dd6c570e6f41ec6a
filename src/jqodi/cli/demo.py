"""``jqodi demo``: the paper's Data 1 described, then the main job (measure, plan, run, compare)."""
from __future__ import annotations

import argparse

HELP = ("the main job: describe the paper's Data 1 scenario, then measure, plan and run the CPU-scale "
        "scenario for real (or describe a given scenario)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from jqodi.cli import _types as t
    from jqodi.cli._choices import RegistryChoices, add_choice_argument

    p.add_argument("scenario", nargs="?", default=None,
                   help="scenario YAML to describe (devices, models, candidates, plans); without it: the "
                        "paper's Data 1 described, then the main job on the packaged cpu-demo scenario")
    p.add_argument("--plan-only", action="store_true",
                   help="main job: pretrain, measure and plan, but do not run the plan")
    p.add_argument("--no-describe", action="store_true", help="main job only: skip the descriptive sections")
    p.add_argument("--workdir", default=None, help="main job: where record.json and summary.json go "
                                                   "(default runs/demo-cpu-demo)")
    p.add_argument("--transport", default="gloo", metavar="NAME",
                   choices=RegistryChoices("jqodi.runtime.launch:TRANSPORTS"),
                   help="main job: %(choices)s (gloo: separate processes, default; inprocess: threads, one process)")
    p.add_argument("--requests", type=t.nonneg_int, default=100, help="main job: inference requests per device combination")
    p.add_argument("--store", default=None, metavar="DB",
                   help="main job: trace store the run records its epochs in (default $JQODI_HOME/traces.db)")
    p.add_argument("--no-traces", action="store_true", help="main job: do not record the run in the trace store")
    add_choice_argument(p, prefix="main job: ")
    p.add_argument("--json", default=None, metavar="FILE", help="main job: also write the summary here")


def run(args: argparse.Namespace) -> int:
    if args.scenario is not None:
        import sys

        from jqodi.app.demo import run_demo

        if (args.plan_only or args.no_describe or args.workdir or args.json or args.store or args.no_traces
                or args.choice != "expected"):
            print("jqodi demo: note: with a SCENARIO only its descriptive sections are shown; the main-job "
                  "options apply to 'jqodi demo' without one", file=sys.stderr)

        run_demo(args.scenario)
        return 0
    import json

    from jqodi.app.demo import run_main_demo
    from jqodi.app.main_job import MainJobConfig
    from jqodi.core.quant.heap import keep_freed_memory; keep_freed_memory()  # trains here (core/quant/heap.py)

    config = MainJobConfig(plan_only=args.plan_only, workdir=args.workdir, transport=args.transport,
                           requests=args.requests, trace_store=None if args.no_traces else (args.store or "default"),
                           choice=args.choice)
    summary = run_main_demo(config, describe=not args.no_describe)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2, default=str)
    return 0
