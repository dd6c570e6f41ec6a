"""What the three roles share: :class:`RoleContext` (the job, its transport, compute clock and
energy meter), the worker model the edge and end roles build (QAT-prepared at the job's bits,
warmed up), the blocks' forward FLOPs (the cost model's f_i), and ``_Role``: one epoch's bookkeeping on a node
(time spent sending per phase, cut-layer traffic, the energy meter's window, bytes per link).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from jqodi.core.codec import encode_cut
from jqodi.runtime.emulation import ComputeClock
from jqodi.runtime.job import Job
from jqodi.runtime.transport import Transport

__all__ = ["RoleContext", "build_worker", "warm_up", "block_flops"]


@dataclass
class RoleContext:
    """What reaches a role: the job, its transport, its compute clock and energy meter."""

    job: Job
    transport: Transport
    clock: ComputeClock
    meter: object  # jqodi.runtime.energy.EnergyMeter
    log: Callable[[str], None] = lambda s: None
    timeline: object = None  # jqodi.runtime.control.EmulatedTimeline when the emulation follows one

    @property
    def name(self) -> str:
        return self.transport.me


def build_worker(job: Job):
    """The job's model, QAT-prepared at its bits (weights come from the cloud)."""
    from jqodi.core.quant import prepare_qat
    from jqodi.core.zoo import build_model

    model = build_model(job.model, job.input_shape, job.num_classes, job.width, seed=0)
    return prepare_qat(model, job.bits, job.training.act_bits)


def warm_up(model, job: Job) -> None:
    """One forward/backward on a copy, so the first timed epoch does not pay for lazy kernel set-up."""
    from jqodi.core.training import make_optimizer

    cfg = job.training.train_config()
    m = copy.deepcopy(model).train()
    opt = make_optimizer(m, cfg)  # the first one imports half of torch.optim
    x = torch.zeros(min(cfg.batch_size, 64), *job.input_shape)
    F.cross_entropy(m(x), torch.zeros(len(x), dtype=torch.long)).backward()
    opt.step()
    with torch.no_grad():  # and the validation batch shape
        m.eval()(torch.zeros(min(cfg.eval_batch_size, 500), *job.input_shape))


def block_flops(model) -> list[float]:
    """Forward FLOPs of each block for one sample (the cost model's f_i)."""
    from jqodi.core.profile import profile_model

    return [float(b.flops) for b in profile_model(model).blocks]


class _Role:
    def __init__(self, ctx: RoleContext):
        self.ctx = ctx
        self.job = ctx.job
        self.t = ctx.transport
        self.phase_s: dict[str, float] = {}
        self.cut = {"elements": 0, "bytes": 0}

    def prepare_worker(self) -> None:
        """Build the job's worker model (:func:`build_worker`), its blocks' FLOPs, and warm it up."""
        self.model = build_worker(self.job)
        self.f = block_flops(self.model)
        warm_up(self.model, self.job)

    def send_cut(self, dst: str, kind: str, x: torch.Tensor, bits: int, extra=None, **meta) -> int:
        """Send a cut-layer tensor (activations or gradients) at ``bits``; counts fp32-equivalent size."""
        n = self.send("activations", dst, kind, {**encode_cut(x, bits), **(extra or {})}, **meta)
        self.cut["elements"] += x.numel()
        self.cut["bytes"] += n
        return n

    def send(self, phase: str, dst: str, kind: str, tensors=None, **meta) -> int:
        t0 = time.perf_counter()
        n = self.t.send(dst, kind, tensors, **meta)
        self.phase_s[phase] = self.phase_s.get(phase, 0.0) + time.perf_counter() - t0
        return n

    def begin_epoch(self, k: int) -> None:
        self.phase_s = {}
        self.cut = {"elements": 0, "bytes": 0}
        self.ctx.clock.take()
        self._bytes0 = {p: st.bytes for p, st in self.t.sent.items()}
        self.ctx.meter.begin_window(f"epoch{k}")

    def sent_bytes(self) -> dict[str, int]:
        """Bytes this node sent per link since the epoch began."""
        return {f"{self.t.me}->{p}": st.bytes - self._bytes0.get(p, 0) for p, st in self.t.sent.items()}

    def end_epoch(self, k: int) -> dict:
        """This node's measurements for epoch ``k``."""
        clock = self.ctx.clock.take()
        # emulated: the device's busy time (padded targets), in undilated seconds; else the host's
        busy = sum(clock["device_s"].values()) / self.ctx.clock.dilation if self.ctx.clock.device is not None \
            else sum(clock["compute_s"].values())
        m = self.ctx.meter.end_window(f"epoch{k}", busy_s=busy)
        sent = self.sent_bytes()
        report = {"node": self.t.me, "busy_s": clock["busy_s"], "compute_s": clock["compute_s"],
                  "flops": clock["flops"], "overrun_s": clock["overrun_s"], "send_s": dict(self.phase_s),
                  "energy_j": m.energy_j, "idle_j": m.idle_j, "meter": m.meter, "bytes": sent, "cut": dict(self.cut)}
        idle_w = getattr(self.ctx.meter, "idle_power_w", None)
        if idle_w is not None:  # the cloud charges the rest of the epoch, outside this window, at it
            report.update(idle_power_w=idle_w, window_s=m.time_s)
        return report

