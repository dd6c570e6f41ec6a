"""Seeded synthetic fleets for tests and benchmarks (:func:`random_fleet`)."""
from __future__ import annotations

import math

import numpy as np

from jqodi.core.fleet import FleetInstance
from jqodi.planner.fleet.baselines import solve_ignore_capacity


def random_fleet(seed: int = 0, *, devices: int = 4, edges: int = 2, models: int = 2, bits=(4, 8),
                 cuts: int = 3, epochs: tuple[int, int] = (4, 20), capacity_share: float = 0.6) -> FleetInstance:
    """A seeded synthetic fleet: one :func:`~jqodi.planner.generate.random_instance` per device (on
    the same edge names), each option's edge time = its epoch time × the deep share of the work
    (1 − cut/(cuts+1)) × a per-(device, edge) factor in [0.3, 0.8]; each edge's capacity is
    ``capacity_share`` × the load the devices' stand-alone optima put on it (so capacity binds)."""
    from jqodi.core.fleet import FleetMember
    from jqodi.planner.generate import random_instance

    rng = np.random.default_rng(seed)
    members = []
    for i in range(devices):
        inst = random_instance(seed * 100_003 + i, models=models, bits=tuple(bits), edges=edges, cuts=cuts,
                               epochs=epochs, tightness=float(rng.uniform(0.2, 1.0)), p_unreachable=0.0)
        f = rng.uniform(0.3, 0.8, edges)
        busy = tuple(np.array([o.epoch_time_s * (1 - o.cut / (cuts + 1)) * f[int(o.edge[2:])]
                               for o in c.options]) for c in inst.candidates)
        members.append(FleetMember(f"sd{i}", inst, busy))
    names = tuple(f"es{x}" for x in range(edges))
    free = FleetInstance(tuple(members), names, (math.inf,) * edges, math.inf)
    load = np.array(list(solve_ignore_capacity(free).edge_load_s.values()))
    floor = max(float(load.mean()), 1e-6) * capacity_share
    cap = tuple(float(max(capacity_share * l, floor * 0.2)) for l in load)
    return FleetInstance(tuple(members), names, cap, math.inf, {"generator": "random_fleet", "seed": seed})
