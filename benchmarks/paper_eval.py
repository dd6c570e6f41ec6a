"""Reproduce the paper's Section V evaluation (Figs. 7, 8, 11, 12; Tables VI/VII) for both of
its scenarios, from the planner's output. Prints one JSON object (per scenario: each strategy's
choice, energy, time, epochs, whether it reaches the target and meets the deadline, beside the
paper's figures; plus how long each solver took) and writes the figures under --out.

    .venv/bin/python benchmarks/paper_eval.py --out results/paper-eval
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "results" / "paper-eval"),
                   help="output directory (one sub-directory per scenario)")
    p.add_argument("scenarios", nargs="*",
                   default=[str(ROOT / "examples" / "paper-data1.yaml"),
                            str(ROOT / "examples" / "paper-data2.yaml")])
    args = p.parse_args(argv)

    from jqodi.app.evaluation import evaluate_scenario
    from jqodi.render.evaluation import summary_tables
    from jqodi.render.report import to_jsonable

    report = {}
    for path in args.scenarios:
        name = Path(path).stem
        ev = evaluate_scenario(path, out_dir=Path(args.out) / name,
                               progress=lambda m: print(m, file=sys.stderr, flush=True))
        print(summary_tables(ev), file=sys.stderr)
        report[name] = {
            "deadline_s": ev.deadline_s, "target_loss": ev.target_loss, "paper": ev.paper_key,
            "comparison": ev.comparison,
            "plan_time_s": {s.label: round(s.plan_time_s, 4) for s in ev.strategies},
            "notes": ev.notes + [f"{s.label}: {s.note}" for s in ev.strategies if s.note],
            "files": ev.files,
        }
    print(json.dumps(to_jsonable(report), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
