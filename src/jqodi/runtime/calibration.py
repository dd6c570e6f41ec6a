"""Micro-benchmarks of this machine for ``jqodi calibrate`` (the device model's raw data).

* :func:`layer_samples` times every distinct leaf layer of the given zoo models (conv, linear,
  the element-wise rest) forward and backward at several batch sizes, each call the median of
  a few repeats (adaptive: until the median is stable), and the fake quantizers QAT adds
  (input and weight of each conv/linear) the way training runs them (:func:`quantizer_path`:
  the compiled kernel when available, else PyTorch).
* :func:`step_samples` times whole training steps of the models as the runtime runs them (fp32
  and QAT at each bit-width): what the rooflines' composition factor and s(q) are fitted to.
* :func:`eval_samples` times whole validation forwards of the models (fp32, eval mode, no
  autograd graph, the runtime's validation batch): what each model's ``eval`` composition
  factor is fitted to.
* :func:`memory_bandwidth_bytes_per_s` times a large tensor copy (read + write).
* :func:`measure_power` reads busy and idle power with the best meter available (NVML, RAPL),
  or says why it cannot (the caller then declares the TDP).

Each sample's features are those :class:`jqodi.core.profile.LayerWork` gives the cost model,
so the fitted rooflines predict exactly what was measured.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from jqodi.core.profile import LayerWork

__all__ = ["CLOCKS", "set_clock", "Sample", "layer_samples", "memory_bandwidth_bytes_per_s", "measure_power",
           "collect_layers", "step_samples", "eval_samples", "quantizer_path"]


@dataclass(frozen=True)
class Sample:
    """One timed call: layer type, phase, the roofline's features and the median seconds."""

    kind: str
    phase: str
    flops: float
    nbytes: float
    seconds: float
    batch: int
    layer: str


#: The clock calls are timed with: ``cpu`` = this thread's CPU time (with torch on one thread:
#: what the work costs, whatever else the machine runs) or ``wall`` = elapsed time.
CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}
_clock = time.thread_time


def set_clock(name: str) -> None:
    """Time with ``cpu`` (thread CPU time; the caller sets torch to one thread) or ``wall``."""
    global _clock
    _clock = CLOCKS[name]


#: Adaptive repetitions: at least this many timed calls, then stop as soon as one more call moves
#: the median by at most :data:`STABLE_RTOL` (up to the caller's ``repeats``).
MIN_REPEATS = 3
STABLE_RTOL = 0.03


def _median_s(fn: Callable[[], object], repeats: int) -> float:
    """The median time of ``fn`` after one warm-up call: :data:`MIN_REPEATS` timed calls, then
    more (up to ``repeats``) only while the median still moves by more than :data:`STABLE_RTOL`."""
    fn()  # warm-up (allocations, lazy initialisation)
    ts: list[float] = []
    prev = None
    while len(ts) < max(repeats, 1):
        t0 = _clock()
        fn()
        ts.append(_clock() - t0)
        if len(ts) >= min(MIN_REPEATS, repeats):
            med = statistics.median(ts)
            if prev is not None and abs(med - prev) <= STABLE_RTOL * med:
                break
            if len(ts) == MIN_REPEATS and max(ts) - min(ts) <= STABLE_RTOL * med:
                break  # three calls within 3 % of each other: stable already
            prev = med
    return max(statistics.median(ts), 1e-7)


def collect_layers(models: Iterable[tuple[str, float]], input_shape=(3, 32, 32), num_classes: int = 10
                   ) -> list[tuple[str, nn.Module, tuple[int, ...], LayerWork | None]]:
    """Distinct leaf layers of the models (by type, configuration and input shape): (label,
    module, per-sample input shape, its forward work) — the work from the profiler's rules."""
    from jqodi.core.profile import _leaf_flops, _leaf_kind
    from jqodi.core.zoo import build_model

    seen: dict[tuple, tuple] = {}
    for name, width in models:
        model = build_model(name, input_shape, num_classes, width, seed=0)
        shapes: dict[nn.Module, tuple] = {}
        handles = []
        for m in model.modules():
            if len(list(m.children())) == 0:
                def hook(mod, inp, out):
                    if mod not in shapes and inp and hasattr(inp[0], "shape"):
                        shapes[mod] = (tuple(inp[0].shape[1:]), _leaf_flops(mod, inp, out) or 0, int(out.numel()))
                handles.append(m.register_forward_hook(hook))
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
        for h in handles:
            h.remove()
        for m, (shape, flops, n_out) in shapes.items():
            if flops == 0 and not any(True for _ in m.parameters(recurse=False)):
                continue
            key = (repr(m), shape)
            if key not in seen:
                n_in = 1
                for s in shape:
                    n_in *= int(s)
                n_par = sum(int(p.numel()) for p in m.parameters(recurse=False))
                work = LayerWork(_leaf_kind(m), int(flops), n_in, n_out, n_par)
                seen[key] = (f"{name}:{type(m).__name__}{list(shape)}", m, shape, work)
    return list(seen.values())


def _fwd_bwd_times(m: nn.Module, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    if getattr(m, "inplace", False):  # an in-place ReLU cannot overwrite a leaf that needs grad
        import copy

        m = copy.deepcopy(m)
        m.inplace = False
    m.train()
    x = x.clone().requires_grad_(True)
    fwd = _median_s(lambda: m(x), repeats)
    out = m(x)
    g = torch.ones_like(out)

    def bwd():
        m.zero_grad(set_to_none=True)
        x.grad = None
        out.backward(g, retain_graph=True)

    return fwd, _median_s(bwd, repeats)


def _quantizer_times(n_w_shape, x: torch.Tensor, repeats: int) -> list[tuple[LayerWork, float, float]]:
    """Fake quantizers of one layer as QAT training runs them (:class:`jqodi.core.quant.layers._QLayerFn`):
    its input (batched, one step) and its weight (per call, one step per output channel), forward
    and backward — the compiled one-pass loops of :mod:`jqodi.core.quant.kernel` when they are
    available (:func:`quantizer_path`), else the PyTorch path (``lsq_forward``; backward the STE
    product and the step's dot product)."""
    from jqodi.core.quant import kernel
    from jqodi.core.quant.lsq import MIN_STEP, lsq_forward

    out = []
    for tensor, batched in ((x, True), (torch.randn(*n_w_shape), False)):
        t = tensor.detach().contiguous()
        rows = 1 if batched else int(t.shape[0])
        qn, qp = (0.0, 255.0) if batched else (-128.0, 127.0)   # 8-bit input after ReLU; signed weights
        step = torch.full((rows,), 0.05)
        g = torch.ones_like(t)
        if kernel.usable(t, step):
            fwd = _median_s(lambda: kernel.quantize(t, step, qn, qp, False), repeats)
            bw = _median_s(lambda: kernel.backward(t, step, g, qn, qp, False, 1.0, need_x=True), repeats)
        else:
            shape = (1,) if batched else (-1, *([1] * (t.dim() - 1)))
            fwd = _median_s(lambda: lsq_forward(t, step.abs().clamp_min(MIN_STEP).view(shape), qn, qp, False),
                            repeats)
            _, mask, ds = lsq_forward(t, step.abs().clamp_min(MIN_STEP).view(shape), qn, qp, False)

            def bwd():
                gx = g * mask
                if batched:
                    return gx, torch.dot(g.view(-1), ds.view(-1))
                return gx, torch.bmm(g.view(rows, 1, -1), ds.view(rows, -1, 1))

            bw = _median_s(bwd, repeats)
        n = int(t.numel() // (x.shape[0] if batched else 1))
        out.append((LayerWork("quantizer", 4 * n, n, n, 0, batched=batched), fwd, bw))
    return out


def quantizer_path() -> str:
    """How this process runs QAT's fake quantizers, the way :func:`layer_samples` and
    :func:`step_samples` time them: ``compiled`` (:mod:`jqodi.core.quant.kernel`) or ``torch``
    (no compiler, a failed build or check, or ``JQODI_QUANT_KERNEL=0``)."""
    from jqodi.core.quant import kernel

    return "compiled" if kernel.available() else "torch"


def layer_samples(layers, batches: Iterable[int], repeats: int, quantizer_batches: Iterable[int] | None = None,
                  progress: Callable[[str], None] = lambda s: None) -> list[Sample]:
    """Time every layer forward and backward at each batch size (and its quantizers)."""
    torch.manual_seed(0)
    samples: list[Sample] = []
    batches = list(batches)
    total = len(layers) * len(batches)
    done = 0
    for label, m, shape, work in layers:
        for b in batches:
            x = torch.randn(b, *shape)
            fwd, bwd = _fwd_bwd_times(m, x, repeats)
            for phase, s in (("forward", fwd), ("backward", bwd)):
                samples.append(Sample(work.kind, phase, work.flops_at(b), work.bytes_at(b), s, b, label))
            if work.kind in ("conv", "linear") and (quantizer_batches is None or b in quantizer_batches):
                for qw, qf, qb in _quantizer_times(tuple(m.weight.shape), x, repeats):
                    for phase, s in (("forward", qf), ("backward", qb)):
                        samples.append(Sample("quantizer", phase, qw.flops_at(b), qw.bytes_at(b), s, b,
                                              f"{label}:quant"))
            done += 1
            progress(f"layers {done}/{total}")
    return samples


def memory_bandwidth_bytes_per_s(mib: int = 64, repeats: int = 5) -> float:
    """Bytes per second of a large fp32 copy (each byte read once and written once)."""
    n = mib * 2**20 // 4
    a = torch.ones(n)
    b = torch.empty(n)
    s = _median_s(lambda: b.copy_(a), repeats)
    return 2 * 4 * n / s


def measure_power(meter_kind: str, work: Callable[[], object], seconds: float = 1.0
                  ) -> tuple[float, float, str]:
    """(busy W, idle W, meter description) from ``meter_kind`` (nvml, rapl, or auto = the best
    of them). Raises :class:`jqodi.runtime.energy.EnergyMeterError` when no meter can read power
    here, or when the meter fails during the run (the caller falls back and says why)."""
    from jqodi.runtime.energy import EnergyMeterError, make_meter

    kinds = ("nvml", "rapl") if meter_kind == "auto" else (meter_kind,)
    errors = []
    for kind in kinds:
        try:
            meter = make_meter(kind)
        except EnergyMeterError as e:
            errors.append(str(e))
            continue
        try:
            meter.begin_window("calibrate-idle")
            time.sleep(seconds / 2)
            idle = meter.end_window("calibrate-idle")
            meter.begin_window("calibrate-busy")
            t_end = time.perf_counter() + seconds
            while time.perf_counter() < t_end:
                work()
            busy = meter.end_window("calibrate-busy")
        except Exception as e:  # a meter failing mid-run: said by the caller, nothing written
            raise EnergyMeterError(f"{kind} meter failed during the run: {e}") from None
        finally:
            meter.close()
        return busy.avg_power_w, idle.avg_power_w, meter.description
    raise EnergyMeterError("; ".join(errors) or "no power meter")



def step_samples(models: Iterable[tuple[str, float]], bits: Iterable[int], batch: int, repeats: int,
                 input_shape=(3, 32, 32), num_classes: int = 10,
                 progress: Callable[[str], None] = lambda s: None) -> list[dict]:
    """Whole training steps of the zoo models as the runtime runs them (train mode, QAT below
    32 bits, forward, cross-entropy, backward, Adam step): the median seconds per step at
    ``batch``, per (model, bit-width). ``jqodi calibrate`` scales the per-layer rooflines so
    their sum matches these (layers cost more together than alone: allocation, autograd
    bookkeeping, colder caches)."""
    import torch.nn.functional as F

    from jqodi.core.profile import profile_model
    from jqodi.core.quant import prepare_qat
    from jqodi.core.zoo import build_model

    import copy

    out = []
    for name, width in models:
        built = build_model(name, input_shape, num_classes, width, seed=0)  # once; a fresh copy per bit-width
        prof = profile_model(built)
        for q in bits:
            torch.manual_seed(0)
            model = copy.deepcopy(built)
            x = torch.randn(batch, *input_shape)
            y = torch.randint(0, num_classes, (batch,))
            if q < 32:
                prepare_qat(model, q, calibration=x)
            model.train()
            opt = torch.optim.Adam(model.parameters(), lr=1e-4)

            def step():
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                opt.step()

            out.append({"model": name, "width": width, "bits": int(q), "blocks": prof.blocks, "batch": batch,
                        "seconds": _median_s(step, repeats)})
            progress(f"training steps: {name}×{width:g} at {q} bits")
    return out


def eval_samples(models: Iterable[tuple[str, float]], batch: int, repeats: int, input_shape=(3, 32, 32),
                 num_classes: int = 10, progress: Callable[[str], None] = lambda s: None) -> list[dict]:
    """Whole validation forwards of the zoo models as the runtime runs them (fp32, eval mode,
    ``torch.no_grad``) over ``batch`` samples: the median seconds per forward, per model. Their
    layers' sum misses what a training step's does not (no autograd graph, one large batch), so
    ``jqodi calibrate`` fits each model's validation factor on these, apart from its steps'."""
    from jqodi.core.profile import profile_model
    from jqodi.core.zoo import build_model

    out = []
    for name, width in models:
        model = build_model(name, input_shape, num_classes, width, seed=0).eval()
        torch.manual_seed(0)
        x = torch.randn(batch, *input_shape)

        def forward():
            with torch.no_grad():
                model(x)

        out.append({"model": name, "width": width, "bits": 32, "blocks": profile_model(model).blocks,
                    "batch": batch, "seconds": _median_s(forward, repeats)})
        progress(f"validation forwards: {name}×{width:g}")
    return out
