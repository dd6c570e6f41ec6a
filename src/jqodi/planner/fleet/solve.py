"""The fleet solvers by name (:data:`FLEET_SOLVERS`) and the entry points that run and compare them."""
from __future__ import annotations

import time
from typing import Callable

from jqodi.core.fleet import FleetInstance
from jqodi.errors import PlanningError
from jqodi.planner.common import check_epochs
from jqodi.planner.fleet.baselines import solve_fcfs, solve_ignore_capacity
from jqodi.planner.fleet.lagrange import solve_lagrange
from jqodi.planner.fleet.milp import solve_fleet_optimal
from jqodi.planner.fleet.solution import FleetSolution


FLEET_SOLVERS: dict[str, tuple[Callable[..., FleetSolution], str]] = {
    "fleet-lagrange": (solve_lagrange, "Lagrangian prices on edge time, exact per-device plans, repair"),
    "fleet-optimal": (solve_fleet_optimal, "exact MILP over the whole fleet (HiGHS); small fleets"),
    "fcfs": (solve_fcfs, "baseline: devices planned alone in arrival order, first come first served"),
    "ignore-capacity": (solve_ignore_capacity, "baseline: every device's own optimum, capacity ignored"),
}


def solve_fleet(fleet: FleetInstance, solver: str = "fleet-lagrange", *, epochs: str = "robust",
                **opts) -> FleetSolution:
    check_epochs(epochs)
    if solver not in FLEET_SOLVERS:
        raise PlanningError(f"unknown fleet solver {solver!r} (known: {', '.join(FLEET_SOLVERS)})")
    t0 = time.perf_counter()
    sol = FLEET_SOLVERS[solver][0](fleet, epochs=epochs, **opts)
    sol.extra["plan_time_ms"] = (time.perf_counter() - t0) * 1e3
    return sol


def compare_fleet(fleet: FleetInstance, solvers=None, *, epochs: str = "robust") -> list[FleetSolution]:
    return [solve_fleet(fleet, s, epochs=epochs) for s in (solvers or list(FLEET_SOLVERS))]
