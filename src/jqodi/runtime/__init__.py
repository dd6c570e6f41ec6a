"""The runtime: run a plan for real with the cloud (CS), edge servers (ES) and end device (SD)
as separate processes (or threads), and measure time, bytes and energy next to the prediction.

    from jqodi.runtime import run_plan
    record = run_plan(scenario, solution)          # plans come from jqodi.planner.solve
    print(record.table())

Modules: ``transport`` (gloo / in-process), ``rendezvous`` (TCPStore), ``job`` (the config every
role gets), ``roles`` (cloud/edge/end), ``emulation`` (dilated time), ``energy`` (meters),
``record`` (RunRecord), ``launch`` (processes), ``inference`` (collaborative inference),
``serving`` (the roles' side of it), ``tracing`` (each epoch into the trace store).
The main job that plans and then runs lives in :mod:`jqodi.app.main_job`. See docs/runtime.md.
"""
from jqodi.runtime.job import Job
from jqodi.runtime.launch import run_job, run_plan
from jqodi.runtime.record import RunRecord

__all__ = ["Job", "RunRecord", "run_job", "run_plan", "run_inference"]


def __getattr__(name):  # torch-heavy entry points, imported on first use
    if name == "run_inference":
        from jqodi.runtime.inference import run_inference

        return run_inference
    raise AttributeError(f"module 'jqodi.runtime' has no attribute {name!r}")
