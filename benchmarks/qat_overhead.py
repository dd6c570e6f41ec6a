"""Cost of our hand-written fake quantization per training step (prints JSON).

For each zoo model times one training step (cross-entropy, ``--optimizer``) of the plain model and
of ``prepare_qat`` at each bit-width (weights per channel + activations at 8 bits), interleaving
the two so that load from other processes hits both alike, and reports the median step time and
the ratio QAT / plain. Brevitas is deliberately not installed; the issue's figures for it
(×1.5–2.0, NaN from its default 1-bit weight quantizer) are quoted, not re-measured.

    python benchmarks/qat_overhead.py [--input cifar] [--steps 20] [--batch 64] [--threads 1]
                                      [--compare-ref [--ref-commit main]] [--clock cpu]

``--input cifar``: the CIFAR-10 models and widths of ``benchmarks/paper_cifar.py`` (LeNet 0.25,
ResNet20 0.25, VGG 0.125; 3×32×32 images, batch 64, Adam, as its runs train); default
``fmnist``: the CPU-scale widths on 28×28×1.

``--compare-ref`` times, in the same loop, the code of another commit (``--ref-commit``, default
``main``): its ``src/`` is exported with ``git archive`` into a temporary folder and a second
process imports it and trains the same models (same seeds, same batch). The two processes take
turns step by step (one process at a time), so "before" and "after" share the machine's load;
each reports its own plain and QAT step times, and the ratios are QAT / plain of the same
process. Both processes keep freed memory in the heap (``keep_freed_memory``, as training entry
points do) where their commit has it.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CIFAR_WIDTHS = {"lenet": 0.25, "resnet20": 0.25, "vgg": 0.125}


class _Bench:
    """The plain and the QAT model of one (model, bits), and one timed step of each."""

    def __init__(self, name: str, width: float, bits: int, act_bits, shape, batch: int, optimizer: str,
                 clock):
        import torch

        from jqodi.core.quant import prepare_qat
        from jqodi.core.zoo import build_model

        torch.manual_seed(0)
        self.x = torch.randn(batch, *shape)
        self.y = torch.randint(0, 10, (batch,))
        base = build_model(name, tuple(shape), 10, width, seed=0)
        self.plain = copy.deepcopy(base)
        self.qat = prepare_qat(copy.deepcopy(base), bits, act_bits, calibration=self.x)
        make = (lambda p: torch.optim.Adam(p, lr=1e-3)) if optimizer == "adam" else \
            (lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9))
        self.opts = {"plain": make(self.plain.parameters()), "qat": make(self.qat.parameters())}
        self.clock = clock

    def step(self, which: str) -> float:
        import torch.nn.functional as F

        model, opt = (self.plain, self.opts["plain"]) if which == "plain" else (self.qat, self.opts["qat"])
        t = self.clock()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(self.x), self.y).backward()
        opt.step()
        return self.clock() - t

    def pair(self) -> tuple[float, float]:
        return self.step("plain"), self.step("qat")


def _worker() -> int:
    """The reference process: one JSON command per stdin line, one JSON answer per stdout line."""
    import torch

    try:  # commits before heap.py had none; later ones call it from their entry points, as this one does
        from jqodi.core.quant.heap import keep_freed_memory; keep_freed_memory()  # noqa: E702
    except ImportError:
        pass
    bench = None
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "setup":
            torch.set_num_threads(cmd["threads"])
            clock = time.process_time if cmd["clock"] == "cpu" else time.perf_counter
            bench = _Bench(cmd["model"], cmd["width"], cmd["bits"], cmd["act_bits"], cmd["shape"], cmd["batch"],
                           cmd["optimizer"], clock)
            print(json.dumps({"ok": True}), flush=True)
        elif cmd["op"] == "pair":
            print(json.dumps({"pair": bench.pair()}), flush=True)
        else:
            return 0
    return 0


class _Reference:
    """Another commit's ``src/`` in a child process that answers :func:`_worker`'s commands."""

    def __init__(self, commit: str):
        self.dir = tempfile.TemporaryDirectory(prefix="qat_ref_")
        self.commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", commit], check=True,
                                     capture_output=True, text=True).stdout.strip()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", self.commit, "src"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", self.dir.name], input=archive, check=True)
        env = dict(os.environ, PYTHONPATH=str(Path(self.dir.name) / "src"))
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=self.dir.name)

    def ask(self, cmd: dict, timeout_s: float = 600.0) -> dict:
        import select

        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.close()
            raise RuntimeError(f"the reference process ({self.commit}) did not answer {cmd['op']}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.dir.cleanup()


def main(argv=None) -> int:
    import torch

    from jqodi.core.training import DEFAULT_WIDTH

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", choices=("fmnist", "cifar"), default="fmnist",
                    help="cifar: paper_cifar.py's models, widths and 3×32×32 images with Adam; fmnist: 28×28×1, SGD")
    ap.add_argument("--models", nargs="+", default=None)
    ap.add_argument("--bits", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--act-bits", type=int, default=None, help="activation bits (default 8; 32 = weights only)")
    ap.add_argument("--width", type=float, default=None, help="width multiplier for every model")
    ap.add_argument("--compare-ref", action="store_true",
                    help="also time --ref-commit's code in a second process, taking turns step by step")
    ap.add_argument("--ref-commit", default="main", help="the reference commit (default main)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="cpu",
                    help="cpu (default): this process's CPU time (time waiting for a core on a shared machine is "
                         "not counted); wall: perf_counter")
    args = ap.parse_args(argv)
    cifar = args.input == "cifar"
    models = args.models or (list(CIFAR_WIDTHS) if cifar else ["lenet", "vgg", "resnet20"])
    shape = [3, 32, 32] if cifar else [1, 28, 28]
    optimizer = "adam" if cifar else "sgd"
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    from jqodi.core.quant.heap import keep_freed_memory; keep_freed_memory()  # trains here (core/quant/heap.py)
    ref = _Reference(args.ref_commit) if args.compare_ref else None
    load = [os.getloadavg()[0]]
    rows = []
    try:
        for name in models:
            width = args.width or (CIFAR_WIDTHS.get(name, 1.0) if cifar else DEFAULT_WIDTH.get(name, 1.0))
            for bits in args.bits:
                setup = {"op": "setup", "model": name, "width": width, "bits": bits, "act_bits": args.act_bits,
                         "shape": shape, "batch": args.batch, "optimizer": optimizer, "threads": args.threads,
                         "clock": args.clock}
                bench = _Bench(name, width, bits, args.act_bits, shape, args.batch, optimizer, clock)
                if ref:
                    ref.ask(setup)
                tp, tq, rp, rq = [], [], [], []
                for i in range(args.steps + 3):  # 3 warm-up steps each
                    p, q = bench.pair()
                    if ref:
                        a, b = ref.ask({"op": "pair"})["pair"]
                    if i >= 3:
                        tp.append(p), tq.append(q)
                        if ref:
                            rp.append(a), rq.append(b)
                load.append(os.getloadavg()[0])
                p, q = statistics.median(tp), statistics.median(tq)
                row = {"model": name, "width": width, "bits": bits, "act_bits": args.act_bits or 8,
                       "batch": args.batch, "plain_step_ms": round(p * 1e3, 2), "qat_step_ms": round(q * 1e3, 2),
                       "ratio": round(q / p, 3)}
                if ref:
                    a, b = statistics.median(rp), statistics.median(rq)
                    row.update({"ref_plain_step_ms": round(a * 1e3, 2), "ref_qat_step_ms": round(b * 1e3, 2),
                                "ref_ratio": round(b / a, 3), "qat_step_vs_ref": round(q / b, 3)})
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        if ref:
            ref.close()
    from jqodi.core.quant import kernel

    summary = {"input": args.input, "optimizer": optimizer, "threads": args.threads, "steps": args.steps,
               "quantizer": kernel.status(),
               "clock": args.clock, "load_average_1min": {"min": min(load), "max": max(load)},
               "results": rows, "median_ratio": statistics.median(r["ratio"] for r in rows),
               "median_ratio_by_model": {m: statistics.median(r["ratio"] for r in rows if r["model"] == m)
                                         for m in models}}
    if ref:
        summary["ref_commit"] = ref.commit
        summary["median_ref_ratio"] = statistics.median(r["ref_ratio"] for r in rows)
        summary["median_ref_ratio_by_model"] = {m: statistics.median(r["ref_ratio"] for r in rows
                                                                     if r["model"] == m) for m in models}
        summary["median_qat_step_vs_ref"] = statistics.median(r["qat_step_vs_ref"] for r in rows)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        sys.exit(_worker())
    sys.exit(main())
