"""jqodi: energy-efficient collaborative fine-tuning and inference across cloud, edge and end.

Implements JQODI (IEEE ToN 2026): choose the model, quantization bit-width, partition point and
edge server epoch by epoch to fine-tune at minimum total energy under a deadline and a target
loss, then run that plan for real across cloud, edge and end-device processes.
"""
__version__ = "0.1.0"

from jqodi.core.threads import calm_openmp  # noqa: E402

calm_openmp()  # before torch loads OpenMP: waiting threads sleep, not spin (see jqodi.core.threads)

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
           "InfeasibleError", "TraceStoreError", "RuntimeFailure",
           "load_scenario", "compile_instance", "epoch_costs", "build_model", "register_model"]

#: The entry points, imported on first use so that ``import jqodi`` stays light (no numpy,
#: pydantic or torch until one is asked for): ``jqodi.load_scenario(path)`` →
#: ``jqodi.compile_instance(scenario)`` is the planning instance of docs/interfaces.md.
_LAZY = {
    "load_scenario": "jqodi.core.scenario",
    "compile_instance": "jqodi.core.costs",
    "epoch_costs": "jqodi.core.costs",
    "build_model": "jqodi.core.zoo",
    "register_model": "jqodi.core.zoo",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'jqodi' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
