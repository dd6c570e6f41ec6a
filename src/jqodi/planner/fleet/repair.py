"""Repair and improvement of a fleet plan (fleet-lagrange, step 4): greedy repair when the master
MILP found nothing in its time, local improvement over the known columns, each device re-planned
exactly in the room the others leave, and large-neighbourhood search (groups of devices re-planned
jointly by the exact fleet MILP of :mod:`jqodi.planner.fleet.milp`). Each step is bounded by counted
work (:class:`~jqodi.planner.fleet.budget.WorkBudget`), the clock only by the safety cap."""
from __future__ import annotations

import math

import numpy as np

from jqodi.core.fleet import FleetInstance
from jqodi.planner.fleet.candidates import _best_priced
from jqodi.planner.fleet.milp import _milp_plans
from jqodi.planner.fleet.solution import CAPACITY_RTOL


def _make_feasible(fleet, columns, plans, why):
    """Cheap repair (when the master MILP found nothing in its time): while an edge x is overloaded,
    its devices, largest users first, switch to their known column that uses x least and fits the
    other edges; a device with none is not served."""
    X = len(fleet.edges)
    cap = np.asarray(fleet.capacity_s, dtype=float)
    limit = cap * (1 + CAPACITY_RTOL) + 1e-12
    load = sum((p.busy for p in plans if p is not None), np.zeros(X))
    moved = dropped = 0
    for x in np.argsort(-(load - cap) / cap):
        if load[x] <= limit[x]:
            continue
        users = sorted((i for i, p in enumerate(plans) if p is not None and p.busy[x] > 0),
                       key=lambda i: -plans[i].busy[x])
        for i in users:
            if load[x] <= limit[x]:
                break
            old = plans[i]
            room = limit - load + old.busy
            fit = [q for q in columns[i].values() if q.busy[x] < old.busy[x] and (q.busy <= room).all()]
            if fit:
                q = min(fit, key=lambda q: (q.busy[x], q.energy_j))
                load += q.busy - old.busy
                plans[i] = q
                moved += 1
            else:
                load -= old.busy
                plans[i] = None
                why[i] = f"edge capacity: {fleet.edges[x]} is full (the repair step found no plan for it)"
                dropped += 1
    return plans, moved, dropped


def _improve(fleet, cands_all, columns, plans, why, passes: int = 2):
    """Local improvement: each device takes its cheapest known column that fits in the room the
    others leave, when that saves energy; a device left unserved for capacity also tries its best
    plan avoiding the full edges."""
    X = len(fleet.edges)
    cap = np.asarray(fleet.capacity_s, dtype=float)
    load = sum((p.busy for p in plans if p is not None), np.zeros(X))
    failed: dict[int, np.ndarray] = {}  # unserved device -> the room in which it found no plan
    for _pass in range(passes):
        changed = False
        for i, cands in enumerate(cands_all):
            old = plans[i]
            if not cands or (old is None and not why.get(i, "").startswith("edge capacity")):
                continue
            room = cap * (1 + CAPACITY_RTOL) + 1e-12 - load + (old.busy if old is not None else 0)
            if old is None and i in failed and (room <= failed[i]).all():
                continue  # no more room than when it found nothing: nothing to find
            fit = [q for q in columns[i].values() if (q.busy <= room).all()]
            if old is None:  # as first come, first served: drop the edges it would overfill and re-plan
                banned = room <= 1e-9
                while True:
                    q = _best_priced(cands, np.zeros(X), X, banned)
                    if q is None:
                        break
                    over = q.busy > room
                    if not over.any():
                        fit.append(q)
                        break
                    banned = banned | over
            if not fit:
                if old is None:
                    failed[i] = room
                continue
            q = min(fit, key=lambda q: q.energy_j)
            if old is None or q.energy_j < old.energy_j * (1 - 1e-12):
                load += q.busy - (old.busy if old is not None else 0)
                plans[i] = q
                why.pop(i, None)
                changed = True
        if not changed:
            break
    return plans


def _improve_exact(fleet, cands_all, plans, why, replans: int, cap_clock):
    """Up to ``replans`` devices, costliest first, each take their exact best plan that fits in the
    room the others leave (a one-device MILP whose capacity rows are that room) — plans no single
    price produces, such as a mix that exactly fills an edge. ``cap_clock``: the safety cap."""
    X = len(fleet.edges)
    cap = np.asarray(fleet.capacity_s, dtype=float)
    load = sum((p.busy for p in plans if p is not None), np.zeros(X))
    order = sorted((i for i, c in enumerate(cands_all) if c and (plans[i] is not None
                    or why.get(i, "").startswith("edge capacity"))),
                   key=lambda i: -(plans[i].energy_j if plans[i] is not None else math.inf))
    moves = 0
    for i in order[:max(0, replans)]:
        if cap_clock.spent("exact re-planning"):
            break
        old = plans[i]
        room = np.maximum(cap - load + (old.busy if old is not None else 0), 0.0)
        if (room <= 1e-12).all():
            continue
        sub = FleetInstance((fleet.members[i],), fleet.edges, tuple(room), fleet.window_s)
        got, status, ex = _milp_plans(sub, [cands_all[i]], {}, room, cap_clock.highs_limit(), 1e-7)
        if ex.get("time_limit_hit"):
            cap_clock.hit("exact re-planning")
        q = got[0]
        if q is not None and (old is None or q.energy_j < old.energy_j * (1 - 1e-9)):
            load += q.busy - (old.busy if old is not None else 0)
            plans[i] = q
            why.pop(i, None)
            moves += 1
    return plans, moves


def _neighbourhoods(fleet, cands_all, plans, why, tries_max: int, node_limit: int, cap_clock, group: int = 6,
                    group_max: int = 24, stall_max: int = 8, seed: int = 0, bound_j: float = -math.inf):
    """Large-neighbourhood search, at most ``tries_max`` tries and ``stall_max`` in a row that change
    nothing: re-plan a group of ``group`` devices jointly and exactly (the fleet MILP over the group
    in the room the others leave, at most ``node_limit`` HiGHS nodes) and keep the result when it
    serves a device left out for capacity, or saves energy. A group starts from such a device
    (first) or from a random one, with devices sharing one of its edges. Each try that fails to
    serve a device left out doubles the group of the next such try (up to ``group_max`` devices):
    serving it may need devices outside a small group to move. ``cap_clock``: the safety cap."""
    rng = np.random.default_rng(seed)
    X = len(fleet.edges)
    cap = np.asarray(fleet.capacity_s, dtype=float)
    pending = [i for i, p in enumerate(plans) if p is None and cands_all[i]
               and why.get(i, "").startswith("edge capacity")]
    live = [i for i, p in enumerate(plans) if p is not None]
    if len(live) + len(pending) < 2:
        return plans, 0
    load = sum((plans[i].busy for i in live), np.zeros(X))
    total = sum(plans[i].energy_j for i in live)
    moves = tries = stall = 0
    size = group  # of the next group around a device left out
    while tries < tries_max and stall < stall_max and (pending or total > bound_j * (1 + 1e-4)):
        if cap_clock.spent("neighbourhood search"):
            break
        tries += 1
        stall += 1
        if pending:
            i0 = pending[int(rng.integers(len(pending)))]
            x = int(rng.integers(X))
        else:
            i0 = live[int(rng.integers(len(live)))]
            x = int(rng.choice(np.flatnonzero(plans[i0].busy))) if plans[i0].busy.any() else 0
        mates = [i for i in live if i != i0 and plans[i].busy[x] > 0]
        rng.shuffle(mates)
        others = [i for i in live if i != i0 and i not in mates]
        rng.shuffle(others)
        newly = i0 in pending
        grp = [i0] + (mates + others)[:(size if newly else group) - 1]
        room = np.maximum(cap - load + sum((plans[i].busy for i in grp if plans[i] is not None), np.zeros(X)), 0.0)
        sub = FleetInstance(tuple(fleet.members[i] for i in grp), fleet.edges, tuple(room), fleet.window_s)
        got, _, ex = _milp_plans(sub, [cands_all[i] for i in grp], {}, room, cap_clock.highs_limit(), 1e-6,
                                 node_limit)
        if ex.get("time_limit_hit"):
            cap_clock.hit("neighbourhood search")
        if any(q is None for q in got):
            if newly:
                size = min(2 * size, group_max)
            continue
        old_e = sum(plans[i].energy_j for i in grp if plans[i] is not None)
        if newly or sum(q.energy_j for q in got) < old_e * (1 - 1e-9):
            for i, q in zip(grp, got):
                old = plans[i]
                load += q.busy - (old.busy if old is not None else 0)
                total += q.energy_j - (old.energy_j if old is not None else 0)
                plans[i] = q
            if newly:
                pending.remove(i0)
                live.append(i0)
                why.pop(i0, None)
                size = group
            moves += 1
            stall = 0
    return plans, moves
