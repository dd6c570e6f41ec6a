"""The solver registry: every planner by name, imported on first use (listing needs no numpy).

A solver only decides: ``solve_x(instance: PlanningInstance, *, epochs: str, **opts) -> Solution``
(status ``optimal`` | ``feasible`` | ``infeasible``); :func:`jqodi.planner.solve` checks the
options it takes against its signature and times it. Register your own (docs/extending.md)::

    from jqodi.planner.registry import SOLVERS

    @SOLVERS.register("greedy", description="cheapest option every epoch")
    def solve_greedy(instance, *, epochs="robust"): ...
"""
from __future__ import annotations

from typing import Callable

from jqodi.core.registry import Registry
from jqodi.errors import PlanningError

__all__ = ["SOLVERS"]

SOLVERS: Registry[Callable] = Registry("solver", PlanningError)
_BUILTIN = (  # name, where the function lives (imported on first use), what it does
    ("jqodi", "jqodi.planner.jqodi:solve_jqodi",
     "JQODI, Algorithms 1-4: per-epoch (edge, cut) for each (model, bits) candidate"),
    ("optimal", "jqodi.planner.optimal:solve_optimal",
     "the exact minimum-energy plan of problem (13) (HiGHS MILP)"),
    ("static", "jqodi.planner.baselines:solve_static",
     "the paper's Optimum: the best single (model, bits, edge, cut) for all epochs"),
    ("full-model", "jqodi.planner.baselines:solve_full_model",
     "Full Model: 32-bit candidates only, one option for all epochs"),
    ("minimal-model", "jqodi.planner.baselines:solve_minimal_model",
     "Minimal Model: 1-bit (or the fewest bits present) candidates, one option for all epochs"),
    ("partition-only", "jqodi.planner.baselines:solve_partition_only",
     "Partition-only: model and bits given (model=, bits=), best (edge, cut) for all epochs"),
)
for _name, _target, _description in _BUILTIN:
    SOLVERS.register(_name, _target, _description)
