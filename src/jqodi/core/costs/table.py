"""The per-epoch time and energy of Section III-B/C, Eq. (1)–(10), as cost tables over (bits, cut, edge).

For a model M_a quantized to π_q bits (M_(a,q)), cut after block j, deep part on ES_x:

* Eq. (1)  D^{c→e}     = Σ_{i=1..n} g^i      bytes CS → ES (and Eq. (1) again ES → CS)
* Eq. (2)  D^{e→d}_j   = Σ_{i=1..j} g^i      bytes ES → SD (and again SD → ES)
* Eq. (3)  D^{ed}_j    = Σ_{i=1..j} d^i      FLOPs on the SD
* Eq. (4)  D^{es}_j    = Σ_{i=j+1..n} d^i    FLOPs on the ES
* Eq. (5)  t = τ^run + τ^tran;  Eq. (6)  e = ε^run + ε^tran
* Eq. (7)  τ^run = D^{ed}/v_y + D^{es}/v_x + F_a/v_c      (end, edge, cloud update)
* Eq. (8)  ε^run = D^{ed}·ε_y + D^{es}·ε_x + F_a·ε_c
* Eq. (9)  τ^tran = 2·(D^{c→e}/v_(c,x) + D^{e→d}/v_(x,y))
* Eq. (10) ε^tran = 2·(D^{c→e}·ε_(c,x) + D^{e→d}·ε_(x,y))

Where the paper leaves a quantity open we use (docs/interfaces.md):

* d^i = N_train·3·f_i + N_val·f_i, f_i the forward FLOPs of block i for one sample
  (:mod:`jqodi.core.profile`): training ≈ forward + 2× for backward, then one validation pass.
* A device's compute speed-up for a bit-width s(q) (default 1) divides both its time and its
  energy (same busy power for a shorter time).
* F_a, the CS's per-epoch work, is folding the returned model into the fp32 master and
  re-quantizing it: ``cloud.update_flops_per_param`` × parameters of M_a. (Table I calls F_a
  "the computation burden of M_a"; we read it as the CS's share of an epoch, not the model's
  forward FLOPs, which the SD and ES already pay for in Eq. (3)–(4).)
* Eq. (7)'s first line also lists τ_a (quantization), but its formula has no such term; we
  charge quantization once per candidate (τ_(a,q), ε_(a,q) below), as Problem (13)
  (E = ε_(a,q) + Σ e(i)) and Eq. (15.2) (τ_(a,q) + Σ t(k) < T_max) do.
* The one-off quantization τ_(a,q), ε_(a,q) is ``cloud.quantize_flops_per_param`` × parameters
  of CS work (0 for 32 bits), at the CS's v_c and ε_c.
* Bytes travel as bits: a transfer of D bytes takes 8·D / rate seconds and 8·D·ε joules.

``extended`` mode, for an end device or edge server given by a device file
(:mod:`jqodi.core.device_model`), replaces Eq. (7)–(8)'s D/v and D·ε by the device's per-layer
rooflines (forward and backward per training batch, forward per validation batch, s(q) on
conv/linear, fake quantizers below 32 bits) and busy power × that time. With
``idle_energy: true`` it also charges each node's idle power for the part of t(k) it waits
(``end_idle_j``, ``edge_idle_j``, ``cloud_idle_j``; time is unchanged). ``paper`` mode is
Eq. (1)–(10) exactly, using a device file's ``flops``, ``busy_power_w / flops`` and 1/s(q).

``extended`` mode adds, over the wireless link, what split learning really sends each epoch:
the cut-layer activations of every training sample (SD → ES), their gradients (ES → SD), and
the activations of every validation sample: ``a_j · (N_train·(b_act + b_grad) + N_val·b_act)``
bits with a_j the elements crossing cut j (``training.act_bits``/``grad_bits``).

Infeasible combinations get ``time_s = energy_j = inf`` and a ``reason`` (the individual terms
keep their computed values, so a table still shows what the option would have cost): an edge
server that is unavailable or whose link is down, a cut out of range, or a part that does not
fit its device's memory. Training memory of a part is estimated as 4 × its fp32 parameter
bytes (weights, gradients, momentum, quantized copy) + batch_size × 2 × its fp32 activation
bytes (every leaf output kept for backward, and its gradient); the CS holds the fp32 master
and one quantized copy (2 × fp32 bytes).

The cost types are in :mod:`jqodi.core.costs.epoch`, the extended model's device terms in
:mod:`jqodi.core.costs.extended`.
"""
from __future__ import annotations

import numpy as np

from jqodi.errors import ScenarioError
from jqodi.core.costs.epoch import TERMS, CostTable, EpochCost
from jqodi.core.costs.extended import idle_energy_terms, roofline_compute
from jqodi.core.profile import ModelProfile
from jqodi.core.scenario import Scenario
from jqodi.core.system import System

__all__ = ["cost_table", "epoch_costs", "quantization_cost", "scenario_profiles", "training_memory_bytes"]

GIB = 2**30


def training_memory_bytes(profile: ModelProfile, first: int, last: int, batch_size: int) -> float:
    """Memory to train blocks ``first..last`` (1-based, inclusive); see the module docstring."""
    blocks = profile.blocks[first - 1:last]
    params = sum(b.params for b in blocks)
    acts = sum(b.act_elements_internal for b in blocks)
    return 4.0 * 4 * params + batch_size * 2 * 4.0 * acts


def quantization_cost(scenario: Scenario, profile: ModelProfile, bits: int) -> tuple[float, float]:
    """τ_(a,q), ε_(a,q): the CS quantizing M_a to ``bits`` once (0, 0 for 32 bits)."""
    if bits >= 32:
        return 0.0, 0.0
    work = scenario.cloud.quantize_flops_per_param * profile.params
    return work / scenario.cloud.speed_flops, work * scenario.cloud.joules_per_flop


def _profile_entry(scenario: Scenario, model: str) -> ModelProfile:
    """Profile one candidate of the scenario (needs torch); a model that cannot be built for the
    scenario's data is a scenario problem, named by its field path."""
    from jqodi.errors import ModelError
    from jqodi.core.profile import profile_named_model

    entry = scenario.model_entry(model)
    try:
        return profile_named_model(model, scenario.data.input_shape, scenario.data.num_classes, entry.width)
    except ModelError as e:
        i = [m.name for m in scenario.models].index(model)
        raise ScenarioError(f"models[{i}] ({model}, with data.input_shape and data.num_classes): {e}") from e


def scenario_profiles(scenario: Scenario) -> dict[str, ModelProfile]:
    """Profile every candidate model of the scenario at its input shape and width (needs torch)."""
    return {m.name: _profile_entry(scenario, m.name) for m in scenario.models}


def cost_table(scenario: Scenario, model: str, profile: ModelProfile | None = None,
               system: System | None = None, cost_model: str | None = None) -> CostTable:
    """Eq. (1)–(10) for every (bits, cut, edge) of ``model``, vectorised with numpy.

    ``profile`` defaults to profiling the zoo model (needs torch); pass one to avoid that.
    ``cost_model`` overrides the scenario's (``paper`` or ``extended``).
    """
    mode = cost_model or scenario.cost_model
    if mode not in ("paper", "extended"):
        raise ScenarioError(f"cost_model: must be 'paper' or 'extended', got {mode!r}")
    scenario.model_entry(model)  # an unknown model is a ScenarioError
    if profile is None:
        profile = _profile_entry(scenario, model)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # extreme inputs give inf
        return _cost_table(scenario, model, profile, system or System.from_scenario(scenario), mode)


def _cost_table(scenario: Scenario, model: str, profile: ModelProfile, system: System, mode: str) -> CostTable:
    bits = scenario.all_bits
    cuts = profile.cuts
    n_train, n_val = scenario.data.train_size, scenario.data.val_size
    B, J, X = len(bits), len(cuts), len(system.edges)
    shape = (B, J, X)

    f = np.array([b.flops for b in profile.blocks], dtype=float)          # f_i
    d = (3.0 * n_train + n_val) * f                                          # d^i
    cum_d = np.cumsum(d)
    d_end = cum_d[:-1]                                                       # Eq. (3), shape (J,)
    d_edge = cum_d[-1] - d_end                                               # Eq. (4)
    g = np.array([[blk.bytes_at(q) for blk in profile.blocks] for q in bits], dtype=float)  # (B, n)
    bytes_ce = g.sum(axis=1)                                                 # Eq. (1), (B,)
    bytes_ed = np.cumsum(g, axis=1)[:, :-1]                                  # Eq. (2), (B, J)

    end, cloud = system.end, system.cloud
    s_end = np.array([end.speedup(q) for q in bits])                         # (B,)
    s_edge = np.array([[e.speedup(q) for e in system.edges] for q in bits])  # (B, X)
    v_x = np.array([e.flops for e in system.edges])
    eps_x = np.array([e.joules_per_flop for e in system.edges])

    time: dict[str, np.ndarray] = {}
    energy: dict[str, np.ndarray] = {}
    # Eq. (7)-(8): computation
    time["end_compute"] = np.broadcast_to((d_end[None, :] / (end.flops * s_end[:, None]))[:, :, None], shape)
    energy["end_compute"] = np.broadcast_to((d_end[None, :] * end.joules_per_flop / s_end[:, None])[:, :, None], shape)
    time["edge_compute"] = d_edge[None, :, None] / (v_x[None, None, :] * s_edge[:, None, :])
    energy["edge_compute"] = d_edge[None, :, None] * eps_x[None, None, :] / s_edge[:, None, :]
    if mode == "extended":  # device files: per-layer rooflines, s(q), busy power (module docstring)
        roofline_compute(scenario, profile, system, bits, time, energy, shape)
    f_a = scenario.cloud.update_flops_per_param * profile.params            # F_a (CS work)
    time["cloud_update"] = np.full(shape, f_a / cloud.flops)
    energy["cloud_update"] = np.full(shape, f_a * cloud.joules_per_flop)
    # Eq. (9)-(10): transfers (bytes → bits)
    ce_s = 8 * bytes_ce[:, None] / system.cloud_edge_rate_bps[None, :]      # (B, X)
    ce_j = 8 * bytes_ce[:, None] * system.cloud_edge_j_per_bit[None, :]
    time["cloud_to_edge"] = np.broadcast_to(ce_s[:, None, :], shape)
    energy["cloud_to_edge"] = np.broadcast_to(ce_j[:, None, :], shape)
    time["edge_to_cloud"] = time["cloud_to_edge"]
    energy["edge_to_cloud"] = energy["cloud_to_edge"]
    time["edge_to_end"] = 8 * bytes_ed[:, :, None] / system.edge_end_rate_bps[None, None, :]
    energy["edge_to_end"] = 8 * bytes_ed[:, :, None] * system.edge_end_j_per_bit[None, None, :]
    time["end_to_edge"] = time["edge_to_end"]
    energy["end_to_edge"] = energy["edge_to_end"]
    # extended: cut-layer activations forward, gradients backward, validation activations
    if mode == "extended":
        tr = scenario.training
        act = np.array([profile.act_elements(j) for j in cuts], dtype=float)          # (J,)
        b_act = np.array([tr.wire_bits(tr.act_bits, q) for q in bits], dtype=float)    # (B,)
        b_grad = np.array([tr.wire_bits(tr.grad_bits, q) for q in bits], dtype=float)
        bits_ep = act[None, :] * (n_train * (b_act + b_grad) + n_val * b_act)[:, None]  # (B, J)
        time["activations"] = bits_ep[:, :, None] / system.edge_end_rate_bps[None, None, :]
        energy["activations"] = bits_ep[:, :, None] * system.edge_end_j_per_bit[None, None, :]
    else:
        time["activations"] = np.zeros(shape)
        energy["activations"] = np.zeros(shape)

    time = {k: np.ascontiguousarray(np.broadcast_to(v, shape), dtype=float) for k, v in time.items()}
    energy = {k: np.ascontiguousarray(np.broadcast_to(v, shape), dtype=float) for k, v in energy.items()}
    total_t = sum(time[t] for t in TERMS)
    total_e = sum(energy[t] for t in TERMS)
    idle: dict[str, np.ndarray] = {}
    if mode == "extended" and scenario.idle_energy:
        idle = idle_energy_terms(system, time, total_t)
        total_e = total_e + sum(idle.values())

    # feasibility: first reason wins
    reasons = np.full(shape, None, dtype=object)
    batch = scenario.training.batch_size
    cloud_need = 2 * 4.0 * profile.params
    if cloud_need > cloud.memory_bytes:
        reasons[...] = (f"cloud memory: the fp32 master and its quantized copy need "
                        f"{cloud_need / GIB:.2f} GiB > {cloud.memory_bytes / GIB:.2f} GiB on {cloud.name}")
    for x, why in enumerate(system.edge_down_reason):
        if why:
            _fill(reasons[:, :, x], why)
    n = profile.num_blocks
    for jj, j in enumerate(cuts):
        need_end = training_memory_bytes(profile, 1, j, batch)
        if need_end > end.memory_bytes:
            _fill(reasons[:, jj, :], f"end device memory: blocks 1..{j} need {need_end / GIB:.2f} GiB "
                                     f"> {end.memory_bytes / GIB:.2f} GiB on {end.name}")
        need_edge = training_memory_bytes(profile, j + 1, n, batch)
        for x, e in enumerate(system.edges):
            if need_edge > e.memory_bytes:
                _fill(reasons[:, jj, x], f"edge memory: blocks {j + 1}..{n} need {need_edge / GIB:.2f} GiB "
                                         f"> {e.memory_bytes / GIB:.2f} GiB on {e.name}")
    bad = np.vectorize(lambda r: r is not None, otypes=[bool])(reasons) if reasons.size else np.zeros(shape, bool)
    total_t = np.where(bad, np.inf, total_t)
    total_e = np.where(bad, np.inf, total_e)

    qcost = [quantization_cost(scenario, profile, q) for q in bits]
    return CostTable(model, mode, bits, cuts, system.edge_names, time, energy, total_t, total_e, reasons,
                     np.array([c[0] for c in qcost]), np.array([c[1] for c in qcost]), profile, idle)


def _fill(view: np.ndarray, reason: str) -> None:
    """Set ``reason`` where no earlier reason is recorded (first reason wins)."""
    for idx in np.ndindex(view.shape):
        if view[idx] is None:
            view[idx] = reason


def epoch_costs(scenario: Scenario, model: str, bits: int, cut: int, edge: str,
                profile: ModelProfile | None = None, cost_model: str | None = None) -> EpochCost:
    """Every term of Eq. (1)–(10) for one epoch of ``model`` at ``bits``, cut ``cut``, on ``edge``."""
    return cost_table(scenario, model, profile, cost_model=cost_model).epoch(bits, cut, edge)
