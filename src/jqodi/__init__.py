"""jqodi: energy-efficient collaborative fine-tuning and inference across cloud, edge and end.

Implements JQODI (IEEE ToN 2026): choose the model, quantization bit-width, partition point and
edge server epoch by epoch to fine-tune at minimum total energy under a deadline and a target
loss, then run that plan for real across cloud, edge and end-device processes.
"""
__version__ = "0.1.0"

from jqodi.errors import (  # noqa: E402
    DataError,
    InfeasibleError,
    JqodiError,
    ModelError,
    PlanningError,
    RuntimeFailure,
    ScenarioError,
    TraceStoreError,
)

__all__ = ["__version__", "JqodiError", "ScenarioError", "ModelError", "DataError", "PlanningError",
           "InfeasibleError", "TraceStoreError", "RuntimeFailure"]
