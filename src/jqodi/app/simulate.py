"""Closed-loop runs at planner level: a simulated testbed that follows a timeline, and the
hindsight optimum that knows it all in advance. No torch.

:func:`simulate_run` plays one fine-tuning run on a :class:`World` — the phase-resolved
instance (:class:`~jqodi.app.controller.PhaseTable`), a :class:`~jqodi.core.timeline.Timeline`
(link rates following traces, edges leaving and returning, slowdowns) and the *true* learning
curve of every candidate (validation loss per epoch, from real runs) — under a controller
(:class:`~jqodi.app.controller.ClosedLoopController`, policy ``static`` or ``replan``) or open
loop (the plan followed blindly, no early stop: what the runtime did before the closed loop).

An epoch of option (edge, cut) starting at ``t`` runs its terms one after another
(:data:`PHASE_ORDER`): a compute term takes its nominal time × the device's slowdown at the
term's start; a transfer term carries its nominal bits (nominal time × nominal rate) over the
link, whose rate follows its trace (:meth:`Timeline.transfer_s`). Energy of a term = nominal
energy × actual / nominal time (same power for longer); the nominal energy is the term's active
energy plus, where the scenario counts idle energy, that of the nodes waiting during it
(:meth:`PhaseTable.terms`), so the waiting grows with a slow link too. If the epoch's edge
leaves before the epoch ends, the epoch is lost at that moment (its time and energy spent, no
progress) and the controller hears of it at once. Edges coming back are announced at the next epoch boundary.
The controller sees only what happened: measured phases and losses of past epochs, events
that occurred.

:func:`hindsight_optimum` is the best any policy could do knowing the whole timeline and every
candidate's true epochs K in advance: per candidate, a dynamic program over K epochs on a grid
of start times (an option's duration and energy depend on when it starts; idling is allowed;
an epoch overlapping an absence of its edge is not), minimum energy that ends by the deadline.

Waiting *between* epochs (``hindsight`` idling to skip a slow stretch or an absent edge, a
policy paused until an edge returns) costs :func:`wait_power_w` × the wait where the scenario
counts idle energy: the end device and the cloud stay in the run and draw idle power. No edge
is charged: an epoch starts by sending the model down from the cloud and ends by sending it
back (:data:`PHASE_ORDER`), so between epochs no edge holds the job. Every policy and
``hindsight`` are charged alike.
Times are rounded *up* to the grid (``grid`` steps per deadline), so its plans are truly
feasible and it is optimal up to that rounding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from jqodi.app.controller import ClosedLoopController, Decision, Observation, PhaseTable
from jqodi.core.costs import TERMS
from jqodi.core.instance import Solution
from jqodi.core.timeline import Timeline
from jqodi.errors import JqodiError

__all__ = ["World", "EpochOutcome", "RunOutcome", "simulate_epoch", "epoch_grid", "simulate_run",
           "hindsight_optimum", "true_epochs", "wait_power_w", "PHASE_ORDER"]

#: The order of an epoch's terms in time (Section III-B: model down, training, model back, update).
PHASE_ORDER = ("cloud_to_edge", "edge_to_end", "end_compute", "activations", "edge_compute", "end_to_edge",
               "edge_to_cloud", "cloud_update")
_IDX = [TERMS.index(p) for p in PHASE_ORDER]


@dataclass
class World:
    """What really happens: resources over time and each candidate's true validation curve."""

    table: PhaseTable
    timeline: Timeline
    nominal_bps: Mapping[str, float]            # link key -> the scenario's rate (bit/s)
    curves: Mapping[str, Sequence[float]]       # "model@bits" -> val loss after epoch 1, 2, ...


@dataclass(frozen=True)
class EpochOutcome:
    time_s: float
    energy_j: float
    phases_s: dict
    lost_at_s: float | None = None   # the edge left during the epoch at this time


def wait_power_w(table: PhaseTable) -> float:
    """The idle power (W) drawn while a run waits between epochs: the end device's and the
    cloud's, i.e. what waits during an edge's compute term (:meth:`PhaseTable.terms`); 0 where
    the scenario does not count idle energy (the table has no idle powers)."""
    j = TERMS.index("edge_compute")
    powers = {float(w[i, j]) for w in map(np.asarray, table.idle_w.values()) for i in range(len(w))}
    if len(powers) > 1:  # the end's and the cloud's idle power do not depend on the option
        raise JqodiError(f"phase table: the end + cloud idle power differs between options: {sorted(powers)}")
    return powers.pop() if powers else 0.0


def _resource_kind(res: str) -> str:
    return "link" if "|" in res else "device"


def epoch_grid(world: World, key: str, option: int, start_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Duration, energy and the time the edge left (``inf`` if not) of option ``option`` of
    candidate ``key`` for every start time in ``start_s`` (vectorised :func:`simulate_epoch`)."""
    terms = world.table.terms(key, option)
    edge = world.table.cand(key).options[option].edge
    t = np.asarray(start_s, dtype=float).copy()
    energy = np.zeros_like(t)
    for j in _IDX:
        term, res, s, e = terms[j]
        if s <= 0:
            continue
        if _resource_kind(res) == "link":
            nominal = world.nominal_bps.get(res)
            actual = world.timeline.transfer_s(res, s * nominal, t, nominal) if nominal else np.full_like(t, s)
        else:
            actual = s * world.timeline.slowdown_array(res, t)
        energy = energy + e * actual / s
        t = t + actual
    lost = world.timeline.leaves_between(edge, np.asarray(start_s, dtype=float), t)
    return t - start_s, energy, lost


def simulate_epoch(world: World, key: str, option: int, start_s: float) -> EpochOutcome:
    """One epoch of option ``option`` of candidate ``key`` starting at ``start_s``."""
    terms = world.table.terms(key, option)
    edge = world.table.cand(key).options[option].edge
    t, energy, phases = float(start_s), 0.0, {}
    ends = []
    for j in _IDX:
        term, res, s, e = terms[j]
        if s <= 0:
            phases[term] = 0.0
            ends.append((term, t, 0.0))
            continue
        if _resource_kind(res) == "link":
            nominal = world.nominal_bps.get(res)
            actual = float(world.timeline.transfer_s(res, s * nominal, t, nominal)) if nominal else s
        else:
            actual = s * world.timeline.slowdown(res, t)
        phases[term] = actual
        ends.append((term, t, e * actual / s))
        energy += e * actual / s
        t += actual
    lost = float(world.timeline.leaves_between(edge, np.asarray(start_s, float), np.asarray(t, float)))
    if math.isfinite(lost):  # energy spent until the edge left (terms pro rata)
        spent = 0.0
        for term, t0, ej in ends:
            dur = phases[term]
            if t0 >= lost:
                break
            spent += ej * (min(1.0, (lost - t0) / dur) if dur > 0 else 1.0)
        return EpochOutcome(lost - start_s, spent, phases, lost)
    return EpochOutcome(t - start_s, energy, phases)


def true_epochs(curve: Sequence[float], target_loss: float, confirm: int = 0) -> int | None:
    """K of a true curve: the epoch at which the target counts as reached (+ confirmation)."""
    from jqodi.learning.online import target_reached

    at = target_reached(curve, target_loss, confirm)
    return None if at is None else at + confirm


@dataclass
class RunOutcome:
    """How a simulated run ended."""

    policy: str
    reached: bool
    met_deadline: bool
    time_s: float
    energy_j: float
    epochs: int
    lost_epochs: int
    replans: int
    model: str | None
    bits: int | None
    stop_reason: str
    plan_ms_max: float = 0.0
    plan_cpu_ms_max: float = 0.0
    replan_log: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("policy", "reached", "met_deadline", "time_s", "energy_j", "epochs",
                                             "lost_epochs", "replans", "model", "bits", "stop_reason",
                                             "plan_ms_max", "plan_cpu_ms_max")}


def simulate_run(world: World, solution: Solution, *, policy: str = "replan", threshold: float = 0.03,
                 confirm: int = 0, allow_switch: bool = False, max_epochs: int | None = None,
                 **controller_options) -> RunOutcome:
    """One run of ``solution`` in ``world`` under ``policy`` (``replan``, ``static`` or ``open-loop``);
    ``controller_options`` go to the :class:`ClosedLoopController` (e.g. ``reserve_epochs``, ``hedge``).

    Runs until the controller stops, the true curve ends without reaching the target (a real run
    would go on; we cannot see how: counted as not reached), or nothing can run any more.
    """
    table, tl = world.table, world.timeline
    deadline = table.instance.deadline_s
    target = table.instance.target_loss
    open_loop = policy == "open-loop"
    ctl = ClosedLoopController(table, solution, policy="static" if open_loop else policy, threshold=threshold,
                               confirm=confirm, allow_switch=allow_switch, early_stop=not open_loop,
                               **controller_options)
    cand = table.candidate(ctl.model, ctl.bits)
    t = t_start = cand.quantize_time_s  # the controller counts fine-tuning time from here (τ is its own)
    energy = cand.quantize_energy_j
    done: dict[str, int] = {}
    epochs = lost = 0
    reached_at: float | None = None
    decision = Decision("continue", ctl.schedule, "", ctl.model, ctl.bits)
    seen_events = t
    limit = max_epochs or 10 * max((len(c) for c in world.curves.values()), default=50)
    stop_reason = ""
    wait_w = wait_power_w(table)
    while True:
        for at, edge, up in tl.availability_events(seen_events, t):  # what happened since the last look
            decision = ctl.on_event("edge_returns" if up else "edge_leaves", edge, at - t_start)
        seen_events = t
        if decision.action == "stop":
            stop_reason = decision.reason
            break
        if decision.action == "pause":
            nxt = [at for at, _, up in tl.availability_events(t, math.inf) if up]
            if not nxt:
                stop_reason = f"paused for good: {decision.reason}"
                break
            energy += wait_w * (nxt[0] - t)  # the end and the cloud wait (module docstring)
            t = nxt[0]
            continue
        if epochs + lost >= limit:
            stop_reason = "epoch limit"
            break
        key = f"{decision.model}@{decision.bits}"
        if key != ctl.key or decision.model is None:
            key = ctl.key
        if key not in done and epochs:  # a switch: the new candidate is quantized first
            c = table.cand(key)
            t += c.quantize_time_s
            energy += c.quantize_energy_j
        entry = decision.schedule[0]
        i = table.option_index(key, entry.edge, entry.cut)
        out = simulate_epoch(world, key, i, t)
        energy += out.energy_j
        if out.lost_at_s is not None:
            lost += 1
            t = out.lost_at_s
            edge = table.cand(key).options[i].edge
            seen_events = t
            decision = ctl.on_event("edge_leaves", edge, t - t_start)
            continue
        t += out.time_s
        k = done.get(key, 0)
        curve = world.curves[key]
        if k >= len(curve):
            stop_reason = f"the true curve of {key} ends after {len(curve)} epochs without reaching the target"
            break
        loss = float(curve[k])
        done[key] = k + 1
        epochs += 1
        if reached_at is None and loss <= target:
            reached_at = t
        for at, edge, up in tl.availability_events(seen_events, t):
            ctl.on_event("edge_returns" if up else "edge_leaves", edge, at - t_start)
        seen_events = t
        decision = ctl.after_epoch(Observation(epochs, entry.edge, entry.cut, loss, out.time_s, t - t_start,
                                               out.energy_j, out.phases_s, ctl.model, ctl.bits))
    reached = reached_at is not None
    return RunOutcome(policy, reached, reached and reached_at <= deadline * (1 + 1e-9), t, energy, epochs, lost,
                      len(ctl.replans), ctl.model, ctl.bits, stop_reason,
                      max(ctl.plan_ms, default=0.0), max(ctl.plan_cpu_ms, default=0.0),
                      [r.to_dict() for r in ctl.replans])


def hindsight_optimum(world: World, *, confirm: int = 0, grid: int = 4000, candidates: Sequence[str] | None = None
                      ) -> dict | None:
    """The minimum-energy run that knows the future (see the module docstring); ``None`` when
    no candidate can reach the target by the deadline. Returns ``{"energy_j", "time_s", "model",
    "bits", "epochs"}``."""
    table = world.table
    deadline = table.instance.deadline_s
    h = deadline / grid
    wait_step_j = wait_power_w(table) * h * np.arange(grid + 1)  # idling from grid step 0 to b
    best = None
    for c in table.instance.candidates:
        if candidates is not None and c.key not in candidates:
            continue
        curve = world.curves.get(c.key)
        if curve is None or not c.options:
            continue
        K = true_epochs(curve, table.instance.target_loss, confirm)
        if K is None:
            continue
        b0 = int(math.ceil(c.quantize_time_s / h - 1e-9))
        if b0 > grid:
            continue
        starts = np.arange(grid + 1) * h
        dur, eng, broken = [], [], []
        for i in range(len(c.options)):
            d, e, lost = epoch_grid(world, c.key, i, starts)
            dur.append(np.ceil(d / h - 1e-9).astype(np.int64))
            eng.append(e)
            broken.append(np.isfinite(lost))  # the edge is away during (or at the start of) the epoch
        V = np.full(grid + 1, np.inf)
        V[b0] = 0.0
        for _ in range(K):
            # idling is allowed, at the end's and the cloud's idle power: V[b] = min_a≤b V[a] + P (b − a) h
            V = np.minimum.accumulate(V - wait_step_j) + wait_step_j
            W = np.full(grid + 1, np.inf)
            reach = np.isfinite(V)
            for d, e, bad in zip(dur, eng, broken):
                src = np.flatnonzero(reach & ~bad)
                dst = src + d[src]
                fit = dst <= grid
                np.minimum.at(W, dst[fit], V[src[fit]] + e[src[fit]])
            V = W
            if not np.isfinite(V).any():
                break
        if not np.isfinite(V).any():
            continue
        b = int(np.argmin(V))
        total = float(V[b]) + c.quantize_energy_j
        if best is None or total < best["energy_j"]:
            best = {"energy_j": total, "time_s": b * h, "model": c.model, "bits": c.bits, "epochs": K}
    return best
