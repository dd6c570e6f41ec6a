"""``jqodi edge --name NAME``: run one edge server (ES) role; it joins the cloud's rendezvous."""
from __future__ import annotations

HELP = "run an edge-server role (joins the cloud's rendezvous)"


def add_arguments(p) -> None:
    from jqodi.cli._roles import add_connection_arguments

    p.add_argument("--name", required=True, help="this edge server's name in the scenario")
    add_connection_arguments(p)


def run(args) -> int:
    from jqodi.cli._roles import role_main
    from jqodi.core.devices import edge_role

    return role_main(edge_role(args.name), args)
