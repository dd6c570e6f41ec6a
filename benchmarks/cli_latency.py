"""Whole-process wall time and peak memory of the commands that plan.

    .venv/bin/python benchmarks/cli_latency.py [--runs N] [--out FILE]

Each command runs as its own ``python -m jqodi ...`` process, ``--runs`` times (default 5); the
wall time is from start to exit, the peak memory the child's maximum resident set size
(``wait4``). Prints one JSON object with the median, min and max of each and the issue's targets:
``plan --instance`` ≤ 0.4 s, ``plan SCENARIO`` (warm) ≤ 0.6 s, both ≤ 120 MB.

``plan SCENARIO`` is measured three ways:

* ``shipped``: the packaged paper Data 1 scenario with an empty ``$JQODI_HOME`` (a fresh
  install: the profiles shipped with the package);
* ``cold``: the same scenario at a width nothing has profiled yet (0.9), with a new empty
  ``$JQODI_HOME`` per run: the models are built and profiled with torch;
* ``warm``: that scenario again once its profiles are in ``$JQODI_HOME``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"plan --instance": {"wall_s": 0.4, "peak_mb": 120},
           "plan SCENARIO (warm)": {"wall_s": 0.6, "peak_mb": 120}}


def measure(argv: list[str], env: dict[str, str], timeout_s: float = 300) -> tuple[float, float, int, float]:
    """(wall s, peak RSS MB, exit code, CPU s) of one ``python -m jqodi ARGV`` process."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "jqodi", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = t + timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.002)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in KiB on Linux; CPU time (user + system) is less sensitive than wall time to
    # other work on a shared machine
    return wall, usage.ru_maxrss / 1024, proc.returncode, usage.ru_utime + usage.ru_stime


def summary(samples: list[tuple[float, float, int, float]]) -> dict:
    walls, peaks, cpus = [s[0] for s in samples], [s[1] for s in samples], [s[3] for s in samples]
    return {"runs": len(samples), "wall_s": {"median": round(statistics.median(walls), 3),
                                             "min": round(min(walls), 3), "max": round(max(walls), 3)},
            "cpu_s": {"median": round(statistics.median(cpus), 3)},
            "peak_mb": {"median": round(statistics.median(peaks), 1), "max": round(max(peaks), 1)},
            "exit_codes": sorted({s[2] for s in samples})}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="whole-process latency of the planning commands")
    ap.add_argument("--runs", type=int, default=5, help="runs per command (median reported; default 5)")
    ap.add_argument("--out", metavar="FILE", help="also write the JSON here")
    args = ap.parse_args(argv)
    runs = max(1, args.runs)

    from jqodi.core.scenario import default_scenario_path

    with tempfile.TemporaryDirectory(prefix="jqodi-cli-latency-") as tmp:
        tmp = Path(tmp)
        base_env = dict(os.environ)
        scenario = str(default_scenario_path())
        # a scenario whose profiles are not shipped: the same models at width 0.9
        other = tmp / "width-0.9.yaml"
        other.write_text(Path(scenario).read_text().replace("width: 1.0", "width: 0.9"))
        warm_home = tmp / "warm-home"
        env_warm = {**base_env, "JQODI_HOME": str(warm_home)}
        instance = tmp / "instance.json"
        subprocess.run([sys.executable, "-m", "jqodi", "instance", scenario, "--out", str(instance)],
                       env=env_warm, stdout=subprocess.DEVNULL, check=True, timeout=300)
        subprocess.run([sys.executable, "-m", "jqodi", "plan", str(other)], env=env_warm,
                       stdout=subprocess.DEVNULL, timeout=300)  # fills warm-home (and byte-compiles)

        def fresh_env() -> dict[str, str]:
            return {**base_env, "JQODI_HOME": tempfile.mkdtemp(dir=tmp, prefix="home-")}

        cases = [
            ("--help", ["--help"], lambda: env_warm),
            ("plan --instance", ["plan", "--instance", str(instance)], lambda: env_warm),
            ("instance --json", ["instance", scenario, "--json"], fresh_env),
            ("plan SCENARIO (shipped profiles)", ["plan", scenario], fresh_env),
            ("plan SCENARIO (cold)", ["plan", str(other)], fresh_env),
            ("plan SCENARIO (warm)", ["plan", str(other)], lambda: env_warm),
        ]
        results = {}
        for name, cmd, env in cases:
            measure(cmd, env())  # one untimed run: page cache, bytecode
            results[name] = {"command": "jqodi " + " ".join(
                Path(a).name if a.startswith(str(tmp)) or a == scenario else a for a in cmd),
                **summary([measure(cmd, env()) for _ in range(runs)])}
            if name in TARGETS:
                t = TARGETS[name]
                r = results[name]
                results[name]["target"] = t
                results[name]["meets_target"] = (r["wall_s"]["median"] <= t["wall_s"]
                                                 and r["peak_mb"]["median"] <= t["peak_mb"])
    out = {"benchmark": "cli_latency", "python": platform.python_version(), "cpus": os.cpu_count(),
           "load_avg_1min": round(os.getloadavg()[0], 2), "runs": runs, "results": results}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
