"""``jqodi end``: run the end-device (SD) role; its private data never leaves this process."""
from __future__ import annotations

HELP = "run the end-device role (owns the private data; joins the cloud's rendezvous)"


def add_arguments(p) -> None:
    from jqodi.cli._roles import add_connection_arguments

    add_connection_arguments(p)
    p.add_argument("--data", default=None, metavar="PATH",
                   help="this device's copy of the job's end-device data (image folder or .npz), where it is "
                        "not at the job's path (the writing machine's); checked against the job's input shape "
                        "and classes. One folder for the job's end-device data and cloud dataset: names both")
    p.add_argument("--dataset", default=None, metavar="PATH",
                   help="this device's copy of the job's cloud dataset folder (its shape, classes and "
                        "normalisation), where the job names one of yours apart from --data")


def run(args) -> int:
    import sys
    from pathlib import Path

    from jqodi.cli._roles import role_main

    for flag, path in (("--data", args.data), ("--dataset", args.dataset)):
        if path is not None and not Path(path).expanduser().exists():  # said before joining the job
            print(f"jqodi end: error: {flag} {path}: no such file or folder", file=sys.stderr)
            return 2
    paths = {k: v for k, v in (("data", args.data), ("dataset", args.dataset)) if v is not None}
    return role_main("end", args, **({"data_paths": paths} if paths else {}))
