"""The automatic dilation bounds the host's expected overrun (docs/runtime.md, "Emulating the testbed").

The epoch rule alone (4 × the host's epoch / the shortest predicted epoch) let the cut-1 epochs of the
packaged Data 1 scenario overrun by +20 … +50 %: at cut 1 a GPU edge runs nearly the whole model,
which the host cannot do at ×5–7. The overrun rule picks the dilation at which each option's
expected overrun is at most OVERRUN_SHARE of its epoch. Deterministic: a fake clock times the host.
"""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_overrun_dilation_is_the_smallest_that_keeps_the_overrun_within_its_share():
    from jqodi.runtime.emulation import overrun_dilation

    # one role faster than the host (0.2 s of host time, 5 ms on the device), a 0.18 s epoch, 5 %:
    # 0.2 − 0.005·D = 0.05·0.18·D  →  D = 0.2 / 0.014
    d = overrun_dilation([(0.2, 0.005)], 0.18, share=0.05)
    assert d == pytest.approx(0.2 / 0.014, rel=2e-3)

    def over(dil, parts, t, share=0.05):
        return sum(max(0.0, h - dev * dil) for h, dev in parts) - share * t * dil

    parts = [(0.1, 0.103), (0.23, 0.0042)]  # a slow end device (padded, never overruns) and a GPU edge
    d = overrun_dilation(parts, 0.176)
    assert over(d, parts, 0.176) <= 1e-12 and over(d / 1.002, parts, 0.176) > 0  # the bound, and the least
    assert overrun_dilation([(0.1, 0.5)], 0.6) == 1.0       # every device slower than the host: no dilation needed
    assert overrun_dilation([], 0.6) == 1.0 and overrun_dilation([(0.1, 0.0)], 0.0) == 1.0


def test_host_split_times_each_part_and_leaves_the_model_as_it_was():
    import torch

    from jqodi.core.zoo import build_model
    from jqodi.runtime.emulation import host_split_s

    torch.manual_seed(0)
    net = build_model("lenet", (1, 28, 28), 10, 0.25, seed=0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    end_s, edge_s = host_split_s(net, 1, batch_size=8, repeats=3)
    assert end_s > 0 and edge_s > 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the optimizer steps undone


def test_the_automatic_dilation_bounds_the_cut1_overrun_the_epoch_rule_left():
    from jqodi.core.scenario import default_scenario_path, load_scenario
    from jqodi.planner import ScheduleEntry, Solution
    from jqodi.runtime.emulation import OVERRUN_SHARE, auto_dilation
    from jqodi.runtime.plan import cpu_scale, dilation_choice, plan_dilation, predict_epoch

    sc = cpu_scale(load_scenario(default_scenario_path()), train_size=512, val_size=128)
    sol = Solution("feasible", "test", "lenet", 8,
                   tuple(ScheduleEntry(e.name, c, 1) for e in sc.edges for c in (1, 2, 3, 4)))

    def clock():  # every reading 10 ms after the last: each timed step takes 10 ms
        clock.t += 0.01
        return clock.t
    clock.t = 0.0
    got = dilation_choice(sc, sol, clock=clock)
    pred = {k: predict_epoch(sc, "lenet", 8, o["cut"], o["edge"]) for k, o in got["options"].items()}
    # the epoch rule as before: the whole model's epoch on the host against the shortest predicted epoch
    assert got["epoch_rule"] == pytest.approx(auto_dilation(got["host_epoch_s"], min(p["time_s"] for p in pred.values())))
    batches = (512 + 128 / 3) / sc.training.batch_size
    for k, o in got["options"].items():  # the shallow part is timed as 3 steps (forward, backward, optimizer), the deep as 2
        assert o["host_s"] == pytest.approx({"end": 0.03 * batches, "edge": 0.02 * batches})
        assert o["device_s"] == {"end": pred[k]["phases_s"]["end_compute"], "edge": pred[k]["phases_s"]["edge_compute"]}

    def overrun_share(k: str, dil: float) -> float:
        o = got["options"][k]
        return sum(max(0.0, o["host_s"][r] - o["device_s"][r] * dil) for r in o["host_s"]) / (pred[k]["time_s"] * dil)

    # the cause: at the epoch rule the GPU edges' cut-1 epochs overrun by far more than the ≤ 15 % target
    assert overrun_share("rtx4090|1", got["epoch_rule"]) > 0.15 and overrun_share("rtx3090|1", got["epoch_rule"]) > 0.15
    # the fix: the run's dilation keeps every option's expected overrun within OVERRUN_SHARE
    clock.t = 0.0
    d = plan_dilation(sc, sol, clock=clock)
    assert d == pytest.approx(got["dilation"]) and d > got["epoch_rule"]
    assert max(overrun_share(k, d) for k in got["options"]) <= OVERRUN_SHARE * 1.001
    assert got["overrun_rule"] == max(o["dilation"] for o in got["options"].values())


def test_a_fleet_times_the_host_once_per_model_not_once_per_device(monkeypatch):
    """The devices of a fleet plan the same model on the same host: the automatic dilation times the
    host once per (model, bits, cut) and takes the largest any device's plan needs (it timed the
    host again for every device: ≈ 0.35 s each at load 5.7, 4 devices +1.0…1.7 s per fleet run)."""
    import jqodi.runtime.emulation as emu
    from jqodi.app.fleet_run import DEMO_OPTIONS, fleet_demo_path, fleet_job_from_plan, load_fleet_for_run, plan_fleet
    from jqodi.core.fleet import device_scenario, fleet_devices
    from jqodi.runtime.plan import plan_dilation

    calls = {"flops": 0, "split": []}

    def flops(model, batch_size=32, repeats=3, clock=None):
        calls["flops"] += 1
        return 2.0e8  # a slow host: the dilation is above 1

    def split(model, cut, batch_size=32, repeats=5, clock=None, train_config=None):
        calls["split"].append(cut)
        return 0.002 * cut, 0.01 / cut

    monkeypatch.setattr(emu, "host_flops", flops)
    monkeypatch.setattr(emu, "host_split_s", split)
    sc = load_fleet_for_run(fleet_demo_path(), DEMO_OPTIONS)
    _, sol = plan_fleet(sc, DEMO_OPTIONS, lambda line: None)
    served = {n: p for n, p in sol.plans.items() if p.status != "infeasible"}
    models = {(p.model, int(p.bits)) for p in served.values()}
    cuts = {(p.model, int(p.bits), int(s.cut)) for p in served.values() for s in p.schedule}
    assert len(served) > len(models), "the test needs devices that share a model"
    fleet, _ = fleet_job_from_plan(sc, sol, DEMO_OPTIONS)
    assert calls["flops"] == len(models) and len(calls["split"]) == len(cuts)
    specs = {d.name: d for d in fleet_devices(sc)}
    want = max(plan_dilation(device_scenario(sc, specs[n]), p) for n, p in served.items())
    assert want > 1 and all(j.emulation.dilation == pytest.approx(want) for j in fleet.devices.values())


def test_the_overrun_rule_covers_the_options_the_closed_loop_can_move_to(monkeypatch):
    """The closed loop re-plans onto options the first schedule lacks (``jqodi:cpu-demo`` moved epochs
    to (rtx4090, cut 1), +112 … +153 % over their prediction): with ``replan_options`` the overrun rule
    covers them, each cut of the host timed once however many edges share it."""
    import jqodi.runtime.emulation as emu
    from jqodi.core.scenario import default_scenario_path, load_scenario
    from jqodi.planner import ScheduleEntry, Solution
    from jqodi.runtime.emulation import OVERRUN_SHARE
    from jqodi.runtime.plan import cpu_scale, dilation_choice

    sc = cpu_scale(load_scenario(default_scenario_path()), train_size=512, val_size=128)
    sol = Solution("feasible", "test", "lenet", 8, (ScheduleEntry("rtx3090", 4, 2),))
    timed = []

    def flops(model, batch_size=32, repeats=3, clock=None):
        return 5.0e10  # a fast host: the epoch rule is low, the overrun rule decides

    def split(model, cut, batch_size=32, repeats=5, clock=None, train_config=None):
        timed.append(cut)
        return 0.002 * cut, 0.04 / cut  # the deep part is the host's larger share at cut 1

    monkeypatch.setattr(emu, "host_flops", flops)
    monkeypatch.setattr(emu, "host_split_s", split)
    alone = dilation_choice(sc, sol)
    assert list(alone["options"]) == ["rtx3090|4"] and alone["options"]["rtx3090|4"]["scheduled"]
    replan = [(e.name, c) for e in sc.edges for c in (1, 2, 3, 4)]
    timed.clear()
    cache: dict = {}
    got = dilation_choice(sc, sol, host_timings=cache, replan_options=replan)
    assert sorted(timed) == [1, 2, 3, 4]  # once per cut, not once per (edge, cut)
    assert set(got["options"]) == {f"{e}|{c}" for e, c in replan}
    assert [k for k, o in got["options"].items() if o["scheduled"]] == ["rtx3090|4"]
    assert got["epoch_rule"] == pytest.approx(alone["epoch_rule"])  # the schedule's shortest epoch, as before
    assert got["overrun_rule"] == max(o["dilation"] for o in got["options"].values()) > alone["overrun_rule"]
    assert got["dilation"] == got["overrun_rule"] > alone["dilation"] >= alone["epoch_rule"]
    d = got["dilation"]
    for o in got["options"].values():  # every option the loop can move to: expected overrun within its share
        over = sum(max(0.0, o["host_s"][r] - o["device_s"][r] * d) for r in o["host_s"])
        assert over <= OVERRUN_SHARE * o["predicted_s"] * d * 1.001
    timed.clear()
    again = dilation_choice(sc, sol, host_timings=cache, replan_options=replan)
    assert timed == [] and again["dilation"] == pytest.approx(d)  # the cache: the host is not timed again


def test_a_closed_loop_job_is_dilated_for_the_options_its_controller_can_move_to(monkeypatch, tmp_path):
    """``jqodi run --write-job`` on ``jqodi:cpu-demo``: the job's controller may move epochs to
    (rtx4090, cut 1), which the first schedule (RTX 3090 only) lacks; the job's automatic dilation is
    the one that covers the controller's options (it was the schedule's alone before)."""
    import jqodi.runtime.emulation as emu
    from jqodi.app.run import (RunOptions, instance_for_run, job_for_scenario, load_for_run, plan_for_run,
                               replan_options, run_controller)
    from jqodi.runtime.plan import dilation_choice

    monkeypatch.setenv("JQODI_HOME", str(tmp_path))
    monkeypatch.setattr(emu, "host_flops", lambda model, batch_size=32, repeats=3, clock=None: 5.0e10)
    monkeypatch.setattr(emu, "host_split_s", lambda model, cut, batch_size=32, repeats=5, clock=None,
                        train_config=None: (0.002 * cut, 0.04 / cut))
    quiet = lambda line: None  # noqa: E731
    opts = RunOptions()
    job = job_for_scenario("jqodi:cpu-demo", opts, quiet)
    sc = load_for_run("jqodi:cpu-demo", opts)
    inst = instance_for_run(sc, opts)
    sol = plan_for_run(sc, opts, quiet, inst)
    options = replan_options(run_controller(sc, sol, opts, inst, None, quiet))
    assert ("rtx4090", 1) in options and ("rtx4090", 1) not in {(s.edge, int(s.cut)) for s in sol.schedule}
    assert {(p["edge"], p["cut"]) for p in job.closed_loop["predictions"]} == set(options)  # what the block lists
    covered, alone = dilation_choice(sc, sol, replan_options=options), dilation_choice(sc, sol)
    assert covered["dilation"] > alone["dilation"]
    assert job.emulation.dilation == pytest.approx(covered["dilation"])
    assert replan_options(None) is None
    static = job_for_scenario("jqodi:cpu-demo", RunOptions(policy="static"), quiet)  # never moves an epoch
    assert static.closed_loop is not None and static.emulation.dilation == pytest.approx(alone["dilation"])


def test_host_split_s_leaves_threads_and_weights_as_they_were_when_the_timing_fails():
    """A clock that raises mid-measurement: the caller's thread count and weights are restored all the same."""
    import torch

    from jqodi.core.zoo import build_model
    from jqodi.runtime.emulation import host_split_s

    model = build_model("lenet", (1, 28, 28), 10, 0.25, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    threads = torch.get_num_threads()
    calls = []

    def clock():
        calls.append(1)
        if len(calls) > 8:   # after the first optimizer steps have changed the weights
            raise RuntimeError("clock failed")
        return float(len(calls))

    with pytest.raises(RuntimeError, match="clock failed"):
        host_split_s(model, 1, batch_size=4, repeats=2, clock=clock)
    assert torch.get_num_threads() == threads
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
