"""``jqodi fleet-node ROLE``: run one process of a fleet (``cloud``, ``edge:NAME`` or ``end:DEVICE``).

``jqodi run`` on a fleet plan starts them all on this machine (:func:`jqodi.runtime.fleet_launch.run_fleet`);
on separate machines start the cloud with ``--job`` and the others with its token file.
"""
from __future__ import annotations

HELP = "run one process of a fleet run (cloud, edge:NAME or end:DEVICE; see docs/fleet.md)"


def add_arguments(p) -> None:
    from jqodi.cli._roles import add_connection_arguments

    p.add_argument("role", metavar="ROLE", help="cloud, edge:NAME or end:DEVICE")
    p.add_argument("--job", default=None, metavar="FILE", help="the fleet job (cloud only; fleet_job.json)")
    p.add_argument("--workdir", default=".", metavar="DIR",
                   help="where the cloud writes fleet.json and each device's epochs (default: .)")
    add_connection_arguments(p)


def run(args) -> int:
    import json

    from jqodi.errors import JqodiError

    fleet = None
    if args.role == "cloud":
        from jqodi.runtime.fleet_job import FleetJob

        if not args.job:
            raise JqodiError("fleet-node cloud: needs --job FILE (the fleet job)")
        try:
            fleet = FleetJob.from_dict(json.loads(open(args.job).read()))
        except (OSError, ValueError) as e:
            raise JqodiError(f"--job {args.job}: cannot read the fleet job: {e}") from None
    elif not (args.role.startswith("edge:") or args.role.startswith("end:")):
        raise JqodiError(f"fleet-node: ROLE must be cloud, edge:NAME or end:DEVICE, got {args.role!r}")
    from functools import partial

    from jqodi.cli._roles import role_main
    from jqodi.runtime.fleet_node import serve_fleet_role

    return role_main(args.role, args, serve=partial(serve_fleet_role, fleet=fleet, workdir=args.workdir))
