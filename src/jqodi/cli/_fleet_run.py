"""``jqodi run`` on a fleet scenario: plan the fleet jointly, run every served device's plan
(one cloud, one process per edge server and per end device), print and save the fleet's results."""
from __future__ import annotations

__all__ = ["fleet_scenario", "run_fleet_cli"]

#: flags of ``jqodi run`` that a fleet run does not take (one line, exit 2, rather than ignored)
_SINGLE_ONLY = {"resume": "--resume", "write_job": "--write-job", "requests": "--requests",
                "no_emulate": "--no-emulate", "estimates": "--estimates", "transport": "--transport"}


def fleet_scenario(path) -> bool:
    """Whether the scenario file at ``path`` describes a fleet (``end_devices`` or ``fleet``)."""
    if not path:
        return False
    from jqodi.app.fleet_run import is_fleet
    from jqodi.core.scenario import load_scenario

    return is_fleet(load_scenario(path))


def run_fleet_cli(args) -> int:
    from jqodi.app.fleet_run import FleetRunOptions, fleet_report, run_fleet_scenario
    from jqodi.errors import JqodiError

    for key, flag in _SINGLE_ONLY.items():
        v = getattr(args, key, None)
        if v and not (key == "transport" and v == "gloo"):
            raise JqodiError(f"{flag}: not available for a fleet scenario (each device runs its plan once, over gloo)")
    solver = "fleet-lagrange" if args.solver == "jqodi" else args.solver
    from jqodi.cli.plan import FLEET_SOLVER_NAMES

    if solver not in FLEET_SOLVER_NAMES:
        raise JqodiError(f"--solver {args.solver}: a fleet scenario takes {', '.join(FLEET_SOLVER_NAMES)}")
    opts = FleetRunOptions(solver=solver, epochs_estimate=args.epochs_estimate, workdir=args.workdir,
                           max_epochs=args.max_epochs, cpu_scale=args.cpu_scale, train_size=args.train_size,
                           val_size=args.val_size, dilation=args.dilation if args.dilation is not None else "auto",
                           timeout_s=args.timeout, startup_timeout_s=args.startup_timeout, port=args.port,
                           random_init=args.random_init,
                           trace_store=None if args.no_traces else (args.store or "default"),
                           edge_sharing=args.edge_sharing, data_dir=args.data_dir)
    say = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    rec, workdir = run_fleet_scenario(args.scenario, opts, say=say)
    print(fleet_report(rec))
    print(f"record: {workdir / 'record.json'}, edge utilisation plot: {workdir / 'utilisation.png'}")
    if args.json:
        rec.save(args.json)
    return 0 if rec.status == "completed" else 1
