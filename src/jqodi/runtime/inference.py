"""Collaborative inference after fine-tuning (the paper's Fig. 9/10).

Serve ``requests`` single-sample requests from the SD's validation split with the q-bit model:

* **SD + ES** — the SD runs the shallow part and sends the cut-layer activations (codes + scale
  at the activation bit-width) to the ES, which runs the deep part and returns the logits;
* **SD only** — the whole model on the SD.

The two roles run over a :class:`~jqodi.runtime.transport.Transport` (in-process by default;
messages are encoded and rate-limited as on the wire), with the same emulation as training:
each compute step is padded to the device's time × dilation — its rooflines' forward time for the
blocks it runs when the job carries them (the ``extended`` cost model, as
:func:`jqodi.core.serving.request_costs` prices a request), else FLOPs / device speed — and each
send to bytes / link rate × dilation. Reported per device combination: latency p50/p95 (emulated seconds), energy
per request per node (busy power × emulated busy time: the model meter) and the accuracy.
"""
from __future__ import annotations

import copy
import threading
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from jqodi.core.devices import END_ROLE, edge_role, edges_of_roles
from jqodi.runtime.emulation import ComputeClock, Step, clock_for
from jqodi.runtime.job import Job
from jqodi.runtime.transport import InProcessHub, InProcessTransport
from jqodi.core.codec import encode_cut
from jqodi.core.quant import QConv2d, QLinear, quant_layers
from jqodi.runtime.messages import checked_cut

__all__ = ["InferenceResult", "run_inference", "predict_inference", "freeze_for_serving"]


class FrozenQConv2d(QConv2d):
    """A served QConv2d: its fake-quantized weight computed once (``frozen_weight``); the input's
    fake quantizer runs on every request."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.quantized_input(x), self.frozen_weight, self.bias)


class FrozenQLinear(QLinear):
    """A served QLinear: its weight quantized once, its input quantized per request."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quantized_input(x), self.frozen_weight, self.bias)


_FROZEN = {QConv2d: FrozenQConv2d, QLinear: FrozenQLinear}


def freeze_for_serving(model: torch.nn.Module) -> torch.nn.Module:
    """Freeze a fine-tuned QAT model for serving, in place: every fake-quantized layer's weight is
    quantized and dequantized once, now (its ``quantized_weight()``, the values training's forward
    uses), and the layer's forward uses that tensor from then on; the activation quantizers stay.
    The outputs are the same, bit for bit; a request no longer re-runs the weights' fake
    quantizers (docs/serving.md). Call it after the weights are loaded (a later load would not
    reach the frozen copy); a model without fake-quantized layers (32 bits) is returned as is."""
    with torch.no_grad():
        for _, layer in list(quant_layers(model)):
            w = layer.quantized_weight().detach().clone()
            if type(layer) in _FROZEN:
                layer.__class__ = _FROZEN[type(layer)]
                layer.register_buffer("frozen_weight", w, persistent=False)  # checkpoints stay as they were
            elif isinstance(layer, (FrozenQConv2d, FrozenQLinear)):
                layer.frozen_weight = w  # frozen before: again, from the weights it holds now
    return model


@dataclass
class InferenceResult:
    """One device combination: latency percentiles (s), energy per request per node (J)."""

    combo: str
    edge: str | None
    cut: int | None
    requests: int
    latency_p50_s: float
    latency_p95_s: float
    latency_mean_s: float
    energy_per_request_j: dict[str, float]
    accuracy: float
    bytes_per_request: float = 0.0
    predicted_latency_s: float | None = None
    predicted_energy_j: float | None = None
    dilation: float = 1.0
    meters: dict[str, str] = field(default_factory=dict)

    @property
    def energy_j(self) -> float:
        return sum(self.energy_per_request_j.values())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["energy_j"] = self.energy_j
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "InferenceResult":
        import dataclasses

        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    i = min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))
    return s[i]


def _forward_time_s(job: Job, role: str, flops: list[float], blocks, lo: int, hi: int | None) -> float:
    """One request's forward of blocks ``lo:hi`` on ``role``'s emulated device: its rooflines'
    time for the frozen model's work when the job carries them (and the blocks' layers are
    known; :func:`jqodi.core.serving.served_blocks`), at the job model's ``calibration.model_scale``
    ``eval`` factor, as the planner prices it (:func:`jqodi.core.costs.extended.forward_time_s`);
    else FLOPs / v."""
    spec = job.emulation.rooflines.get(role)
    if spec is not None and blocks is not None:
        from jqodi.core.costs.extended import forward_time_s
        from jqodi.core.device_model import device_from_dict
        from jqodi.core.serving import served_blocks

        dev = device_from_dict(spec).for_model(job.model, job.width)
        return forward_time_s(dev, served_blocks(list(blocks)[lo:hi]), int(job.bits))
    return sum(flops[lo:hi]) / job.emulation.devices[role].flops


def predict_inference(job: Job, flops: list[float], act_elements: int | None, edge: str | None, cut: int | None,
                      blocks=None) -> tuple[float, float]:
    """The cost model's figures for one request: (latency s, energy J). ``blocks``: the model's
    block profiles, for devices the job describes by rooflines (as the emulation pads them)."""
    emu = job.emulation
    if emu is None or "end" not in emu.devices:
        return None, None  # type: ignore[return-value]
    end = emu.devices["end"]
    if edge is None:
        t_s = _forward_time_s(job, END_ROLE, flops, blocks, 0, None)
        return t_s, t_s * end.busy_power_w
    peer = edge_role(edge)
    es = emu.devices[peer]
    link = emu.link(peer, END_ROLE)
    t_s = _forward_time_s(job, END_ROLE, flops, blocks, 0, cut)
    t_d = _forward_time_s(job, peer, flops, blocks, cut, None)
    bits = job.training.wire_act_bits
    nbytes = (4 * act_elements if bits >= 32 else (act_elements * bits + 7) // 8 + 4) + 4 * job.num_classes
    t_link = 8 * nbytes / link.rate_bps if link else 0.0
    t = t_s + t_d + t_link
    e = t_s * end.busy_power_w + t_d * es.busy_power_w + (8 * nbytes * link.energy_per_bit_j if link else 0.0)
    # idle power, when the plan charges it (extended + idle_energy), as jqodi.core.serving prices it:
    # the SD waits for the link and the ES, the ES for the SD and the link
    e += (end.idle_power_w or 0.0) * (t_link + t_d) + (es.idle_power_w or 0.0) * (t_s + t_link)
    return t, e


def run_inference(job: Job, master, data, *, requests: int = 50, combos: list[tuple[str | None, int | None]] | None = None,
                  emulate: bool | None = None, dilation: float | None = None,
                  timeout_s: float = 30.0) -> list[InferenceResult]:
    """Serve ``requests`` single-sample requests per combination ``(edge, cut)`` (``(None, None)``
    = SD only). ``master`` is the cloud's model; it is packed at ``job.bits`` and unpacked into
    the devices' copies, as after fine-tuning. ``data`` is the SD's EndDeviceData.

    Emulated requests are far shorter than epochs, so inference picks its own dilation (unless
    given): 2 × the host's time for one request of the whole model / the fastest predicted
    request latency, so the host keeps up with the padded steps of the devices.
    """
    from jqodi.core.profile import profile_model
    from jqodi.core.quant import pack_model, unpack_model
    from jqodi.runtime.roles import build_worker

    emu = job.emulation
    emulate = bool(emu and emu.enabled) if emulate is None else emulate
    model = build_worker(job)
    unpack_model(model, pack_model(master, job.bits))
    freeze_for_serving(model.eval())
    prof = profile_model(model)
    flops = [float(b.flops) for b in prof.blocks]
    if combos is None:
        last_cut = job.epoch_plan()[-1][1]
        edges = edges_of_roles(emu.devices if emu is not None else {})
        combos = [(e, last_cut) for e in (edges or job.edges)] + [(None, None)]
    xv, yv = data.val.tensors
    n = min(requests, len(yv))
    if not emulate or emu is None:
        dilation = 1.0
    elif dilation is None:
        dilation = inference_dilation(job, model, flops, prof, xv[:n], combos)
    results = []
    for edge, cut in combos:
        with torch.no_grad():
            results.append(_serve(job, model, flops, prof, xv[:n], yv[:n], edge, cut, emulate, dilation, timeout_s))
    return results


def _clock(job: Job, role: str, emulate: bool, dilation: float) -> ComputeClock:
    return clock_for(role, job.emulation, emulate, job).for_serving(dilation)


def forward_step(lo: int, hi: int | None) -> Step:
    """One request's compute step: the forward pass of blocks ``lo:hi`` over one sample."""
    return Step(lo, hi, 1, ("forward",))


def serve_as_edge(t, deep, requests: int, clock: ComputeClock, meter, flops_deep: float, dilation: float,
                  step: Step | None = None) -> float:
    """The ES side of ``requests`` requests from the end device over ``t`` (``step``: the deep
    part's forward, for a clock with rooflines); returns its energy (J)."""
    energy = 0.0
    idle = _charges_idle(meter)  # then the ES is up from its last answer to this one: it waits for the SD
    with torch.no_grad():
        for _ in range(requests):
            t0 = time.perf_counter()
            if idle:
                meter.begin_window("req")
            m = t.recv("end", "infer")
            if not idle:
                meter.begin_window("req")
            with clock.compute("infer", flops_deep, step):
                out = deep(checked_cut(m, t.limits))
            busy = sum(clock.take()["device_s"].values()) / dilation
            if not idle:
                energy += meter.end_window("req", busy_s=busy).energy_j
            t.send("end", "logits", {"y": out})
            if idle:
                energy += meter.end_window("req", busy_s=busy, up_s=(time.perf_counter() - t0) / dilation).energy_j
    return energy


def _charges_idle(meter) -> bool:
    """Whether ``meter`` charges idle power (an emulated device whose plan charges it): then a
    request's window spans the node's whole wait, else only its own work (a hardware meter on a
    shared host would also measure the peer's work while this node waits)."""
    return getattr(meter, "idle_power_w", None) is not None


def _requests(xs, ys, clock: ComputeClock, meter, flops: float, dilation: float, compute, answer, send=None,
              step: Step | None = None) -> tuple[list[float], int, float]:
    """One request per sample: ``compute(x)`` runs on the end device (timed by ``clock`` as
    ``flops`` of work, or as ``step`` by its rooflines), ``send(a)`` ships its result (still inside the SD's energy window),
    ``answer(a)`` turns it into logits (the deep part on an edge, or nothing).
    Returns (latencies in emulated s, correct answers, SD energy in J)."""
    latencies, correct, energy = [], 0, 0.0
    idle = _charges_idle(meter)  # then the SD's window spans the whole request: it waits for the answer
    with torch.no_grad():
        for i in range(len(ys)):
            t0 = time.perf_counter()
            meter.begin_window("req")
            with clock.compute("infer", flops, step):
                a = compute(xs[i:i + 1])
            if send is not None:
                send(a)
            busy = sum(clock.take()["device_s"].values()) / dilation
            if not idle:
                energy += meter.end_window("req", busy_s=busy).energy_j
            out = answer(a)
            latencies.append((time.perf_counter() - t0) / dilation)
            if idle:
                energy += meter.end_window("req", busy_s=busy, up_s=latencies[-1]).energy_j
            correct += int(out.argmax(1).item() == ys[i].item())
    return latencies, correct, energy


def requests_from_end(t, peer: str, shallow, xs, ys, clock: ComputeClock, meter, flops_shallow: float,
                      wire_bits: int, dilation: float, cut: int | None = None) -> tuple[list[float], int, float]:
    """The SD side: one request per sample (shallow part, blocks before ``cut``, here; deep part on ``peer``)."""
    return _requests(xs, ys, clock, meter, flops_shallow, dilation, shallow,
                     answer=lambda _: t.recv(peer, "logits").tensors["y"],
                     send=lambda a: t.send(peer, "infer", encode_cut(a, wire_bits)),
                     step=forward_step(0, cut) if cut is not None else None)


def requests_local(model, xs, ys, clock: ComputeClock, meter, flops: float, dilation: float
                   ) -> tuple[list[float], int, float]:
    """SD only: the whole model on the end device."""
    return _requests(xs, ys, clock, meter, flops, dilation, model, lambda out: out, step=forward_step(0, None))


def inference_dilation(job: Job, model, flops: list[float], prof, xs, combos) -> float:
    """2 × the host's time for one request of the whole model / the fastest predicted latency."""
    with torch.no_grad():
        for _ in range(3):
            model(xs[:1])
        times = []
        for i in range(10):
            t0 = time.perf_counter()
            model(xs[i % len(xs):i % len(xs) + 1])
            times.append(time.perf_counter() - t0)
    act = {c: prof.act_elements(c) for _, c in combos if c is not None}
    preds = [predict_inference(job, flops, act.get(c), e, c, prof.blocks)[0] for e, c in combos]
    preds = [p for p in preds if p]
    return max(1.0, 2.0 * sorted(times)[len(times) // 2] / min(preds)) if preds else 1.0


def make_result(job: Job, edge, cut, latencies, correct, energy: dict, nbytes: float, flops, prof,
                dilation: float, meters: dict) -> InferenceResult:
    end_name = job.emulation.devices["end"].name if job.emulation and "end" in job.emulation.devices else "end"
    combo = f"{end_name} only" if edge is None else f"{end_name}+{edge}"
    pt, pe = predict_inference(job, flops, prof.act_elements(cut) if cut else None, edge, cut, prof.blocks)
    n = len(latencies)
    return InferenceResult(combo=combo, edge=edge, cut=cut, requests=n, latency_p50_s=_pct(latencies, 0.5),
                           latency_p95_s=_pct(latencies, 0.95), latency_mean_s=sum(latencies) / n,
                           energy_per_request_j={k: v / n for k, v in energy.items()}, accuracy=correct / n,
                           bytes_per_request=nbytes, predicted_latency_s=pt, predicted_energy_j=pe,
                           dilation=dilation, meters=meters)


def _serve(job, model, flops, prof, xs, ys, edge, cut, emulate, dilation, timeout_s) -> InferenceResult:
    from jqodi.runtime.local import make_meter_for

    end_clock = _clock(job, "end", emulate, dilation)
    end_meter = make_meter_for(job, "end", emulate)
    meters = {"end": end_meter.name}
    if edge is None:
        lat, correct, e_end = requests_local(model, xs, ys, end_clock, end_meter, sum(flops), dilation)
        return make_result(job, None, None, lat, correct, {"end": e_end}, 0.0, flops, prof, dilation, meters)
    peer = edge_role(edge)
    shallow, deep = copy.deepcopy(model.shallow(cut)), copy.deepcopy(model.deep(cut))
    hub = InProcessHub()
    link = job.emulation.link(peer, "end") if job.emulation is not None else None
    rate = link.rate_bps / dilation if (emulate and link is not None) else None
    t_end = InProcessTransport(hub, "end", ["end", peer], timeout_s=timeout_s,
                               link_rate_bps={peer: rate} if rate else None).start()
    t_es = InProcessTransport(hub, peer, ["end", peer], timeout_s=timeout_s,
                              link_rate_bps={"end": rate} if rate else None).start()
    es_meter = make_meter_for(job, peer, emulate)
    meters[peer] = es_meter.name
    out: dict = {}

    def edge_thread():
        try:
            out["edge"] = serve_as_edge(t_es, deep, len(ys), _clock(job, peer, emulate, dilation), es_meter,
                                        sum(flops[cut:]), dilation, forward_step(cut, None))
        except BaseException as e:  # noqa: BLE001
            out["error"] = e

    th = threading.Thread(target=edge_thread, daemon=True)
    th.start()
    try:
        lat, correct, e_end = requests_from_end(t_end, peer, shallow, xs, ys, end_clock, end_meter,
                                                sum(flops[:cut]), job.training.wire_act_bits, dilation, cut)
    finally:
        th.join(timeout=timeout_s)
        for t in (t_end, t_es):
            t._closing.set()
    if "error" in out:
        raise out["error"]
    sent = t_end.sent[peer].bytes + t_es.sent["end"].bytes
    energy = {"end": e_end, peer: out["edge"]}
    if link is not None:
        energy["link"] = 8.0 * sent * link.energy_per_bit_j
    return make_result(job, edge, cut, lat, correct, energy, sent / len(ys), flops, prof, dilation, meters)
