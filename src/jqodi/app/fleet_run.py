"""The fleet ``run`` use case: plan a fleet scenario jointly, then run every device's plan for real.

    from jqodi.app.fleet_run import FleetRunOptions, run_fleet_scenario
    record, workdir = run_fleet_scenario("examples/fleet-demo.yaml", FleetRunOptions(max_epochs=2))

The app turns the :class:`~jqodi.planner.fleet.FleetSolution` into one runtime job per served
device (:func:`fleet_job_from_plan`: the device's own scenario — its device, links, deadline and
data — and its plan), all in one :class:`~jqodi.runtime.fleet_job.FleetJob` with a common time
dilation; the runtime runs it (:func:`jqodi.runtime.fleet_launch.run_fleet`) without ever seeing
the planner. Beside each device's measurements the record keeps the plan's figures and the
capacity model's prediction of its epoch time when it shares its edge
(:func:`jqodi.core.fleet.processor_sharing_epoch_s`). Devices the plan cannot serve are not run
(the record lists them with the planner's reason).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from jqodi.errors import JqodiError

__all__ = ["FleetRunOptions", "is_fleet", "load_fleet_for_run", "plan_fleet", "fleet_job_from_plan",
           "shared_predictions", "run_fleet_scenario", "fleet_report", "fleet_demo", "fleet_demo_path"]

Say = Callable[[str], None]


def _print(s: str) -> None:
    print(s, flush=True)


@dataclass(frozen=True)
class FleetRunOptions:
    """How to plan and run a fleet (the flags of ``jqodi run`` on a fleet scenario).

    ``solver``: a fleet solver (``fleet-lagrange``, ``fleet-optimal``, ``fcfs``, ``ignore-capacity``);
    ``cpu_scale``: the models' CPU widths on Fashion-MNIST, with ``train_size``/``val_size``
    (when given) for every device; ``max_epochs``: run only each device's first N epochs;
    ``dilation``: ≥ 1 or ``"auto"`` (the largest any device needs: one clock for the fleet);
    ``edge_sharing``: ``processor-sharing`` (the capacity model) or ``dedicated``;
    ``random_init`` skips pretraining, else ``pretrained`` holds the keywords of
    :func:`jqodi.core.pretrained.load_pretrained` (the demo's are the main job's, so its cache serves); ``trace_store``: ``"default"``, a path or ``None``.
    """

    solver: str = "fleet-lagrange"
    epochs_estimate: str = "robust"
    workdir: str | Path | None = None
    max_epochs: int | None = None
    cpu_scale: bool = False
    train_size: int | None = None
    val_size: int | None = None
    dilation: float | str = "auto"
    timeout_s: float | None = None
    startup_timeout_s: float | None = None
    port: int | None = None
    random_init: bool = False
    pretrained: dict | None = None
    trace_store: str | Path | None = "default"
    edge_sharing: str = "processor-sharing"
    wall_limit_s: float | None = None
    data_dir: str | None = None


def is_fleet(scenario) -> bool:
    return bool(scenario.end_devices) or scenario.fleet is not None


def load_fleet_for_run(path: str | Path, opts: FleetRunOptions):
    """The fleet scenario at ``path``; at CPU scale (and with every device's sizes) when asked."""
    from jqodi.core.scenario import load_scenario
    from jqodi.runtime.plan import cpu_scale

    sc = load_scenario(path)
    if not is_fleet(sc):
        raise JqodiError(f"{path}: not a fleet scenario (no end_devices or fleet)")
    if opts.cpu_scale:
        sc = cpu_scale(sc, train_size=opts.train_size, val_size=opts.val_size)
    d = sc.model_dump()
    for key, v in (("train_size", opts.train_size), ("val_size", opts.val_size)):
        if v is None:
            continue
        d["data"][key] = int(v)  # the template's, and every listed or generated device's
        for entry in d.get("end_devices") or []:
            entry[key] = int(v)
        if (d.get("fleet") or {}).get("generate"):
            d["fleet"]["generate"][key] = int(v)
    if opts.data_dir:
        d["data"]["data_dir"] = opts.data_dir
    out = type(sc).model_validate(d)
    out._source_dir = sc._source_dir
    return out


def plan_fleet(sc, opts: FleetRunOptions, say: Say = _print):
    """Compile and plan the fleet: ``(FleetInstance, FleetSolution)``."""
    from jqodi.core.fleet import compile_fleet
    from jqodi.planner.fleet import solve_fleet

    fleet = compile_fleet(sc)
    say(f"planning {len(fleet.members)} devices on {len(fleet.edges)} edge servers with {opts.solver} ...")
    sol = solve_fleet(fleet, opts.solver, epochs=opts.epochs_estimate)
    say(f"plan: {sol.served}/{len(sol.plans)} devices served, {sol.energy_j:.1f} J predicted in all; "
        + ", ".join(f"{x} load {sol.edge_load_s[x]:.2f} s of {sol.edge_capacity_s[x]:.2f} s" for x in sol.edge_load_s))
    return fleet, sol


def fleet_job_from_plan(sc, sol, opts: FleetRunOptions, *, run_id: str | None = None):
    """The :class:`FleetJob` that runs ``sol`` on ``sc`` and, per device, the plan's figures.

    Each device's job is :func:`jqodi.runtime.plan.job_from_plan` of its own scenario and plan;
    its data is its own (a different seed for each device's slice); one dilation for all (``auto``:
    the largest any device's plan needs, the host timed once per model, not once per device).
    """
    import uuid

    from jqodi.core.fleet import device_scenario, fleet_devices
    from jqodi.runtime.fleet_job import FleetJob
    from jqodi.runtime.plan import job_from_plan, plan_dilation

    run_id = run_id or uuid.uuid4().hex[:12]
    specs = {d.name: d for d in fleet_devices(sc)}
    jobs, predicted, auto = {}, {}, []
    timings: dict = {}  # the host's timings, shared by the devices' automatic dilations
    for i, (name, plan) in enumerate(sol.plans.items()):
        if plan.status == "infeasible":
            continue
        dsc = device_scenario(sc, specs[name])
        dilation = dsc.runtime.time_dilation if opts.dilation is None else opts.dilation
        if dilation == "auto":
            auto.append(plan_dilation(dsc, plan, host_timings=timings))
        job = job_from_plan(dsc, plan, emulate=True, dilation=1.0 if dilation == "auto" else dilation,
                            timeout_s=opts.timeout_s,
                            startup_timeout_s=opts.startup_timeout_s, max_epochs=opts.max_epochs,
                            pretrained={"source": "random", "seed": i} if opts.random_init else
                            {"source": "pretrained", **(opts.pretrained or {})},
                            meter="auto", run_id=f"{run_id}-{name}", trace_store=opts.trace_store)
        job = job.replace(data=dataclasses.replace(job.data, seed=job.data.seed + 1 + i))
        jobs[name] = job
        predicted[name] = {"deadline_s": specs[name].deadline_s, "time_s": plan.time_s, "energy_j": plan.energy_j,
                           "epochs": plan.epochs, "schedule": [[e.edge, e.cut, e.epochs] for e in plan.schedule]}
    if not jobs:
        raise JqodiError("the fleet plan serves no device: nothing to run (see jqodi plan)")
    dilation = max([j.emulation.dilation for j in jobs.values()] + auto)
    jobs = {n: j.replace(emulation=dataclasses.replace(j.emulation, dilation=dilation)) for n, j in jobs.items()}
    first = next(iter(jobs.values()))
    fleet = FleetJob(jobs, run_id=run_id, timeout_s=first.timeout_s, startup_timeout_s=first.startup_timeout_s,
                     edge_sharing=opts.edge_sharing,
                     meta={"scenario": sc.name, "solver": sol.solver, "plan_energy_j": sol.energy_j,
                           "unserved": {n: p.extra.get("fleet_reason", "infeasible") for n, p in sol.plans.items()
                                        if p.status == "infeasible"}})
    for name, p in shared_predictions(fleet).items():
        predicted[name].update(p)
    return fleet, predicted


def shared_predictions(fleet) -> dict[str, dict]:
    """Per device, the cost model's stand-alone epoch and the capacity model's epoch when the
    devices on its (first) edge run at once: ``alone_epoch_s``, ``edge_epoch_s``, ``shared_epoch_s``
    (testbed seconds, :func:`jqodi.core.fleet.processor_sharing_epoch_s`)."""
    from jqodi.core.fleet import processor_sharing_epoch_s

    first = {}
    for name, job in fleet.devices.items():
        if job.predicted_epochs:
            first[name] = (job.schedule[0].edge, job.predicted_epochs[0])
    out = {}
    for edge in fleet.edges:
        group = [n for n, (e, _) in first.items() if e == edge]
        alone = [first[n][1]["time_s"] for n in group]
        busy = [first[n][1]["phases_s"]["edge_compute"] for n in group]
        for n, shared, a, b in zip(group, processor_sharing_epoch_s(alone, busy), alone, busy):
            out[n] = {"alone_epoch_s": a, "edge_epoch_s": b, "shared_epoch_s": shared, "sharing": len(group)}
    return out


def run_fleet_scenario(path: str | Path, opts: FleetRunOptions = FleetRunOptions(), say: Say = _print,
                       on_start=None):
    """Plan the fleet scenario at ``path`` and run it; returns ``(FleetRecord, workdir)``. The record
    is saved as ``workdir/record.json``, the edge utilisation plot as ``workdir/utilisation.png``,
    and a summary row per device in the trace store's fleet table. One run per workdir at a time
    (:class:`jqodi.app.run.WorkdirLock`, as ``jqodi run`` and ``jqodi cloud``)."""
    sc = load_fleet_for_run(path, opts)
    from jqodi.core.data import check_scenario_data

    check_scenario_data(sc.data)
    _, sol = plan_fleet(sc, opts, say)
    fleet, predicted = fleet_job_from_plan(sc, sol, opts)
    workdir = Path(opts.workdir or f"runs/{sc.name}")
    from jqodi.app.run import WorkdirLock

    # one run per workdir: a second fleet run there would remove this one's per-device records at its start
    with WorkdirLock(workdir, "run"):
        rec = _run_fleet(fleet, predicted, workdir, opts, say, on_start)
    return rec, workdir


def _run_fleet(fleet, predicted, workdir: Path, opts: FleetRunOptions, say: Say, on_start):
    from jqodi.runtime.fleet_launch import run_fleet

    say(f"running {len(fleet.devices)} devices on {len(fleet.edges)} edge servers "
        f"(1 cloud + {len(fleet.edges)} edge + {len(fleet.devices)} end-device processes, dilation "
        f"{next(iter(fleet.devices.values())).emulation.dilation:.3g}, {fleet.edge_sharing}) in {workdir}")
    if not opts.random_init:  # pretrain once here (cache misses), not in the cloud while the others wait
        from jqodi.runtime.process import initial_master

        for job in {(j.model, j.bits, j.width): j for j in fleet.devices.values()}.values():
            initial_master(job)
    rec = run_fleet(fleet, workdir, say=say, port=opts.port, wall_limit_s=opts.wall_limit_s, on_start=on_start,
                    predicted=predicted)
    save_fleet_results(rec, workdir, fleet)
    return rec


def save_fleet_results(rec, workdir: Path, fleet) -> None:
    """The utilisation plot beside the record, and the fleet's rows in the trace store."""
    from jqodi.render.fleet_run import plot_utilisation

    plot_utilisation(rec, Path(workdir) / "utilisation.png")
    store = next((j.trace_store for j in fleet.devices.values() if j.trace_store), None)
    if store:
        from jqodi.core.traces import TraceStore

        with TraceStore(store) as ts:
            ts.record_fleet(rec.run_id, {n: {k: d.get(k) for k in ("status", "error", "epochs", "time_s", "energy_j",
                                                                    "deadline_s", "deadline_met")}
                                         for n, d in rec.devices.items()},
                            job_ids={n: j.run_id for n, j in fleet.devices.items()})


def fleet_report(rec) -> str:
    from jqodi.render.fleet_run import fleet_run_report

    return fleet_run_report(rec)


def fleet_demo_path() -> Path:
    """The packaged fleet demo scenario (a copy of ``examples/fleet-demo.yaml``)."""
    from importlib import resources

    return Path(str(resources.files("jqodi") / "scenarios" / "fleet-demo.yaml"))


#: ``make demo``'s fleet section: every device's first two epochs on small slices (about a minute)
DEMO_OPTIONS = FleetRunOptions(max_epochs=2, train_size=128, val_size=64, workdir="runs/demo-fleet")


def fleet_demo(say: Say = _print, opts: FleetRunOptions = DEMO_OPTIONS):
    """The demo's fleet section: plan the four-device fleet, run it (1 cloud, 2 edge and 4 end-device
    processes on this host), print the results; returns the record. ``opts.pretrained`` should be
    the main job's pretraining (its cache then serves the fleet)."""
    rec, workdir = run_fleet_scenario(fleet_demo_path(), opts, say=say)
    say(fleet_report(rec))
    say(f"record: {workdir / 'record.json'}, edge utilisation plot: {workdir / 'utilisation.png'}")
    return rec
