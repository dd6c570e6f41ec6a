"""The three roles of the paper's Section III-B: cloud (CS), edge (ES) and end device (SD).

A role only decides what to compute and what to send; a :class:`~jqodi.runtime.transport.Transport`
moves the tensors, so the same code runs as separate processes over gloo or as threads of one
process. One epoch (docs/interfaces.md, "Runtime protocol"), for the epoch's (edge, cut) of the schedule:

    CS → ES   ``model``        the master packed at q bits, as shallow + deep payloads (Eq. (1))
    ES → SD   ``shallow``      the shallow payload, forwarded as received (Eq. (2))
    SD → ES   ``act``          per batch: cut-layer activations (codes + scale) and labels
    ES → SD   ``grad``         per batch: the gradient at the cut
    SD → ES   ``val_act``      validation activations and labels, in order
    SD → ES   ``shallow_back`` the SD's update of its part (and its measurements)
    ES → CS   ``progress``     now and then: batch, running loss (also a sign of life)
    ES → CS   ``model_back``   both parts' updates, the losses, every node's measurements

The CS folds the update into its full-precision master (:func:`jqodi.core.codec.apply_update`),
checkpoints, and records the epoch in the job's trace store (:mod:`jqodi.runtime.tracing`). Raw
images never leave the SD: it sends only activations, labels and its part. After the last epoch
the same roles serve collaborative inference (:mod:`jqodi.runtime.serving`).

The primitives are the reference's (:mod:`jqodi.core.training`): the same seeded batch order, a fresh
per-role optimizer over the role's part (per-parameter, so SD + ES = one optimizer over the
model), the same pack/unpack round trip. Hence split training equals
:func:`jqodi.learning.reference.protocol_epoch` within float tolerance when the cut-layer traffic is fp32.
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from jqodi.core.devices import edge_role
from jqodi.runtime.control import edge_assignments, end_assignments
from jqodi.runtime.emulation import ComputeClock, Step
from jqodi.runtime.job import Job
from jqodi.runtime.tracing import RunTraces
from jqodi.runtime.transport import Transport
from jqodi.runtime.messages import checked_cut, checked_labels, checked_update
from jqodi.core.codec import (encode_cut, packed_from_tensor, packed_to_tensor,
                                update_from_tensor, update_to_tensor)

__all__ = ["RoleContext", "CloudRole", "EdgeRole", "EndRole", "build_worker", "block_flops"]


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


def skip_shallow_draws(generator: torch.Generator, shallow) -> None:
    """Advance ``generator`` past the stochastic-rounding draws of the shallow part's weights.

    The reference packs the whole model with one generator, shallow weights first; the SD packs
    its part from the seed, so the ES continues the stream where the SD's part ends and both
    together draw exactly the reference's random numbers.
    """
    from jqodi.core.quant import quant_layers

    keys = {f"{n}.weight" if n else "weight" for n, _ in quant_layers(shallow)}
    for key, t in shallow.state_dict().items():
        if key in keys:
            torch.rand(t.shape, generator=generator, dtype=t.dtype)


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
        return {"node": self.t.me, "busy_s": clock["busy_s"], "compute_s": clock["compute_s"],
                "flops": clock["flops"], "overrun_s": clock["overrun_s"], "send_s": dict(self.phase_s),
                "energy_j": m.energy_j, "meter": m.meter, "bytes": sent, "cut": dict(self.cut)}


# --- end device ------------------------------------------------------------------------------------

class EndRole(_Role):
    """The SD: owns the private data, trains the shallow part, sends only activations + labels."""

    def __init__(self, ctx: RoleContext, data=None):
        super().__init__(ctx)
        if data is None:
            from jqodi.core.data import end_device_data

            d = self.job.data
            data = end_device_data(d.name, d.dataset, d.data_dir, d.train_size, d.val_size, d.seed)
        self.data = data
        self.model = build_worker(self.job)
        self.f = block_flops(self.model)
        warm_up(self.model, self.job)

    def run(self) -> None:
        from jqodi.core.quant import unpack_model
        from jqodi.core.codec import pack_update
        from jqodi.core.training import epoch_batch_order, make_optimizer

        job, tr = self.job, self.job.training
        cfg = tr.train_config()
        x_all, y_all = self.data.train.tensors
        xv, yv = self.data.val.tensors
        self.t.send("cloud", "ready", train_size=len(y_all), val_size=len(yv))  # sizes: for the trace store
        for k, edge, cut in end_assignments(self):  # the cloud says which epoch runs where, then done
            peer = edge_role(edge)
            msg = self.t.recv(peer, "shallow")
            self.begin_epoch(k)
            shallow = self.model.shallow(cut)
            f = sum(self.f[:cut])
            sent = checked_update(lambda: packed_from_tensor(msg.tensors["model"], shallow, job.bits), msg, "model")
            unpack_model(shallow, sent)
            opt = make_optimizer(shallow, cfg)
            batches = epoch_batch_order(len(y_all), cfg.batch_size, tr.seed, k + 1)
            shallow.train()
            for i, idx in enumerate(batches):
                x, y = x_all[idx], y_all[idx]
                opt.zero_grad(set_to_none=True)
                with self.ctx.clock.compute("train", f * len(idx), Step(0, cut, len(idx), ("forward",))):
                    a = shallow(x)
                self.send_cut(peer, "act", a, tr.wire_act_bits, {"y": y}, i=i, n=len(batches))
                g = checked_cut(self.t.recv(peer, "grad"), self.t.limits, shape=tuple(a.shape))
                with self.ctx.clock.compute("train", 2 * f * len(idx), Step(0, cut, len(idx), ("backward", "step"))):
                    a.backward(g.view_as(a))
                    opt.step()
            shallow.eval()
            with torch.no_grad():
                n_val = len(yv)
                for s in range(0, n_val, cfg.eval_batch_size):
                    xb = xv[s:s + cfg.eval_batch_size]
                    with self.ctx.clock.compute("validation", f * len(xb), Step(0, cut, len(xb), ("forward",))):
                        a = shallow(xb)
                    last = s + cfg.eval_batch_size >= n_val
                    self.send_cut(peer, "val_act", a, tr.wire_act_bits, {"y": yv[s:s + cfg.eval_batch_size]},
                                  last=last)
            shallow.train()
            g_rng = torch.Generator().manual_seed(int(tr.seed) * 1_000_003 + k + 1 + 99)
            upd = pack_update(shallow, sent, cfg.return_mode, generator=g_rng)
            report = self.end_epoch(k)
            self.send("end_to_edge", peer, "shallow_back", {"update": update_to_tensor(upd)}, report=report)
            # the return trip's own duration cannot ride in the message it times: a trailer does
            self.t.send(peer, "trailer", send_s={"end_to_edge": self.phase_s["end_to_edge"]}, bytes=self.sent_bytes())
        if job.inference_requests > 0:
            self.serve_inference()

    def serve_inference(self) -> None:
        """Serve the inference requests with each edge and alone (:func:`jqodi.runtime.serving.serve_end`)."""
        from jqodi.runtime.serving import serve_end

        serve_end(self)


# --- edge server -------------------------------------------------------------------------------------

class EdgeRole(_Role):
    """An ES: relays the shallow part, trains the deep part, computes the loss and its gradient."""

    def __init__(self, ctx: RoleContext, name: str):
        super().__init__(ctx)
        self.edge_name = name
        self.model = build_worker(self.job)
        self.f = block_flops(self.model)
        warm_up(self.model, self.job)

    def run(self) -> None:
        from jqodi.core.quant import unpack_model
        from jqodi.core.codec import pack_update
        from jqodi.core.training import make_optimizer

        job, tr = self.job, self.job.training
        cfg = tr.train_config()
        last_progress = 0.0
        self.t.send("cloud", "ready", pid=os.getpid())  # the emulation stops this process when the edge leaves
        for k, cut, msg in edge_assignments(self):  # this edge's epochs, as the cloud assigns them
            self.begin_epoch(k)
            deep = self.model.deep(cut)
            f = sum(self.f[cut:])
            sent = checked_update(lambda: packed_from_tensor(msg.tensors["deep"], deep, job.bits), msg, "deep")
            unpack_model(deep, sent)
            self.send("edge_to_end", "end", "shallow", {"model": msg.tensors["shallow"]}, epoch=k, cut=cut)
            opt = make_optimizer(deep, cfg)
            deep.train()
            total, count = 0.0, 0
            while True:
                m = self.t.recv("end", "act")
                a = checked_cut(m, self.t.limits, cut).requires_grad_(True)
                y = checked_labels(m, self.t.limits, len(a))
                with self.ctx.clock.compute("train", 3 * f * len(y), Step(cut, None, len(y), ("forward", "backward"))):
                    opt.zero_grad(set_to_none=True)
                    loss = F.cross_entropy(deep(a), y)
                    loss.backward()
                self.send_cut("end", "grad", a.grad, tr.wire_grad_bits)
                with self.ctx.clock.compute("train", step=Step(cut, None, len(y), ("step",))):
                    opt.step()
                total += float(loss.detach()) * len(y)
                count += len(y)
                i, n = m.meta["i"], m.meta["n"]
                now = time.monotonic()
                if now - last_progress >= job.progress_every_s or i + 1 == n:
                    last_progress = now
                    self.t.send("cloud", "progress", epoch=k, batch=i + 1, batches=n, loss=total / count)
                if i + 1 == n:
                    break
            deep.eval()
            losses, correct = [], []
            with torch.no_grad():
                while True:
                    m = self.t.recv("end", "val_act")
                    a = checked_cut(m, self.t.limits, cut)
                    y = checked_labels(m, self.t.limits, len(a))
                    with self.ctx.clock.compute("validation", f * len(y), Step(cut, None, len(y), ("forward",))):
                        out = deep(a)
                    losses.append(F.cross_entropy(out, y, reduction="none"))
                    correct.append(out.argmax(1) == y)
                    if m.meta["last"]:
                        break
            deep.train()
            back = self.t.recv("end", "shallow_back")
            end_report = back.meta["report"]
            trailer = self.t.recv("end", "trailer").meta
            end_report["send_s"].update(trailer["send_s"])
            end_report["bytes"] = trailer["bytes"]
            g_rng = torch.Generator().manual_seed(int(tr.seed) * 1_000_003 + k + 1 + 99)
            if cfg.return_mode == "stochastic":
                skip_shallow_draws(g_rng, self.model.shallow(cut))
            upd = pack_update(deep, sent, cfg.return_mode, generator=g_rng)
            report = self.end_epoch(k)
            metrics = {"epoch": k, "edge": self.edge_name, "cut": cut, "train_loss": total / max(1, count),
                       "val_loss": float(torch.cat(losses).mean()),
                       "val_accuracy": float(torch.cat(correct).float().mean()),
                       "nodes": [end_report, report],
                       "bytes_from_end": back.nbytes}
            self.send("edge_to_cloud", "cloud", "model_back",
                      {"shallow": back.tensors["update"], "deep": update_to_tensor(upd)}, **metrics)
            self.t.send("cloud", "trailer", send_s={"edge_to_cloud": self.phase_s["edge_to_cloud"]},
                        bytes=self.sent_bytes())
        if job.inference_requests > 0:
            self.serve_inference()

    def serve_inference(self) -> None:
        """Relay the model to the SD, then serve its requests' deep part (:func:`jqodi.runtime.serving.serve_edge`)."""
        from jqodi.runtime.serving import serve_edge

        serve_edge(self)


# --- cloud server ------------------------------------------------------------------------------------

@dataclass
class CloudState:
    """The master and the epoch counter: what a checkpoint holds."""

    master: torch.nn.Module
    epoch: int = 0                                   # epochs completed
    epochs: list[dict] = field(default_factory=list)  # their measurements
    inference: list[dict] = field(default_factory=list)  # collaborative-inference results, if served
    elapsed_s: float = 0.0          # testbed seconds of fine-tuning so far (the timeline's clock)
    best: dict | None = None        # {"epoch", "val_loss", "state"}: the best model so far (served at the end)
    observations: list[dict] = field(default_factory=list)  # what the controller was told, epoch by epoch
    control: dict = field(default_factory=dict)  # the run's end: status, reason, re-plans (controller summary)


class CloudRole(_Role):
    """The CS: keeps the full-precision master, sends it packed each epoch, folds updates back in.

    The cloud drives the epochs (:class:`jqodi.runtime.control.EpochDriver`): it tells the end
    device where each epoch runs (``epoch``), sends the edge its model, and after the epoch asks
    the injected ``controller`` (if any) what to run next; ``done`` ends the other roles' loops.
    It keeps the best model (lowest validation loss), which inference serves.
    """

    def __init__(self, ctx: RoleContext, state: CloudState,
                 on_epoch: Callable[[dict], None] | None = None,
                 on_progress: Callable[[dict], None] | None = None,
                 checkpoint: Callable[[CloudState], None] | None = None,
                 controller=None):
        super().__init__(ctx)
        self.state = state
        self.on_epoch = on_epoch
        self.on_progress = on_progress
        self.checkpoint = checkpoint
        self.controller = controller
        self.params = sum(p.numel() for p in state.master.parameters())
        emu = self.job.emulation
        self.dilation = emu.dilation if emu is not None and emu.enabled else 1.0
        self.origin = 0.0

    def now_s(self) -> float:
        """Testbed seconds since fine-tuning started (the run's clock, continued on resume)."""
        return (time.time() - self.origin) / self.dilation

    def run(self) -> CloudState:
        from jqodi.runtime.control import EpochDriver, expand_schedule

        job = self.job
        update_flops = job.cloud_update_flops if job.cloud_update_flops is not None else 10.0 * self.params
        plan = job.epoch_plan()[self.state.epoch:]
        ready = {peer: self.t.recv(peer, "ready").meta for peer in self.t.peers}
        traces = RunTraces.open(job, ready.get("end", {}).get("train_size"), ready.get("end", {}).get("val_size"),
                                self.ctx.log)
        # every role has loaded its data and warmed up: time starts now (where a resumed run left it;
        # a run that paused for an absent edge resumes when the timeline brings one back)
        tl = self.ctx.timeline
        if self.state.control.get("status") == "paused" and tl is not None:
            back = [at for at, _, up in tl.edge_events(self.state.elapsed_s, math.inf) if up]
            if back:
                self.ctx.log(f"cloud: resuming at t = {back[0]:g} s, when edge {tl.edge_events(0, back[0])[-1][1]} "
                             f"is back")
                self.state.elapsed_s = back[0]
        self.origin = time.time() - self.state.elapsed_s * self.dilation
        if self.ctx.timeline is not None:
            self.ctx.timeline.start(self.origin)
        pids = self._pids = {p: m.get("pid") for p, m in ready.items()}
        if self.controller is not None and self.state.observations:
            self.controller.restore(self.state.observations)
        away = tl.timeline.edges_down(self.state.elapsed_s) if tl is not None else set()
        driver = EpochDriver(plan, controller=self.controller, timeline=tl, say=self.ctx.log,
                             stop_edge=lambda e, away: self._stop_edge(pids.get(edge_role(e)), away),
                             elapsed_s=self.state.elapsed_s, away=away)
        for e in away:  # a resumed run starts with the edges that are away now stopped
            self._stop_edge(pids.get(edge_role(e)), True)
            if self.controller is not None:
                self.controller.on_event("edge_leaves", e, self.state.elapsed_s)
        if self.controller is not None:  # its schedule: the plan in its order, or what is left of it on resume
            driver.plan = expand_schedule(self.controller.schedule) if not self.controller.stopped else []
        try:
            while True:
                if job.max_epochs is not None and self.state.epoch >= job.max_epochs:
                    driver.reason = driver.reason or f"--max-epochs {job.max_epochs} reached"
                    break
                nxt = driver.next(self.now_s())
                if nxt is None:
                    break
                self._epoch(self.state.epoch, *nxt, update_flops, len(plan))
                if traces is not None:
                    traces.epoch(self.state.epochs[-1])
                driver.after_epoch(self._observation(self.state.epochs[-1]))
            self._finish(driver)
            if job.inference_requests > 0 and self.state.epochs:
                self.serve_inference(self.state.epochs[-1]["cut"])
                if traces is not None:
                    traces.inference(self.state.inference)
        finally:
            for e in list(driver.away):  # whatever happens next, no edge process stays stopped
                self._stop_edge(pids.get(edge_role(e)), False)
            if traces is not None:
                traces.close()
        return self.state

    def _finish(self, driver) -> None:
        """The epochs are over: record how and why, release the other roles' epoch loops."""
        for e in list(driver.away):  # the other roles leave their loops: a stopped edge must run to do so
            self._stop_edge(self._pids.get(edge_role(e)), False)
        driver.away.clear()
        self.state.control = {"status": driver.status, "reason": driver.reason, "replans": driver.replans,
                              **({"controller": self.controller.summary()} if self.controller is not None else {})}
        best = self.state.best
        if best is not None:
            self.state.control["best"] = {"epoch": best["epoch"], "val_loss": best["val_loss"]}
        for peer in self.t.peers:
            self.t.send(peer, "done")
        if self.checkpoint:
            self.checkpoint(self.state)

    def _epoch(self, k: int, edge: str, cut: int, update_flops: float, planned: int) -> None:
        from jqodi.core.quant import pack_model
        from jqodi.core.codec import apply_update

        job, master = self.job, self.state.master
        peer = edge_role(edge)
        t_start = time.perf_counter()
        self.begin_epoch(k)
        self.t.send("end", "epoch", epoch=k, edge=edge, cut=cut, origin=self.origin)
        shallow_m, deep_m = master.shallow(cut), master.deep(cut)
        with self.ctx.clock.compute("update", update_flops / 2):
            sent_s, sent_d = pack_model(shallow_m, job.bits), pack_model(deep_m, job.bits)
        self.send("cloud_to_edge", peer, "model",
                  {"shallow": packed_to_tensor(sent_s), "deep": packed_to_tensor(sent_d)}, epoch=k, cut=cut,
                  origin=self.origin)
        while True:
            m = self.t.recv(peer, ("progress", "model_back"))
            if m.kind == "progress":
                if self.on_progress:
                    self.on_progress({**m.meta, "edge": edge, "cut": cut, "epochs": planned})
                continue
            break
        with self.ctx.clock.compute("update", update_flops / 2):
            mode = job.training.train_config().return_mode
            # both parts are decoded (and checked) before either touches the master
            upd_s = checked_update(lambda: update_from_tensor(m.tensors["shallow"], shallow_m, job.bits, mode),
                                   m, "shallow")
            upd_d = checked_update(lambda: update_from_tensor(m.tensors["deep"], deep_m, job.bits, mode),
                                   m, "deep")
            apply_update(shallow_m, upd_s, sent_s)
            apply_update(deep_m, upd_d, sent_d)
        wall = time.perf_counter() - t_start
        report = self.end_epoch(k)
        nodes = list(m.meta["nodes"])
        trailer = self.t.recv(peer, "trailer").meta
        nodes[-1]["send_s"].update(trailer["send_s"])
        nodes[-1]["bytes"] = trailer["bytes"]
        rec = {key: m.meta[key] for key in ("epoch", "edge", "cut", "train_loss", "val_loss", "val_accuracy")}
        rec["wall_s"] = wall
        rec["nodes"] = [report] + nodes
        rec["bytes_sent"] = {"model": sent_s.nbytes + sent_d.nbytes}
        self.state.epoch = k + 1
        self.state.elapsed_s = self.now_s()
        self.state.epochs.append(rec)
        if self.state.best is None or rec["val_loss"] < self.state.best["val_loss"]:
            self.state.best = {"epoch": k + 1, "val_loss": rec["val_loss"],
                               "state": copy.deepcopy(master.state_dict())}
        if self.checkpoint:
            self.checkpoint(self.state)
        if self.on_epoch:
            self.on_epoch(rec)

    def _observation(self, rec: dict) -> dict:
        """What the controller hears of an epoch (testbed seconds, measured phases)."""
        from jqodi.runtime.record import measure_epoch

        emu = self.job.emulation
        eps = {k: v.energy_per_bit_j for k, v in emu.links.items()} if emu is not None else {}
        m = measure_epoch(rec, self.dilation, eps)
        obs = {"epoch": rec["epoch"] + 1, "edge": rec["edge"], "cut": rec["cut"], "val_loss": rec["val_loss"],
               "time_s": m["time_s"], "elapsed_s": self.state.elapsed_s, "energy_j": m["energy_j"],
               "phases_s": m["phases_s"], "model": self.job.model, "bits": self.job.bits}
        self.state.observations.append(obs)
        return obs

    def _stop_edge(self, pid, away: bool) -> None:
        """Stop (SIGSTOP) or continue (SIGCONT) an edge's process: the emulation of its leaving and
        coming back. Only another process (over threads, the edge is only marked away)."""
        import signal

        if not pid or pid == os.getpid():
            return
        try:
            os.kill(int(pid), signal.SIGSTOP if away else signal.SIGCONT)
        except (ProcessLookupError, PermissionError):
            pass

    def served_model(self):
        """The model inference serves: the best one seen (lowest validation loss), else the master.
        The master itself stays the last epoch's (a resumed run continues from it)."""
        best = self.state.best
        if best is None or best["epoch"] == self.state.epoch:
            return self.state.master
        model = copy.deepcopy(self.state.master)
        model.load_state_dict(best["state"])
        self.ctx.log(f"cloud: serving the best model, epoch {best['epoch']} (val loss {best['val_loss']:.4f})")
        return model

    def serve_inference(self, cut: int) -> None:
        """Send the fine-tuned model to every edge, collect the SD's results (:func:`jqodi.runtime.serving.serve_cloud`)."""
        from jqodi.runtime.serving import serve_cloud

        serve_cloud(self, cut)
