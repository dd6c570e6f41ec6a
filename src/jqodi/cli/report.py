"""``jqodi report DIR``: one self-contained HTML page of the evaluations and runs saved in DIR."""
from __future__ import annotations

HELP = "one self-contained HTML page (tables, inline SVG plots) of the evaluations and runs in a directory"


def add_arguments(p) -> None:
    p.add_argument("directory", metavar="DIR",
                   help="a run directory (record.json) or an evaluation directory (evaluation.json), or a "
                        "folder holding several")
    p.add_argument("--out", metavar="FILE.html", default=None, help="where to write the page (default DIR/report.html)")


def run(args) -> int:
    from jqodi.app.report import build_report

    print(build_report(args.directory, args.out))
    return 0
