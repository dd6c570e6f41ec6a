"""``jqodi demo``: what the system knows about a scenario (the default: the paper's Data 1)."""
from __future__ import annotations

import argparse

HELP = "show the default (or a given) scenario: devices, models with cut profiles, cheapest/fastest options"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", nargs="?", default=None,
                   help="scenario YAML (default: the packaged paper Data 1 scenario)")


def run(args: argparse.Namespace) -> int:
    from jqodi.demo import run_demo

    run_demo(args.scenario)
    return 0
