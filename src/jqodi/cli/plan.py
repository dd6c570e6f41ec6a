"""``jqodi plan``: decide model, bit-width and per-epoch (edge, cut) for a scenario or an instance.

Exit codes: 0 when a plan was printed, or always with ``--json`` (the JSON carries
``status: infeasible`` and the explanation); 1 when no solver found a feasible plan (human output:
a "no plan" result line, the nearest miss and the explanation); 2 for errors the user can fix (bad
file, unknown solver, …).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from jqodi.errors import JqodiError, PlanningError

HELP = "plan a scenario (or a planning instance) with one solver or all of them"

#: Solvers of fleet scenarios (jqodi.planner.fleet.FLEET_SOLVERS; listed here so --help needs no numpy).
FLEET_SOLVER_NAMES = ("fleet-lagrange", "fleet-optimal", "fcfs", "ignore-capacity")
#: ``--solver all`` runs the exact fleet MILP only up to this many devices.
MILP_MAX_DEVICES = 50
#: Compiling or planning a fleet that is still running after this many seconds shows its progress on
#: stderr (whatever the fleet's size: a 6-device fleet's exact MILP takes tens of seconds).
PROGRESS_AFTER_S = 2.0
#: the largest planning instance --instance reads (a file or a pipe; a larger one is one error line)
MAX_INSTANCE_BYTES = 256 * 2**20


def add_arguments(p):
    from jqodi.cli import _types as t
    from jqodi.cli._choices import RegistryChoices

    p.add_argument("scenario", nargs="?", metavar="SCENARIO",
                   help="scenario YAML file, or jqodi:NAME for a packaged one (jqodi:paper-data1, "
                        "jqodi:cpu-demo; compiled to a planning instance)")
    p.add_argument("--instance", metavar="FILE",
                   help="a planning instance JSON file instead of a scenario ('-' reads stdin)")
    p.add_argument("--solver", default="jqodi", metavar="NAME",
                   choices=RegistryChoices("jqodi.planner.registry:SOLVERS", after=("all", *FLEET_SOLVER_NAMES)),
                   help="a registered solver (%(choices)s; default jqodi, fleet-lagrange for a fleet "
                        "scenario); 'all' prints a comparison table")
    p.add_argument("--epochs", choices=("robust", "expected"), default="robust",
                   help="plan for K^rob (default, safe) or K^exp epochs")
    p.add_argument("--estimates", metavar="FILE",
                   help="learning estimates JSON (from 'jqodi estimate') overriding the scenario's table; "
                        "refused when made for another model, data or target")
    p.add_argument("--allow-estimate-mismatch", action="store_true",
                   help="use --estimates even when made for another model, data or target (with a note)")
    p.add_argument("--model", help="model for partition-only")
    p.add_argument("--bits", type=t.bits, help="bit-width for partition-only")
    p.add_argument("--json", action="store_true", help="print the solution(s) as JSON")


def _load_instance(args):
    from jqodi.errors import PlanningError
    from jqodi.planner import PlanningInstance

    if args.instance and args.scenario:
        raise PlanningError("give either SCENARIO or --instance FILE, not both")
    if args.instance and args.estimates:
        raise PlanningError("--estimates applies to a SCENARIO; an instance already holds its estimates")
    if args.instance:
        source = "stdin" if args.instance == "-" else args.instance
        try:
            if args.instance == "-":
                raw = sys.stdin.buffer.read()
            else:  # a regular file or a pipe (<(jqodi instance s.yaml)), as scenario files are read
                from jqodi.core.userfile import read_user_file

                raw = read_user_file(Path(args.instance), MAX_INSTANCE_BYTES, "planning instance",
                                     missing="no such file")
            text = raw.decode("utf-8")
        except JqodiError as e:
            raise PlanningError(f"--instance: {e}") from None
        except UnicodeDecodeError as e:
            raise PlanningError(f"--instance: {source}: not UTF-8 text (byte {e.start}), not a planning instance") from None
        except OSError as e:
            raise PlanningError(f"--instance: cannot read {source}: {e.strerror or e}") from None
        return PlanningInstance.from_json(text)
    if not args.scenario:
        raise PlanningError("give a SCENARIO file or --instance FILE.json")
    try:
        from jqodi.core.costs import compile_instance
        from jqodi.core.scenario import load_scenario
    except ImportError as e:  # the foundation part is not installed in this build
        raise PlanningError(f"cannot compile scenarios in this build ({e}); "
                            "use --instance FILE.json") from e
    from jqodi.cli._onetime import announce_profiling

    scenario = load_scenario(args.scenario)
    from jqodi.app.calibrate import quant_kernel_notes

    for line in quant_kernel_notes(scenario):  # a device file timed another quantizer than QAT runs here
        print(line, file=sys.stderr)
    estimates = _estimates(args, scenario)
    with announce_profiling(scenario):
        return compile_instance(scenario, estimates=estimates)


def _estimates(args, scenario):
    """``--estimates FILE`` checked against the scenario (:func:`jqodi.app.estimates.estimates_for_scenario`)."""
    if not args.estimates:
        return None
    from jqodi.app.estimates import estimates_for_scenario

    return estimates_for_scenario(args.estimates, scenario, allow_mismatch=args.allow_estimate_mismatch)


def _print_solution(sol, instance) -> None:
    from jqodi.planner.solve import schedule_text
    from jqodi.render.plans import bits_used_line, energy_split_lines, excluded_lines

    note = bits_used_line(sol)  # Minimal Model without 1-bit candidates: never silent
    if sol.status == "infeasible":
        for line in _no_plan_lines(sol, instance):
            print(line)
        print(sol.extra["explanation"]["message"])
        best = sol.extra.get("best_ignoring_deadline")
        if best:
            print(f"(without the deadline it would pick {best['model']}@{best['bits']} on "
                  f"({best['edge']}, cut {best['cut']}): {best['energy_j']:.1f} J, {best['time_s']:.2f} s)")
        if note:
            print(note)
        return
    print(f"solver        {sol.solver} ({sol.status}, planned for the {sol.extra['epochs_estimate']} "
          f"epoch estimate)")
    print(f"model         {sol.model}, {sol.bits}-bit")
    print(f"schedule      {schedule_text(sol)}  ({sol.epochs} epochs)")
    split = energy_split_lines(sol)
    print(f"energy        {sol.energy_j:.2f} J " + ("(fine-tuning + serving)" if split else "(quantization included)"))
    for line in split:
        print(line)
    if instance.serving is not None:
        print(f"latency bound {instance.serving.latency_slo_s:g} s per request (p95)")
    print(f"time          {sol.time_s:.2f} s of {instance.deadline_s:g} s allowed")
    loss = sol.extra.get("predicted_final_loss")
    print(f"final loss    {loss:.4g} (target {instance.target_loss:g})" if loss is not None else
          f"final loss    ≤ target {instance.target_loss:g} (no loss estimates in the instance)")
    print(f"plan time     {sol.extra.get('plan_time_ms', float('nan')):.1f} ms")
    for line in excluded_lines(sol):
        print(line)
    if note:
        print(note)


def _no_plan_lines(sol, instance) -> list[str]:
    """A plain result when no plan meets the scenario: what is missed (T_max = ``deadline_s``,
    L_max = ``target_loss``) and the nearest miss from the planner's explanation
    (:func:`jqodi.planner.explain.explain`) — a result, not a program error."""
    ex = sol.extra["explanation"]
    lines = [f"result        no plan: no option meets T_max {instance.deadline_s:g} s and L_max "
             f"{instance.target_loss:g} (solver {sol.solver}, {sol.extra['epochs_estimate']} epoch estimate)"]
    if ex.get("too_slow"):
        r = ex["too_slow"][0]
        lines.append(f"nearest miss  {r['candidate']} needs {r['fastest_time_s']:.4g} s for {r['epochs']} "
                     f"epochs on its fastest option, {r['fastest_time_s'] - instance.deadline_s:.4g} s over T_max")
    else:
        lines.append("nearest miss  none: no deadline would help (why below)")
    return lines


def _fleet_scenario(args):
    """The scenario when it describes a fleet (``end_devices`` or ``fleet``), else None."""
    if args.instance or not args.scenario:
        return None
    from jqodi.core.scenario import load_scenario

    sc = load_scenario(args.scenario)
    return sc if (sc.end_devices or sc.fleet is not None) else None


def _run_fleet(args, sc) -> int:
    from jqodi.core.progress import Ticker
    from jqodi.planner.fleet import FLEET_SOLVERS, solve_fleet
    from jqodi.render.fleet import fleet_comparison_table, fleet_edge_table, fleet_unserved_lines

    if args.model or args.bits:
        raise PlanningError("--model/--bits apply to partition-only, not to fleet scenarios")
    estimates = _estimates(args, sc)
    if args.solver == "all":
        names = list(FLEET_SOLVERS)
    elif args.solver == "jqodi":
        names = ["fleet-lagrange"]
    elif args.solver in FLEET_SOLVERS:
        names = [args.solver]
    else:
        raise PlanningError(f"--solver {args.solver}: a fleet scenario takes {', '.join(FLEET_SOLVERS)} or all")
    fleet = _compile_with_progress(sc, estimates)
    if args.solver == "all" and len(fleet.members) > MILP_MAX_DEVICES:
        names.remove("fleet-optimal")
        print(f"(fleet-optimal left out: the exact MILP is for fleets of up to {MILP_MAX_DEVICES} devices; "
              f"ask for it with --solver fleet-optimal)", file=sys.stderr)
    sols = []
    for n in names:
        with Ticker(f"planning {len(fleet.members)} devices with {n}", after_s=PROGRESS_AFTER_S):
            sols.append(solve_fleet(fleet, n, epochs=args.epochs))
    if args.json:
        out = [s.to_dict() for s in sols]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2))
        return 0
    print(f"{len(fleet.members)} end devices, {len(fleet.edges)} edge servers, capacity window "
          f"{fleet.window_s:g} s, {args.epochs} epoch estimate")
    if len(sols) > 1:
        print(fleet_comparison_table(sols))
    best = min((s for s in sols if s.status != "infeasible" and s.solver != "ignore-capacity"),
               key=lambda s: s.energy_j, default=sols[0])
    print(f"\n{best.solver}: {best.status}, {best.served}/{len(best.plans)} devices served, "
          f"{best.energy_j:.1f} J in total, plan time {best.extra.get('plan_time_ms', 0) / 1e3:.2f} s")
    print(fleet_edge_table(best))
    for line in fleet_unserved_lines(best):
        print(line)
    return 0 if best.status != "infeasible" else 1


def _compile_with_progress(sc, estimates):
    """``compile_fleet`` with its progress on stderr once it has run :data:`PROGRESS_AFTER_S` seconds
    (a bar on a terminal, else a line every 10 s; stdout, ``--json`` included, is untouched)."""
    import time

    from jqodi.cli._onetime import announce_profiling
    from jqodi.core.fleet import compile_fleet
    from jqodi.core.progress import Progress, format_duration

    bar: list = []
    t0 = time.monotonic()

    def progress(done: int, total: int) -> None:
        if not bar and time.monotonic() - t0 < PROGRESS_AFTER_S:
            return
        if not bar:
            bar.append(Progress(True, f"compiling {total} devices", total_steps=total, unit="device", started=t0))
            bar[0].line(f"compiling {total} devices …")
        bar[0].batch(done, total)

    with announce_profiling(sc):
        fleet = compile_fleet(sc, estimates=estimates, progress=progress)
    if bar:
        bar[0].line(f"compiled {len(fleet.members)} devices in {format_duration(time.monotonic() - t0)}")
    return fleet


def run(args) -> int:
    from jqodi.planner import compare, solve
    from jqodi.render.plans import bits_used_line, comparison_notes, comparison_table, shared_excluded_lines

    sc = _fleet_scenario(args)
    if sc is not None:
        return _run_fleet(args, sc)
    if args.solver in FLEET_SOLVER_NAMES:
        raise PlanningError(f"--solver {args.solver} plans fleets: give a scenario with end_devices or fleet")
    instance = _load_instance(args)
    if args.solver == "all":
        rows = compare(instance, epochs=args.epochs, model=args.model, bits=args.bits)
        if args.json:
            print(json.dumps([r["solution"].to_dict() for r in rows], indent=2))
            return 0
        print(f"deadline {instance.deadline_s:g} s, target loss {instance.target_loss:g}, "
              f"{len(instance.candidates)} candidates, {args.epochs} epoch estimate")
        print(comparison_table(rows))
        for line in comparison_notes(rows, instance):
            print(line)
        for line in shared_excluded_lines(rows):
            print(line)
        for r in rows:
            if r["status"] == "infeasible":
                print(f"{r['solver']}: {r['solution'].extra['explanation']['message']}")
        for line in filter(None, (bits_used_line(r["solution"]) for r in rows)):
            print(line)
        return 0 if any(r["status"] != "infeasible" for r in rows) else 1
    opts = {}
    if args.solver == "partition-only":
        opts = {"model": args.model, "bits": args.bits}
    sol = solve(instance, args.solver, epochs=args.epochs, **opts)
    if args.json:
        print(json.dumps(sol.to_dict(), indent=2))
        return 0
    _print_solution(sol, instance)
    return 0 if sol.status != "infeasible" else 1
