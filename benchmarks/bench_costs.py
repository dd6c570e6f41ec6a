"""Time the cost model: profiling the paper models, one vectorised cost table, a whole instance.

    .venv/bin/python benchmarks/bench_costs.py [SCENARIO]

Prints one JSON object (seconds; medians over repeats). Not a test: timings are informative.
"""
from __future__ import annotations

import json
import statistics
import sys
import time


def _median(fn, repeats=5):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from jqodi.core.costs import compile_instance, cost_table, epoch_costs, scenario_profiles
    from jqodi.core.scenario import default_scenario_path, load_scenario

    path = argv[0] if argv else default_scenario_path()
    s = load_scenario(path)
    t = time.perf_counter()
    profiles = scenario_profiles(s)  # builds and profiles each model once (torch)
    profile_s = time.perf_counter() - t
    n_options = sum(len(p.cuts) for p in profiles.values()) * len(s.all_bits) * len(s.edges)
    table_s = _median(lambda: [cost_table(s, m, profiles[m]) for m in profiles])
    one_s = _median(lambda: epoch_costs(s, "lenet", s.bits[0], 1, s.edges[0].name, profile=profiles["lenet"]))
    inst_s = _median(lambda: compile_instance(s, profiles=profiles))
    print(json.dumps({
        "scenario": s.name, "models": list(profiles), "options": n_options,
        "profile_all_models_s": round(profile_s, 4),
        "cost_tables_all_models_s": round(table_s, 5),
        "epoch_costs_one_option_s": round(one_s, 5),
        "compile_instance_s": round(inst_s, 5),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
