"""Split-training throughput on loopback vs the single-process reference (target ≥ 0.9×).

Same model, bits, batch size, data and batch order: the reference :func:`jqodi.learning.reference.protocol_epoch`
in one process, and the runtime's cloud/edge/end processes over gloo on loopback (emulation
off). Throughput = training samples / epoch wall time (each epoch also validates and does the
pack/update round trip, in both). The first epoch of each is a warm-up and not counted.

    .venv/bin/python benchmarks/runtime_throughput.py > benchmarks/results/runtime_throughput.json

``--mac-compare N``: instead, N interleaved pairs of gloo runs with and without the per-message
HMAC-SHA256 tag (``job.message_mac``), side by side; prints the ratio of their throughputs, and,
because such ratios are noise-bound on a shared machine, the cost directly: the host's HMAC-SHA256
rate, the bytes one epoch moves and the resulting HMAC CPU seconds per epoch.

    .venv/bin/python benchmarks/runtime_throughput.py --mac-compare 3 > benchmarks/results/runtime_mac.json
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--bits", type=int, default=8)
    ap.add_argument("--cut", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--train-size", type=int, default=2000)
    ap.add_argument("--val-size", type=int, default=500)
    ap.add_argument("--wire-bits", type=int, default=32, help="cut-layer activation/gradient bits on the wire")
    ap.add_argument("--mac-compare", type=int, default=0, metavar="N",
                    help="N interleaved pairs of gloo runs with and without per-message HMAC tags")
    args = ap.parse_args(argv)

    import torch

    from jqodi.core.data import end_device_data
    from jqodi.runtime.job import Job
    from jqodi.runtime.launch import run_job
    from jqodi.runtime.process import initial_master
    from jqodi.learning.reference import protocol_epoch

    job = Job.from_dict({
        "model": args.model, "bits": args.bits, "width": args.width,
        "schedule": [{"edge": "es", "cut": args.cut, "epochs": args.epochs}],
        "data": {"train_size": args.train_size, "val_size": args.val_size},
        "pretrained": {"source": "random"}, "meter": "null", "timeout_s": 60,
        "training": {"batch_size": args.batch_size, "wire_act_bits": args.wire_bits,
                     "wire_grad_bits": args.wire_bits}})
    if args.mac_compare:
        return _mac_compare(job, args)
    data = end_device_data("data1", "fashion-mnist", train_size=args.train_size, val_size=args.val_size)
    cfg = job.training.train_config()
    result = {"benchmark": "runtime_throughput", "model": args.model, "width": args.width, "bits": args.bits,
              "cut": args.cut, "batch_size": args.batch_size, "train_size": args.train_size,
              "val_size": args.val_size, "wire_bits": args.wire_bits, "epochs": args.epochs,
              "host": platform.node(), "cpus": torch.get_num_threads()}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        master = initial_master(job)
        worker = copy.deepcopy(master)
        walls = []
        for e in range(1, args.epochs + 1):
            t0 = time.perf_counter()
            protocol_epoch(master, worker, data.train, data.val, job.bits, cfg, job.training.seed, e)
            walls.append(time.perf_counter() - t0)
        result[f"reference_{threads}thread_epoch_s"] = walls
    with tempfile.TemporaryDirectory() as wd:
        rec = run_job(job, workdir=wd, say=lambda s: print(s, file=sys.stderr, flush=True))
    result["split_epoch_s"] = [e["raw_time_s"] for e in rec.epochs]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as wd:  # the same roles as threads of one process
        rec = run_job(job, transport="inprocess", workdir=wd, data=data, say=lambda s: None)
    result["split_inprocess_epoch_s"] = [e["raw_time_s"] for e in rec.epochs]
    summary = {}
    for key in ("reference_1thread", "reference_2thread", "split", "split_inprocess"):
        walls = result[f"{key}_epoch_s"][1:]
        summary[f"{key}_samples_per_s"] = args.train_size / statistics.median(walls)
        summary[f"{key}_best_samples_per_s"] = args.train_size / min(walls)
    ref = summary["reference_1thread_samples_per_s"]
    summary["split_vs_reference_1thread"] = summary["split_samples_per_s"] / ref
    summary["split_vs_reference_1thread_best"] = (summary["split_best_samples_per_s"]
                                                  / summary["reference_1thread_best_samples_per_s"])
    summary["split_inprocess_vs_reference_1thread"] = summary["split_inprocess_samples_per_s"] / ref
    summary["target"] = ">= 0.9x the single-process reference"
    summary["note"] = ("medians (and bests) of epochs 2..; split roles run one torch thread per process "
                       "(JQODI_THREADS=1); load average during the run is in 'load'")
    result["summary"] = summary
    result["load"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    return 0


def _mac_compare(job, args) -> int:
    """Throughput with and without message tags, interleaved pairs (the machine is shared)."""
    from jqodi.runtime.launch import run_job

    pairs, epoch_bytes, epoch_s = [], [], []
    for i in range(args.mac_compare):
        row = {}
        for mac in ((True, False) if i % 2 == 0 else (False, True)):
            with tempfile.TemporaryDirectory() as wd:
                rec = run_job(job.replace(message_mac=mac), workdir=wd, say=lambda s: None)
            walls = [e["raw_time_s"] for e in rec.epochs][1:]
            row["mac" if mac else "plain"] = args.train_size / statistics.median(walls)
            epoch_bytes += [sum(e["bytes"].values()) for e in rec.epochs]
            epoch_s += walls
        row["mac_vs_plain"] = row["mac"] / row["plain"]
        pairs.append(row)
        print(f"pair {i + 1}: {row}", file=sys.stderr, flush=True)
    ratios = [p["mac_vs_plain"] for p in pairs]
    rate = _hmac_rate_bytes_per_s()
    # every byte on a link is tagged once by its sender and checked once by its receiver
    tag_s = 2 * statistics.median(epoch_bytes) / rate
    print(json.dumps({"benchmark": "runtime_mac", "model": args.model, "width": args.width, "bits": args.bits,
                      "cut": args.cut, "train_size": args.train_size, "epochs": args.epochs,
                      "wire_bits": args.wire_bits, "pairs": pairs,
                      "median_mac_vs_plain": statistics.median(ratios), "load": os.getloadavg(),
                      "hmac_sha256_bytes_per_s": rate, "epoch_bytes_median": statistics.median(epoch_bytes),
                      "epoch_s_median": statistics.median(epoch_s),
                      "hmac_cpu_s_per_epoch": tag_s,
                      "hmac_share_of_epoch": tag_s / statistics.median(epoch_s),
                      "note": "samples/s of split training over gloo on loopback, medians of epochs 2..; "
                              "pairs interleaved, order alternating"}, indent=2))
    return 0


def _hmac_rate_bytes_per_s(size: int = 2**20, repeats: int = 20) -> float:
    """HMAC-SHA256 throughput on this host: median of ``repeats`` tags over ``size`` random bytes."""
    import hashlib
    import hmac
    import time

    key, body = os.urandom(32), os.urandom(size)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        hmac.new(key, body, hashlib.sha256).digest()
        times.append(time.perf_counter() - t0)
    return size / statistics.median(times)


if __name__ == "__main__":
    sys.exit(main())
