"""``jqodi end``: run the end-device (SD) role; its private data never leaves this process."""
from __future__ import annotations

HELP = "run the end-device role (owns the private data; joins the cloud's rendezvous)"


def add_arguments(p) -> None:
    from jqodi.cli._roles import add_connection_arguments

    add_connection_arguments(p)


def run(args) -> int:
    from jqodi.cli._roles import role_main

    return role_main("end", args)
