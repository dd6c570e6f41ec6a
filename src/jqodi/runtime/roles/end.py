"""The end device (SD) of Section III-B: owns the private data, trains the shallow part and sends
only cut-layer activations and labels (never raw images), then its part's update."""
from __future__ import annotations

import torch

from jqodi.core.codec import packed_from_tensor, update_to_tensor
from jqodi.core.devices import edge_role
from jqodi.runtime.control import end_assignments
from jqodi.runtime.emulation import Step
from jqodi.runtime.messages import checked_cut, checked_update
from jqodi.runtime.roles.base import RoleContext, _Role

__all__ = ["EndRole"]


class EndRole(_Role):
    """The SD: owns the private data, trains the shallow part, sends only activations + labels."""

    def __init__(self, ctx: RoleContext, data=None, data_paths: dict | None = None):
        """``data``: the loaded data (tests); else the job's, or this device's copies ``data_paths``
        (``{"data": PATH, "dataset": PATH}``, ``jqodi end --data/--dataset``), checked against the job
        (:func:`jqodi.runtime.end_data.end_device_data_for_job`)."""
        super().__init__(ctx)
        if data is None:
            from jqodi.runtime.end_data import end_device_data_for_job

            data = end_device_data_for_job(self.job, **(data_paths or {}))
            if data_paths:
                ctx.log(f"end: data: {data.description}: this device's copy of the job's {self.job.data.name}")
        self.data = data
        self.prepare_worker()

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

