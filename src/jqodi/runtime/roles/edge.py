"""An edge server (ES) of Section III-B: relays the shallow part to the SD, trains the deep part,
computes the loss and the gradient at the cut, and returns both parts' updates to the cloud."""
from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F

from jqodi.core.codec import packed_from_tensor, update_to_tensor
from jqodi.runtime.control import edge_assignments
from jqodi.runtime.messages import checked_cut, checked_labels, checked_update
from jqodi.runtime.roles.base import RoleContext, _Role

__all__ = ["EdgeRole", "skip_shallow_draws"]


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


class EdgeRole(_Role):
    """An ES: relays the shallow part, trains the deep part, computes the loss and its gradient."""

    def __init__(self, ctx: RoleContext, name: str):
        super().__init__(ctx)
        self.edge_name = name
        self.prepare_worker()

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
                with self.ctx.clock.compute("train", 3 * f * len(y)):
                    opt.zero_grad(set_to_none=True)
                    loss = F.cross_entropy(deep(a), y)
                    loss.backward()
                self.send_cut("end", "grad", a.grad, tr.wire_grad_bits)
                with self.ctx.clock.compute("train"):
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
                    with self.ctx.clock.compute("validation", f * len(y)):
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

