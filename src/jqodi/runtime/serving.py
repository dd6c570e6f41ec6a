"""Collaborative inference served by the training roles after fine-tuning (the paper's Fig. 9/10).

When ``job.inference_requests > 0`` the cloud, edge and end roles (:mod:`jqodi.runtime.roles`) go
on, after their last epoch, to serve that many single-image requests per device combination:

    CS → ES   ``infer_model``   the fine-tuned model packed at q bits (shallow + deep parts)
    ES → SD   ``infer_model``   forwarded as received
    SD → ES   ``infer_start``   the dilation inference runs at and the number of requests
    SD ↔ ES   requests          per request: activations at the cut, logits back
    ES → SD   ``infer_edge``    the edge's energy and meter
    SD → CS   ``infer_report``  every combination's :class:`jqodi.runtime.inference.InferenceResult`

The SD also answers the same requests alone (whole model). The request loops are
:mod:`jqodi.runtime.inference`'s; this module is the roles' side of the exchange.
"""
from __future__ import annotations

import copy

from jqodi.core.codec import packed_from_tensor, packed_to_tensor
from jqodi.core.devices import edge_role
from jqodi.runtime.job import Job
from jqodi.runtime.transport import Transport

__all__ = ["serve_end", "serve_edge", "serve_cloud"]


def _set_link_dilation(t: Transport, job: Job, peer: str, dilation: float) -> None:
    """Inference runs at its own dilation: re-rate the emulated link to ``peer``."""
    emu = job.emulation
    if emu is None or not emu.enabled or peer not in t.link_rate_bps:
        return
    link = emu.link(t.me, peer)
    if link is not None:
        t.link_rate_bps[peer] = link.rate_bps / dilation


def serve_end(role) -> None:
    """Serve ``job.inference_requests`` single-image requests with each edge (shallow part here)
    and alone (whole model here); report the results to the cloud."""
    from jqodi.core.profile import profile_model
    from jqodi.core.quant import unpack_model
    from jqodi.runtime.inference import (freeze_for_serving, inference_dilation, make_result, requests_from_end,
                                         requests_local)

    job = role.job
    xv, yv = role.data.val.tensors
    n = min(job.inference_requests, len(yv))
    xs, ys = xv[:n], yv[:n]
    model = copy.deepcopy(role.model)
    prof = profile_model(model)
    emulated = role.ctx.clock.device is not None
    results, dilation = [], 1.0
    for i, e in enumerate(job.edges):
        peer = edge_role(e)
        m = role.t.recv(peer, "infer_model")
        cut = int(m.meta["cut"])
        if i == 0:
            unpack_model(model.shallow(cut), packed_from_tensor(m.tensors["shallow"], model.shallow(cut), job.bits))
            unpack_model(model.deep(cut), packed_from_tensor(m.tensors["deep"], model.deep(cut), job.bits))
            freeze_for_serving(model.eval())  # the weights quantized once, not per request
            if emulated:
                combos = [(x, cut) for x in job.edges] + [(None, None)]
                dilation = inference_dilation(job, model, role.f, prof, xs, combos)
        role.t.send(peer, "infer_start", dilation=dilation, requests=n)
        _set_link_dilation(role.t, job, peer, dilation)
        clock = role.ctx.clock.for_serving(dilation)
        b0 = role.t.sent[peer].bytes + role.t.received[peer].bytes
        lat, correct, e_end = requests_from_end(role.t, peer, model.shallow(cut), xs, ys, clock, role.ctx.meter,
                                                sum(role.f[:cut]), job.training.wire_act_bits, dilation, cut)
        nbytes = role.t.sent[peer].bytes + role.t.received[peer].bytes - b0
        edge = role.t.recv(peer, "infer_edge").meta
        energy = {"end": e_end, peer: edge["energy_j"]}
        link = job.emulation.link(peer, "end") if job.emulation is not None else None
        if link is not None:
            energy["link"] = 8.0 * nbytes * link.energy_per_bit_j
        results.append(make_result(job, e, cut, lat, correct, energy, nbytes / n, role.f, prof, dilation,
                                   {"end": role.ctx.meter.name, peer: edge["meter"]}).to_dict())
    clock = role.ctx.clock.for_serving(dilation)
    lat, correct, e_end = requests_local(model, xs, ys, clock, role.ctx.meter, sum(role.f), dilation)
    results.append(make_result(job, None, None, lat, correct, {"end": e_end}, 0.0, role.f, prof, dilation,
                               {"end": role.ctx.meter.name}).to_dict())
    role.t.send("cloud", "infer_report", results=results)


def serve_edge(role) -> None:
    """Relay the fine-tuned model to the SD, then run the deep part of its requests."""
    from jqodi.core.quant import unpack_model
    from jqodi.runtime.inference import forward_step, freeze_for_serving, serve_as_edge

    m = role.t.recv("cloud", "infer_model")
    cut = int(m.meta["cut"])
    deep = copy.deepcopy(role.model.deep(cut))  # the served copy; the worker model stays trainable
    unpack_model(deep, packed_from_tensor(m.tensors["deep"], deep, role.job.bits))
    freeze_for_serving(deep.eval())
    role.t.send("end", "infer_model", m.tensors, cut=cut)
    start = role.t.recv("end", "infer_start").meta
    dilation, n = float(start["dilation"]), int(start["requests"])
    _set_link_dilation(role.t, role.job, "end", dilation)
    clock = role.ctx.clock.for_serving(dilation)
    energy = serve_as_edge(role.t, deep, n, clock, role.ctx.meter, sum(role.f[cut:]), dilation, forward_step(cut, None))
    role.t.send("end", "infer_edge", energy_j=energy, meter=role.ctx.meter.name)


def serve_cloud(role, cut: int) -> None:
    """Send the fine-tuned model (q bits) to every edge; the SD reports the inference results."""
    from jqodi.core.quant import pack_model

    master = role.served_model()  # the best model of the run
    payload = {"shallow": packed_to_tensor(pack_model(master.shallow(cut), role.job.bits)),
               "deep": packed_to_tensor(pack_model(master.deep(cut), role.job.bits))}
    for e in role.job.edges:
        role.t.send(edge_role(e), "infer_model", payload, cut=cut)
    role.state.inference = role.t.recv("end", "infer_report").meta["results"]
    if role.checkpoint:
        role.checkpoint(role.state)
