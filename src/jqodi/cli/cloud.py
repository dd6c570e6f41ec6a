"""``jqodi cloud``: run the cloud server (CS) role of a job; it hosts the rendezvous."""
from __future__ import annotations

HELP = "run the cloud role of a job (hosts the rendezvous; see 'jqodi run --write-job')"


def add_arguments(p) -> None:
    from jqodi.cli._roles import add_connection_arguments

    p.add_argument("--job", required=True, metavar="FILE", help="job JSON (written by 'jqodi run --write-job')")
    p.add_argument("--workdir", default=".", metavar="DIR", help="checkpoint and epoch records go here")
    p.add_argument("--resume", action="store_true", help="continue after the last checkpointed epoch")
    p.add_argument("--no-report", action="store_true",
                   help="neither write WORKDIR/record.json nor print the run's report at the end (the "
                        "launcher of 'jqodi run' does both)")
    p.add_argument("--controller", default=None, metavar="FILE",
                   help="closed-loop controller JSON (written by 'jqodi run'): asked after every epoch")
    p.add_argument("--policy", choices=("replan", "static"), default=None,
                   help="closed loop of a job written with it (default: the job's, 'jqodi run --write-job'): "
                        "replan (stop at the target, re-plan) or static (stop at the target, follow the plan)")
    add_connection_arguments(p)


def run(args) -> int:
    import json
    from pathlib import Path

    from jqodi.errors import JqodiError
    from jqodi.runtime.job import Job
    from jqodi.cli._roles import role_main

    try:
        job = Job.from_dict(json.loads(Path(args.job).read_text()))
    except (OSError, ValueError) as e:
        raise JqodiError(f"--job: cannot read {args.job}: {str(e).splitlines()[0]}") from e
    if args.resume:
        from jqodi.runtime.process import CHECKPOINT_NAME

        if not (Path(args.workdir) / CHECKPOINT_NAME).is_file():
            raise JqodiError(f"--resume: no {CHECKPOINT_NAME} in {args.workdir} to continue from "
                             f"(run without --resume to start over)")
    import sys

    controller = None
    if args.controller and args.policy:
        raise JqodiError("--policy applies to the job's closed_loop block; a --controller file carries its own "
                         "policy: give one of them")
    from jqodi.app.run import WorkdirLock, controller_from_job, job_predictions, report_run, unpredicted_note

    if args.controller:  # the launcher of 'jqodi run' hands its controller over as a file
        from jqodi.app.controller import ClosedLoopController

        try:
            spec = json.loads(Path(args.controller).read_text())
        except (OSError, ValueError) as e:
            raise JqodiError(f"--controller: cannot read {args.controller}: {e}") from e
        controller = ClosedLoopController.from_spec(spec)
    else:  # started by hand: the controller the job carries ('jqodi run --write-job'), as 'jqodi run' attaches it
        controller, line = controller_from_job(job, args.job, policy=args.policy)
        if not args.no_report:
            print(f"jqodi cloud: {line}", flush=True)
    wd = Path(args.workdir)
    lock = WorkdirLock(wd, "cloud").acquire()  # a second run or cloud into this workdir refuses in one line
    if not (wd / "job.json").exists() or not (wd / "job.json").samefile(args.job):
        wd.mkdir(parents=True, exist_ok=True)  # beside its record: 'jqodi infer --workdir' serves from it
        (wd / "job.json").write_text(json.dumps(job.to_dict(), indent=2))
    predicted = job_predictions(job, job.closed_loop)  # per (edge, cut): epochs the closed loop moves or adds too
    job = job.replace(closed_loop=None)  # the controller stays here: neither the peers nor the record need it
    notice = job.emulation.notice() if job.emulation is not None else None
    if not args.no_report and notice:
        print(f"jqodi cloud: {notice}", file=sys.stderr, flush=True)

    def report(error: str | None) -> None:
        try:
            write_report(error)
        finally:  # before the role leaves through os._exit (a lock left behind is stale: taken over)
            lock.release()

    def write_report(error: str | None) -> None:
        if args.no_report:
            return
        from jqodi.runtime.process import EPOCHS_NAME
        from jqodi.runtime.record import record_from_epochs

        rec = record_from_epochs(job, wd / EPOCHS_NAME, predicted=predicted, status="failed" if error else "completed",
                                 error=error)
        rec.save(wd / "record.json")
        if error and not rec.epochs:   # failed before its first epoch (a port in use, no peer): the error line says it
            return
        note = unpredicted_note(rec)
        print(report_run(rec, wd) + (f"\n{note}" if note else ""), flush=True)  # with how the closed loop ended the run

    return role_main("cloud", args, after=report, job=job, workdir=args.workdir, resume=args.resume,
                     controller=controller)
