"""The main job of ``make demo``: plan the default scenario at CPU scale, run the plan for real,
compare with the prediction, then serve inference requests.

    from jqodi.runtime.demo import main_job
    main_job()                       # the packaged Data 1 scenario, a few minutes on 2 cores

Steps: the scenario at CPU scale (:func:`jqodi.runtime.plan.cpu_scale`: the models' CPU widths on
Fashion-MNIST, the paper's devices and links unchanged) → planning instance → JQODI plan → the
cloud, edge and end processes fine-tune over gloo on loopback with the testbed emulated in dilated
time (a few epochs of each schedule entry; the full plan would run K epochs) → predicted vs
measured time, energy and loss → collaborative inference (SD+ES for each plan edge, and SD only)
served by the same processes.
The pretrained model comes from :func:`jqodi.train.load_pretrained` (pretrained on a cache miss).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

__all__ = ["main_job", "section_runtime"]


def main_job(scenario_path: str | Path | None = None, *, epochs_per_entry: int = 2, train_size: int | None = None,
             val_size: int | None = None, requests: int = 100, solver: str = "jqodi",
             workdir: str | Path | None = None, transport: str = "gloo", emulate: bool = True,
             pretrained: dict | None = None, say: Callable[[str], None] | None = None) -> dict:
    """Run the main job; returns ``{"solution", "record", "inference"}`` (plain objects).

    ``pretrained``: keyword arguments for :func:`jqodi.train.load_pretrained` (default: its
    defaults, so the checkpoint cache is shared with the rest of the demo), or
    ``{"source": "random"}`` to skip pretraining.
    """
    from jqodi.costs import compile_instance
    from jqodi.planner import solve
    from jqodi.runtime.inference import InferenceResult, format_inference
    from jqodi.runtime.job import ScheduleItem
    from jqodi.runtime.launch import run_plan
    from jqodi.runtime.plan import cpu_scale, job_from_plan
    from jqodi.scenario import default_scenario_path, load_scenario

    say = say or (lambda s: print(s, flush=True))
    t0 = time.perf_counter()
    path = Path(scenario_path) if scenario_path else default_scenario_path()
    scenario = cpu_scale(load_scenario(path), train_size=train_size, val_size=val_size)
    m = {e.name: e.width for e in scenario.models}
    say(f"scenario {scenario.name} at CPU scale: {scenario.data.dataset} {scenario.data.split} "
        f"({scenario.data.train_size} train + {scenario.data.val_size} val), widths "
        + ", ".join(f"{k} ×{v:g}" for k, v in m.items()))
    instance = compile_instance(scenario)
    sol = solve(instance, solver)
    if sol.status == "infeasible":
        from jqodi.errors import InfeasibleError

        raise InfeasibleError(f"no feasible plan for {scenario.name}: {sol.extra.get('explanation', '')}")
    sched = ", ".join(f"{e.epochs}×({e.edge}, cut {e.cut})" for e in sol.schedule)
    say(f"plan ({solver}): {sol.model} at {sol.bits} bits, {sched}; predicted {sol.time_s:.1f} s, "
        f"{sol.energy_j:.1f} J for {sol.epochs} epochs")
    job = job_from_plan(scenario, sol, emulate=emulate, pretrained=pretrained)
    short = [ScheduleItem(s.edge, s.cut, min(s.epochs, epochs_per_entry)) for s in job.schedule if s.epochs > 0]
    every_edge = [k.split(":", 1)[1] for k in job.emulation.devices if k.startswith("edge:")]
    job = job.replace(schedule=short, inference_requests=requests, inference_edges=every_edge)
    say(f"running {job.total_epochs} of the plan's {sol.epochs} epochs ("
        + ", ".join(f"{s.epochs} of ({s.edge}, cut {s.cut})" for s in short) + ") as separate processes"
        + (f", testbed emulated at dilation ×{job.emulation.dilation:.3g}" if emulate else "")
        + f"; then {requests} inference requests per device combination")
    wd = Path(workdir or f"runs/demo-{scenario.name}")
    if wd.exists():
        for name in ("checkpoint.pt", "epochs.json", "record.json"):
            (wd / name).unlink(missing_ok=True)
    record = run_plan(scenario, sol, transport=transport, workdir=wd, job=job, say=say)
    say("")
    say(record.table())
    if record.epochs:
        row = next((r for r in scenario.learning if r.model == sol.model and r.bits == sol.bits), None)
        first, last = record.epochs[0], record.epochs[-1]
        measured = (f"measured on {scenario.data.dataset}: val loss {first['val_loss']:.4f} after epoch 1 → "
                    f"{last['val_loss']:.4f} after epoch {len(record.epochs)} (accuracy {last['val_accuracy']:.1%})")
        if row is not None:
            say(f"\nloss: predicted L_a + γ = {row.base_loss + row.gamma:.4f} at the start and L_max = "
                f"{row.target_loss or scenario.target_loss:g} after K^rob = {row.epochs_robust} epochs (the "
                f"scenario's learning table: the paper's CIFAR figures, not this dataset's); {measured}")
        else:
            say(f"\nloss: {measured}")
    res = [InferenceResult.from_dict(r) for r in record.inference]
    if res:
        say(f"\ncollaborative inference with the fine-tuned model, served by the same processes: {requests} "
            f"single-image requests per device combination"
            + (f" (emulated, dilation ×{res[0].dilation:.3g})" if emulate else ""))
        say(format_inference(res))
    say(f"\nrecord: {wd / 'record.json'}  ({time.perf_counter() - t0:.0f} s)")
    return {"solution": sol, "record": record, "inference": res}


def section_runtime(ctx) -> None:
    """A :mod:`jqodi.demo` section: the main job on the demo's scenario file."""
    ctx.title("Running the plan (cloud, edge and end processes) and serving inference")
    main_job(ctx.path, say=lambda s: ctx.print(s))
    sys.stdout.flush()
