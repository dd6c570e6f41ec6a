"""The cloud server (CS) of Section III-B: keeps the full-precision master, sends it packed each
epoch (Eq. (1)), folds the returned updates back in (:func:`jqodi.core.codec.apply_update`),
checkpoints, records the epoch in the trace store, and drives the epochs with the injected controller.
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from jqodi.core.codec import packed_to_tensor, update_from_tensor
from jqodi.core.devices import edge_role
from jqodi.runtime.emulation import charge_idle_outside_windows
from jqodi.runtime.messages import checked_update
from jqodi.runtime.roles.base import RoleContext, _Role
from jqodi.runtime.tracing import RunTraces

__all__ = ["CloudState", "CloudRole"]


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
        charge_idle_outside_windows(rec["nodes"], wall, self.dilation)
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
