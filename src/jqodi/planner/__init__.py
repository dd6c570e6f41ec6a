"""Planning: from a :class:`PlanningInstance` to a :class:`Solution`. Never imports torch.

    solve(instance, solver="jqodi"|"optimal"|"static"|"full-model"|"minimal-model"|"partition-only",
          *, epochs="robust"|"expected", **opts) -> Solution
    compare(instance, solvers=None, *, epochs="robust", model=None, bits=None) -> list[dict]

Solvers are registered by name in :data:`SOLVERS` (:mod:`jqodi.planner.registry`; docs/extending.md).
"""
from jqodi.planner.common import TIME_RTOL, check_solution
from jqodi.core.instance import (
    Candidate,
    EpochEstimates,
    LossEstimates,
    Option,
    PlanningInstance,
    ScheduleEntry,
    Solution,
)
from jqodi.planner.solve import SOLVERS, compare, solve

__all__ = ["Candidate", "EpochEstimates", "LossEstimates", "Option", "PlanningInstance",
           "ScheduleEntry", "Solution", "SOLVERS", "TIME_RTOL", "check_solution", "compare", "solve"]
