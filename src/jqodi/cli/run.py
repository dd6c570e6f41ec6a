"""``jqodi run SCENARIO``: plan, then run the plan for real with every role as a local process.

Prints per-epoch progress, then predicted vs measured time per phase, bytes per link and energy
per node; the RunRecord is saved as ``WORKDIR/record.json`` (and to ``--json FILE``).
"""
from __future__ import annotations

HELP = "plan a scenario and run the plan: cloud, edge and end processes on this machine"


def add_arguments(p) -> None:
    p.add_argument("scenario", nargs="?", default=None, help="scenario YAML (default: the packaged Data 1)")
    p.add_argument("--solver", default="jqodi", help="planner to use (default jqodi)")
    p.add_argument("--epochs-estimate", choices=("robust", "expected"), default="robust",
                   help="plan for K^rob (default) or K^exp epochs")
    p.add_argument("--transport", choices=("gloo", "inprocess"), default="gloo",
                   help="gloo: one process per role (default); inprocess: threads of this process")
    p.add_argument("--resume", action="store_true", help="continue the run in --workdir after its last completed epoch")
    p.add_argument("--workdir", default=None, metavar="DIR", help="checkpoint, job and record (default runs/<scenario>)")
    p.add_argument("--max-epochs", type=int, default=None, metavar="N", help="run only the plan's first N epochs")
    p.add_argument("--cpu-scale", action="store_true",
                   help="run at CPU scale: the models' CPU widths on Fashion-MNIST (the scenario's devices unchanged)")
    p.add_argument("--train-size", type=int, default=None, help="with --cpu-scale: SD training samples")
    p.add_argument("--val-size", type=int, default=None, help="with --cpu-scale: SD validation samples")
    p.add_argument("--no-emulate", action="store_true", help="run flat out: no padding, no link rate limits")
    p.add_argument("--dilation", default=None, help="time dilation for emulation: a number ≥ 1 or 'auto'")
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="peer silence timeout (default: scenario's)")
    p.add_argument("--port", type=int, default=None, help="rendezvous port (default: a free one)")
    p.add_argument("--requests", type=int, default=0, metavar="N",
                   help="after fine-tuning, serve N inference requests per device combination (SD+ES, SD only)")
    p.add_argument("--meter", default="auto", choices=("auto", "nvml", "rapl", "model", "null"),
                   help="energy meter of each node when not emulating (emulated devices use the model meter)")
    p.add_argument("--random-init", action="store_true", help="skip pretraining: start from random weights (smoke tests)")
    p.add_argument("--write-job", metavar="FILE", help="only write the job JSON (for 'jqodi cloud --job') and exit")
    p.add_argument("--json", metavar="FILE", help="also save the RunRecord here")
    p.add_argument("--quiet", action="store_true",
                   help="no progress: no epoch lines, batch progress or pretraining progress (the results still print)")


def run(args) -> int:
    import json
    from pathlib import Path

    from jqodi.errors import JqodiError
    from jqodi.runtime.launch import run_plan
    from jqodi.runtime.plan import cpu_scale, job_from_plan
    from jqodi.core.scenario import default_scenario_path, load_scenario
    from jqodi.render.runs import run_table

    path = args.scenario or default_scenario_path()
    scenario = load_scenario(path)
    if args.cpu_scale:
        scenario = cpu_scale(scenario, train_size=args.train_size, val_size=args.val_size)
    workdir = Path(args.workdir or f"runs/{scenario.name}")
    dilation = args.dilation
    if dilation not in (None, "auto"):
        try:
            dilation = float(dilation)
        except ValueError:
            raise JqodiError(f"--dilation: expected a number ≥ 1 or 'auto', got {args.dilation!r}") from None
        if dilation < 1:
            raise JqodiError(f"--dilation: must be ≥ 1, got {dilation:g}")
    pretrained = {"source": "random"} if args.random_init else None
    solution = None
    if not (args.resume and (workdir / "job.json").is_file()):
        from jqodi.core.costs import compile_instance
        from jqodi.planner import solve

        print(f"planning {scenario.name} with {args.solver} ...", flush=True)
        solution = solve(compile_instance(scenario), args.solver, epochs=args.epochs_estimate)
        if solution.status == "infeasible":
            raise JqodiError(f"no feasible plan: {solution.extra.get('explanation', 'see jqodi plan')}")
        sched = ", ".join(f"{e.epochs}×({e.edge}, cut {e.cut})" for e in solution.schedule)
        print(f"plan: {solution.model} at {solution.bits} bits, {sched}; predicted "
              f"{solution.time_s:.1f} s, {solution.energy_j:.1f} J", flush=True)
    if args.write_job:
        job = job_from_plan(scenario, solution, emulate=not args.no_emulate, dilation=dilation,
                            timeout_s=args.timeout, max_epochs=args.max_epochs, pretrained=pretrained,
                            meter=args.meter)
        Path(args.write_job).write_text(json.dumps(job.to_dict(), indent=2))
        print(f"job written to {args.write_job}")
        return 0
    rec = run_plan(scenario, solution, transport=args.transport, workdir=workdir, resume=args.resume,
                   emulate=not args.no_emulate, dilation=dilation, timeout_s=args.timeout,
                   max_epochs=args.max_epochs, pretrained=pretrained, port=args.port, meter=args.meter,
                   inference_requests=args.requests, progress=False if args.quiet else None,
                   **({"say": lambda line: None} if args.quiet else {}))
    print()
    print(run_table(rec))
    if rec.inference:
        from jqodi.runtime.inference import InferenceResult
        from jqodi.render.runs import format_inference

        print("\ncollaborative inference")
        print(format_inference([InferenceResult.from_dict(r) for r in rec.inference]))
    print(f"\nrecord: {workdir / 'record.json'}")
    if args.json:
        rec.save(args.json)
    return 0
