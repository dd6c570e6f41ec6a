"""Planning: from a :class:`PlanningInstance` to a :class:`Solution`. Never imports torch."""
from jqodi.planner.instance import (
    Candidate,
    EpochEstimates,
    LossEstimates,
    Option,
    PlanningInstance,
    ScheduleEntry,
    Solution,
)

__all__ = ["Candidate", "EpochEstimates", "LossEstimates", "Option", "PlanningInstance",
           "ScheduleEntry", "Solution"]
