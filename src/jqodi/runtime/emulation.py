"""Emulating a testbed on one machine: dilated time, padded compute, rate-limited links.

Emulation can only slow a process down. To run devices faster than the host, time is *dilated*:
every speed and rate is divided by ``dilation`` (chosen so the fastest emulated device is slower
than the host), each compute step is padded to the device's time for it × ``dilation``, each send
occupies its link for ``bytes·8 / rate × dilation`` seconds, and measured times are reported
divided back by ``dilation`` beside the raw ones (docs/interfaces.md, "Emulating a testbed").

A device's time for a step is what the planner's cost model says: ``flops / v`` for a device
given by one number (Eq. (7)), or — under the ``extended`` model, for a device file with
per-layer rooflines — :meth:`jqodi.core.device_model.DeviceModel.step_time_s` of the step's
:class:`Step` (which blocks, how many samples, which passes) at the job's bit-width: the same
function the cost model sums over an epoch, so an emulated epoch takes the predicted time.

:class:`ComputeClock` is what a role wraps its compute in: it measures busy time per phase, pads
when emulating, and counts the overrun when the host was too slow to keep up (the dilation is
then too small and the report says so). The energy of an emulated device is billed for the
device's time (``device_s``: the padded target, or the measured time of steps without a FLOP
count), not for the host's overrun.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

from jqodi.core.device_model import DeviceModel
from jqodi.core.devices import Device
from jqodi.core.profile import BlockProfile
from jqodi.runtime.job import EmulationConfig

__all__ = ["ComputeClock", "Step", "clock_for", "host_flops", "host_split_s", "auto_dilation", "overrun_dilation",
           "charge_idle_outside_windows", "EVAL_PHASES", "OVERRUN_SHARE"]

#: The phases whose steps are eval-mode forwards without an autograd graph — training's
#: validation and a served request — timed at the model's ``calibration.model_scale`` ``eval``
#: factor (:meth:`DeviceModel.step_time_s` ``validation``); every other phase at its ``train`` factor.
EVAL_PHASES = ("validation", "infer")


@dataclass(frozen=True)
class Step:
    """One compute step of a role: blocks ``lo:hi`` of the model over ``batch`` samples, running
    ``passes`` (``forward``, ``backward``, ``step`` = the optimizer step over those blocks)."""

    lo: int
    hi: int | None
    batch: int
    passes: tuple[str, ...]


@dataclass
class ComputeClock:
    """Busy time of one role, per phase. ``device`` is None when not emulating.

    ``slowdown`` (optional) returns the device's current compute-time factor (a timeline's
    ``slowdown`` event: 1.5 = the device computes 1.5× slower); it multiplies the padded target.
    """

    device: Device | None = None
    dilation: float = 1.0
    slowdown: Callable[[], float] | None = None
    model: DeviceModel | None = None    # the device's rooflines (extended cost model), else None
    blocks: list[BlockProfile] | None = None  # the job's model, per block (for ``model``)
    bits: int = 32
    busy_s: dict[str, float] = field(default_factory=dict)     # wall time incl. padding
    compute_s: dict[str, float] = field(default_factory=dict)  # the host's own compute time
    flops: dict[str, float] = field(default_factory=dict)
    device_s: dict[str, float] = field(default_factory=dict)   # what the device would take (dilated)
    overrun_s: float = 0.0

    def for_serving(self, dilation: float) -> "ComputeClock":
        """A fresh clock of the same device for serving after training: its own dilation, no
        timeline slowdown, and the frozen served model's work (no per-request weight quantizers:
        :func:`jqodi.core.serving.served_blocks`), each request's forward at the served model's
        ``calibration.model_scale`` ``eval`` factor (an ``infer`` step is an eval-mode forward,
        :data:`EVAL_PHASES`), as the planner prices a request."""
        from jqodi.core.serving import served_blocks

        return ComputeClock(self.device, dilation, model=self.model,
                            blocks=served_blocks(self.blocks) if self.blocks is not None else None, bits=self.bits)

    def rooflines(self) -> dict:
        """The device model this clock times steps by (``model``, ``blocks``, ``bits``), to build another clock of it."""
        return {"model": self.model, "blocks": self.blocks, "bits": self.bits}

    def device_time_s(self, flops: float = 0.0, step: Step | None = None, phase: str = "train") -> float | None:
        """The emulated device's (undilated) time for a step: its rooflines' time for ``step``
        when it has them, else ``flops / v``; None when neither applies (the host's time counts)."""
        if self.model is not None and self.blocks is not None and step is not None:
            return self.model.step_time_s(self.blocks[step.lo:step.hi], step.batch, self.bits, step.passes,
                                          validation=phase in EVAL_PHASES)
        if self.device is not None and flops > 0:
            return flops / self.device.flops
        return None

    @contextmanager
    def compute(self, phase: str, flops: float = 0.0, step: Step | None = None):
        """Time the body; when emulating, pad it to the device's time × dilation (× slowdown)."""
        t0 = time.perf_counter()
        yield
        spent = time.perf_counter() - t0
        device = spent
        own = self.device_time_s(flops, step, phase) if self.device is not None else None
        if own is not None:
            target = device = own * self.dilation * (self.slowdown() if self.slowdown else 1.0)
            if spent < target:
                _sleep_until(t0 + target)
            else:
                self.overrun_s += spent - target
        total = time.perf_counter() - t0
        self.device_s[phase] = self.device_s.get(phase, 0.0) + device
        self.busy_s[phase] = self.busy_s.get(phase, 0.0) + total
        self.compute_s[phase] = self.compute_s.get(phase, 0.0) + spent
        self.flops[phase] = self.flops.get(phase, 0.0) + flops

    def take(self) -> dict:
        """This epoch's figures (then reset): busy seconds per phase, overrun."""
        out = {"busy_s": dict(self.busy_s), "compute_s": dict(self.compute_s), "flops": dict(self.flops),
               "device_s": dict(self.device_s), "overrun_s": self.overrun_s}
        self.busy_s.clear()
        self.device_s.clear()
        self.compute_s.clear()
        self.flops.clear()
        self.overrun_s = 0.0
        return out


def _sleep_until(t_end: float) -> None:
    while True:
        left = t_end - time.perf_counter()
        if left <= 0:
            return
        time.sleep(left if left > 0.002 else 0)


def charge_idle_outside_windows(nodes: list[dict], epoch_s: float, dilation: float) -> None:
    """Charge each node's idle power for the part of the epoch outside its meter window.

    A node's meter window covers its share of an epoch (the SD's from the shallow part's arrival
    to its report, the ES's from the model's arrival to its report); the node is up the whole
    epoch, waiting before and after. ``epoch_s`` is the epoch's wall time (the cloud's), each
    report's ``window_s`` its window's; a report with ``idle_power_w`` (its meter charges idle)
    gains idle power × (epoch − window) / dilation in ``idle_j`` and ``energy_j``. In all, a node's
    idle energy is then P^idle × (t(k) − its busy time): the ``extended`` model's
    ``end_idle_j``/``edge_idle_j``/``cloud_idle_j``, measured."""
    for n in nodes:
        if n.get("idle_power_w") is None:
            continue
        extra = float(n["idle_power_w"]) * max(0.0, epoch_s - float(n["window_s"])) / dilation
        n["idle_j"] = n.get("idle_j", 0.0) + extra
        n["energy_j"] += extra


def clock_for(role: str, emulation: EmulationConfig | None, enabled: bool, job=None) -> ComputeClock:
    """The clock of ``role``: not emulating → it only measures; emulating → it pads to the
    role's device, by its rooflines when the job carries them (and ``job`` is given)."""
    if emulation is None or not enabled:
        return ComputeClock()
    device = emulation.devices.get(role)
    spec = emulation.rooflines.get(role)
    if device is None or spec is None or job is None:
        return ComputeClock(device, emulation.dilation)
    from jqodi.core.device_model import device_from_dict
    from jqodi.core.profile import profile_named_model

    prof = profile_named_model(job.model, tuple(job.input_shape), job.num_classes, job.width)
    return ComputeClock(device, emulation.dilation, model=device_from_dict(spec).for_model(job.model, job.width),
                        blocks=list(prof.blocks),
                        bits=int(job.bits))


def host_flops(model, batch_size: int = 32, repeats: int = 3, clock=time.perf_counter) -> float:
    """The host's training speed on ``model`` (FLOP/s of forward+backward, 3× forward FLOPs),
    timed by ``clock`` (default the wall clock; :func:`time.thread_time` gives the speed of one
    core whatever the host's load, torch running on this one thread)."""
    import torch
    import torch.nn.functional as F

    from jqodi.core.profile import profile_model

    prof = profile_model(model)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the role processes run one thread each (JQODI_THREADS)
    x = torch.randn(batch_size, *model.input_shape)
    y = torch.randint(0, model.num_classes, (batch_size,))
    model.train()
    best = float("inf")
    for _ in range(repeats + 1):
        t0 = clock()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        best = min(best, clock() - t0)
    model.zero_grad(set_to_none=True)
    torch.set_num_threads(threads)
    return 3.0 * prof.flops * batch_size / best


def host_split_s(model, cut: int, batch_size: int = 32, repeats: int = 5, clock=time.perf_counter,
                 train_config=None) -> tuple[float, float]:
    """The host's own time for one training batch of ``model``'s shallow part (blocks 1..``cut``, the
    end device's) and of its deep part (the edge's, from the cut's activations, with the gradient at
    the cut as the edge returns it): forward, backward and the optimizer step (``train_config``'s,
    default :class:`jqodi.core.train_config.TrainConfig`: what the roles build every epoch), on one
    thread, timed by ``clock``; the median of ``repeats`` batches after one warm-up.

    Measured per part rather than as the parts' share of the model's FLOPs: the first blocks work
    on the largest feature maps and take more host time per FLOP. The median, not the best: the
    overrun this feeds (:func:`overrun_dilation`) is a sum over every batch of an epoch, which a
    shared host does not all run at its best."""
    import statistics

    import torch

    from jqodi.core.training import make_optimizer

    threads = torch.get_num_threads()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        torch.set_num_threads(1)  # the role processes run one thread each (JQODI_THREADS)
        shallow, deep = model.split(cut)
        opt_s, opt_d = make_optimizer(shallow, train_config), make_optimizer(deep, train_config)
        x = torch.randn(batch_size, *model.input_shape)
        y = torch.randint(0, model.num_classes, (batch_size,))
        model.train()
        times: list[tuple[float, float]] = []
        for _ in range(repeats + 1):
            t0 = clock()
            act = shallow(x)
            t1 = clock()
            a = act.detach().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(deep(a), y)
            loss.backward()
            t2 = clock()
            act.backward(a.grad)
            t3 = clock()
            opt_d.step()
            t4 = clock()
            opt_s.step()
            t5 = clock()
            times.append(((t1 - t0) + (t3 - t2) + (t5 - t4), (t2 - t1) + (t4 - t3)))
            opt_s.zero_grad(set_to_none=True)
            opt_d.zero_grad(set_to_none=True)
    finally:  # the steps changed the weights: the caller's model and thread count are left as they were
        model.load_state_dict(state)
        torch.set_num_threads(threads)
    return statistics.median(t[0] for t in times[1:]), statistics.median(t[1] for t in times[1:])


def auto_dilation(host_epoch_s: float, predicted_epoch_s: float, margin: float = 4.0) -> float:
    """The epoch rule of the automatic dilation: ``margin`` × the host's own compute time for an
    epoch / the predicted epoch time (≥ 1).

    docs/interfaces.md asks for the fastest device to be slower than the host; with a GPU edge server on a
    2-core VM that means dilations of several hundred (an emulated 1-second epoch would take
    minutes). We dilate for the epoch instead: the host then keeps up with every step whose
    device is slower than ``margin`` × the host; steps of faster devices (the deep part on a GPU
    edge) run over their padded time and the overrun is reported. This rule alone does not bound
    that overrun: at cut 1 the edge runs nearly the whole model, and its overrun was +20 … +50 % of
    the epoch (docs/runtime.md); :func:`overrun_dilation` bounds it, and the automatic dilation is
    the larger of the two (:func:`jqodi.runtime.plan.plan_dilation`).
    """
    if host_epoch_s <= 0 or predicted_epoch_s <= 0:
        return 1.0
    return max(1.0, margin * host_epoch_s / predicted_epoch_s)


#: The share of a predicted epoch the host's expected overrun may take at the automatic dilation
#: (:func:`overrun_dilation`): a third of the ≤ 15 % time-prediction target docs/runtime.md holds
#: the runtime to, leaving the rest to what the overrun estimate does not see (per-message
#: overhead, a host slower than when it was timed).
OVERRUN_SHARE = 0.05


def overrun_dilation(parts, predicted_epoch_s: float, share: float = OVERRUN_SHARE) -> float:
    """The smallest dilation D ≥ 1 at which the host's expected overrun in an epoch is at most
    ``share`` of the dilated predicted epoch: Σ_r max(0, h_r − d_r·D) ≤ share · T · D.

    ``parts``: one ``(h_r, d_r)`` per role that computes in the epoch — the host's own (undilated)
    compute time for that role's share of the epoch and the emulated device's predicted time for
    it; ``T`` = ``predicted_epoch_s``. A role whose device is slower than the host at D (h_r ≤
    d_r·D) is padded and does not overrun; a faster one (the deep part on a GPU edge) runs
    h_r − d_r·D over its padded time, and that lands on the epoch, since the roles take turns
    within a batch. The left side falls and the right side grows with D, so the bound is found by
    bisection (to 0.1 %)."""
    parts = [(float(h), float(d)) for h, d in parts if h > 0]
    if not parts or predicted_epoch_s <= 0 or share <= 0:
        return 1.0

    def over(dil: float) -> float:
        return sum(max(0.0, h - d * dil) for h, d in parts) - share * predicted_epoch_s * dil

    lo = 1.0
    if over(lo) <= 0:
        return lo
    hi = sum(h for h, _ in parts) / (share * predicted_epoch_s)  # the overrun is ≤ Σ h_r = share·T·hi there
    while hi / lo > 1.001:
        mid = (lo * hi) ** 0.5
        lo, hi = (lo, mid) if over(mid) <= 0 else (mid, hi)
    return hi
