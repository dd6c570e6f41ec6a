"""``make demo``'s main job alone and beside one competing busy process, side by side.

    .venv/bin/python benchmarks/contention.py [--pairs N] [--plan-only] [--out FILE]

Runs ``jqodi demo --no-describe`` (the main job of ``make demo``: pretrain, measure, plan, run the
plan across the cloud, edge and end processes, serve requests) as its own process, alternating
*quiet* (nothing of ours beside it) and *loaded* (beside one ``python -c 'while True: pass'``,
started just before and killed by its PID just after), ``--pairs`` times (default 2). One
untimed run first fills the pretraining cache of a fresh ``$JQODI_HOME`` (or finds the
checkpoints ``--pretrained DIR`` copied there), as ``make demo``'s first run does, so every timed
run starts from the same state. ``--plan-only`` times the main job
without its run (pretraining, the 12 probes, planning: what the issue measured at 46 s vs 1,337 s).

Prints one JSON object: ``quiet_s`` and ``loaded_s`` (each run's wall time, in order),
``ratio`` (median loaded / median quiet; target ≤ 3), the 1-minute load average before and after
every run (the machine may be shared with other work: "quiet" means no busy process *of ours*),
the threads each process used and the exit codes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 3.0


def start_busy() -> subprocess.Popen:
    """One competing busy process (a Python busy loop, bounded by ``timeout`` should we die)."""
    cmd = [sys.executable, "-c", "while True: pass"]
    if Path("/usr/bin/timeout").exists():
        cmd = ["/usr/bin/timeout", "7200"] + cmd
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen) -> None:
    """End ``proc`` by its PID (SIGTERM, then SIGKILL)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def run_job(argv: list[str], env: dict, log: Path, timeout_s: float) -> tuple[float, int]:
    """Wall seconds and exit code of one ``python -m jqodi ARGV`` process (output to ``log``)."""
    t = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "jqodi", *argv], env=env, stdout=f, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            rc = 124
        finally:  # also when we are interrupted: no job left running
            stop(proc)
    return time.perf_counter() - t, rc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="the main job quiet vs beside one busy process")
    ap.add_argument("--pairs", type=int, default=2, help="quiet/loaded pairs, alternating (default 2)")
    ap.add_argument("--plan-only", action="store_true", help="time the main job without running the plan")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds one run may take (default 3600)")
    ap.add_argument("--out", metavar="FILE", help="also write the JSON here")
    ap.add_argument("--no-warmup", action="store_true",
                    help="skip the untimed first run (with --pretrained: the cache is filled already)")
    ap.add_argument("--loaded-first", action="store_true",
                    help="each pair runs loaded, then quiet (without a warm-up the first run pays one-time "
                         "costs: this puts them on the loaded side, against the target)")
    ap.add_argument("--logs", metavar="DIR", help="keep each run's output here (default: a temporary folder)")
    ap.add_argument("--pretrained", metavar="DIR",
                    help="copy cached pretrained checkpoints from DIR (a $JQODI_HOME/pretrained) into the fresh "
                         "home first, so that the warm-up run does not pretrain (≈ 10 min on a busy 2-core VM)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop our children

    with tempfile.TemporaryDirectory(prefix="jqodi-contention-") as tmp:
        tmp = Path(tmp)
        logs = Path(args.logs) if args.logs else tmp
        logs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "JQODI_HOME": str(tmp / "home")}
        if args.pretrained:
            import shutil

            shutil.copytree(args.pretrained, tmp / "home" / "pretrained")
        env.pop("JQODI_THREADS", None)  # each process picks its own count, as under 'make demo'
        job = ["demo", "--no-describe", "--no-traces"] + (["--plan-only"] if args.plan_only else [])

        def argv_for(name: str) -> list[str]:
            return job + ["--workdir", str(tmp / name), "--json", str(tmp / f"{name}.json")]

        warm_s, warm_rc = None, 0
        if not args.no_warmup:
            warm_s, warm_rc = run_job(argv_for("warmup"), env, logs / "warmup.log", args.timeout)
            print(f"warm-up (fills the pretraining cache): {warm_s:.1f} s, exit {warm_rc}", file=sys.stderr)
        runs = []
        for i in range(max(1, args.pairs)):
            for kind in (("loaded", "quiet") if args.loaded_first else ("quiet", "loaded")):
                busy = start_busy() if kind == "loaded" else None
                try:
                    load_before = os.getloadavg()[0]
                    wall, rc = run_job(argv_for(f"{kind}{i}"), env, logs / f"{kind}{i}.log", args.timeout)
                    load_after = os.getloadavg()[0]
                finally:
                    if busy is not None:
                        stop(busy)
                runs.append({"kind": kind, "wall_s": round(wall, 2), "exit_code": rc,
                             "load_avg_1min_before": round(load_before, 2),
                             "load_avg_1min_after": round(load_after, 2)})
                print(f"{kind} run {i + 1}: {wall:.1f} s, exit {rc}, load average {load_before:.2f} → "
                      f"{load_after:.2f}", file=sys.stderr)

    from jqodi.core.threads import usable_cores

    quiet = [r["wall_s"] for r in runs if r["kind"] == "quiet"]
    loaded = [r["wall_s"] for r in runs if r["kind"] == "loaded"]
    ratio = statistics.median(loaded) / statistics.median(quiet)
    out = {"benchmark": "contention", "job": "jqodi " + " ".join(job), "python": platform.python_version(),
           "usable_cores": usable_cores(), "competing_process": "python -c 'while True: pass'",
           "warmup_s": None if warm_s is None else round(warm_s, 2), "quiet_s": quiet, "loaded_s": loaded, "ratio": round(ratio, 3),
           "target_ratio": TARGET_RATIO, "meets_target": ratio <= TARGET_RATIO,
           "load_averages": [{k: r[k] for k in ("kind", "load_avg_1min_before", "load_avg_1min_after")}
                             for r in runs],
           "exit_codes": sorted({r["exit_code"] for r in runs} | {warm_rc}), "runs": runs}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if all(r["exit_code"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
