"""``jqodi cloud``: run the cloud server (CS) role of a job; it hosts the rendezvous."""
from __future__ import annotations

HELP = "run the cloud role of a job (hosts the rendezvous; see 'jqodi run --write-job')"


def add_arguments(p) -> None:
    from jqodi.cli._roles import add_connection_arguments

    p.add_argument("--job", required=True, metavar="FILE", help="job JSON (written by 'jqodi run --write-job')")
    p.add_argument("--workdir", default=".", metavar="DIR", help="checkpoint and epoch records go here")
    p.add_argument("--resume", action="store_true", help="continue after the last checkpointed epoch")
    p.add_argument("--controller", default=None, metavar="FILE",
                   help="closed-loop controller JSON (written by 'jqodi run'): asked after every epoch")
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
        raise JqodiError(f"--job: cannot read {args.job}: {e}") from e
    controller = None
    if args.controller:
        from jqodi.app.controller import ClosedLoopController

        try:
            spec = json.loads(Path(args.controller).read_text())
        except (OSError, ValueError) as e:
            raise JqodiError(f"--controller: cannot read {args.controller}: {e}") from e
        controller = ClosedLoopController.from_spec(spec)
    return role_main("cloud", args, job=job, workdir=args.workdir, resume=args.resume, controller=controller)
