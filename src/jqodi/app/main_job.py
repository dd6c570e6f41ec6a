"""The main job of ``make demo``: measure, plan, run the plan for real, compare with the prediction.

    from jqodi.app.main_job import main_job
    main_job()                       # the packaged CPU-scale scenario (cpu-demo.yaml), minutes on 2 cores

Steps (each prints progress):

1. **Pretrain** every candidate model on the cloud's data (:func:`jqodi.core.pretrained.load_pretrained`,
   cached under ``$JQODI_HOME``; ``pretrain_cloud_size`` images × ``pretrain_epochs`` so that a
   fresh machine pays about half a minute of CPU: measured in docs/demo.md).
2. **Measure** the learning estimates on the end device's data: one probe fine-tuning run of
   ``probe_epochs`` (≤ 5) per candidate (model, bits) of the scenario — Ω and the baseline
   bit-widths. L_a and γ come from the probe (:func:`jqodi.learning.reference.finetune`), K^exp/K^rob from the
   learning-curve ensemble (:func:`jqodi.learning.curves.estimate_from_probe`).
   **Target rule**: ``L_max = (1 + target_margin) × the lowest validation loss any Ω candidate
   reached in its probe``: reachable (a candidate got there within the probe, up to the margin)
   but not free (it takes several epochs of fine-tuning). The deadline is the scenario's
   ``deadline_s``, in the testbed's seconds.
3. **Plan**: the instance compiled with the measured estimates, JQODI beside the exact optimum
   and the paper's static Optimum (:func:`jqodi.planner.compare`).
4. **Run the whole plan** (all its K^rob epochs; the plan commits to K^rob, so we do not stop at
   the target: the record says at which epoch the target was first reached) with the cloud, edge
   and end device as separate processes over gloo on loopback, the testbed emulated in dilated
   time; then collaborative inference served by the same processes.
5. **Compare** predicted and measured: epochs to target, final loss, time and energy per node and
   phase, bytes per link; everything is saved as ``summary.json`` (and the runtime's
   ``record.json``) under ``workdir``.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

__all__ = ["main_job", "section_runtime", "cpu_demo_path", "target_from_probes"]


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


def main_job(scenario_path: str | Path | None = None, *, pretrain_cloud_size: int | None = 8000,
             pretrain_epochs: int = 2, probe_epochs: int = 5, target_margin: float = 0.15,
             train_size: int | None = None, val_size: int | None = None, max_epochs: int | None = None,
             requests: int = 100, solver: str = "jqodi", plan_only: bool = False,
             workdir: str | Path | None = None, transport: str = "gloo", emulate: bool = True,
             say: Callable[[str], None] | None = None) -> dict:
    """Run the main job; returns the summary (plain JSON-able dict, also saved as ``workdir/summary.json``).

    ``max_epochs`` caps the run (tests); ``None`` runs the whole plan. ``plan_only`` stops after
    planning.
    """
    from jqodi.core.costs import compile_instance
    from jqodi.core.data import end_device_data
    from jqodi.errors import InfeasibleError
    from jqodi.learning.curves import estimate_from_probe
    from jqodi.core.estimates import LearningEstimate
    from jqodi.planner import compare
    from jqodi.render.plans import comparison_table
    from jqodi.core.scenario import Scenario, load_scenario
    from jqodi.core.pretrained import load_pretrained
    from jqodi.core.training import TrainConfig
    from jqodi.learning.reference import finetune

    say = say or (lambda s: print(s, flush=True))
    t0, c0 = time.perf_counter(), _cpu()
    path = Path(scenario_path) if scenario_path else cpu_demo_path()
    scenario = load_scenario(path)
    if train_size is not None or val_size is not None:
        d = scenario.model_dump()
        d["data"]["train_size"] = int(train_size or d["data"]["train_size"])
        d["data"]["val_size"] = int(val_size or d["data"]["val_size"])
        scenario = Scenario.model_validate(d)
    sd = scenario.data
    wd = Path(workdir or f"runs/demo-{scenario.name}")
    wd.mkdir(parents=True, exist_ok=True)
    summary: dict = {"scenario": str(path), "scenario_name": scenario.name}
    say(f"scenario {scenario.name} ({path}): {scenario.description}")

    # 1. pretraining (cached) ------------------------------------------------------------------
    say(f"\n[1/5] cloud pretraining on {sd.dataset} ({pretrain_cloud_size or 'all'} images × "
        f"{pretrain_epochs} epochs; cached in $JQODI_HOME)")
    pre_opts = {"epochs": int(pretrain_epochs), "cloud_size": pretrain_cloud_size}
    pretrained, summary["pretraining"] = {}, {}
    for m in scenario.models:
        w0, cc = time.perf_counter(), _cpu()
        pre = load_pretrained(m.name, sd.dataset, m.width, **pre_opts)
        pretrained[m.name] = pre
        fresh = pre.path is not None and Path(pre.path).stat().st_mtime >= time.time() - (time.perf_counter() - w0) - 1
        info = {"width": m.width, "wall_s": time.perf_counter() - w0, "cpu_s": _cpu() - cc, "from_cache": not fresh,
                "cloud_val_loss": pre.meta.get("cloud_val_loss"),
                "cloud_val_accuracy": pre.meta.get("cloud_val_accuracy"), "checkpoint": str(pre.path)}
        summary["pretraining"][m.name] = info
        say(f"  {m.name} ×{m.width:g}: cloud validation loss {info['cloud_val_loss']:.4f}, accuracy "
            f"{info['cloud_val_accuracy']:.1%} ({info['wall_s']:.1f} s wall, {info['cpu_s']:.1f} s CPU"
            f"{', from the cache' if info['from_cache'] else ', pretrained now'})")

    # 2. measured learning estimates ---------------------------------------------------------------
    data = end_device_data(sd.split, sd.dataset, train_size=sd.train_size, val_size=sd.val_size,
                           seed=scenario.training.seed)
    tr = scenario.training
    cfg = TrainConfig(lr=tr.lr, momentum=tr.momentum, weight_decay=tr.weight_decay, batch_size=tr.batch_size,
                      optimizer=tr.optimizer)
    all_bits = list(dict.fromkeys([*scenario.bits, *scenario.baseline_bits]))
    cands = [(m.name, b) for m in scenario.models for b in all_bits]
    say(f"\n[2/5] measuring learning estimates on the end device's data ({data.description}): "
        f"one {probe_epochs}-epoch probe per candidate, {len(cands)} candidates ("
        + ", ".join(f"{m}@{b}" for m, b in cands) + f"); {tr.optimizer} lr {tr.lr:g}")
    probes = {}
    for m, b in cands:
        w0 = time.perf_counter()
        r = finetune(m, b, data, probe_epochs, tr.seed, cfg=cfg, pretrained=pretrained[m], progress=False)
        probes[(m, b)] = r
        say(f"  {m}@{b:>2}: L_a {r.base_loss:.4f}, quantized start {r.start_loss:.4f} (γ {r.gamma:+.4f}), "
            f"probe val losses " + " ".join(f"{v:.3f}" for v in r.val_losses)
            + f" ({time.perf_counter() - w0:.1f} s)")
    search = {(m, b): probes[(m, b)].val_losses for m, b in cands if b in scenario.bits}
    target = target_from_probes(search, target_margin)
    best_key = min(search, key=lambda k: min(search[k]))
    say(f"  target rule: L_max = (1 + {target_margin:g}) × the lowest probe loss of an Ω candidate "
        f"({min(search[best_key]):.4f}, {best_key[0]}@{best_key[1]}) = {target:.4f}")
    estimates = []
    for (m, b), r in probes.items():
        est = estimate_from_probe(r.val_losses, target, seed=tr.seed)
        estimates.append(LearningEstimate(model=m, bits=b, base_loss=r.base_loss, gamma=r.gamma,
                                          epochs_expected=est.expected, epochs_robust=est.robust,
                                          target_loss=target, gamma_robust=r.gamma_robust,
                                          final_loss_expected=est.final_loss_expected,
                                          final_loss_robust=est.final_loss_robust,
                                          source=f"measured:probe({probe_epochs} epochs)"))
    summary["target_rule"] = {"margin": target_margin, "best_probe_loss": min(search[best_key]),
                              "best_candidate": list(best_key), "target_loss": target}
    summary["probes"] = [{"model": m, "bits": b, "base_loss": r.base_loss, "start_loss": r.start_loss,
                          "gamma": r.gamma, "val_losses": r.val_losses, "wall_s": r.wall_s}
                         for (m, b), r in probes.items()]
    summary["estimates"] = [asdict(e) for e in estimates]

    # 3. plan ------------------------------------------------------------------------------------
    d = scenario.model_dump()
    d["target_loss"] = target
    scenario = Scenario.model_validate(d)
    instance = compile_instance(scenario, estimates)
    from jqodi.render.instance import render_instance

    say(f"\n[3/5] planning: deadline T_max = {scenario.deadline_s:g} s (testbed seconds), L_max = {target:.4f}")
    say(render_instance(instance))
    rows = compare(instance, ["jqodi", "optimal", "static"])
    say("")
    say(comparison_table(rows))
    summary["plans"] = [{k: v for k, v in r.items() if k != "solution"} | {"solution": r["solution"].to_dict()}
                        for r in rows]
    sol = next(r["solution"] for r in rows if r["solver"] == solver) if solver in ("jqodi", "optimal", "static") \
        else __import__("jqodi.planner", fromlist=["solve"]).solve(instance, solver)
    if sol.status == "infeasible":
        _save(wd, summary)
        raise InfeasibleError(f"no feasible plan for {scenario.name}: {sol.extra.get('explanation', '')}")
    row = next(e for e in estimates if (e.model, e.bits) == (sol.model, sol.bits))
    sched = ", ".join(f"{e.epochs}×({e.edge}, cut {e.cut})" for e in sol.schedule)
    say(f"plan ({solver}): {sol.model} at {sol.bits} bits, {sched}: {sol.epochs} epochs = K^rob "
        f"(K^exp {row.epochs_expected}); predicted {sol.time_s:.2f} s, {sol.energy_j:.1f} J on the testbed")
    if plan_only:
        summary["wall_s"] = time.perf_counter() - t0
        say(f"\n--plan-only: not running. summary: {_save(wd, summary)}")
        return summary

    # 4. run it --------------------------------------------------------------------------------
    from jqodi.runtime.inference import InferenceResult
    from jqodi.render.runs import format_inference, run_table
    from jqodi.runtime.launch import run_plan
    from jqodi.runtime.plan import job_from_plan

    job = job_from_plan(scenario, sol, emulate=emulate, max_epochs=max_epochs,
                        pretrained={"source": "pretrained", **pre_opts})
    every_edge = [k.split(":", 1)[1] for k in job.emulation.devices if k.startswith("edge:")]
    job = job.replace(inference_requests=requests, inference_edges=every_edge)
    n_run = len(job.epoch_plan())
    say(f"\n[4/5] running {n_run} of the plan's {sol.epochs} epochs for real: cloud, edge and end device as "
        f"separate processes over {transport}"
        + (f", the testbed emulated at dilation ×{job.emulation.dilation:.3g}" if emulate else "")
        + f"; then {requests} inference requests per device combination")
    for name in ("checkpoint.pt", "epochs.json", "record.json"):
        (wd / name).unlink(missing_ok=True)
    record = run_plan(scenario, sol, transport=transport, workdir=wd, job=job, say=say)

    # 5. compare -------------------------------------------------------------------------------
    say("\n[5/5] predicted vs measured")
    say(run_table(record))
    losses = [e["val_loss"] for e in record.epochs]
    reached = next((i + 1 for i, v in enumerate(losses) if v <= target), None)
    cmp = {"target_loss": target, "epochs_expected": row.epochs_expected, "epochs_robust": row.epochs_robust,
           "epochs_run": len(losses), "epoch_target_reached": reached,
           "final_loss_predicted_robust": row.final_loss_robust, "final_loss_predicted_expected": row.final_loss_expected,
           "start_loss_measured": probes[(sol.model, sol.bits)].start_loss,
           "final_loss_measured": losses[-1] if losses else None,
           "final_accuracy_measured": record.epochs[-1]["val_accuracy"] if record.epochs else None}
    summary["learning_vs_prediction"] = cmp
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
        say(f"\ncollaborative inference with the fine-tuned model, served by the same processes: {requests} "
            f"single-image requests per device combination"
            + (f" (emulated, dilation ×{res[0].dilation:.3g})" if emulate else ""))
        say(format_inference(res))
    summary["record"] = str(wd / "record.json")
    summary["totals"] = record.totals
    summary["inference"] = record.inference
    summary["status"] = record.status
    summary["wall_s"] = time.perf_counter() - t0
    summary["cpu_s_main_process"] = _cpu() - c0
    out = _save(wd, summary)
    say(f"\nsaved: {out} and {wd / 'record.json'}  (main job {summary['wall_s']:.0f} s wall)")
    return summary


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
