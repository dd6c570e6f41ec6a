"""From a scenario and a solution to a :class:`Job`, and the cost model's per-epoch prediction.

The runtime knows nothing of how the plan was found: it takes the solution's model, bits and
schedule, and the scenario's devices, links, data and training settings.
"""
from __future__ import annotations

import math
import uuid
from pathlib import Path

from jqodi.core.devices import CLOUD_ROLE, END_ROLE, Device, edge_role, link_key
from jqodi.core.instance import ScheduleEntry
from jqodi.errors import JqodiError
from jqodi.runtime.job import (DEFAULT_STARTUP_TIMEOUT_S, AutoDilation, DataConfig, EmulationConfig, Job, LinkProfile,
                              TrainingConfig)

__all__ = ["job_from_plan", "plan_dilation", "dilation_choice", "predict_epoch", "cpu_scale", "emulation_from_scenario", "DEFAULT_TRACE_STORE"]

#: ``trace_store="default"``: the cloud records the run in ``$JQODI_HOME/traces.db``
DEFAULT_TRACE_STORE = "default"


def cpu_scale(scenario, *, dataset: str = "fashion-mnist", train_size: int | None = None,
              val_size: int | None = None, widths: dict[str, float] | None = None):
    """A copy of ``scenario`` at CPU scale: the models' CPU widths (:data:`jqodi.core.training.DEFAULT_WIDTH`),
    a dataset this machine has, optionally fewer samples. Devices and links are unchanged."""
    from jqodi.core.scenario import Scenario
    from jqodi.core.training import DEFAULT_WIDTH

    d = scenario.model_dump()
    widths = widths or DEFAULT_WIDTH
    for m in d["models"]:
        m["width"] = float(widths.get(m["name"], m["width"]))
    d["data"]["dataset"] = dataset
    if dataset == "fashion-mnist":
        d["data"]["input_shape"] = (1, 28, 28)
        d["data"]["num_classes"] = 10
    if train_size is not None:
        d["data"]["train_size"] = int(train_size)
    if val_size is not None:
        d["data"]["val_size"] = int(val_size)
    out = Scenario.model_validate(d)
    out._source_dir = scenario._source_dir  # the timeline's trace files are read from there
    return out


def emulation_from_scenario(scenario, bits: int, edges: list[str], *, enabled: bool, dilation: float) -> EmulationConfig:
    """Device speeds (× the bit-width speed-up) and busy powers, link rates and energy per bit,
    for the cloud, the end device and every usable edge (the plan's ``edges`` run training; the
    others are offered to collaborative inference).

    A device keeps its idle power only when the plan charges it (``extended`` cost model with
    ``idle_energy: true``): the emulated meter then charges it while the node waits. Under the
    ``paper`` model (Eq. (1)–(10)) idle time costs nothing, in the plan and in the emulation."""
    from jqodi.core.system import System

    system = System.from_scenario(scenario)
    charges_idle = scenario.cost_model == "extended" and bool(scenario.idle_energy)

    def dev(node: Device) -> Device:
        # at this bit-width: v × speed-up, drawing the same busy power P = ε·v (ε scales down)
        return Device.from_power(node.name, node.flops * node.speedup(bits), node.busy_power_w,
                                 idle_power_w=node.idle_power_w if charges_idle else None)

    devices = {CLOUD_ROLE: dev(system.cloud), END_ROLE: dev(system.end)}
    links = {}
    for i, e in enumerate(system.edges):
        if system.edge_down_reason[i] and e.name not in edges:
            continue  # unusable (down): not offered for inference either
        devices[edge_role(e.name)] = dev(e)
        links[link_key(CLOUD_ROLE, edge_role(e.name))] = LinkProfile(float(system.cloud_edge_rate_bps[i]),
                                                                     float(system.cloud_edge_j_per_bit[i]))
        links[link_key(edge_role(e.name), END_ROLE)] = LinkProfile(float(system.edge_end_rate_bps[i]),
                                                                   float(system.edge_end_j_per_bit[i]))
    return EmulationConfig(enabled=enabled, dilation=float(dilation), devices=devices, links=links,
                           rooflines=_rooflines(scenario, system, devices))


def _rooflines(scenario, system, devices: dict[str, Device]) -> dict[str, dict]:
    """The emulated nodes the cost model times by their device file's rooflines (``extended``
    model, a node with per-layer rooflines): the emulation pads their steps to the same times."""
    from jqodi.core.device_model import DeviceModel

    if scenario.cost_model != "extended":
        return {}
    nodes = {CLOUD_ROLE: system.cloud, END_ROLE: system.end, **{edge_role(e.name): e for e in system.edges}}
    return {role: nodes[role].to_dict() for role in devices if isinstance(nodes[role], DeviceModel)}


def plan_dilation(scenario, solution, clock=None, host_timings: dict | None = None,
                  replan_options=None) -> float:
    """The automatic dilation of ``solution`` on ``scenario``'s testbed: the larger of the epoch
    rule and the overrun rule (:func:`dilation_choice`, which says how each came out)."""
    return dilation_choice(scenario, solution, clock, host_timings, replan_options)["dilation"]


def dilation_choice(scenario, solution, clock=None, host_timings: dict | None = None,
                    replan_options=None) -> dict:
    """How the automatic dilation of ``solution`` comes out, from the host's own speed on the plan's
    model (:func:`jqodi.runtime.emulation.host_flops`, timed by ``clock``: default the wall clock):

    * ``epoch_rule``: :func:`jqodi.runtime.emulation.auto_dilation` — 4 × the host's epoch time
      for the whole model against the plan's shortest predicted epoch;
    * ``overrun_rule``: the largest over the schedule's (edge, cut) options of
      :func:`jqodi.runtime.emulation.overrun_dilation`: each role's host time for an epoch (a
      training batch of its part — forward, backward, optimizer step — timed by
      :func:`jqodi.runtime.emulation.host_split_s`, × the training batches, + a third of it per
      validation batch: forward only) against that role's predicted compute phase
      (``end_compute``, ``edge_compute``);
    * ``dilation``: the larger of the two; ``options``: per option its rule's dilation, the
      host's and the device's seconds per role, and whether the schedule has it (``scheduled``).

    ``replan_options``: the (edge, cut) options a closed loop may re-plan the run onto (the job's
    ``closed_loop`` block lists them); the overrun rule covers them too, so an epoch moved to one
    of them is bounded as the schedule's are (the epoch rule stays the schedule's: it is the
    plan's shortest epoch). An option the cost model cannot run (infinite time) is left out.
    ``host_timings``: a dict the host's timings are kept in and taken from, per model, bits, batch
    and optimizer (the devices of a fleet plan the same model: the host is timed once, not once
    per device)."""
    import copy
    import time

    from jqodi.core.profile import profile_named_model
    from jqodi.core.quant import prepare_qat
    from jqodi.core.train_config import TrainConfig
    from jqodi.core.zoo import build_model
    from jqodi.runtime.emulation import OVERRUN_SHARE, auto_dilation, host_flops, host_split_s, overrun_dilation

    model, bits, data = solution.model, int(solution.bits), scenario.data
    width = scenario.model_entry(model).width
    batch, clock = scenario.training.batch_size, clock or time.perf_counter
    tr = scenario.training  # the roles' optimizer (job_from_plan's TrainingConfig)
    train_config = TrainConfig(lr=tr.lr, momentum=tr.momentum, weight_decay=tr.weight_decay, optimizer=tr.optimizer)
    timed = (host_timings if host_timings is not None else {}).setdefault(
        (model, bits, float(width), tuple(data.input_shape), int(data.num_classes), batch, repr(train_config)), {})
    if "host_flops" not in timed:
        net = build_model(model, data.input_shape, data.num_classes, width, seed=0)
        timed["host_flops"] = host_flops(net, batch_size=batch, clock=clock)
        timed["worker"] = prepare_qat(copy.deepcopy(net), bits, train_config.act_bits)  # the roles' (build_worker)
        timed["split_s"] = {}  # per cut: the host's batch of each part (every edge alike)
    host, worker, split_s = timed["host_flops"], timed["worker"], timed["split_s"]
    prof = profile_named_model(model, data.input_shape, data.num_classes, width)
    samples = 3.0 * data.train_size + data.val_size  # forward + backward (3×) of training, forward of validation
    host_epoch_s = samples * prof.flops / host
    batches = (data.train_size + data.val_size / 3.0) / batch  # validation: forward only (≈ ⅓ of a batch)
    scheduled = {(s.edge, int(s.cut)) for s in solution.schedule}
    options: dict[str, dict] = {}
    for edge, cut in [(s.edge, int(s.cut)) for s in solution.schedule] + [(e, int(c)) for e, c in replan_options or ()]:
        key = f"{edge}|{cut}"
        if key in options:
            continue
        pred = predict_epoch(scenario, model, bits, cut, edge)
        if not math.isfinite(pred["time_s"]):
            continue  # an option the cost model cannot run: no epoch moves there
        if cut not in split_s:
            split_s[cut] = host_split_s(worker, cut, batch_size=batch, repeats=5, clock=clock,
                                        train_config=train_config)
        end_b, edge_b = split_s[cut]
        host_s = {"end": batches * end_b, "edge": batches * edge_b}
        device_s = {"end": pred["phases_s"]["end_compute"], "edge": pred["phases_s"]["edge_compute"]}
        options[key] = {"edge": edge, "cut": cut, "scheduled": (edge, cut) in scheduled,
                        "predicted_s": pred["time_s"], "host_s": host_s, "device_s": device_s,
                        "dilation": overrun_dilation([(host_s[r], device_s[r]) for r in host_s], pred["time_s"])}
    epoch_rule = auto_dilation(host_epoch_s, min(o["predicted_s"] for o in options.values() if o["scheduled"]))
    overrun_rule = max(o["dilation"] for o in options.values())
    return {"dilation": max(epoch_rule, overrun_rule), "epoch_rule": epoch_rule, "overrun_rule": overrun_rule,
            "overrun_share": OVERRUN_SHARE, "host_flops": host, "host_epoch_s": host_epoch_s, "options": options}


def job_from_plan(scenario, solution, *, emulate: bool | None = None, dilation: float | str | None = None,
                  timeout_s: float | None = None, startup_timeout_s: float | None = None,
                  max_epochs: int | None = None, pretrained: dict | None = None,
                  meter: str = "auto", run_id: str | None = None, data_dir: str | None = None,
                  trace_store: str | Path | None = DEFAULT_TRACE_STORE, replan_options=None) -> Job:
    """The job that runs ``solution`` on ``scenario``'s testbed (emulated when ``emulate``).

    ``timeout_s``: failure detection (default: the scenario's ``runtime.timeout_s``);
    ``startup_timeout_s``: rendezvous and process-group formation (default
    :data:`jqodi.runtime.job.DEFAULT_STARTUP_TIMEOUT_S`).
    ``trace_store``: where the cloud records the run's epochs (:mod:`jqodi.core.traces`);
    ``"default"`` = ``$JQODI_HOME/traces.db`` (resolved now, so every role process agrees),
    ``None`` = not recorded.
    ``replan_options``: the (edge, cut) options a closed loop may move the run's epochs to; the
    automatic dilation's overrun rule covers them (:func:`dilation_choice`).
    """
    from jqodi.core.profile import profile_named_model

    if getattr(solution, "status", None) == "infeasible" or not solution.schedule:
        raise JqodiError(f"the plan is infeasible: nothing to run ({solution.extra.get('explanation', '')})".rstrip(" ()"))
    from jqodi.core.data import cloud_dataset_name

    model, bits = solution.model, int(solution.bits)
    entry = scenario.model_entry(model)
    tr, rt, data = scenario.training, scenario.runtime, scenario.data
    for s in solution.schedule:
        scenario.edge(s.edge)  # names an unknown edge
    # the scenario's hyper-parameters; the return mode stays the reference's (jqodi.core.training.TrainConfig)
    training = TrainingConfig(lr=tr.lr, momentum=tr.momentum, weight_decay=tr.weight_decay,
                              optimizer=tr.optimizer, batch_size=tr.batch_size, wire_act_bits=tr.wire_bits(tr.act_bits, bits),
                              wire_grad_bits=tr.wire_bits(tr.grad_bits, bits), seed=tr.seed)
    schedule = [ScheduleEntry(s.edge, int(s.cut), int(s.epochs)) for s in solution.schedule]
    edges = [s.edge for s in schedule]
    emulate = rt.emulate if emulate is None else emulate
    dilation = rt.time_dilation if dilation is None else dilation
    profile = profile_named_model(model, data.input_shape, data.num_classes, entry.width)
    emu = emulation_from_scenario(scenario, bits, edges, enabled=bool(emulate), dilation=1.0)
    auto = None
    if emulate and dilation == "auto":
        choice = dilation_choice(scenario, solution, replan_options=replan_options)
        dilation, auto = choice["dilation"], AutoDilation.of(choice["epoch_rule"], choice["overrun_rule"])
    timeline = scenario.resolved_timeline()  # what the emulation applies (link traces, edges, slowdowns)
    emu = EmulationConfig(enabled=bool(emulate), dilation=float(dilation) if emulate else 1.0, dilation_auto=auto,
                          devices=emu.devices, links=emu.links, rooflines=emu.rooflines,
                          timeline=None if timeline.empty else timeline.to_dict())
    return Job(model=model, bits=bits, schedule=schedule, width=float(entry.width),
               input_shape=tuple(data.input_shape), num_classes=int(data.num_classes),
               data=DataConfig(name=data.split, dataset=cloud_dataset_name(data.dataset, data.split),
                               train_size=data.train_size, val_size=data.val_size, seed=tr.seed,
                               data_dir=data_dir or data.data_dir, name_written=data.written("split"),
                               dataset_written=data.written("dataset")),
               training=training, emulation=emu, pretrained=dict(pretrained or {"source": "pretrained"}),
               run_id=run_id or uuid.uuid4().hex[:12], timeout_s=float(timeout_s or rt.timeout_s),
               startup_timeout_s=float(DEFAULT_STARTUP_TIMEOUT_S if startup_timeout_s is None else startup_timeout_s),
               meter=meter, max_epochs=max_epochs,
               cloud_update_flops=float(scenario.cloud.update_flops_per_param * profile.params),
               trace_store=_store_path(trace_store), target_loss=float(scenario.target_loss),
               predicted_epochs=[predict_epoch(scenario, model, bits, s.cut, s.edge) for s in schedule])


def _store_path(trace_store: str | Path | None) -> str | None:
    if trace_store is None:
        return None
    if str(trace_store) == DEFAULT_TRACE_STORE:
        from jqodi.core.paths import default_store_path

        return str(default_store_path())
    return str(trace_store)


def predict_epoch(scenario, model: str, bits: int, cut: int, edge: str) -> dict:
    """The cost model's epoch: total and per-phase time (s) and energy (J), and each node's idle energy (J)."""
    from jqodi.core.costs import TERMS, epoch_costs

    c = epoch_costs(scenario, model, bits, cut, edge)
    return {"time_s": c.time_s, "energy_j": c.energy_j, "cost_model": c.cost_model,
            "phases_s": {p: getattr(c, f"{p}_s") for p in TERMS},
            "phases_j": {p: getattr(c, f"{p}_j") for p in TERMS},
            # extended + idle_energy: each node's idle power × its wait (0 otherwise); in energy_j
            "idle_j": {"end": c.end_idle_j, "edge": c.edge_idle_j, "cloud": c.cloud_idle_j}}
