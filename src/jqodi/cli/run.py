"""``jqodi run SCENARIO``: plan, then run the plan for real with every role as a local process.

Prints per-epoch progress, then predicted vs measured time per phase, bytes per link and energy
per node; the RunRecord is saved as ``WORKDIR/record.json`` (and to ``--json FILE``). The use
case is :func:`jqodi.app.run.run_scenario`; this module only maps flags to its options.
"""
from __future__ import annotations

HELP = "plan a scenario and run the plan: cloud, edge and end processes on this machine"


def add_arguments(p) -> None:
    from jqodi.cli import _types as t
    from jqodi.cli._choices import RegistryChoices, add_choice_argument

    p.add_argument("scenario", nargs="?", default=None, help="scenario YAML (default: the packaged Data 1)")
    from jqodi.cli.plan import FLEET_SOLVER_NAMES

    p.add_argument("--solver", default="jqodi", metavar="NAME",
                   choices=RegistryChoices("jqodi.planner.registry:SOLVERS", after=FLEET_SOLVER_NAMES),
                   help="solver to plan with: %(choices)s (default jqodi; fleet-lagrange for a fleet scenario)")
    p.add_argument("--epochs-estimate", choices=("robust", "expected"), default="robust",
                   help="plan for K^rob (default) or K^exp epochs")
    p.add_argument("--transport", choices=RegistryChoices("jqodi.runtime.launch:TRANSPORTS"), default="gloo",
                   metavar="NAME", help="how the roles run: %(choices)s (gloo: one process per role, default; "
                                        "inprocess: threads of this process)")
    p.add_argument("--resume", action="store_true", help="continue the run in --workdir after its last completed epoch")
    p.add_argument("--workdir", default=None, metavar="DIR", help="checkpoint, job and record (default runs/<scenario>)")
    p.add_argument("--max-epochs", type=t.positive_int, default=None, metavar="N", help="run only the plan's first N epochs")
    p.add_argument("--cpu-scale", action="store_true",
                   help="run at CPU scale: the models' CPU widths on Fashion-MNIST (the scenario's devices unchanged)")
    p.add_argument("--train-size", type=t.positive_int, default=None, help="with --cpu-scale: SD training samples")
    p.add_argument("--val-size", type=t.positive_int, default=None, help="with --cpu-scale: SD validation samples")
    p.add_argument("--estimates", metavar="FILE", default=None,
                   help="learning estimates JSON (from 'jqodi estimate') overriding the scenario's table; "
                        "refused when made for another model, data or target")
    p.add_argument("--allow-estimate-mismatch", action="store_true",
                   help="use --estimates even when made for another model, data or target (with a note)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="folder holding the scenario's named dataset files (overrides its data.data_dir)")
    p.add_argument("--no-emulate", action="store_true", help="run flat out: no padding, no link rate limits")
    p.add_argument("--dilation", type=t.dilation, default=None, help="time dilation for emulation: a number ≥ 1 or 'auto'")
    p.add_argument("--timeout", type=t.positive_float, default=None, metavar="S",
                   help="failure detection: seconds of silence before a peer counts as failed (default: scenario's)")
    from jqodi.runtime.job import DEFAULT_STARTUP_TIMEOUT_S

    p.add_argument("--startup-timeout", type=t.positive_float, default=None, metavar="S",
                   help=f"seconds the roles wait for each other to start and join (default {DEFAULT_STARTUP_TIMEOUT_S:g})")
    p.add_argument("--port", type=t.port, default=None, help="rendezvous port (default: a free one)")
    p.add_argument("--requests", type=t.nonneg_int, default=0, metavar="N",
                   help="after fine-tuning, serve N inference requests per device combination (SD+ES, SD only)")
    p.add_argument("--meter", default="auto", metavar="KIND",
                   choices=RegistryChoices("jqodi.runtime.energy:METERS", before=("auto",)),
                   help="energy meter of each node when not emulating: %(choices)s (emulated devices use "
                        "the model meter)")
    p.add_argument("--random-init", action="store_true", help="skip pretraining: start from random weights (smoke tests)")
    p.add_argument("--store", default=None, metavar="DB",
                   help="trace store the run records its epochs in (default $JQODI_HOME/traces.db)")
    p.add_argument("--no-traces", action="store_true", help="do not record the run in the trace store")
    p.add_argument("--policy", choices=("replan", "static"), default="replan",
                   help="closed loop: replan (default: stop at the target, refit estimates and re-plan after "
                        "every epoch and on resource events) or static (stop at the target, follow the plan)")
    add_choice_argument(p, suffix="; with --policy replan the first schedule keeps the controller's time reserve")
    p.add_argument("--replan-threshold", type=float, default=0.03, metavar="SHARE",
                   help="a new plan must save more than this share of the remaining energy to replace a sound "
                        "one (default 0.03)")
    p.add_argument("--confirm", type=int, default=0, metavar="N",
                   help="stop only after N further epochs at or below the target loss (default 0)")
    p.add_argument("--edge-sharing", choices=("processor-sharing", "dedicated"), default="processor-sharing",
                   help="a fleet scenario: how an emulated edge server shares its compute among the devices it "
                        "serves at once (default processor-sharing, the capacity model's; dedicated: as if alone)")
    p.add_argument("--write-job", metavar="FILE",
                   help="only write the job JSON (for 'jqodi cloud --job') and exit; it carries the closed loop "
                        "(--policy), which the cloud attaches")
    p.add_argument("--json", metavar="FILE", help="also save the RunRecord here")
    p.add_argument("--quiet", action="store_true",
                   help="no progress: no epoch lines, batch progress or pretraining progress (the results still print)")


def run(args) -> int:
    import json
    from pathlib import Path

    from jqodi.app.run import RunOptions, job_for_scenario, report_run, run_scenario
    from jqodi.cli._fleet_run import fleet_scenario, run_fleet_cli

    from jqodi.core.quant.heap import keep_freed_memory; keep_freed_memory()  # trains here (core/quant/heap.py)
    if fleet_scenario(args.scenario):  # end_devices or fleet: planned jointly, one process per device
        return run_fleet_cli(args)
    opts = RunOptions(solver=args.solver, epochs_estimate=args.epochs_estimate, transport=args.transport,
                      resume=args.resume, workdir=args.workdir, max_epochs=args.max_epochs,
                      cpu_scale=args.cpu_scale, train_size=args.train_size, val_size=args.val_size,
                      emulate=not args.no_emulate, dilation=args.dilation, timeout_s=args.timeout,
                      startup_timeout_s=args.startup_timeout, port=args.port, requests=args.requests,
                      meter=args.meter, random_init=args.random_init,
                      trace_store=None if args.no_traces else (args.store or "default"),
                      progress=False if args.quiet else None, data_dir=args.data_dir, estimates=args.estimates,
                      allow_estimate_mismatch=args.allow_estimate_mismatch,
                      policy=args.policy, replan_threshold=args.replan_threshold, confirm=args.confirm,
                      choice=args.choice)
    if args.write_job:
        job = job_for_scenario(args.scenario, opts)
        Path(args.write_job).write_text(json.dumps(job.to_dict(), indent=2))
        print(f"job written to {args.write_job}")
        if job.closed_loop is not None:
            print(f"closed loop: policy {job.closed_loop['policy']}, attached by 'jqodi cloud --job' "
                  f"('--policy static' there: follow the plan); start 'jqodi edge --name NAME' for each of "
                  f"{', '.join(job.edges)} (a re-plan may move epochs to any of them)")
        notice = job.emulation.notice() if job.emulation is not None else None
        if notice:
            print(f"note: this job EMULATES the scenario's devices and links. {notice}")
        else:
            print(f"emulation off: each node runs flat out and its meter ({job.meter}) measures its energy")
        return 0
    rec, workdir = run_scenario(args.scenario, opts)
    print(report_run(rec, workdir))
    served = rec.inference[0]["requests"] if rec.inference else args.requests
    if served < args.requests:  # as 'jqodi infer' says it
        print(f"note: {served} requests per combination, not the {args.requests} asked: each request is one "
              f"image of the end device's validation split, which holds {served}")
    if args.json:
        rec.save(args.json)
    return 0
