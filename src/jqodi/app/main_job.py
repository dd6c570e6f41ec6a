"""The main job of ``make demo``: measure, plan, run the plan for real, compare with the prediction.

    from jqodi.app.main_job import MainJobConfig, main_job
    main_job()                                   # the packaged CPU-scale scenario (cpu-demo.yaml), minutes on 2 cores
    main_job(MainJobConfig(plan_only=True))      # stop after planning

The job is five step functions, each taking the previous steps' results (plain dataclasses) and
printing its own section through ``say``; :func:`main_job` chains them. A script can call the
steps on their own (e.g. :func:`load`, :func:`pretrain` and :func:`measure` for measured
estimates without planning or running anything).

1. :func:`pretrain` every candidate model on the cloud's data (:func:`jqodi.core.pretrained.load_pretrained`,
   cached under ``$JQODI_HOME``; ``pretrain_cloud_size`` images × ``pretrain_epochs`` so that a
   fresh machine pays about half a minute of CPU: measured in docs/demo.md).
2. :func:`measure` the learning estimates on the end device's data: one probe fine-tuning run of
   ``probe_epochs`` (≤ 5) per candidate (model, bits) of the scenario — Ω and the baseline
   bit-widths. L_a and γ come from the probe (:func:`jqodi.learning.reference.finetune`), K^exp/K^rob from the
   learned prior over the trace store's runs updated with the probe, K^rob by conformal prediction
   (:func:`jqodi.learning.estimate.estimate_from_probe_run`, what ``jqodi estimate`` and the
   held-out benchmark use); with no stored run (cold start) the probe alone with a widened K^rob,
   and the section says so. The probes are recorded in the trace store for the next job.
   **Target rule**: ``L_max = (1 + target_margin) × the lowest validation loss any Ω candidate
   reached in its probe``: reachable (a candidate got there within the probe, up to the margin)
   but not free (it takes several epochs of fine-tuning). The deadline is the scenario's
   ``deadline_s``, in the testbed's seconds.
3. :func:`plan`: the instance compiled with the measured estimates, JQODI beside the exact optimum
   and the paper's static Optimum (:func:`jqodi.planner.compare`); then the plan the run starts
   from (:func:`jqodi.app.pre_run.first_plan`): by default the candidate of least expected energy
   under the K estimates' spread, its schedule planned for T_max less the closed loop's time reserve.
4. :func:`run` the plan with the cloud, edge and end device as separate processes over gloo on
   loopback, the testbed emulated in dilated time, under the closed loop (``policy``: it stops at
   L_max, keeps the best model and re-plans; ``None``: all K^rob epochs run, and the record says at
   which epoch the target was first reached); then collaborative inference served by the same
   processes. The runtime records every epoch in the trace store (``trace_store``), under the
   run's job id.
5. :func:`compare` predicted and measured: epochs to target, final loss, time and energy per node and
   phase, bytes per link; everything is saved as ``summary.json`` (and the runtime's
   ``record.json``) under ``workdir``.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["MainJobConfig", "Pretraining", "Measurement", "Planning", "main_job", "load", "pretrain",
           "measure", "plan", "run", "compare", "section_runtime", "cpu_demo_path", "target_from_probes"]

Say = Callable[[str], None]


@dataclass(frozen=True)
class MainJobConfig:
    """Every knob of the main job, with the defaults of ``make demo``.

    ``scenario_path`` ``None`` = the packaged cpu-demo scenario; ``train_size``/``val_size``
    override its SD data sizes; ``max_epochs`` caps the run (tests), ``None`` runs the whole plan;
    ``plan_only`` stops after planning; ``requests`` inference requests per device combination;
    ``trace_store``: where the runtime records its epochs (``"default"`` = ``$JQODI_HOME/traces.db``,
    ``None`` = not recorded); ``workdir`` ``None`` = ``runs/demo-<scenario>``.
    ``policy``: the closed loop (:mod:`jqodi.app.controller`; ``replan``, ``static`` or ``None``
    for none: every planned epoch runs); ``replan_threshold``, ``confirm``: its knobs.
    ``choice``: which candidate the run trains (:mod:`jqodi.app.pre_run`: ``expected``, the least
    expected energy under the K estimate's spread, or ``planner``); with policy ``replan`` the first
    schedule is planned for T_max less the controller's time reserve.
    """

    scenario_path: str | Path | None = None
    pretrain_cloud_size: int | None = 8000
    pretrain_epochs: int = 2
    probe_epochs: int = 5
    target_margin: float = 0.15
    train_size: int | None = None
    val_size: int | None = None
    max_epochs: int | None = None
    requests: int = 100
    solver: str = "jqodi"
    plan_only: bool = False
    workdir: str | Path | None = None
    transport: str = "gloo"
    emulate: bool = True
    trace_store: str | Path | None = "default"
    policy: str | None = "replan"
    replan_threshold: float = 0.03
    confirm: int = 0
    choice: str = "expected"

    @property
    def scenario_file(self) -> Path:
        """The scenario YAML the job loads: ``scenario_path``, or the packaged cpu-demo scenario."""
        return Path(self.scenario_path) if self.scenario_path else cpu_demo_path()

    @property
    def pretrain_options(self) -> dict:
        """The keyword arguments of :func:`jqodi.core.pretrained.load_pretrained` (also the job's)."""
        return {"epochs": int(self.pretrain_epochs), "cloud_size": self.pretrain_cloud_size}


@dataclass
class Pretraining:
    """Step 1's result: the pretrained model per candidate model name, and what it cost."""

    models: dict[str, Any]                         # name → jqodi.core.pretrained.Pretrained
    info: dict[str, dict] = field(default_factory=dict)


@dataclass
class Measurement:
    """Step 2's result: one probe per (model, bits), the target rule and the learning estimates."""

    probes: dict[tuple[str, int], Any]             # (model, bits) → FinetuneResult
    target_loss: float
    best_candidate: tuple[str, int]
    best_probe_loss: float
    estimates: list                                # jqodi.core.estimates.LearningEstimate


@dataclass
class Planning:
    """Step 3's result: the scenario with L_max set, the instance, every solver's row, the chosen plan
    and its (model, bits)'s learning estimate (``None`` when the solver found no plan)."""

    scenario: Any
    instance: Any
    rows: list[dict]
    solution: Any
    estimate: Any                                  # the LearningEstimate of the plan's (model, bits)


def cpu_demo_path() -> Path:
    """The packaged CPU-scale scenario (a copy of ``examples/cpu-demo.yaml``)."""
    from importlib import resources

    return Path(str(resources.files("jqodi") / "scenarios" / "cpu-demo.yaml"))


def target_from_probes(probe_losses: dict, margin: float) -> float:
    """The demo's L_max: ``(1 + margin) ×`` the lowest validation loss in any probe."""
    best = min((min(v) for v in probe_losses.values() if v), default=math.nan)
    if not math.isfinite(best):
        from jqodi.errors import JqodiError

        raise JqodiError("no probe produced a finite validation loss: cannot set a target loss")
    return float((1.0 + margin) * best)


def _cpu() -> float:
    return time.process_time()


def _print(s: str) -> None:
    print(s, flush=True)


# --- the steps ------------------------------------------------------------------------------------


def load(cfg: MainJobConfig, say: Say = _print):
    """The scenario of ``cfg`` (its SD data sizes overridden when asked); prints its one-line header."""
    from jqodi.core.scenario import load_scenario

    path = cfg.scenario_file
    scenario = load_scenario(path)
    if cfg.train_size is not None or cfg.val_size is not None:
        d = scenario.model_dump()
        d["data"]["train_size"] = int(cfg.train_size or d["data"]["train_size"])
        d["data"]["val_size"] = int(cfg.val_size or d["data"]["val_size"])
        scenario = scenario.with_changes(data=d["data"])
    say(f"scenario {scenario.name} ({path}): {scenario.description}")
    return scenario


def pretrain(scenario, cfg: MainJobConfig, say: Say = _print) -> Pretraining:
    """Step 1: every candidate model pretrained on the cloud's data (cached in ``$JQODI_HOME``)."""
    from jqodi.core.pretrained import load_pretrained

    sd = scenario.data
    say(f"\n[1/5] cloud pretraining on {sd.dataset} ({cfg.pretrain_cloud_size or 'all'} images × "
        f"{cfg.pretrain_epochs} epochs; cached in $JQODI_HOME)")
    out = Pretraining({})
    for m in scenario.models:
        w0, cc = time.perf_counter(), _cpu()
        pre = load_pretrained(m.name, sd.dataset, m.width, **cfg.pretrain_options)
        out.models[m.name] = pre
        fresh = pre.path is not None and Path(pre.path).stat().st_mtime >= time.time() - (time.perf_counter() - w0) - 1
        info = {"width": m.width, "wall_s": time.perf_counter() - w0, "cpu_s": _cpu() - cc, "from_cache": not fresh,
                "cloud_val_loss": pre.meta.get("cloud_val_loss"),
                "cloud_val_accuracy": pre.meta.get("cloud_val_accuracy"), "checkpoint": str(pre.path)}
        out.info[m.name] = info
        say(f"  {m.name} ×{m.width:g}: cloud validation loss {info['cloud_val_loss']:.4f}, accuracy "
            f"{info['cloud_val_accuracy']:.1%} ({info['wall_s']:.1f} s wall, {info['cpu_s']:.1f} s CPU"
            f"{', from the cache' if info['from_cache'] else ', pretrained now'})")
    return out


def measure(scenario, pretraining: Pretraining, cfg: MainJobConfig, say: Say = _print) -> Measurement:
    """Step 2: one probe per candidate on the SD's data, the target rule, the learning estimates."""
    from jqodi.core.data import cloud_dataset_name, end_device_data
    from jqodi.core.training import TrainConfig
    from jqodi.learning.estimate import estimate_from_probe_run
    from jqodi.learning.reference import finetune

    sd, tr = scenario.data, scenario.training
    data = end_device_data(sd.split, cloud_dataset_name(sd.dataset, sd.split), sd.data_dir, train_size=sd.train_size,
                           val_size=sd.val_size, seed=tr.seed)
    train_cfg = TrainConfig(lr=tr.lr, momentum=tr.momentum, weight_decay=tr.weight_decay,
                            batch_size=tr.batch_size, optimizer=tr.optimizer)
    all_bits = list(dict.fromkeys([*scenario.bits, *scenario.baseline_bits]))
    cands = [(m.name, b) for m in scenario.models for b in all_bits]
    say(f"\n[2/5] measuring learning estimates on the end device's data ({data.description}): "
        f"one {cfg.probe_epochs}-epoch probe per candidate, {len(cands)} candidates ("
        + ", ".join(f"{m}@{b}" for m, b in cands) + f"); {tr.optimizer} lr {tr.lr:g}")
    probes = {}
    for m, b in cands:
        w0 = time.perf_counter()
        r = finetune(m, b, data, cfg.probe_epochs, tr.seed, cfg=train_cfg, pretrained=pretraining.models[m],
                     progress=False)
        r.config["pretrain_cloud_size"] = cfg.pretrain_cloud_size   # the runtime's runs name it too (one group)
        probes[(m, b)] = r
        say(f"  {m}@{b:>2}: L_a {r.base_loss:.4f}, quantized start {r.start_loss:.4f} (γ {r.gamma:+.4f}), "
            f"probe val losses " + " ".join(f"{v:.3f}" for v in r.val_losses)
            + f" ({time.perf_counter() - w0:.1f} s)")
    search = {(m, b): probes[(m, b)].val_losses for m, b in cands if b in scenario.bits}
    target = target_from_probes(search, cfg.target_margin)
    best_key = min(search, key=lambda k: min(search[k]))
    say(f"  target rule: L_max = (1 + {cfg.target_margin:g}) × the lowest probe loss of an Ω candidate "
        f"({min(search[best_key]):.4f}, {best_key[0]}@{best_key[1]}) = {target:.4f}")
    with _trace_store(cfg) as store:
        prior = _curve_prior(store, say)
        estimates = [estimate_from_probe_run(r, target, prior) for r in probes.values()]
        for e in estimates:
            say(f"  {e.model}@{e.bits:>2}: K^exp {e.epochs_expected or '∞'}, K^rob {e.epochs_robust or '∞'} "
                f"({e.source.removeprefix('measured:')})")
        if store is not None:   # after estimating: a probe does not calibrate its own estimate
            from jqodi.learning.estimate import record_probe

            for r in probes.values():
                record_probe(store, r)
    return Measurement(probes, target, best_key, min(search[best_key]), estimates)


def _trace_store(cfg: MainJobConfig):
    """The main job's trace store (``cfg.trace_store``), opened as a context manager (``None`` when not recorded)."""
    from contextlib import nullcontext

    from jqodi.core.paths import default_store_path
    from jqodi.core.traces import TraceStore

    if cfg.trace_store is None:
        return nullcontext(None)
    return TraceStore(default_store_path() if cfg.trace_store == "default" else Path(cfg.trace_store))


def _curve_prior(store, say: Say):
    """The learned prior over the store's runs (:class:`jqodi.learning.prior.CurvePrior`); says what it holds."""
    from jqodi.core.traces import skipped_text
    from jqodi.learning.prior import COLD_START_MARGIN, CurvePrior

    prior = CurvePrior.from_store(store) if store is not None else CurvePrior([])
    skipped = f"; {skipped_text(prior.skipped)} left out" if prior.skipped_count else ""
    if prior.runs:
        say(f"  K^exp/K^rob: learned prior over {len(prior.runs)} stored runs "
            f"({len({r.group for r in prior.runs})} configurations{skipped}) + each probe; "
            f"K^rob by conformal prediction")
    else:
        say(f"  K^exp/K^rob: cold start — the trace store has no runs{skipped}: the probe alone, "
            f"K^rob widened to ≥ {1 + COLD_START_MARGIN:.1f}·K^exp")
    return prior


def plan(scenario, measurement: Measurement, cfg: MainJobConfig, say: Say = _print) -> Planning:
    """Step 3: compile the instance with the measured estimates; JQODI, the exact and the static optimum.

    When the chosen solver finds no plan, ``estimate`` is ``None`` (the solution says why).
    """
    from jqodi.app.pre_run import choice_lines, first_plan
    from jqodi.core.costs import compile_instance
    from jqodi.planner import compare as compare_solvers
    from jqodi.render.instance import render_instance
    from jqodi.render.plans import comparison_notes, comparison_table

    target = measurement.target_loss
    scenario = scenario.with_changes(target_loss=target)
    instance = compile_instance(scenario, measurement.estimates)
    say(f"\n[3/5] planning: deadline T_max = {scenario.deadline_s:g} s (testbed seconds), L_max = {target:.4f}")
    say(render_instance(instance))
    rows = compare_solvers(instance, ["jqodi", "optimal", "static"])
    say("")
    say(comparison_table(rows))
    say(comparison_notes(rows, instance)[0])  # what "vs optimal" means here
    sol = first_plan(instance, choice=cfg.choice, solver=cfg.solver, policy=cfg.policy,
                     estimates=measurement.estimates)
    planning = Planning(scenario, instance, rows, sol, None)
    if sol.status == "infeasible":
        return planning
    say("\n" + "\n".join(choice_lines(sol)))
    planning.estimate = next(e for e in measurement.estimates if (e.model, e.bits) == (sol.model, sol.bits))
    sched = ", ".join(f"{e.epochs}×({e.edge}, cut {e.cut})" for e in sol.schedule)
    say(f"plan ({cfg.solver}, {sol.extra['choice']['rule']} choice): {sol.model} at {sol.bits} bits, {sched}: "
        f"{sol.epochs} epochs = K^rob (K^exp {planning.estimate.epochs_expected}); predicted {sol.time_s:.2f} s "
        f"of T_max {scenario.deadline_s:g} s, {sol.energy_j:.1f} J on the testbed")
    return planning


def run(planning: Planning, cfg: MainJobConfig, workdir: Path, say: Say = _print):
    """Step 4: run the plan for real (cloud, edges, end device), then collaborative inference.

    Returns the runtime's :class:`jqodi.runtime.RunRecord` (also ``workdir/record.json``).
    """
    from jqodi.app.run import closed_loop_controller, job_for_plan, replan_options, with_standby_edges
    from jqodi.runtime.job import dilation_words
    from jqodi.runtime.launch import run_plan

    sol = planning.solution
    controller = None
    if cfg.policy is not None:  # before the job: its automatic dilation covers the controller's options
        from jqodi.app.controller.loop import prior_weight

        controller = closed_loop_controller(planning.scenario, sol, policy=cfg.policy, threshold=cfg.replan_threshold,
                                            confirm=cfg.confirm, instance=planning.instance,
                                            weighed=prior_weight(planning.estimate), say=say)
    job = job_for_plan(planning.scenario, sol, emulate=cfg.emulate, max_epochs=cfg.max_epochs,
                       pretrained={"source": "pretrained", **cfg.pretrain_options}, requests=cfg.requests,
                       trace_store=cfg.trace_store, replan_options=replan_options(controller))
    if controller is not None:
        job = with_standby_edges(job)
    n_run = len(job.epoch_plan())
    loop = (f"; closed loop ({cfg.policy}): stops at L_max, keeps the best model"
            + (", refits K and device/link speeds and re-plans after every epoch and when an edge leaves or "
               "returns" if cfg.policy == "replan" else "") if controller is not None else "")
    timeline = planning.scenario.resolved_timeline()
    events = ""
    if not timeline.empty:
        events = ("; the timeline: " + ", ".join(
            [f"{k} follows {Path(tt.trace.source).name}" for k, tt in timeline.traces.items()]
            + [f"{key.removeprefix('edge:')} {'returns' if v else 'leaves'} at {at:g} s" if kind == "edge"
               else f"{key} slows ×{v:g} at {at:g} s" for at, kind, key, v in timeline.changes]))
    say(f"\n[4/5] running {'up to ' if controller is not None else ''}{n_run} of the plan's {sol.epochs} epochs "
        f"for real: cloud, edge and end device as separate processes over {cfg.transport}"
        + (f", the testbed emulated at dilation {dilation_words(job.emulation.dilation, job.emulation.dilation_auto)}"
           if cfg.emulate else "")
        + loop + events + f"; then {cfg.requests} inference requests per device combination")
    for name in ("checkpoint.pt", "epochs.json", "record.json", "controller.json"):
        (workdir / name).unlink(missing_ok=True)
    return run_plan(planning.scenario, sol, transport=cfg.transport, workdir=workdir, job=job, say=say,
                    controller=controller)


def compare(planning: Planning, measurement: Measurement, record, cfg: MainJobConfig, say: Say = _print) -> dict:
    """Step 5: predicted vs measured (epochs to target, final loss, time, energy, bytes); returns
    the ``learning_vs_prediction`` part of the summary."""
    from jqodi.render.runs import control_lines, format_inference, run_outcome, run_table
    from jqodi.runtime.inference import InferenceResult

    sol, row, target = planning.solution, planning.estimate, measurement.target_loss

    say("\n[5/5] predicted vs measured")
    say(run_outcome(record))
    say(run_table(record))
    lines = control_lines(record)
    if lines:
        say("\n" + "\n".join(lines))
    losses = [e["val_loss"] for e in record.epochs]
    reached = next((i + 1 for i, v in enumerate(losses) if v <= target), None)
    deadline = _deadline(planning, record)
    if record.epochs:
        say(f"\ndeadline: {deadline['time_s']:.3g} s of T_max {deadline['deadline_s']:g} s (testbed time): "
            + ("met" if deadline["met"] else f"MISSED by {deadline['time_s'] - deadline['deadline_s']:.3g} s")
            + f"; first plan {sol.time_s:.3g} s, planned for {deadline['planned_deadline_s']:.3g} s"
            + (f"; this host fell behind the emulated devices by {deadline['host_overrun_s']:.3g} s "
               f"(summed over the nodes; inside the measured time)" if record.emulated else ""))
    cmp = {"target_loss": target, "epochs_expected": row.epochs_expected, "epochs_robust": row.epochs_robust,
           "epochs_run": len(losses), "epoch_target_reached": reached,
           "final_loss_predicted_robust": row.final_loss_robust, "final_loss_predicted_expected": row.final_loss_expected,
           "start_loss_measured": measurement.probes[(sol.model, sol.bits)].start_loss,
           "final_loss_measured": losses[-1] if losses else None,
           "final_accuracy_measured": record.epochs[-1]["val_accuracy"] if record.epochs else None,
           "deadline": deadline}
    if losses:
        say(f"\nloss: start (quantized) {cmp['start_loss_measured']:.4f}; target L_max {target:.4f}; "
            f"predicted to reach it after K^exp = {row.epochs_expected} (K^rob = {row.epochs_robust}) epochs, "
            f"measured: " + (f"reached after epoch {reached}" if reached else "NOT reached")
            + f" of {len(losses)}; final loss predicted ≤ {_f(row.final_loss_robust)} (robust) / "
            f"{_f(row.final_loss_expected)} (expected), measured {losses[-1]:.4f} "
            f"(accuracy {cmp['final_accuracy_measured']:.1%})")
        say("val loss per epoch: " + " ".join(f"{v:.3f}" for v in losses))
    res = [InferenceResult.from_dict(r) for r in record.inference]
    if res:
        say(f"\ncollaborative inference with the fine-tuned model, served by the same processes: {cfg.requests} "
            f"single-image requests per device combination"
            + (f" (emulated, dilation ×{res[0].dilation:.3g})" if cfg.emulate else ""))
        say(format_inference(res))
    return cmp


# --- the job ----------------------------------------------------------------------------------------


def main_job(cfg: MainJobConfig | None = None, say: Say | None = None) -> dict:
    """Run the main job; returns the summary (plain JSON-able dict, also saved as ``workdir/summary.json``).
    One job per workdir at a time (:class:`jqodi.app.run.WorkdirLock`, as ``jqodi run`` and ``jqodi cloud``)."""
    cfg = cfg or MainJobConfig()
    say = say or _print
    t0, c0 = time.perf_counter(), _cpu()
    scenario = load(cfg, say)
    wd = Path(cfg.workdir or f"runs/demo-{scenario.name}")
    from jqodi.app.run import WorkdirLock

    # one run per workdir: a second main job there would delete this one's checkpoint and epochs (step 4)
    with WorkdirLock(wd, "demo"):
        return _main_job(cfg, say, scenario, wd, t0, c0)


def _main_job(cfg: MainJobConfig, say: Say, scenario, wd: Path, t0: float, c0: float) -> dict:
    from jqodi.errors import InfeasibleError

    wd.mkdir(parents=True, exist_ok=True)
    summary: dict = {"scenario": str(cfg.scenario_path or cpu_demo_path()), "scenario_name": scenario.name}

    pretraining = pretrain(scenario, cfg, say)
    summary["pretraining"] = pretraining.info
    measurement = measure(scenario, pretraining, cfg, say)
    summary.update(_measurement_summary(measurement, cfg))
    planning = plan(scenario, measurement, cfg, say)
    summary["plans"] = [{k: v for k, v in r.items() if k != "solution"} | {"solution": r["solution"].to_dict()}
                        for r in planning.rows]
    summary["choice"] = planning.solution.extra.get("choice")
    if planning.estimate is None:
        _save(wd, summary)
        sol = planning.solution
        raise InfeasibleError(f"no feasible plan for {scenario.name}: {sol.extra.get('explanation', '')}")
    if cfg.plan_only:
        summary["wall_s"] = time.perf_counter() - t0
        say(f"\n--plan-only: not running. summary: {_save(wd, summary)}")
        return summary

    record = run(planning, cfg, wd, say)
    summary["learning_vs_prediction"] = compare(planning, measurement, record, cfg, say)
    summary["record"] = str(wd / "record.json")
    summary["totals"] = record.totals
    summary["inference"] = record.inference
    summary["status"] = record.status
    summary["job_id"] = record.job.get("run_id")
    summary["wall_s"] = time.perf_counter() - t0
    summary["cpu_s_main_process"] = _cpu() - c0
    out = _save(wd, summary)
    say(f"\nsaved: {out} and {wd / 'record.json'}  (main job {summary['wall_s']:.0f} s wall)")
    return summary


def _deadline(planning: Planning, record) -> dict:
    """The run's time against T_max: measured (testbed seconds), what the first plan was made for,
    and how far this host fell behind the emulated devices (``overrun_s``, summed over nodes)."""
    t = float(record.totals["time_s"]) if record.epochs else 0.0
    t_max = float(planning.scenario.deadline_s)
    choice = planning.solution.extra.get("choice") or {}
    return {"deadline_s": t_max, "time_s": t, "met": t <= t_max + 1e-9,
            "planned_deadline_s": choice.get("planned_deadline_s", t_max),
            "host_overrun_s": sum(sum((e.get("overrun_s") or {}).values()) for e in record.epochs)}


def _measurement_summary(m: Measurement, cfg: MainJobConfig) -> dict:
    return {"target_rule": {"margin": cfg.target_margin, "best_probe_loss": m.best_probe_loss,
                            "best_candidate": list(m.best_candidate), "target_loss": m.target_loss},
            "probes": [{"model": mo, "bits": b, "base_loss": r.base_loss, "start_loss": r.start_loss,
                        "gamma": r.gamma, "val_losses": r.val_losses, "wall_s": r.wall_s}
                       for (mo, b), r in m.probes.items()],
            "estimates": [asdict(e) for e in m.estimates]}


def _f(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def _save(wd: Path, summary: dict) -> Path:
    p = wd / "summary.json"
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(p)
    return p


def section_runtime(ctx) -> None:
    """A :mod:`jqodi.app.demo` section: the main job on the packaged CPU-scale scenario."""
    ctx.title("Main job: measure, plan and run the CPU-scale scenario (cloud, edge, end processes)")
    main_job(say=lambda s: ctx.print(s))
    sys.stdout.flush()
