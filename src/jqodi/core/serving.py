"""Serving: the time and energy of one inference request, and the serving configuration.

The paper's objective is the energy of the whole learning-inference process (§V-C 3–4): after
fine-tuning, the model serves requests, and a candidate (model a, bits q) whose one request
is too slow (the Full Model on a Raspberry Pi: 18 s) is of no use however cheap its training.
This module prices one request with the *same* device and link models as the training epochs
(:mod:`jqodi.core.costs`, one sample, forward only), in the scenario's cost model:

* ``paper``: Eq. (3)–(8) for one sample. With f_i the forward FLOPs of block i and F_a their
  sum, ``end-only`` (the whole model on the end device SD_y) costs
  t = F_a / (v_y·s_y(q)),  e = F_a·ε_y / s_y(q);
  ``split`` at cut j on edge ES_x runs blocks 1..j on the SD, sends the cut-layer activation
  over the wireless link (a_j elements at the ``training.act_bits`` wire precision), runs
  blocks j+1..n on the ES, and sends the answer (``num_classes`` fp32 scores) back:
  t = f_{≤j}/(v_y·s_y) + 8·D_act/v_(x,y) + f_{>j}/(v_x·s_x) + 8·D_ans/v_(x,y),
  e = f_{≤j}·ε_y/s_y + 8·D_act·ε_(x,y) + f_{>j}·ε_x/s_x + 8·D_ans·ε_(x,y)
      + P^idle_y · (the time the SD waits for the link and the ES), when the SD's
  ``idle_power_w`` is given (None = busy energy only, as the paper counts).
* ``extended``: a node given by a device file (:class:`~jqodi.core.device_model.DeviceModel`)
  computes its share in the time training's validation forward of one sample takes on it —
  the same function, :func:`jqodi.core.costs.extended.forward_time_s` (per-layer rooflines
  ``max(flops/F, bytes/B) + overhead``, s(q) on conv/linear, fake quantizers below 32 bits) —
  at busy power × that time, *less the weights' fake quantizers*: the served model is frozen at
  load (:func:`jqodi.runtime.inference.freeze_for_serving` quantizes each weight once), so a
  request runs only the inputs' quantizers (:func:`served_blocks`); a node given by one throughput keeps f/(v·s), f·ε/s as training
  does. The link terms are the paper's. Idle power counts as in training: only with
  ``idle_energy: true``, each node of the request (the SD; the ES in split mode) draws
  P^idle × (request time − its own compute time).

A configuration is infeasible (cost ``inf`` + ``reason``) when its part does not fit its
device's memory (inference memory: the part's weights at q bits + 4 bytes per element of its
largest activation set for one sample), the edge is unavailable or its wireless link down.

The model is deterministic, so the predicted p95 latency of a request equals its predicted
latency; the bound ``serving.latency_slo_s`` is checked against it. The serving configuration
is chosen separately from the fine-tuning schedule (:func:`choose_serving`): the least energy
per request among the allowed modes whose latency meets the bound (ties: the faster).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from jqodi.core.costs.extended import forward_time_s, idle_power_w
from jqodi.core.profile import BlockProfile, ModelProfile
from jqodi.core.scenario import SERVING_MODES, Scenario
from jqodi.core.system import System

__all__ = ["RequestCost", "request_costs", "choose_serving", "inference_memory_bytes", "served_blocks", "ANSWER_BITS"]

#: Bits per element of the answer the edge returns in split mode (fp32 class scores).
ANSWER_BITS = 32


@dataclass(frozen=True)
class RequestCost:
    """One request of (model, bits) served in ``mode`` (``edge``/``cut`` for ``split``).

    Seconds and joules; ``request_time_s``/``request_energy_j`` are the totals, ``inf`` with a
    ``reason`` when the configuration is infeasible.
    """

    model: str
    bits: int
    mode: str
    edge: str | None
    cut: int | None
    end_compute_s: float
    end_compute_j: float
    link_s: float
    link_j: float
    edge_compute_s: float
    edge_compute_j: float
    end_idle_j: float
    request_time_s: float
    request_energy_j: float
    reason: str | None = None
    edge_idle_j: float = 0.0    # extended + idle_energy: the ES waiting for the SD and the link

    @property
    def feasible(self) -> bool:
        return self.reason is None and math.isfinite(self.request_time_s)

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in self.__dict__.items()}


def served_blocks(blocks) -> list[BlockProfile]:
    """The blocks as the frozen served model runs them for each request: every layer's work but
    the weights' fake quantizers (``quantizer`` work with ``batched = False``), which the server
    runs once at load, not per request. The emulation pads a request to these blocks' time too."""
    return [dataclasses.replace(b, layers=tuple(w for w in b.layers if w.kind != "quantizer" or w.batched))
            for b in blocks]


def inference_memory_bytes(profile: ModelProfile, first: int, last: int, bits: int) -> float:
    """Memory to serve blocks ``first..last`` (1-based, inclusive) at ``bits``: their weights
    (g^i at q bits) + fp32 activations of every leaf for one sample."""
    blocks = profile.blocks[first - 1:last]
    return float(sum(b.bytes_at(bits) for b in blocks) + 4 * sum(b.act_elements_internal for b in blocks))


def request_costs(scenario: Scenario, profile: ModelProfile, bits: int, system: System | None = None,
                  modes: tuple[str, ...] | list[str] | None = None, cost_model: str | None = None
                  ) -> list[RequestCost]:
    """Every serving configuration of ``profile`` at ``bits``: ``end-only`` and ``split`` at each
    (cut, edge), restricted to ``modes`` (default: the scenario's ``serving.devices``, or both).
    ``cost_model`` overrides the scenario's (``paper`` or ``extended``, as for the epochs)."""
    system = system or System.from_scenario(scenario)
    if modes is None:
        modes = scenario.serving.devices if scenario.serving is not None else SERVING_MODES
    extended = (cost_model or scenario.cost_model) == "extended"
    idle = extended and scenario.idle_energy   # extended: idle power as training charges it
    end = system.end
    end_cost = _forward_cost(end, profile, bits, extended)
    n = profile.num_blocks
    out: list[RequestCost] = []
    if "end-only" in modes:
        t, e = end_cost(0, n)
        need = inference_memory_bytes(profile, 1, n, bits)
        reason = None
        if need > end.memory_bytes:
            reason = (f"end device memory: the whole model at {bits} bits needs {need / 2**30:.2f} GiB "
                      f"> {end.memory_bytes / 2**30:.2f} GiB on {end.name}")
        out.append(_cost(profile.model, bits, "end-only", None, None, t, e, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, reason))
    if "split" in modes:
        wire = scenario.training.wire_bits(scenario.training.act_bits, bits)
        answer_bits = float(profile.num_classes * ANSWER_BITS)
        edge_costs = [_forward_cost(edge, profile, bits, extended) for edge in system.edges]
        for j in profile.cuts:
            bits_up = float(profile.act_elements(j) * wire)
            t_end, e_end = end_cost(0, j)
            need_end = inference_memory_bytes(profile, 1, j, bits)
            need_edge = inference_memory_bytes(profile, j + 1, n, bits)
            for x, edge in enumerate(system.edges):
                rate = float(system.edge_end_rate_bps[x])
                jpb = float(system.edge_end_j_per_bit[x])
                t_link = (bits_up + answer_bits) / rate
                e_link = (bits_up + answer_bits) * jpb
                t_edge, e_edge = edge_costs[x](j, n)
                # paper: the SD's idle power when given; extended: as training, only with idle_energy,
                # each node waiting for the rest of the request
                end_idle = idle_power_w(end) * (t_link + t_edge) if idle or not extended else 0.0
                edge_idle = idle_power_w(edge) * (t_end + t_link) if idle else 0.0
                reason = system.edge_down_reason[x]
                if reason is None and need_end > end.memory_bytes:
                    reason = (f"end device memory: blocks 1..{j} at {bits} bits need {need_end / 2**30:.2f} GiB "
                              f"> {end.memory_bytes / 2**30:.2f} GiB on {end.name}")
                if reason is None and need_edge > edge.memory_bytes:
                    reason = (f"edge memory: blocks {j + 1}..{n} at {bits} bits need "
                              f"{need_edge / 2**30:.2f} GiB > {edge.memory_bytes / 2**30:.2f} GiB on {edge.name}")
                out.append(_cost(profile.model, bits, "split", edge.name, j, t_end, e_end, t_link, e_link,
                                 t_edge, e_edge, end_idle, edge_idle, reason))
    return out


def _forward_cost(dev, profile: ModelProfile, bits: int, extended: bool):
    """``(lo, hi) ↦ (seconds, joules)`` of one sample's forward pass through blocks lo+1..hi on
    ``dev``: under ``extended`` for a device file, training's validation forward
    (:func:`~jqodi.core.costs.extended.forward_time_s`) of the frozen model's work
    (:func:`served_blocks`), × the file's ``calibration.model_scale`` ``eval`` factor for this
    model (:meth:`~jqodi.core.device_model.DeviceModel.for_model`), at busy power; otherwise
    Eq. (7)–(8) for one sample, f/(v·s(q)) and f·ε/s(q)."""
    from jqodi.core.device_model import DeviceModel

    if extended and isinstance(dev, DeviceModel):
        dev = dev.for_model(profile.model, profile.width)
        block_s = [forward_time_s(dev, [b], bits) for b in served_blocks(profile.blocks)]

        def roofline(lo: int, hi: int) -> tuple[float, float]:
            t = math.fsum(block_s[lo:hi])
            return t, t * dev.busy_power_w
        return roofline
    f = [float(b.flops) for b in profile.blocks]
    s = dev.speedup(bits)

    def per_flop(lo: int, hi: int) -> tuple[float, float]:
        work = math.fsum(f[lo:hi])
        return work / (dev.flops * s), work * dev.joules_per_flop / s
    return per_flop


def _cost(model, bits, mode, edge, cut, t_end, e_end, t_link, e_link, t_edge, e_edge, end_idle, edge_idle,
          reason) -> RequestCost:
    t = t_end + t_link + t_edge
    e = e_end + e_link + e_edge + end_idle + edge_idle
    if reason is not None or not (math.isfinite(t) and math.isfinite(e)):
        reason = reason or "non-finite cost"
        t = e = math.inf
    return RequestCost(model, bits, mode, edge, cut, t_end, e_end, t_link, e_link, t_edge, e_edge, end_idle,
                       t, e, reason, edge_idle)


def choose_serving(costs: list[RequestCost], latency_slo_s: float) -> RequestCost | None:
    """The serving configuration: least energy per request among the feasible ``costs`` whose
    latency (= predicted p95) is within ``latency_slo_s``; ties go to the faster. None if none."""
    ok = [c for c in costs if c.feasible and c.request_time_s <= latency_slo_s * (1 + 1e-9)]
    if not ok:
        return None
    return min(ok, key=lambda c: (c.request_energy_j, c.request_time_s))


def candidate_serving(scenario: Scenario, profile: ModelProfile, bits: int, system: System | None = None,
                      cost_model: str | None = None):
    """The contract's per-candidate ``serving`` entry (:class:`~jqodi.core.instance.CandidateServing`)
    for (``profile``'s model, ``bits``) under the scenario's ``serving`` block and cost model."""
    from jqodi.core.instance import CandidateServing

    spec = scenario.serving
    if spec is None:
        raise ValueError("the scenario has no 'serving' block")
    costs = request_costs(scenario, profile, bits, system, cost_model=cost_model)
    feasible = [c for c in costs if c.feasible]
    fastest = min((c.request_time_s for c in feasible), default=None)
    best = choose_serving(costs, spec.latency_slo_s)
    if best is None:
        if fastest is None:
            why = "; ".join(dict.fromkeys(c.reason or "" for c in costs)) or "no serving mode allowed"
            reason = f"no feasible serving configuration: {why}"
        else:
            reason = (f"the fastest request takes {fastest:.4g} s > latency_slo_s {spec.latency_slo_s:g} s")
        return CandidateServing(None, fastest_request_time_s=fastest, reason=reason)
    return CandidateServing(best.mode, best.request_time_s, best.request_energy_j, best.edge, best.cut,
                            fastest_request_time_s=fastest)


def check_serving_bound(scenario: Scenario, candidates) -> None:
    """A bound no candidate meets is a scenario problem: one line naming
    ``serving.latency_slo_s`` and the smallest bound that some candidate meets."""
    from jqodi.errors import ScenarioError

    spec = scenario.serving
    if spec is None or not candidates or any(c.serving is not None and c.serving.feasible for c in candidates):
        return
    times = [c.serving.fastest_request_time_s for c in candidates
             if c.serving is not None and c.serving.fastest_request_time_s is not None]
    if not times:
        raise ScenarioError(f"serving.devices: no candidate can serve a request in any allowed mode "
                            f"({', '.join(spec.devices)}): {candidates[0].serving.reason}")
    raise ScenarioError(f"serving.latency_slo_s: no candidate serves a request within {spec.latency_slo_s:g} s; "
                        f"the smallest bound some candidate meets is {min(times):.6g} s")
