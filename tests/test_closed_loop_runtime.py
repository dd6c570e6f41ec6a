"""The closed loop in the runtime: the cloud asks the app's controller after every epoch and the
emulation applies the scenario's timeline (slowdowns, trace-driven links, edges leaving).

Tiny CPU-scale runs of the packaged cpu-demo testbed (LeNet ×0.25 at 4 bits, 128 + 64 images,
random initial weights, the learning table's K), emulated in dilated time; the deadline of each
scenario is set from its own compiled instance. Tests that start processes bound their time and
the launcher ends every role by PID.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                                reason="Fashion-MNIST not installed (Debian package dataset-fashion-mnist)")


def scenario_file(tmp_path: Path, timeline: list, *, deadline_s: float = 100.0, target: float = 0.01,
                  edges_speed: float | None = None) -> Path:
    """cpu-demo at 128 + 64 images, LeNet at 4 bits only, ``timeline`` (traces relative to tmp_path)."""
    d = yaml.safe_load((resources.files("jqodi") / "scenarios" / "cpu-demo.yaml").read_text())
    d["data"]["train_size"], d["data"]["val_size"] = 128, 64
    d["models"] = [m for m in d["models"] if m["name"] == "lenet"]
    d["bits"], d["baseline_bits"] = [4], []
    d["learning"] = [r for r in d["learning"] if r["model"] == "lenet" and r["bits"] == 4]
    for r in d["learning"]:
        r["target_loss"] = target
    d["target_loss"], d["deadline_s"] = target, deadline_s
    d["timeline"] = timeline
    d["runtime"]["timeout_s"] = 60
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def plan_and_controller(path: Path, policy: str | None, **kw):
    from jqodi.app.controller import controller_for
    from jqodi.core.costs import compile_instance
    from jqodi.core.scenario import load_scenario
    from jqodi.planner import solve

    sc = load_scenario(path)
    sol = solve(compile_instance(sc), "optimal")
    assert sol.status != "infeasible", sol.extra
    ctl = controller_for(sc, sol, policy=policy, **kw) if policy else None
    return sc, sol, ctl


def run(path: Path, policy: str | None, workdir: Path, transport: str = "inprocess", max_epochs=None,
        resume: bool = False, controller=None, dilation: float = 10.0):
    from jqodi.app.run import resumed_controller, with_standby_edges
    from jqodi.runtime.launch import run_plan
    from jqodi.runtime.plan import job_from_plan

    sc, sol, ctl = plan_and_controller(path, policy)
    if resume:
        ctl = resumed_controller(workdir)
    job = job_from_plan(sc, sol, emulate=True, dilation=dilation, max_epochs=max_epochs,
                        pretrained={"source": "random", "seed": 0}, meter="null", trace_store=None)
    job = with_standby_edges(job)
    lines: list[str] = []
    rec = run_plan(sc, sol, transport=transport, workdir=workdir, job=job, resume=resume, say=lines.append,
                   controller=controller or ctl, wall_limit_s=240)
    return sc, sol, rec, lines


def test_early_stop_keeps_and_serves_the_best_model(tmp_path):
    """A target the first epochs reach: the run stops there, and the best epoch's model is served."""
    path = scenario_file(tmp_path, [], target=5.0)  # random init starts near ln 10 ≈ 2.3: reached at once
    sc, sol, rec, lines = run(path, "replan", tmp_path / "wd")
    assert len(rec.epochs) == 1 < sol.epochs
    assert rec.control["status"] == "completed" and "target reached" in rec.control["reason"]
    assert rec.control["best"]["epoch"] == 1


@pytest.mark.timeout(600)
def test_replan_keeps_the_deadline_after_a_slowdown_where_static_misses_it(tmp_path):
    """The end device slows ×3 after the first epoch. Static keeps the plan's SD-heavy cut and
    misses T_max; re-planning moves the rest to a cut that leaves the SD little to do, and meets it."""
    from jqodi.core.costs import compile_instance
    from jqodi.core.scenario import load_scenario

    probe = load_scenario(scenario_file(tmp_path, []))
    cand = compile_instance(probe).candidates[0]
    cheapest = min(cand.options, key=lambda o: o.epoch_energy_j)
    K = cand.epochs.robust
    deadline = cand.quantize_time_s + 1.25 * K * cheapest.epoch_time_s  # the cheapest option fits, with slack
    timeline = [{"at_s": 0.5 * cheapest.epoch_time_s, "event": "slowdown", "device": "end", "factor": 3}]
    path = scenario_file(tmp_path, timeline, deadline_s=deadline)
    # the two runs side by side, each in its own workdir: emulated at dilation 10, each run sleeps
    # most of its wall time (≈ 26 s and 10 s for ≈ 5 s of CPU in all); an overrun still counts
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {policy: pool.submit(run, path, policy, tmp_path / policy) for policy in ("static", "replan")}
        results = {}
        for policy, future in futures.items():
            sc, sol, rec, lines = future.result(timeout=540)
            assert {(s.edge, s.cut) for s in sol.schedule} == {(cheapest.edge, cheapest.cut)}
            results[policy] = (sum(e["time_s"] for e in rec.epochs), rec, lines)
    t_static, _, _ = results["static"]
    t_replan, rec, lines = results["replan"]
    assert t_static > deadline * 1.1, (t_static, deadline)
    assert rec.control["replans"] and any(line.startswith("re-plan after epoch") for line in lines)
    assert any(e["cut"] != cheapest.cut for e in rec.epochs)
    assert t_replan < 0.8 * t_static, (t_replan, t_static)
    # the deadline itself holds when the host keeps up with the emulated devices; on a loaded host
    # the compute steps overrun their dilated targets and that time is not the controller's to save
    overrun = sum(sum(e["overrun_s"].values()) for e in rec.epochs)
    if overrun < 0.05 * deadline:
        assert t_replan <= deadline, (t_replan, deadline, overrun)


@pytest.mark.timeout(600)
def test_gloo_trace_driven_link_and_an_edge_leaving(tmp_path):
    """Over gloo: the SD's links follow a trace at 1/8 of their nominal rate (the transfers take
    ≈ 8× their prediction), and the plan's edge leaves after the first epochs: its process is
    stopped, the cloud re-plans and the run continues on the other edge."""
    from jqodi.core.costs import compile_instance
    from jqodi.core.scenario import load_scenario
    from jqodi.planner import solve

    (tmp_path / "slow.tsv").write_text("0\t83.1\n1\t83.1\n")  # Mbit/s: 665 / 8, flat
    probe = load_scenario(scenario_file(tmp_path, []))
    sol = solve(compile_instance(probe), "optimal")
    edge = sol.schedule[0].edge
    other = next(e.name for e in probe.edges if e.name != edge)
    epoch_s = max(o.epoch_time_s for o in compile_instance(probe).candidates[0].options)
    timeline = [{"at_s": 0, "event": "link_trace", "edge": e.name, "link": "end", "trace": "slow.tsv"}
                for e in probe.edges]
    timeline.append({"at_s": 1.5 * epoch_s, "event": "edge_leaves", "edge": edge})
    path = scenario_file(tmp_path, timeline)
    sc, sol, rec, lines = run(path, "replan", tmp_path / "wd", transport="gloo", max_epochs=4)
    assert rec.control["status"] == "completed" and len(rec.epochs) == 4
    edges = [e["edge"] for e in rec.epochs]
    assert edges[0] == edge and edges[-1] == other, edges
    assert any(f"edge {edge} left" in r["reason"] for r in rec.control["replans"])
    ratios = []
    for e in rec.epochs:  # link phases follow the trace: about 8× the nominal prediction
        pred = e["predicted"]["phases_s"]
        ratios.append((e["phases_s"]["activations"] + e["phases_s"]["edge_to_end"]) /
                      (pred["activations"] + pred["edge_to_end"]))
    # at least half the trace's slowdown in every epoch (without the trace the ratio is ≈ 1). A
    # starved host only stretches transfers further (single epochs at 62.9 and 210 seen at load
    # 12–14), so the check that the slowdown is the trace's and not more reads the least stretched
    # epoch: a trace applied twice (64×) fails it on any host
    assert all(r > 4.0 for r in ratios), ratios
    assert min(ratios) < 16.0, ratios


@pytest.mark.timeout(600)
def test_no_edge_left_ends_cleanly_and_resume_continues_when_one_is_back(tmp_path):
    """Both edges leave after the first epoch; one comes back much later. The run ends at that
    epoch boundary (paused, says why, the epoch checkpointed); --resume continues from the
    return and completes."""
    from jqodi.core.costs import compile_instance
    from jqodi.core.scenario import load_scenario

    probe = load_scenario(scenario_file(tmp_path, []))
    inst = compile_instance(probe)
    t1 = 0.5 * min(o.epoch_time_s for o in inst.candidates[0].options)
    timeline = [{"at_s": t1, "event": "edge_leaves", "edge": "rtx3090"},
                {"at_s": t1, "event": "edge_leaves", "edge": "rtx4090"},
                {"at_s": 50.0, "event": "edge_returns", "edge": "rtx4090"}]
    path = scenario_file(tmp_path, timeline)
    wd = tmp_path / "wd"
    sc, sol, rec, lines = run(path, "replan", wd, max_epochs=3)
    assert rec.status == "paused" and "no edge can serve" in rec.control["reason"]
    done = len(rec.epochs)
    assert done == 1 and json.loads((wd / "epochs.json").read_text())["completed"] == done
    sc, sol, rec, lines = run(path, "replan", wd, max_epochs=3, resume=True)
    assert rec.status == "completed" and len(rec.epochs) == 3
    assert {e["edge"] for e in rec.epochs[done:]} == {"rtx4090"}
