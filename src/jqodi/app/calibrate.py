"""``jqodi calibrate``: measure this machine and write its device file.

Times the zoo's layer types (and any registered user model's) forward and backward at several
batch sizes (:mod:`jqodi.runtime.calibration`), fits one roofline per (layer type, phase) by
least squares (:func:`jqodi.core.device_model.fit_roofline`), scales them to whole training
steps (:func:`fit_composition`; per model, :func:`model_scales` → ``calibration.model_scale``),
measures s(q) per bit-width and the memory bandwidth, reads busy and idle power from the best meter (NVML, RAPL) or declares
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

__all__ = ["CalibrationResult", "fit_composition", "model_scales", "calibrate_host", "default_calibration_models", "DEFAULT_TDP_W",
           "DEFAULT_IDLE_W", "quant_kernel_notes"]

#: Declared power when no meter can read it and none is given: a desktop CPU package.
DEFAULT_TDP_W = 65.0
DEFAULT_IDLE_W = 10.0
#: A layer type's roofline fit counts as tight at this median |error| of its calls: looser
#: types are measured at more batch sizes (the default run's second pass).
TIGHT_FIT = 0.15


#: What a run measures. ``batches``: layer batch sizes; ``extra_batches``: for layer types whose
#: fit is not yet tight; ``repeats``: timed calls at most (fewer once the median is stable);
#: ``bits``: the QAT steps s(q) is fitted from; ``step_batch``: the whole steps' batch.
#: --quick (≤ 30 s on a quiet host): one batch size per layer (the distinct layers of three models
#: already span the roofline's range; the whole steps then fit the scale), warm-up + up to 3 timed
#: calls (a median that one slow call cannot move; 2 were their mean), s(q) at 4 and 8 bits (8
#: alone charged every width ≤ 5 at s(8), 3–4 % below s(4) on this host).
QUICK = {"batches": (32,), "extra_batches": (), "repeats": 3, "bits": (4, 8), "step_batch": 32}
FULL = {"batches": (8, 64, 256), "extra_batches": (32,), "repeats": 5, "bits": (2, 4, 8), "step_batch": 32}


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

    cpu_start = time.process_time()
    path = Path(out) if out is not None else user_devices_dir() / "host.yaml"
    old = _existing(path)
    progress = progress or say
    plan = QUICK if quick else FULL
    batches, extra_batches, repeats = list(plan["batches"]), list(plan["extra_batches"]), plan["repeats"]
    bits, step_batch = list(plan["bits"]), plan["step_batch"]
    models = models or ([("lenet", 1.0), ("resnet20", 0.25), ("vgg", 0.125)] if quick
                        else default_calibration_models())
    stages: dict[str, float] = {}
    cpu_stages: dict[str, float] = {}  # process CPU seconds: what the work costs on a loaded machine
    lap = [time.perf_counter(), time.process_time()]

    def stage(name: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        stages[name] = round(stages.get(name, 0.0) + now - lap[0], 1)
        cpu_stages[name] = round(cpu_stages.get(name, 0.0) + cpu - lap[1], 2)
        lap[0], lap[1] = now, cpu

    say(f"calibrate: {'quick, ' if quick else ''}models {', '.join(f'{n}×{w:g}' for n, w in models)}; "
        f"batches {batches}; bit-widths {bits}; load average {os.getloadavg()[0]:.1f}")
    quant_kernel = cal.quantizer_path()
    say(f"calibrate: QAT's fake quantizers timed as training runs them here: {_quantizer_how()}")
    layers = cal.collect_layers(models)
    mem_bw = cal.memory_bandwidth_bytes_per_s(32 if quick else 128, repeats)
    say(f"calibrate: memory bandwidth {mem_bw / 1e9:.2f} GB/s (fp32 copy); {len(layers)} distinct layers")
    stage("setup")
    samples = cal.layer_samples(layers, batches, repeats, sorted({batches[0], batches[-1]}),
                                progress=progress)
    stage("layers")
    layer_models, residuals = _fit_rooflines(samples, mem_bw)
    loose = sorted({r["kind"] for r in residuals if r["median_abs_error"] > TIGHT_FIT and r["kind"] != "quantizer"})
    if extra_batches and loose:
        say(f"calibrate: fits of {', '.join(loose)} not within {100 * TIGHT_FIT:.0f} %: measuring them at batch "
            f"{', '.join(map(str, extra_batches))} too")
        samples += cal.layer_samples([lyr for lyr in layers if lyr[3].kind in loose], extra_batches, repeats, [],
                                     progress=progress)
        layer_models, residuals = _fit_rooflines(samples, mem_bw)
        stage("layers")
    thin = sorted({lyr[3].kind for lyr in layers} - set(layer_models))
    if thin:  # --quick: a layer type with fewer than 3 distinct layers needs a second batch size to fit
        samples += cal.layer_samples([lyr for lyr in layers if lyr[3].kind in thin], [8], repeats, [8],
                                     progress=progress)
        layer_models, residuals = _fit_rooflines(samples, mem_bw)
        stage("layers")
    # fp32 steps of every model fit the composition factor; QAT steps of the first three fit s(q)
    # (each model's fp32 and QAT steps back to back: s(q) is fitted against the same model's fp32
    # step, so a drift of the machine's speed between models does not enter it)
    steps = [st for i, m in enumerate(models[:3] if quick else models)
             for st in cal.step_samples([m], [32] + (bits if i < 3 else []), step_batch, repeats, progress=progress)]
    layer_models, factors, composition = fit_composition(layer_models, steps)
    residuals += composition
    from jqodi.core.train_config import TRAIN_DEFAULTS

    evals = cal.eval_samples(models[:3] if quick else models, TRAIN_DEFAULTS.eval_batch_size, repeats,
                             progress=progress)
    model_scale = model_scales(layer_models, steps, evals)
    progress("per-model composition (measured ÷ its layers' sum: fp32 training step / validation forward) "
             + ", ".join(f"{k}: {f['train']:.3f} / {f.get('eval', 1.0):.3f}" for k, f in model_scale.items()))
    stage("training steps")
    progress("s(q) " + ", ".join(f"{q} bits: {f:.3f}" for q, f in sorted(factors.items())))
    measured = sorted(factors)
    bit_time_factor = {q: factors[min(measured, key=lambda m: (abs(m - q), -m))] for q in range(1, 9)} \
        if measured else {}

    # v for the paper model: forward FLOPs × 3 (Eq. (3)-(4)'s d^i) per second of fwd + bwd, batch 64
    # (--quick: its one batch size)
    ref_batch = 64 if 64 in batches else batches[-1]
    ref = [s for s in samples if s.batch == ref_batch and s.kind != "quantizer"]
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
    stage("power")

    elapsed = time.perf_counter() - t_start
    cpu_s = time.process_time() - cpu_start
    say(f"calibrate: {elapsed:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in stages.items())
        + f"); CPU {cpu_s:.1f} s (" + ", ".join(f"{k} {v:.1f}" for k, v in cpu_stages.items())
        + f"); load average {os.getloadavg()[0]:.1f}")
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
                     "seconds": round(elapsed, 1), "stage_seconds": stages,
                     "cpu_seconds": round(cpu_s, 2), "stage_cpu_seconds": cpu_stages, "loose_fits": loose,
                     "step_batch": step_batch, "torch_threads": torch.get_num_threads(), "clock": clock,
                     "quant_kernel": quant_kernel, "model_scale": model_scale,
                     "residuals": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
                                   for r in residuals]})
    header = ("# Device file written by `jqodi calibrate` (docs/devices.md). Re-running updates it in place.\n"
              "# layers: t = max(flops / flops_per_s, bytes / bytes_per_s) + overhead_s per call.\n")
    dump_device_file(dev, path, header)
    return CalibrationResult(dev, path, residuals, note, elapsed)


def _quantizer_how() -> str:
    """``compiled (<library>)`` or ``torch [<why>]``: how QAT quantizes in this process."""
    from jqodi.core.quant import kernel

    why = kernel.status()
    return why if why.startswith("compiled") else f"torch [{why}]"


def quant_kernel_notes(scenario) -> list[str]:
    """One line per device file of ``scenario`` measured on this host whose fake quantizers were
    timed another way than QAT runs them in this process (``calibration.quant_kernel``: the
    compiled kernel of :mod:`jqodi.core.quant.kernel`, or the PyTorch path), or that does not
    say which while the kernel runs here (calibrated before calibrate recorded it, when it timed
    PyTorch's quantizers: ≈ 4× the kernel's). Not an error: the file still prices everything; its
    QAT epochs may be off. Files measured on other machines are not checked (their quantizers ran
    there)."""
    from jqodi.core.device_model import load_device_file

    users: dict[str, list[str]] = {}
    for spec in (scenario.cloud, *scenario.edges, scenario.end_device):
        if spec.device_ref is not None:
            users.setdefault(spec.device_ref, []).append(spec.name)
    lines: list[str] = []
    now = None
    for ref, names in users.items():
        try:
            dev = load_device_file(ref)
        except JqodiError:
            continue
        cal = dev.calibration or {}
        if dev.source != "measured" or cal.get("host") != platform.node():
            continue
        if now is None:  # torch and the kernel load only here: planning a scenario without such files stays torch-free
            from jqodi.runtime.calibration import quantizer_path

            now = quantizer_path()
        recorded = cal.get("quant_kernel")
        if recorded is None and now == "compiled":
            lines.append(f"note: device file {ref} (used by {', '.join(names)}) does not record how its fake "
                         f"quantizers were timed (calibrated before `jqodi calibrate` recorded quant_kernel); QAT "
                         f"here runs the compiled quantizer, so its QAT epochs may be priced high: re-run "
                         f"`jqodi calibrate`")
        elif recorded is not None and recorded != now:
            lines.append(f"note: device file {ref} (used by {', '.join(names)}) timed the {recorded} fake quantizers, "
                         f"QAT here runs {_quantizer_how()}: its QAT epochs are priced for the "
                         f"other; re-run `jqodi calibrate` this way")
    return lines


def _fit_rooflines(samples, mem_bw: float) -> tuple[dict[str, LayerModel], list[dict]]:
    """One roofline per (layer type, phase) by least squares on log error; the residual rows."""
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
    return ({k: LayerModel(forward=v["forward"], backward=v["backward"])
             for k, v in fitted.items() if {"forward", "backward"} <= set(v)}, residuals)


def _scaled(r: Roofline, k: float) -> Roofline:
    """``r`` taking ``k`` times as long: t' = max(f / (F/k), b / (B/k)) + k·c = k·t."""
    return Roofline(flops_per_s=r.flops_per_s / k, bytes_per_s=r.bytes_per_s / k, overhead_s=r.overhead_s * k)



def fit_composition(layers: dict[str, LayerModel], steps: list[dict]
                    ) -> tuple[dict[str, LayerModel], dict[int, float], list[dict]]:
    """Fit the per-layer rooflines to whole training steps measured as the runtime trains
    (forward, loss, backward, Adam; QAT below 32 bits), in two stages on log error:

    1. one factor k scales every roofline so that the fp32 steps' per-layer sums (+ optimizer
       steps) match them (k = the geometric mean of measured / predicted: layers cost more
       together than alone — allocation, autograd bookkeeping, colder caches);
    2. the fake quantizers' factor k_quant and s(q) per measured bit-width, fitted together on the
       QAT steps by bounded least squares (:func:`_quantizer_factor`: the models differ in how
       much of a step is quantizers — ResNet20's 44 small quantizer calls cost more in a step
       than alone, LeNet's few large layers barely notice QAT — so one conv/linear factor alone
       put LeNet's QAT steps 20–30 % high and ResNet20's 5–15 % low); then, with the quantizers
       scaled, s(q) is the conv/linear time factor that makes each q-bit step match after its
       quantizers' time, the median over the models (1–4: fake quantization runs fp32 kernels,
       so it cannot make them faster). A model whose
       fp32 step was measured too is compared against it: its q-bit step is first divided by that
       step's own measured / predicted ratio (what the shared k leaves for that model).

    s(q) comes from whole steps, not from single fake-quantized layers against fp32 ones: those
    differences of two noisy micro-benchmarks varied by 20 % from run to run on a loaded host.
    Returns the scaled rooflines, s(q) and the residual rows of the steps after the fit."""
    from jqodi.core.device_model import DeviceFile

    def parts3(models: dict[str, LayerModel], st: dict) -> tuple[float, float, float]:
        """(conv/linear time at s = 1, the fake quantizers' time, everything else) of one step."""
        dev = DeviceFile(name="x", flops=1e9, busy_power_w=1.0, layers=models).device()
        n, q = st["batch"], st["bits"]
        conv = quant = rest = 0.0
        for blk in st["blocks"]:
            rest += dev.optimizer_step_s(blk)
            for w in blk.layers:
                t = dev.layer_time_s(w, n, q, "forward") + dev.layer_time_s(w, n, q, "backward")
                if w.kind in ("conv", "linear"):
                    conv += t
                elif w.kind == "quantizer":
                    quant += t
                else:
                    rest += t
        return conv, quant, rest

    def parts(models: dict[str, LayerModel], st: dict) -> tuple[float, float]:
        """(conv/linear time at s = 1, everything else) of one step."""
        conv, quant, rest = parts3(models, st)
        return conv, quant + rest

    def predict(models, st, factors) -> float:
        conv, rest = parts(models, st)
        return conv * (factors.get(st["bits"], 1.0) if st["bits"] < 32 else 1.0) + rest

    fp32 = [st for st in steps if st["bits"] >= 32] or steps
    logs = [math.log(st["seconds"] / predict(layers, st, {})) for st in fp32]
    k = math.exp(sum(logs) / len(logs)) if logs else 1.0
    out = {name: LayerModel(forward=_scaled(v.forward, k), backward=_scaled(v.backward, k)) for name, v in layers.items()}
    own = {(st["model"], st.get("width")): st["seconds"] / predict(out, st, {}) for st in fp32 if st["bits"] >= 32}
    k_quant = _quantizer_factor(out, [st for st in steps if st["bits"] < 32], own, parts3)
    if "quantizer" in out and k_quant != 1.0:
        out["quantizer"] = LayerModel(forward=_scaled(out["quantizer"].forward, k_quant),
                                      backward=_scaled(out["quantizer"].backward, k_quant))
    factors: dict[int, float] = {}
    for q in sorted({st["bits"] for st in steps if st["bits"] < 32}):
        ratios = []
        for st in steps:
            if st["bits"] == q:
                conv, rest = parts(out, st)
                seconds = st["seconds"] / own.get((st["model"], st.get("width")), 1.0)
                ratios.append((seconds - rest) / conv if conv > 0 else 1.0)
        factors[q] = round(min(max(statistics.median(ratios), S_MIN), 4.0), 4)
    rows = []
    for label, group in (("fp32", fp32), ("QAT", [st for st in steps if st["bits"] < 32])):
        errs = sorted(abs(predict(out, st, factors) / st["seconds"] - 1) for st in group)
        if errs:
            rows.append({"kind": "training step", "phase": f"{label} fwd+bwd+step", "calls": len(group),
                         "median_abs_error": statistics.median(errs), "max_abs_error": errs[-1],
                         "flops_per_s": float("nan"), "bytes_per_s": float("nan"), "overhead_s": float("nan"),
                         "scale": k, **({"quantizer_scale": k_quant} if label == "QAT" else {})})
    return out, factors, rows


def model_scales(layers: dict[str, LayerModel], steps: list[dict], evals: list[dict] = ()
                 ) -> dict[str, dict[str, float]]:
    """``calibration.model_scale``: per model (``<model>@<width>``) whose fp32 training step was
    timed, ``train`` = that step's measured seconds ÷ the seconds ``layers`` (after
    :func:`fit_composition`'s shared k) sum it to — forward, backward and the Adam step — and,
    when its validation forward was timed too (:func:`jqodi.runtime.calibration.eval_samples`),
    ``eval`` = that forward's seconds ÷ its layers' forward sum; the median when timed more than
    once. What the one shared k leaves per model: the layers of ResNet20 ×0.25 add up to less of
    its step than LeNet ×1's do of its own, and a validation forward (no autograd graph, batch
    500) composes differently again. The QAT steps do not enter: s(q) and the quantizers' factor
    are fitted on each QAT step after its model's own fp32 ratio (this ``train``), so the scale
    prices a model's QAT steps consistently."""
    from jqodi.core.device_model import DeviceFile, model_scale_key

    dev = DeviceFile(name="x", flops=1e9, busy_power_w=1.0, layers=layers).device()
    ratios: dict[str, dict[str, list[float]]] = {}
    for phase, group, passes in (("train", steps, ("forward", "backward", "step")), ("eval", evals, ("forward",))):
        for st in group:
            if st["bits"] >= 32:
                pred = dev.step_time_s(st["blocks"], st["batch"], 32, passes)
                if pred > 0:
                    key = model_scale_key(st["model"], st["width"])
                    ratios.setdefault(key, {}).setdefault(phase, []).append(st["seconds"] / pred)
    return {k: {ph: round(statistics.median(v), 4) for ph, v in r.items()} for k, r in ratios.items() if "train" in r}


#: Bounds of the QAT fit. QAT on this host does fp32 training's work (the same fp32 conv/linear
#: kernels) plus the fake quantizers': s(q) below 1 would mean a conv ran faster for being
#: fake-quantized, a quantizer factor below 1 that quantizers cost less in a step than alone
#: (after k, which already scales every layer) — what only a fit of noisy steps produces.
S_MIN = 1.0
QUANT_SCALE = (1.0, 8.0)


def _quantizer_factor(models: dict[str, LayerModel], qat: list[dict], own: dict, parts3) -> float:
    """The fake quantizers' factor k_quant of :func:`fit_composition`'s stage 2: bounded least
    squares on relative error of ``seconds / own = s(q)·conv + k_quant·quantizers + rest`` over
    the QAT steps, one s(q) ≥ :data:`S_MIN` per bit-width and k_quant within :data:`QUANT_SCALE`;
    1 when the steps cannot tell the two apart (no more steps than unknowns, or a rank-deficient
    system) or there are no quantizers."""
    import numpy as np
    from scipy.optimize import lsq_linear

    if "quantizer" not in models or not qat:
        return 1.0
    bits = sorted({st["bits"] for st in qat})
    rows, rhs = [], []
    for st in qat:
        conv, quant, rest = parts3(models, st)
        y = st["seconds"] / own.get((st["model"], st.get("width")), 1.0)
        row = [0.0] * (len(bits) + 1)
        row[bits.index(st["bits"])] = conv / y
        row[-1] = quant / y
        rows.append(row)
        rhs.append(1.0 - rest / y)
    a = np.array(rows)
    if len(rows) <= a.shape[1] or np.linalg.matrix_rank(a) < a.shape[1] or not np.any(a[:, -1] > 0):
        return 1.0
    lo = [S_MIN] * len(bits) + [QUANT_SCALE[0]]
    hi = [4.0] * len(bits) + [QUANT_SCALE[1]]
    return round(float(lsq_linear(a, np.array(rhs), bounds=(lo, hi)).x[-1]), 4)
