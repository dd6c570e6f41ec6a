"""Joint planning of a fleet: every end device's (model, bits, per-epoch edge and cut) under every
edge server's capacity, minimising the fleet's total energy.

The problem (the sum over devices of Eq. 13, plus one capacity row per edge server)::

    min  Σ_i [ ε_(c_i) + Σ_o e_(i,o)·n_(i,o) ]
    s.t. per device i: one candidate c_i, Σ_o n_(i,o) = K_(c_i), τ_(c_i) + Σ_o t_(i,o)·n_(i,o) ≤ T_max,i
         per edge x:   Σ_i Σ_(o on x) b_(i,o)·n_(i,o) ≤ c_x·W          (b = the option's edge compute time)

(the capacity model is in :mod:`jqodi.core.fleet`). Solvers, in :data:`FLEET_SOLVERS`:

* ``fleet-optimal``: the exact MILP with HiGHS (``scipy.optimize.milp``): binaries z_(i,c) pick a
  candidate, integers n_(i,c,o) count epochs. Options that another option of the same candidate on
  the same edge beats in time, energy and edge time are dropped first (swapping never hurts).
  Proven optimal for small fleets; the time grows quickly with the fleet.
* ``fleet-lagrange``: Lagrangian relaxation of the capacity rows. With prices λ_x ≥ 0 (joules per
  busy second of ES_x) the problem splits into one single-device problem per device with priced
  epoch energies e + λ_x·b, solved by the exact per-device solver of :mod:`jqodi.planner.optimal`.
  (1) subgradient steps (Polyak's rule) on every device's LP relaxation, vectorised over the fleet
  (:class:`~jqodi.planner.fleet.lagrange._LPArrays`); (2) column generation: each device's exact plan at the prices of the
  master LP's capacity duals, whose Lagrangian value is a proven lower bound (``lower_bound_j``);
  (3) a master MILP picks one column per device under the capacity rows (a device may stay
  unserved at a cost above any plan; with many columns, the master's LP fixes every device it does
  not split and the MILP runs over the split ones only); (4) repair and improvement: greedy repair if the master
  fails, each device re-planned exactly in the room the others leave, then large-neighbourhood
  search (groups of devices re-planned jointly by the exact MILP). Every phase stops on counted
  work (:class:`~jqodi.planner.fleet.budget.WorkBudget`), so the plan does not depend on the
  machine's load; ``time_limit_s`` is a safety cap whose hit the solution records.
  A device no plan can serve is reported as not served, with the reason.
* ``fcfs``: devices planned alone in arrival order, each taking its own best plan among the edge
  servers that still have room for it (the contention problem: first comers take the cheap
  options, later ones are pushed to costly ones or miss their deadlines).
* ``ignore-capacity``: every device's own best plan as if it had the edges to itself; the
  overload it causes is reported.

Modules: :mod:`~jqodi.planner.fleet.solution` (the result type), :mod:`~jqodi.planner.fleet.candidates`
(per-device arrays, the priced per-device plan), :mod:`~jqodi.planner.fleet.baselines` (``fcfs``,
``ignore-capacity``), :mod:`~jqodi.planner.fleet.milp` (``fleet-optimal``),
:mod:`~jqodi.planner.fleet.lagrange`, :mod:`~jqodi.planner.fleet.master`,
:mod:`~jqodi.planner.fleet.repair` and :mod:`~jqodi.planner.fleet.budget` (``fleet-lagrange``), :mod:`~jqodi.planner.fleet.solve` (the
registry and entry points), :mod:`~jqodi.planner.fleet.generate` (random fleets).
"""
from __future__ import annotations

from jqodi.planner.fleet.generate import random_fleet
from jqodi.planner.fleet.lagrange import fleet_lower_bound
from jqodi.planner.fleet.solution import CAPACITY_RTOL, FleetSolution
from jqodi.planner.fleet.solve import FLEET_SOLVERS, compare_fleet, solve_fleet

__all__ = ["FleetSolution", "FLEET_SOLVERS", "solve_fleet", "compare_fleet", "fleet_lower_bound", "random_fleet",
           "CAPACITY_RTOL"]
