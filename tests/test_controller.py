"""The closed loop at planner level: early stop, online estimates, re-planning, the simulator and
the hindsight optimum (no torch, deterministic)."""
import itertools
import json
import math

import numpy as np
import pytest

from jqodi.core.costs import TERMS
from jqodi.app.controller import (ClosedLoopController, Observation, PhaseTable, ResourceEstimates,
                                  remaining_instance, schedule_cost)
from jqodi.app.controller.loop import time_energy_tradeoff
from jqodi.app.simulate import World, hindsight_optimum, simulate_epoch, simulate_run
from jqodi.core.instance import Candidate, EpochEstimates, Option, PlanningInstance, ScheduleEntry
from jqodi.core.timeline import Timeline, parse_timeline_events, resolve_timeline
from jqodi.errors import JqodiError
from jqodi.planner import solve

J = {t: i for i, t in enumerate(TERMS)}
NOMINAL = {"edge:fast|end": 100e6, "edge:slow|end": 100e6, "cloud|edge:fast": 1e9, "cloud|edge:slow": 1e9}


def option_terms(end_s, edge_s, act_s, power=(5.0, 300.0, 1.0)):
    """(seconds, joules) per term: SD compute, ES compute, activations; small model transfers."""
    s = np.zeros(len(TERMS))
    s[J["end_compute"]], s[J["edge_compute"]], s[J["activations"]] = end_s, edge_s, act_s
    s[J["cloud_to_edge"]] = s[J["edge_to_cloud"]] = 0.001
    s[J["edge_to_end"]] = s[J["end_to_edge"]] = 0.002
    j = s * 0.5
    j[J["end_compute"]], j[J["edge_compute"]], j[J["activations"]] = end_s * power[0], edge_s * power[1], act_s * power[2]
    return s, j


def make_table(deadline=30.0, K=(8, 11), target=1.0):
    """One candidate, two edges, two cuts: cut 1 = cheap and slow (much SD work), cut 3 = fast and costly."""
    specs = {("fast", 1): (2.0, 0.1, 0.3), ("fast", 3): (0.4, 0.5, 0.2),
             ("slow", 1): (2.0, 0.2, 0.3), ("slow", 3): (0.4, 1.0, 0.2)}
    rows = {k: option_terms(*v) for k, v in specs.items()}
    opts = tuple(Option(e, c, float(s.sum()), float(j.sum())) for (e, c), (s, j) in rows.items())
    cand = Candidate("net", 8, 0.1, 1.0, EpochEstimates(*K), opts)
    inst = PlanningInstance(deadline, target, (cand,))
    return PhaseTable(inst, {cand.key: np.array([rows[(o.edge, o.cut)][0] for o in opts])},
                      {cand.key: np.array([rows[(o.edge, o.cut)][1] for o in opts])})


def curve(K, start=3.0, target=1.0, n=40):
    """A smooth power-law curve that first reaches ``target`` at epoch ``K``."""
    ks = np.arange(1, n + 1, dtype=float)
    b = 0.9
    a = (start - 0.5) / 1.0
    # L(k) = 0.5 + a k^-b·s, with s chosen so that L(K) = target·0.99 and L(K-1) > target
    s = (target * 0.99 - 0.5) / (a * K ** -b)
    out = 0.5 + a * s * ks ** -b
    assert out[K - 1] <= target < out[K - 2]
    return out.tolist()


def timeline(events):
    return resolve_timeline(parse_timeline_events(events), cloud="cloud", end="end", edges=["fast", "slow"])


def test_phase_table_round_trip_and_scaling():
    tab = make_table()
    again = PhaseTable.from_dict(json.loads(json.dumps(tab.to_dict())))
    t, e = again.scaled("net@8", {})
    assert t.tolist() == pytest.approx([o.epoch_time_s for o in tab.instance.candidates[0].options])
    t2, e2 = again.scaled("net@8", {"end": 2.0})
    i = again.option_index("net@8", "fast", 1)
    assert t2[i] == pytest.approx(t[i] + 2.0) and e2[i] == pytest.approx(e[i] + 2.0 * 5.0)
    with pytest.raises(JqodiError, match="terms must be"):
        PhaseTable.from_dict({**tab.to_dict(), "terms": ["x"]})


def test_resource_estimates_are_robust_and_bounded():
    tab = make_table()
    terms = tab.terms("net@8", tab.option_index("net@8", "fast", 1))
    r = ResourceEstimates()
    r.observe(terms, {"end_compute": 20.0, "edge_compute": 0.1})  # one 10× outlier: ignored
    r.observe(terms, {"end_compute": 2.0, "edge_compute": 0.1})
    assert r.get("end") == pytest.approx(1.0) and r.get("edge:fast") == pytest.approx(1.0)
    r.observe(terms, {"end_compute": 16.0})  # a lasting 8× slowdown: at most ×2 per epoch
    assert r.get("end") == pytest.approx(2.0)
    for _ in range(3):
        r.observe(terms, {"end_compute": 16.0})
    assert r.get("end") == pytest.approx(8.0)
    r.observe(terms, {"cloud_update": 5.0})  # a term below 2 % of the epoch says nothing
    assert "cloud" not in r.factors


def test_early_stop_at_the_target_with_a_fake_curve():
    tab = make_table()
    sol = solve(tab.instance, "optimal")
    ctl = ClosedLoopController(tab, sol)
    losses = [2.5, 1.8, 1.3, 0.97, 0.9]
    for k, v in enumerate(losses[:4], start=1):
        d = ctl.after_epoch(Observation(k, ctl.schedule[0].edge, ctl.schedule[0].cut, v, 1.0, float(k)))
    assert d.action == "stop" and "target reached" in d.reason and "epoch 4" in d.reason
    assert ctl.best == (0.97, 4)
    # with confirmation, one more epoch at or below L_max is needed
    ctl = ClosedLoopController(tab, sol, confirm=1)
    acts = [ctl.after_epoch(Observation(k, "fast", 1, v, 1.0, float(k))).action for k, v in enumerate(losses, 1)]
    assert acts == ["continue"] * 4 + ["stop"]


def test_replan_keeps_the_deadline_after_a_slowdown_where_static_misses_it():
    tab = make_table(deadline=24.0)
    sol = solve(tab.instance, "optimal")
    world = World(tab, timeline([{"at_s": 3, "event": "slowdown", "device": "end", "factor": 1.6}]), NOMINAL,
                  {"net@8": curve(9)})
    static = simulate_run(world, sol, policy="static")
    replan = simulate_run(world, sol, policy="replan")
    assert static.reached and not static.met_deadline
    assert replan.reached and replan.met_deadline and replan.replans >= 1
    best = hindsight_optimum(world)
    assert best is not None and best["energy_j"] <= replan.energy_j * (1 + 1e-9)


def test_an_edge_leaves_and_the_run_continues_on_the_other():
    tab = make_table(deadline=40.0)
    sol = solve(tab.instance, "optimal")
    assert {s.edge for s in sol.schedule} == {"fast"}
    world = World(tab, timeline([{"at_s": 5, "event": "edge_leaves", "edge": "fast"}]), NOMINAL, {"net@8": curve(9)})
    replan = simulate_run(world, sol, policy="replan")
    assert replan.reached and replan.met_deadline and replan.lost_epochs == 1
    assert any("edge fast left" in r["reason"] for r in replan.replan_log)
    assert all(e["edge"] == "slow" for r in replan.replan_log for e in r["new"])
    static = simulate_run(world, sol, policy="static")  # waits for an edge that never returns
    assert not static.reached and "paused for good" in static.stop_reason


def test_controller_pauses_when_no_edge_can_serve_and_resumes_when_one_is_back():
    tab = make_table()
    ctl = ClosedLoopController(tab, solve(tab.instance, "optimal"))
    ctl.on_event("edge_leaves", "slow", 1.0)
    d = ctl.on_event("edge_leaves", "fast", 2.0)
    assert d.action == "pause" and "no edge can serve" in d.reason
    d = ctl.on_event("edge_returns", "slow", 5.0)
    assert d.action == "continue" and d.schedule[0].edge == "slow"


def test_measurement_noise_does_not_cause_churn():
    tab = make_table(deadline=40.0)
    sol = solve(tab.instance, "optimal")
    ctl = ClosedLoopController(tab, sol)
    rng = np.random.default_rng(0)
    cv = curve(10)
    t = 0.1
    for k in range(1, 10):
        s = ctl.schedule[0]
        terms = tab.terms("net@8", tab.option_index("net@8", s.edge, s.cut))
        phases = {term: sec * float(np.exp(rng.normal(0, 0.02))) for term, _, sec, _ in terms}
        t += sum(phases.values())
        ctl.after_epoch(Observation(k, s.edge, s.cut, cv[k - 1], sum(phases.values()), t, 0.0, phases))
    assert [r.reason for r in ctl.replans if "saves" in r.reason] == []


def test_replan_keeps_a_time_reserve_of_one_fast_epoch():
    # 11 × cut 1 (2.406 s) fit the 26.9 s with 0.43 s spare: less than one fast epoch (1.106 s)
    tab = make_table(deadline=27.0)
    sol = solve(tab.instance, "optimal")
    assert sol.schedule == (sol.schedule[0],) and sol.schedule[0].cut == 1 and sol.epochs == 11

    def after_one_epoch(**kw):
        ctl = ClosedLoopController(tab, sol, **kw)
        terms = tab.terms("net@8", tab.option_index("net@8", "fast", 1))
        phases = {term: sec for term, _, sec, _ in terms}
        ctl.after_epoch(Observation(1, "fast", 1, 2.5, sum(phases.values()), sum(phases.values()), 0.0, phases))
        return ctl

    # the reserve of fast epochs alone (its spread part, tested below, off)
    plain = after_one_epoch(reserve_epochs=0, reserve_spread=0)
    assert plain.replans == [] and {s.cut for s in plain.schedule} == {1}
    kept = after_one_epoch(reserve_epochs=1, reserve_spread=0)
    (rp,) = kept.replans
    assert "time reserve" in rp.reason
    left = tab.instance.deadline_s - kept.elapsed_s
    assert rp.predicted_time_s <= left - 1.106 and sum(s.epochs for s in kept.schedule) == 10
    assert {s.cut for s in kept.schedule} == {1, 3}
    with pytest.raises(JqodiError, match="reserve"):
        ClosedLoopController(tab, sol, reserve_epochs=-1)


def test_the_time_reserve_grows_with_the_spread_of_the_epoch_times():
    # 11 × cut 1 (2.406 s each) in T_max 30 s; one epoch whose SD part takes 1.5× its prediction
    tab = make_table(deadline=30.0)
    sol = solve(tab.instance, "optimal")
    assert sol.schedule == (sol.schedule[0],) and sol.schedule[0].cut == 1 and sol.epochs == 11
    # before any epoch: the prior spread ρ₀ = 0.1, × the planned time
    ctl = ClosedLoopController(tab, sol)
    assert ctl.spread_reserve_s(ctl.schedule, 100.0) == pytest.approx(0.1 * 11 * 2.406)
    assert ctl.spread_reserve_s(ctl.schedule, 1.0) == pytest.approx(1.0)  # never more than the time left
    assert ClosedLoopController(tab, sol, reserve_spread=0).spread_reserve_s(ctl.schedule, 100.0) == 0.0

    def run(ctl, slow):
        s = ctl.schedule[0]
        terms = tab.terms("net@8", tab.option_index("net@8", s.edge, s.cut))
        phases = {term: sec * (slow if term == "end_compute" else 1.0) for term, _, sec, _ in terms}
        t = ctl.elapsed_s - ctl.offset_s + sum(phases.values())
        ctl.after_epoch(Observation(ctl.epochs_done + 1, s.edge, s.cut, 2.5, sum(phases.values()), t, 0.0, phases))

    # the reserve's spread part alone, observed epochs only (no prior, no reserve of fast epochs)
    plain = ClosedLoopController(tab, sol, reserve_epochs=0, reserve_spread=0)
    run(plain, 1.5)
    assert plain.replans == [] and plain.schedule == (ScheduleEntry("fast", 1, 10),)
    ctl = ClosedLoopController(tab, sol, reserve_epochs=0, spread_prior_epochs=0)
    run(ctl, 1.5)
    # the robust factors do not trust one slow epoch, the spread sees it at once
    assert ctl.resources.get("end") == pytest.approx(1.0)
    assert ctl.time_errors == pytest.approx([math.log(3.406 / 2.406)])
    (rp,) = ctl.replans
    reserve = math.log(3.406 / 2.406) * 10 * 2.406
    assert "time reserve" in rp.reason and f"{reserve:.3g} s wanted" in rp.reason
    assert rp.predicted_time_s <= rp.deadline_left_s - reserve
    assert {s.cut for s in ctl.schedule} == {1, 3} and sum(s.epochs for s in ctl.schedule) == 10
    # an epoch on time shrinks the spread: ρ² is the mean of the squared errors
    run(ctl, 1.0)
    assert ctl.time_errors[1] == pytest.approx(0.0, abs=1e-12)
    assert ctl.spread_reserve_s(ctl.schedule, 100.0) == pytest.approx(
        math.log(3.406 / 2.406) / math.sqrt(2) * schedule_cost(tab, "net@8", ctl.schedule, {})[0])
    for bad in ({"reserve_spread": -1}, {"spread_prior": math.nan}, {"spread_prior_epochs": math.inf}):
        with pytest.raises(JqodiError, match="re-plan"):
            ClosedLoopController(tab, sol, **bad)


def test_when_k_rob_no_longer_fits_the_plan_hedges_with_the_most_epochs_that_fit():
    tab = make_table(deadline=30.0)
    sol = solve(tab.instance, "optimal")
    plans = {}
    for hedge in (False, True):
        ctl = ClosedLoopController(tab, sol, hedge=hedge, reserve_epochs=0)
        # 9.5 s left, 6 epochs expected, 10 robust: 10 fast epochs take 11.06 s, 8 take 8.85 s
        ctl.elapsed_s, ctl.remaining_estimate = tab.instance.deadline_s - 9.5, (6, 10)
        d = ctl._replan("epoch")
        assert d.action == "continue"
        plans[hedge] = sum(s.epochs for s in d.schedule)
    assert plans == {False: 6, True: 8}
    assert "planning for 8 epoch(s)" in ctl.replans[-1].reason


def test_remaining_instance_drops_quantization_and_absent_edges():
    tab = make_table()
    inst = remaining_instance(tab, current="net@8", remaining=(3, 5), deadline_left_s=10.0,
                              factors={"end": 2.0}, edges_down={"slow"})
    (c,) = inst.candidates
    assert c.quantize_energy_j == 0 and c.epochs.robust == 5 and {o.edge for o in c.options} == {"fast"}
    assert inst.deadline_s == 10.0
    cost = schedule_cost(tab, "net@8", solve(inst, "optimal").schedule, {"end": 2.0})
    assert cost[0] <= 10.0


def test_policy_and_threshold_are_checked():
    tab = make_table()
    sol = solve(tab.instance, "optimal")
    with pytest.raises(JqodiError, match="--policy"):
        ClosedLoopController(tab, sol, policy="sometimes")
    with pytest.raises(JqodiError, match="threshold"):
        ClosedLoopController(tab, sol, threshold=1.5)


def test_simulated_epoch_follows_the_link_trace(tmp_path):
    tab = make_table()
    (tmp_path / "t.txt").write_text("0 10\n1 100\n")  # 10 Mbit/s for 1 s, then 100 Mbit/s (2 s loop)
    tl = resolve_timeline(parse_timeline_events([{"at_s": 0, "event": "link_trace", "edge": "fast",
                                                  "trace": "t.txt"}]),
                          cloud="cloud", end="end", edges=["fast", "slow"], base_dir=tmp_path)
    world = World(tab, tl, NOMINAL, {})
    i = tab.option_index("net@8", "fast", 3)
    fixed = simulate_epoch(World(tab, Timeline(), NOMINAL, {}), "net@8", i, 0.0)
    traced = simulate_epoch(world, "net@8", i, 0.0)
    # the model's 0.2 Mbit down to the SD take 0.02 s at 10 Mbit/s; the activations (20 Mbit: 0.2 s
    # at 100 Mbit/s) start after 0.421 s: 5.79 Mbit at 10 Mbit/s until t = 1 s, 14.21 Mbit at 100
    assert fixed.phases_s["activations"] == pytest.approx(0.2)
    assert traced.phases_s["edge_to_end"] == pytest.approx(0.02)
    assert traced.phases_s["activations"] == pytest.approx(0.579 + 0.1421)
    assert traced.energy_j > fixed.energy_j


def test_hindsight_matches_brute_force_on_a_tiny_world():
    tab = make_table(deadline=12.0, K=(4, 5))
    tl = timeline([{"at_s": 2, "event": "slowdown", "device": "end", "factor": 1.5},
                   {"at_s": 6, "event": "edge_leaves", "edge": "fast"}])
    world = World(tab, tl, NOMINAL, {"net@8": curve(4)})
    best = hindsight_optimum(world, grid=6000)
    cand = tab.instance.candidates[0]
    brute = math.inf
    for seq in itertools.product(range(len(cand.options)), repeat=4):
        t, e = cand.quantize_time_s, cand.quantize_energy_j
        for i in seq:
            out = simulate_epoch(world, "net@8", i, t)
            if out.lost_at_s is not None:
                break
            t, e = t + out.time_s, e + out.energy_j
        else:
            if t <= 12.0:
                brute = min(brute, e)
    assert best is not None and best["epochs"] == 4
    # the grid rounds times up: never below the brute force, and close to it
    assert brute <= best["energy_j"] <= brute * 1.02


def test_controller_spec_round_trip_rebuilds_the_same_decisions():
    tab = make_table()
    sol = solve(tab.instance, "optimal")
    a = ClosedLoopController(tab, sol, threshold=0.05, confirm=1)
    b = ClosedLoopController.from_spec(json.loads(json.dumps(a.to_spec())))
    assert b.options == a.options and b.schedule == a.schedule
    obs = {"epoch": 1, "edge": a.schedule[0].edge, "cut": a.schedule[0].cut, "val_loss": 2.0, "time_s": 3.0,
           "elapsed_s": 3.0, "phases_s": {"end_compute": 4.0}}
    da, db = a.after_epoch(obs).to_dict(), b.after_epoch(obs).to_dict()
    for d in (da, db):  # a re-plan records how long it took to solve: not part of the decision
        if d["replan"]:
            d["replan"].pop("solve_ms")
    assert da == db
    with pytest.raises(JqodiError, match="controller spec"):
        ClosedLoopController.from_spec({"table": {}})


def test_epoch_driver_applies_edge_events_and_asks_the_controller():
    from jqodi.runtime.control import EmulatedTimeline, EpochDriver, expand_schedule

    tab = make_table(deadline=40.0)
    sol = solve(tab.instance, "optimal")
    tl = timeline([{"at_s": 5, "event": "edge_leaves", "edge": "fast"}, {"at_s": 20, "event": "edge_returns",
                                                                         "edge": "fast"}])
    stops = []
    said = []
    drv = EpochDriver(expand_schedule(sol.schedule), controller=ClosedLoopController(tab, sol),
                      timeline=EmulatedTimeline(tl.to_dict()), stop_edge=lambda e, away: stops.append((e, away)),
                      say=said.append)
    assert drv.next(0.0)[0] == "fast"
    drv.after_epoch({"epoch": 1, "edge": "fast", "cut": drv.plan[0][1], "val_loss": 2.5, "time_s": 3.0,
                     "elapsed_s": 3.0})
    assert drv.next(6.0)[0] == "slow" and stops == [("fast", True)]
    assert any("edge fast left" in s for s in said) and any("re-plan" in s for s in said)
    drv.next(21.0)
    assert stops[-1] == ("fast", False) and "fast" not in drv.away
    # without a controller the run pauses when the plan's edge is away
    plain = EpochDriver(expand_schedule(sol.schedule), timeline=EmulatedTimeline(tl.to_dict()))
    assert plain.next(6.0) is None and plain.status == "paused" and "fast" in plain.reason


def make_dominated_table(deadline=60.0, K=(8, 11)):
    """Like the packaged paper testbed: on each edge cut 1 is both the fastest and the cheapest option,
    and edge ``fast`` beats edge ``slow`` on both (no option trades time for energy)."""
    specs = {("fast", 1): (2.0, 0.1, 0.6), ("fast", 3): (3.0, 0.5, 0.2),
             ("slow", 1): (2.0, 0.2, 0.6), ("slow", 3): (3.0, 1.0, 0.2)}
    rows = {k: option_terms(*v) for k, v in specs.items()}
    opts = tuple(Option(e, c, float(s.sum()), float(j.sum())) for (e, c), (s, j) in rows.items())
    cand = Candidate("net", 8, 0.1, 1.0, EpochEstimates(*K), opts)
    return PhaseTable(PlanningInstance(deadline, 1.0, (cand,)),
                      {cand.key: np.array([rows[(o.edge, o.cut)][0] for o in opts])},
                      {cand.key: np.array([rows[(o.edge, o.cut)][1] for o in opts])})


def test_time_energy_tradeoff_is_read_from_the_nominal_options():
    traded = make_table().instance.candidates[0].options
    assert time_energy_tradeoff(traded)  # cut 3 is faster, cut 1 cheaper
    assert time_energy_tradeoff(traded, edges_down={"slow"})
    assert not time_energy_tradeoff(traded, edges_down={"fast", "slow"})  # nothing left
    dominated = make_dominated_table().instance.candidates[0].options
    assert not time_energy_tradeoff(dominated) and not time_energy_tradeoff(dominated, edges_down={"fast"})
    tab = make_dominated_table()
    sol = solve(tab.instance, "optimal")
    assert not ClosedLoopController(tab, sol).spread_applies()
    assert ClosedLoopController(tab, sol, spread_condition="always").spread_applies()
    assert ClosedLoopController(make_table(), solve(make_table().instance, "optimal")).spread_applies()
    # where it does not apply, the reserve is the fast epochs alone (before any epoch: ρ₀ would add 10 %)
    ctl = ClosedLoopController(tab, sol)
    assert ctl.spread_reserve_s(ctl.schedule, 100.0) == 0.0
    assert ClosedLoopController(tab, sol, spread_condition="always").spread_reserve_s(ctl.schedule, 100.0) > 0
    with pytest.raises(JqodiError, match="spread condition"):
        ClosedLoopController(tab, sol, spread_condition="sometimes")
    # the condition travels with the controller (controller.json, a job's closed_loop block)
    spec = json.loads(json.dumps(ClosedLoopController(tab, sol, spread_condition="always").to_spec()))
    assert ClosedLoopController.from_spec(spec).spread_condition == "always"
    # a spec written before an option is the controller that wrote it (a job's closed_loop block, a
    # resumed run's controller.json), not today's default: before spread_condition the spread part
    # applied always; before the spread reserve there was none
    spec = json.loads(json.dumps(ClosedLoopController(tab, sol).to_spec()))
    del spec["options"]["spread_condition"]
    old = ClosedLoopController.from_spec(spec)
    assert old.spread_condition == "always" and old.spread_reserve_s(old.schedule, 100.0) > 0
    del spec["options"]["reserve_spread"]
    assert ClosedLoopController.from_spec(spec).spread_reserve_s(old.schedule, 100.0) == 0.0
    spec["options"]["a_later_option"] = 1  # a spec from a newer jqodi: one line, not a TypeError
    with pytest.raises(JqodiError, match="options this version does not know: a_later_option"):
        ClosedLoopController.from_spec(spec)


def test_no_spread_reserve_where_no_option_trades_time_for_energy(tmp_path):
    # the SD's link to both edges runs at 1/4 of its planned rate (one radio): the first epochs on
    # edge fast measure it; edge slow's link is not measured yet and looks 1.6 s faster per epoch
    tab = make_dominated_table(deadline=50.0)
    sol = solve(tab.instance, "optimal")
    assert sol.schedule == (ScheduleEntry("fast", 1, 11),)
    (tmp_path / "t.txt").write_text("0 25\n1 25\n")  # Mbit/s: a quarter of NOMINAL's 100
    tl = resolve_timeline(parse_timeline_events([{"at_s": 0, "event": "link_trace", "edge": e, "trace": "t.txt"}
                                                 for e in ("fast", "slow")]),
                          cloud="cloud", end="end", edges=["fast", "slow"], base_dir=tmp_path)
    world = World(tab, tl, NOMINAL, {"net@8": curve(9)})
    runs = {name: simulate_run(world, sol, policy="replan", **kw) for name, kw in
            (("none", {"reserve_spread": 0}), ("always", {"spread_condition": "always"}), ("default", {}))}
    assert all(r.reached and r.met_deadline and r.epochs == 9 for r in runs.values())
    # with the spread part always on, the reserve moves epochs to edge slow: dearer, and no faster
    assert any(e["edge"] == "slow" for r in runs["always"].replan_log for e in r["new"])
    assert runs["always"].energy_j > runs["none"].energy_j * 1.05
    # the default keeps it off here: the run of the controller without it, epoch for epoch
    assert runs["default"].energy_j == pytest.approx(runs["none"].energy_j)
    def decisions(run):
        return [(r["epoch"], r["reason"], r["old"], r["new"]) for r in run.replan_log]

    assert decisions(runs["default"]) == decisions(runs["none"])
