"""``jqodi calibrate``: measure this machine and write its device file.

Times the zoo's layer types (and any registered user model's) forward and backward at several
batch sizes (:mod:`jqodi.runtime.calibration`), fits one roofline per (layer type, phase) by
least squares (:func:`jqodi.core.device_model.fit_roofline`), measures s(q) per bit-width and
the memory bandwidth, reads busy and idle power from the best meter (NVML, RAPL) or declares
them (``power: declared``, said on screen), and writes the device file atomically — re-running
updates the same file in place (its name, description and memory are kept).
"""
from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from jqodi.core.device_model import (DeviceFile, LayerModel, Roofline, dump_device_file, fit_roofline,
                                     load_device_file, user_devices_dir)
from jqodi.core.profile import LAYER_KINDS
from jqodi.errors import JqodiError

__all__ = ["CalibrationResult", "fit_composition", "calibrate_host", "default_calibration_models", "DEFAULT_TDP_W", "DEFAULT_IDLE_W"]

#: Declared power when no meter can read it and none is given: a desktop CPU package.
DEFAULT_TDP_W = 65.0
DEFAULT_IDLE_W = 10.0


@dataclass
class CalibrationResult:
    device: DeviceFile
    path: Path
    residuals: list[dict] = field(default_factory=list)   # per (layer type, phase)
    power_note: str = ""
    seconds: float = 0.0


def default_calibration_models() -> list[tuple[str, float]]:
    """Every zoo model (paper models and registered ones) at its CPU width, plus the widths
    the accuracy benchmark uses."""
    from jqodi.core.training import default_width
    from jqodi.core.zoo import available_models

    out = [(n, default_width(n)) for n in available_models()]
    for extra in (("lenet", 1.0), ("resnet20", 0.25), ("vgg", 0.125)):
        if extra not in out:
            out.append(extra)
    return out


def _host_memory_gib() -> float:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8.0


def _existing(path: Path) -> DeviceFile | None:
    """The device file already at ``path`` (re-running updates it), or None."""
    if not path.is_file():
        return None
    try:
        return load_device_file(path)
    except JqodiError:
        return None


def calibrate_host(out: str | os.PathLike | None = None, *, quick: bool = False, name: str | None = None,
                   power: str = "auto", tdp_w: float | None = None, idle_w: float | None = None,
                   models: list[tuple[str, float]] | None = None, clock: str = "cpu",
                   say: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
                   progress: Callable[[str], None] | None = None) -> CalibrationResult:
    """Measure, fit and write this host's device file (see the module docstring)."""
    import torch

    from jqodi.runtime import calibration as cal

    t_start = time.perf_counter()
    threads = torch.get_num_threads()
    if clock == "cpu":  # one thread, its CPU time: the work's cost, not the machine's load
        torch.set_num_threads(1)
    cal.set_clock(clock)
    try:
        return _calibrate(out, quick, name, power, tdp_w, idle_w, models, clock, say, progress, t_start)
    finally:
        torch.set_num_threads(threads)


def _calibrate(out, quick, name, power, tdp_w, idle_w, models, clock, say, progress, t_start) -> CalibrationResult:
    import torch

    from jqodi.runtime import calibration as cal
    from jqodi.runtime.energy import EnergyMeterError

    path = Path(out) if out is not None else user_devices_dir() / "host.yaml"
    old = _existing(path)
    progress = progress or say
    batches = [16, 64] if quick else [8, 32, 64, 256]
    repeats = 3 if quick else 5
    bits = [8] if quick else [2, 4, 8]
    models = models or ([("lenet", 1.0), ("resnet20", 0.25), ("vgg", 0.125)] if quick
                        else default_calibration_models())

    say(f"calibrate: {'quick, ' if quick else ''}models {', '.join(f'{n}×{w:g}' for n, w in models)}; "
        f"batches {batches}; bit-widths {bits}; load average {os.getloadavg()[0]:.1f}")
    layers = cal.collect_layers(models)
    mem_bw = cal.memory_bandwidth_bytes_per_s(32 if quick else 128, repeats)
    say(f"calibrate: memory bandwidth {mem_bw / 1e9:.2f} GB/s (fp32 copy); {len(layers)} distinct layers")
    samples = cal.layer_samples(layers, batches, repeats, batches[-1:] if quick else None, progress=progress)

    fitted: dict[str, dict[str, Roofline]] = {}
    residuals: list[dict] = []
    for kind in LAYER_KINDS:
        for phase in ("forward", "backward"):
            ss = [s for s in samples if s.kind == kind and s.phase == phase]
            if len(ss) < 3:
                continue
            roof, rel = fit_roofline([s.flops for s in ss], [s.nbytes for s in ss], [s.seconds for s in ss],
                                     max_bytes_per_s=8 * mem_bw)
            fitted.setdefault(kind, {})[phase] = roof
            absr = sorted(abs(float(r)) for r in rel)
            residuals.append({"kind": kind, "phase": phase, "calls": len(ss),
                              "median_abs_error": statistics.median(absr), "max_abs_error": absr[-1],
                              "flops_per_s": roof.flops_per_s, "bytes_per_s": roof.bytes_per_s,
                              "overhead_s": roof.overhead_s})
    layer_models = {k: LayerModel(forward=v["forward"], backward=v["backward"])
                    for k, v in fitted.items() if {"forward", "backward"} <= set(v)}
    layer_models, composition = fit_composition(
        layer_models, cal.step_samples(models[:3] if quick else models, [32, 8], 64, repeats, progress=progress))
    residuals += composition

    qkind = layer_models.get("quantizer")

    def quantizer_time(w, b):
        if qkind is None:
            return 0.0
        return (qkind.forward.time_s(w.flops_at(b), w.bytes_at(b))
                + qkind.backward.time_s(w.flops_at(b), w.bytes_at(b)))

    factors = cal.bit_factors(layers, bits, 64, repeats, quantizer_time, progress, max_layers=6 if quick else None)
    measured = sorted(factors)
    bit_time_factor = {q: factors[min(measured, key=lambda m: (abs(m - q), -m))] for q in range(1, 9)}

    # v for the paper model: forward FLOPs × 3 (Eq. (3)-(4)'s d^i) per second of fwd + bwd, batch 64
    ref = [s for s in samples if s.batch == 64 and s.kind != "quantizer"]
    fwd_flops = sum(s.flops for s in ref if s.phase == "forward")
    flops_v = 3 * fwd_flops / max(sum(s.seconds for s in ref), 1e-9)

    # power: the best meter, else declared
    def busy_work():
        x = torch.randn(64, 256)
        w = torch.randn(256, 256)
        for _ in range(20):
            x = torch.tanh(x @ w)

    busy_w = idle_w_m = None
    note = ""
    if power != "declared":
        try:
            busy_w, idle_w_m, desc = cal.measure_power(power, busy_work, 0.6 if quick else 2.0)
            if not (math.isfinite(busy_w) and busy_w > 0):
                raise EnergyMeterError(f"{desc}: read {busy_w} W busy, not a usable power")
            idle_w_m = min(idle_w_m, 0.95 * busy_w)
            note = f"power measured with {desc}: busy {busy_w:.1f} W, idle {idle_w_m:.1f} W"
        except JqodiError as e:
            note = f"no power meter usable ({e}); falling back to declared power"
            busy_w = idle_w_m = None
    if busy_w is None:
        busy_w = tdp_w if tdp_w is not None else (old.busy_power_w if old and old.power == "declared"
                                                  else DEFAULT_TDP_W)
        idle_w_m = idle_w if idle_w is not None else (old.idle_power_w if old and old.power == "declared"
                                                      and old.idle_power_w is not None else DEFAULT_IDLE_W)
        idle_w_m = min(idle_w_m, 0.95 * busy_w)
        note = (note + "; " if note else "") + (f"power: declared — busy {busy_w:g} W (TDP"
                                                f"{'' if tdp_w is not None else ', default; pass --tdp-w'}), "
                                                f"idle {idle_w_m:g} W")
        source = "declared"
    else:
        source = "measured"
    say(f"calibrate: {note}")

    elapsed = time.perf_counter() - t_start
    dev = DeviceFile(
        name=name or (old.name if old else "host"),
        description=(old.description if old and old.description else
                     f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs), measured by jqodi calibrate"),
        source="measured", flops=flops_v, busy_power_w=busy_w, idle_power_w=idle_w_m, power=source,
        memory_gib=old.memory_gib if old else _host_memory_gib(),
        bit_time_factor=bit_time_factor, layers=layer_models,
        calibration={"host": platform.node(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "quick": quick, "batches": batches, "repeats": repeats, "bits_measured": measured,
                     "memory_bandwidth_bytes_per_s": mem_bw, "load_average": round(os.getloadavg()[0], 2),
                     "seconds": round(elapsed, 1), "torch_threads": torch.get_num_threads(), "clock": clock,
                     "residuals": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
                                   for r in residuals]})
    header = ("# Device file written by `jqodi calibrate` (docs/devices.md). Re-running updates it in place.\n"
              "# layers: t = max(flops / flops_per_s, bytes / bytes_per_s) + overhead_s per call.\n")
    dump_device_file(dev, path, header)
    return CalibrationResult(dev, path, residuals, note, elapsed)


def _scaled(r: Roofline, k: float) -> Roofline:
    """``r`` taking ``k`` times as long: t' = max(f / (F/k), b / (B/k)) + k·c = k·t."""
    return Roofline(flops_per_s=r.flops_per_s / k, bytes_per_s=r.bytes_per_s / k, overhead_s=r.overhead_s * k)



def fit_composition(layers: dict[str, LayerModel], steps: list[dict]) -> tuple[dict[str, LayerModel], list[dict]]:
    """Scale every roofline by one factor k so that the per-layer sums (+ optimizer steps) match
    whole training steps measured as the runtime trains: the least-squares fit on log error
    (k = the geometric mean of measured / predicted). Returns the scaled rooflines and the
    residual row of the steps after scaling."""
    from jqodi.core.device_model import DeviceFile

    def predict(models: dict[str, LayerModel], st: dict) -> float:
        dev = DeviceFile(name="x", flops=1e9, busy_power_w=1.0, layers=models).device()
        n, q = st["batch"], st["bits"]
        return sum(dev.layer_time_s(w, n, q, "forward") + dev.layer_time_s(w, n, q, "backward")
                   for blk in st["blocks"] for w in blk.layers) + sum(dev.optimizer_step_s(b) for b in st["blocks"])

    logs = [math.log(st["seconds"] / predict(layers, st)) for st in steps]
    k = math.exp(sum(logs) / len(logs)) if logs else 1.0
    out = {name: LayerModel(forward=_scaled(v.forward, k), backward=_scaled(v.backward, k)) for name, v in layers.items()}
    errs = sorted(abs(predict(out, st) / st["seconds"] - 1) for st in steps)
    row = {"kind": "training step", "phase": "fwd+bwd+step", "calls": len(steps),
           "median_abs_error": statistics.median(errs) if errs else float("nan"),
           "max_abs_error": errs[-1] if errs else float("nan"),
           "flops_per_s": float("nan"), "bytes_per_s": float("nan"), "overhead_s": float("nan"), "scale": k}
    return out, [row]
