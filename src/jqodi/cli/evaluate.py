"""``jqodi evaluate SCENARIO``: the paper's Section V evaluation for one scenario."""
from __future__ import annotations

import argparse
import sys

HELP = "run every strategy (JQODI, optimum, Full/Minimal Model) on a scenario; tables + plots"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", help="scenario YAML (e.g. examples/paper-data1.yaml)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="write evaluation.json, summary.txt and the PNG figures here")
    p.add_argument("--estimates", metavar="FILE", default=None,
                   help="learning estimates JSON (from 'jqodi estimate') overriding the scenario's table; "
                        "refused when made for another model, data or target")
    p.add_argument("--allow-estimate-mismatch", action="store_true",
                   help="use --estimates even when made for another model, data or target (with a note)")
    p.add_argument("--epochs", choices=("robust", "expected"), default="robust",
                   help="epoch estimate the solvers plan for (default: robust, as JQODI)")
    p.add_argument("--json", metavar="FILE", default=None, help="also save the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--latency-slo-s", type=float, default=None, metavar="S",
                   help="also sweep whole-life energy vs requests with this p95 bound per request "
                        "(the sweep runs anyway when the scenario has a 'serving:' block; docs/serving.md)")


def run(args: argparse.Namespace) -> int:
    from jqodi.app.evaluation import evaluate_scenario
    from jqodi.render.evaluation import summary_tables
    from jqodi.render.report import save_json

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    ev = evaluate_scenario(args.scenario, out_dir=args.out, epochs=args.epochs,
                           estimates=args.estimates, allow_estimate_mismatch=args.allow_estimate_mismatch,
                           progress=None if args.quiet else progress)
    print(summary_tables(ev))
    for note in ev.notes:
        print(f"note: {note}")
    for r in ev.strategies:
        if r.note:
            print(f"note: {r.label}: {r.note}")
    if args.latency_slo_s is not None or _has_serving(args.scenario):
        from jqodi.app.serving import serving_sweep_scenario
        from jqodi.render.serving import serving_tables

        if not args.quiet:
            progress("serving: whole-life energy vs requests")
        sweep = serving_sweep_scenario(args.scenario, latency_slo_s=args.latency_slo_s, estimates=args.estimates,
                                       epochs=args.epochs, out_dir=args.out,
                                       allow_estimate_mismatch=args.allow_estimate_mismatch)
        print("\n" + serving_tables(sweep))
        ev.files.update(sweep.files)
    if ev.files:
        print("\nwrote: " + ", ".join(sorted(ev.files.values())))
    if args.json:
        save_json(args.json, ev)
    return 0


def _has_serving(path) -> bool:
    from jqodi.core.scenario import load_scenario

    return load_scenario(path).serving is not None
