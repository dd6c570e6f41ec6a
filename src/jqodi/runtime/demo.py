"""The main job of ``make demo``: plan the default scenario at CPU scale, run the plan for real,
compare with the prediction, then serve inference requests.

    from jqodi.runtime.demo import main_job
    main_job()                       # the packaged Data 1 scenario, a few minutes on 2 cores

Steps: the scenario at CPU scale (:func:`jqodi.runtime.plan.cpu_scale`: the models' CPU widths on
Fashion-MNIST, the paper's devices and links unchanged) → planning instance → JQODI plan → the
cloud, edge and end processes fine-tune over gloo on loopback with the testbed emulated in dilated
time (a few epochs of each schedule entry; the full plan would run K epochs) → predicted vs
measured time, energy and loss → collaborative inference (SD+ES and SD only).
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
             say: Callable[[str], None] | None = None) -> dict:
    """Run the main job; returns ``{"solution", "record", "inference"}`` (plain objects)."""
    import torch

    from jqodi.costs import compile_instance
    from jqodi.planner import solve
    from jqodi.runtime.inference import format_inference, run_inference
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
    job = job_from_plan(scenario, sol, emulate=emulate)
    short = [ScheduleItem(s.edge, s.cut, min(s.epochs, epochs_per_entry)) for s in job.schedule if s.epochs > 0]
    job = job.replace(schedule=short)
    say(f"running {job.total_epochs} of the plan's {sol.epochs} epochs ("
        + ", ".join(f"{s.epochs} of ({s.edge}, cut {s.cut})" for s in short) + ") as separate processes"
        + (f", testbed emulated at dilation ×{job.emulation.dilation:.3g}" if emulate else ""))
    wd = Path(workdir or f"runs/demo-{scenario.name}")
    if wd.exists():
        for name in ("checkpoint.pt", "epochs.json", "record.json"):
            (wd / name).unlink(missing_ok=True)
    record = run_plan(scenario, sol, transport=transport, workdir=wd, job=job, say=say)
    say("")
    say(record.table())
    cand = next((c for c in instance.candidates if c.model == sol.model and c.bits == sol.bits), None)
    if cand is not None and cand.loss is not None and record.epochs:
        say(f"\nloss: predicted start {cand.loss.start:.4f} → {cand.loss.final_robust:.4f} after "
            f"{cand.epochs.robust} epochs (the scenario's learning table, which holds the paper's CIFAR "
            f"figures); measured on {scenario.data.dataset}: {record.epochs[0]['val_loss']:.4f} after epoch 1 → "
            f"{record.epochs[-1]['val_loss']:.4f} after epoch {len(record.epochs)} "
            f"(accuracy {record.epochs[-1]['val_accuracy']:.1%})")
    # collaborative inference with the fine-tuned model
    from jqodi.data import end_device_data
    from jqodi.runtime.process import initial_master, load_checkpoint

    torch.set_num_threads(1)
    master = initial_master(job)
    load_checkpoint(wd, job, master)
    d = job.data
    data = end_device_data(d.name, d.dataset, d.data_dir, d.train_size, d.val_size, d.seed)
    res = run_inference(job, master, data, requests=requests, emulate=emulate)
    say(f"\ncollaborative inference: {requests} single-image requests per device combination"
        + (f" (emulated, dilation ×{res[0].dilation:.3g})" if emulate and res else ""))
    say(format_inference(res))
    record.inference = [r.to_dict() for r in res]
    record.save(wd / "record.json")
    say(f"\nrecord: {wd / 'record.json'}  ({time.perf_counter() - t0:.0f} s)")
    return {"solution": sol, "record": record, "inference": res}


def section_runtime(ctx) -> None:
    """A :mod:`jqodi.demo` section: the main job on the demo's scenario file."""
    ctx.title("Running the plan (cloud, edge and end processes) and serving inference")
    main_job(ctx.path, say=lambda s: ctx.print(s))
    sys.stdout.flush()
