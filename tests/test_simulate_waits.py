"""Waiting between epochs costs idle energy where the scenario counts it: the end device and the
cloud stay in the run and draw idle power while `hindsight` idles or a policy pauses for an edge
to return; no edge holds the job between epochs (an epoch starts by sending the model down and
ends by sending it back). Hand-made table, one edge, deterministic timelines."""
from __future__ import annotations

import numpy as np
import pytest

from jqodi.app.controller import PhaseTable
from jqodi.app.simulate import World, hindsight_optimum, simulate_run, wait_power_w
from jqodi.core.costs import TERMS
from jqodi.core.instance import Candidate, EpochEstimates, Option, PlanningInstance
from jqodi.core.timeline import parse_timeline_events, resolve_timeline
from jqodi.errors import JqodiError
from jqodi.planner import solve

J = {t: i for i, t in enumerate(TERMS)}
# idle powers: end 2 W, edge 10 W, cloud 4 W; during a term the nodes not busy in it wait
END_W, EDGE_W, CLOUD_W = 2.0, 10.0, 4.0
BUSY = {"end_compute": "end", "edge_compute": "edge", "cloud_update": "cloud"}


def table(idle: bool, deadline=40.0, K=2):
    """One candidate, one option on edge ``e``: 1 s of SD compute at 5 W and 4 s of ES compute at
    50 W per epoch (5 s; 205 J active, + 1 s × 14 W + 4 s × 6 W = 243 J with idle)."""
    s, a = np.zeros(len(TERMS)), np.zeros(len(TERMS))
    s[J["end_compute"]], a[J["end_compute"]] = 1.0, 5.0
    s[J["edge_compute"]], a[J["edge_compute"]] = 4.0, 200.0
    node_w = {"end": END_W, "edge": EDGE_W, "cloud": CLOUD_W}
    w = np.array([sum(p for n, p in node_w.items() if n != BUSY.get(t)) for t in TERMS])
    energy = float(a.sum() + (s * w).sum()) if idle else float(a.sum())
    cand = Candidate("net", 8, 0.0, 0.0, EpochEstimates(K, K), (Option("e", 1, float(s.sum()), energy),))
    inst = PlanningInstance(deadline, 1.0, (cand,))
    return PhaseTable(inst, {cand.key: s[None]}, {cand.key: a[None]}, {cand.key: w[None]} if idle else {})


def world(tab, events, K=2):
    tl = resolve_timeline(parse_timeline_events(events), cloud="cloud", end="end", edges=["e"])
    curve = [2.0] * (K - 1) + [0.5] + [0.4] * 5  # reaches L_max = 1 at epoch K
    return World(tab, tl, {}, {"net@8": curve})


AWAY = [{"at_s": 7, "event": "edge_leaves", "edge": "e"}, {"at_s": 20, "event": "edge_returns", "edge": "e"}]


def test_wait_power_is_the_end_and_the_cloud():
    assert wait_power_w(table(True)) == END_W + CLOUD_W
    assert wait_power_w(table(False)) == 0.0
    odd = table(True)  # a second option whose end + cloud idle power differs: refused, not averaged
    other = odd.idle_w["net@8"].copy()
    other[0, J["edge_compute"]] = 7.0
    odd.idle_w["net@8"] = np.vstack([odd.idle_w["net@8"], other])
    with pytest.raises(JqodiError, match="differs between options"):
        wait_power_w(odd)


def test_hindsight_pays_for_waiting_between_epochs():
    """Epoch 1 at 0–5 s; epoch 2 cannot overlap the absence (7–20 s) nor fit at 5–7 s, so it runs
    at 20–25 s: 15 s of waiting at 6 W = 90 J, on top of two epochs (243 J each)."""
    best = hindsight_optimum(world(table(True), AWAY), grid=4000)
    assert best["epochs"] == 2 and best["time_s"] == pytest.approx(25.0)
    assert best["energy_j"] == pytest.approx(2 * 243.0 + 15.0 * 6.0)
    # where the scenario counts no idle energy, the wait stays free
    free = hindsight_optimum(world(table(False), AWAY), grid=4000)
    assert free["energy_j"] == pytest.approx(2 * 205.0)
    # with nothing to wait for, hindsight runs the epochs back to back: no waiting charged
    now = hindsight_optimum(world(table(True), []), grid=4000)
    assert now["energy_j"] == pytest.approx(2 * 243.0) and now["time_s"] == pytest.approx(10.0)


def test_a_paused_policy_pays_the_same_wait_and_hindsight_stays_a_lower_bound():
    """The run's epoch 2 starts at 5 s and is lost when the edge leaves at 7 s (2 s of it spent);
    the controller pauses until 20 s (13 s at 6 W = 78 J), then runs epoch 2 at 20–25 s."""
    tab = table(True)
    sol = solve(tab.instance, "optimal")
    for policy in ("replan", "static"):
        out = simulate_run(world(tab, AWAY), sol, policy=policy)
        assert out.reached and out.met_deadline and out.lost_epochs == 1 and out.time_s == pytest.approx(25.0)
        lost = 5.0 + 1.0 * 14.0 + 1.0 * (200.0 / 4.0 + 6.0)  # 1 s of SD compute, 1 s of ES compute
        assert out.energy_j == pytest.approx(2 * 243.0 + lost + 13.0 * 6.0)
        assert hindsight_optimum(world(tab, AWAY), grid=4000)["energy_j"] <= out.energy_j
        free = simulate_run(world(table(False), AWAY), sol, policy=policy)  # no idle energy: a free pause
        assert free.energy_j == pytest.approx(2 * 205.0 + 5.0 + 50.0)
