"""The ``extended`` cost model's device terms: per-layer rooflines and idle energy.

For an end device or edge server given by a device file (:mod:`jqodi.core.device_model`), the
extended model replaces Eq. (7)–(8)'s D/v and D·ε by the device's per-layer rooflines (forward and
backward per training batch, forward per validation batch, s(q) on conv/linear, fake quantizers
below 32 bits) and busy power × that time (:func:`roofline_compute`). With ``idle_energy: true`` it
also charges each node's idle power for the part of t(k) it waits (:func:`idle_energy_terms`;
time is unchanged). Used by :func:`jqodi.core.costs.table.cost_table`; :func:`waiting_power_w` states
the same rule per term (which nodes wait during which term), for the closed loop's phase table.

Serving prices one request with the same code path (:mod:`jqodi.core.serving`):
:func:`forward_time_s` is training's validation forward for one sample, and
:func:`idle_power_w` the idle power both charge.
"""
from __future__ import annotations

import numpy as np

from jqodi.core.profile import ModelProfile
from jqodi.core.scenario import Scenario
from jqodi.core.system import System

__all__ = ["forward_time_s", "idle_energy_terms", "idle_power_w", "roofline_compute", "waiting_power_w"]


def roofline_compute(scenario: Scenario, profile: ModelProfile, system: System, bits: list[int],
                     time: dict, energy: dict, shape: tuple[int, int, int]) -> None:
    """Extended Eq. (7)–(8) for nodes given by a device file: per-layer roofline time of each
    part (:meth:`DeviceModel.part_time_s`; × the file's ``calibration.model_scale`` entry for
    this model, :meth:`DeviceModel.for_model`), energy = busy power × that time."""
    from jqodi.core.device_model import DeviceModel
    from jqodi.core.train_config import TRAIN_DEFAULTS

    n_train, n_val = scenario.data.train_size, scenario.data.val_size
    batch, eval_batch = scenario.training.batch_size, TRAIN_DEFAULTS.eval_batch_size

    def block_times(dev: DeviceModel) -> np.ndarray:  # (B, n): one epoch of each block
        dev = dev.for_model(profile.model, profile.width)
        return np.array([[dev.block_epoch_time_s(blk, n_train, n_val, batch, eval_batch, q)
                          for blk in profile.blocks] for q in bits])

    if isinstance(system.end, DeviceModel):
        t = np.cumsum(block_times(system.end), axis=1)[:, :-1]                      # blocks 1..j
        time["end_compute"] = np.broadcast_to(t[:, :, None], shape)
        energy["end_compute"] = time["end_compute"] * system.end.busy_power_w
    for x, e in enumerate(system.edges):
        if isinstance(e, DeviceModel):
            bt = block_times(e)
            t = bt.sum(axis=1, keepdims=True) - np.cumsum(bt, axis=1)[:, :-1]      # blocks j+1..n
            time["edge_compute"] = np.array(np.broadcast_to(time["edge_compute"], shape), dtype=float)
            energy["edge_compute"] = np.array(np.broadcast_to(energy["edge_compute"], shape), dtype=float)
            time["edge_compute"][:, :, x] = t
            energy["edge_compute"][:, :, x] = t * e.busy_power_w


def forward_time_s(dev, blocks, bits: int, samples: int = 1) -> float:
    """One forward pass of ``samples`` samples (one batch) through ``blocks`` on device model
    ``dev``, priced as the training epoch prices its validation forward: per-layer rooflines,
    s(q) on conv/linear, fake quantizers below 32 bits (:meth:`DeviceModel.part_time_s` with no
    training sample and ``samples`` validation samples in one batch)."""
    return dev.part_time_s(blocks, 0, samples, samples, samples, bits)


def idle_power_w(dev) -> float:
    """A node's idle power P^idle (0 when its ``idle_power_w`` is not modelled)."""
    return float(dev.idle_power_w or 0.0)


#: The idle rule, stated once: a node is busy only during its own compute term (the end device in
#: ``end_compute``, the epoch's edge server in ``edge_compute``, the cloud in ``cloud_update``) and
#: draws its idle power for the rest of t(k): during every other term (the transfers, the cut-layer
#: traffic, the others' compute) it waits. :func:`idle_energy_terms` and :func:`waiting_power_w`
#: both read it.
_BUSY_NODE = {"end_compute": "end", "edge_compute": "edge", "cloud_update": "cloud"}
_OWN_TERM = {node: term for term, node in _BUSY_NODE.items()}


def _idle_node_w(system: System) -> dict[str, np.ndarray]:
    """Each node's idle power (W) per edge server of the epoch (shape (X,)): the end device, that edge
    server, the cloud (0 for a node without ``idle_power_w``)."""
    edge_w = np.array([idle_power_w(e) for e in system.edges], dtype=float)
    return {"end": np.full_like(edge_w, idle_power_w(system.end)), "edge": edge_w,
            "cloud": np.full_like(edge_w, idle_power_w(system.cloud))}


def idle_energy_terms(system: System, time: dict, total_t: np.ndarray) -> dict[str, np.ndarray]:
    """Idle power × the part of the epoch t(k) each node spends waiting for the others: t(k) less its
    own compute term (:data:`_BUSY_NODE`; extended model with ``idle_energy: true``). The edge
    servers are the last axis of ``time`` and ``total_t``."""
    return {node: w * np.maximum(total_t - time[_OWN_TERM[node]], 0.0) for node, w in _idle_node_w(system).items()}


def waiting_power_w(system: System, terms) -> dict[str, np.ndarray]:
    """The idle power (W) drawn during each term of ``terms``, per edge server (shape (X,)): the
    idle power of every node not busy in it (:data:`_BUSY_NODE`) — the end device, the epoch's edge
    server and the cloud, less the one computing. Σ over terms of term time × this power is
    :func:`idle_energy_terms` summed over the nodes (the part of t(k) each node waits is the
    sum of the terms it does not compute)."""
    node_w = _idle_node_w(system)
    return {t: sum(w for n, w in node_w.items() if n != _BUSY_NODE.get(t)) for t in terms}
