"""Re-plans price idle energy as the cost model does (the phase table's idle powers): on a hand-made
table where the option of least active energy keeps the other nodes waiting longest, the re-plan
picks the other option with idle pricing — the option the first plan took, priced with idle energy
— and the slow one without it (the re-plan objective before idle powers were kept). A slower link
lengthens the waiting too, so a measured slowdown can change the choice only with idle pricing."""
from __future__ import annotations

import numpy as np

from jqodi.app.controller import PhaseTable, remaining_instance
from jqodi.app.controller.remaining import order_cheapest_first, schedule_cost
from jqodi.app.simulate import World, simulate_epoch
from jqodi.core.costs import TERMS
from jqodi.core.instance import Candidate, EpochEstimates, Option, PlanningInstance, ScheduleEntry
from jqodi.core.timeline import Timeline
from jqodi.planner import solve

J = {t: i for i, t in enumerate(TERMS)}
# idle power of the nodes waiting: end 2 W, edge 10 W (either), cloud 4 W
WAIT = {"end_compute": 14.0, "edge_compute": 6.0, "cloud_update": 12.0}


def row(end_s, link_s, end_w, link_j):
    s, a = np.zeros(len(TERMS)), np.zeros(len(TERMS))
    s[J["end_compute"]], a[J["end_compute"]] = end_s, end_s * end_w
    s[J["activations"]], a[J["activations"]] = link_s, link_j
    w = np.array([WAIT.get(t, 16.0) for t in TERMS])
    return s, a, w


def table(idle: bool, deadline=100.0):
    """Two options, K = 3 epochs left: ``slow`` (cut 1) 10 s of SD compute at 5 W, 1 s of
    activations (50 J active, 206 J with the others' idle power); ``fast`` (cut 2) 4 s at 15 W and
    3 s of activations (60 J active, 164 J with idle)."""
    rows = {("slow", 1): row(10.0, 1.0, 5.0, 0.0), ("fast", 2): row(4.0, 3.0, 15.0, 0.0)}
    opts = tuple(Option(e, c, float(s.sum()), float(a.sum() + (s * w).sum()))
                 for (e, c), (s, a, w) in rows.items())
    cand = Candidate("net", 8, 0.0, 0.0, EpochEstimates(3, 3), opts)
    inst = PlanningInstance(deadline, 1.0, (cand,))
    return PhaseTable(inst, {cand.key: np.array([r[0] for r in rows.values()])},
                      {cand.key: np.array([r[1] for r in rows.values()])},
                      {cand.key: np.array([r[2] for r in rows.values()])} if idle else {})


def replan(tab, factors=None):
    inst = remaining_instance(tab, current="net@8", remaining=(3, 3), deadline_left_s=100.0, factors=factors or {})
    sol = solve(inst, "optimal")
    return {(s.edge, s.cut): s.epochs for s in sol.schedule}, sol.energy_j


def test_the_replan_prices_idle_energy_like_the_first_plan():
    with_idle, without = table(True), table(False)
    first = solve(with_idle.instance, "optimal")  # the first plan: option energies with idle included
    assert {(s.edge, s.cut): s.epochs for s in first.schedule} == {("fast", 2): 3}
    got, energy = replan(with_idle)
    assert got == {("fast", 2): 3} and energy == first.energy_j == 3 * 164.0
    got, energy = replan(without)  # the re-plan before idle powers: a different objective
    assert got == {("slow", 1): 3} and energy == 3 * 50.0
    both = (ScheduleEntry("slow", 1, 1), ScheduleEntry("fast", 2, 1))
    assert order_cheapest_first(with_idle, "net@8", both, {})[0].edge == "fast"
    assert order_cheapest_first(without, "net@8", both, {})[0].edge == "slow"
    assert schedule_cost(with_idle, "net@8", both, {}) == (18.0, 370.0)


def test_a_slower_link_lengthens_the_waiting():
    """``fast`` sends 3 s of activations: its link measured 3× slower makes them 9 s, so the nodes
    waiting (16 W) burn 96 J more per epoch — 260 J against ``slow``'s 206 + 32 J. Without idle
    pricing the link's slowdown costs nothing (its active energy is 0 here) and nothing changes."""
    f = {"edge:fast|end": 3.0, "edge:slow|end": 3.0}
    assert replan(table(True), f)[0] == {("slow", 1): 3}
    assert replan(table(True), {})[0] == {("fast", 2): 3}
    assert replan(table(False), f)[0] == {("slow", 1): 3}
    # the simulator charges the same: a term's energy (active + idle share) × actual / nominal time
    out = simulate_epoch(World(table(True), Timeline(), {}, {}), "net@8", 1, 0.0)
    assert out.energy_j == 164.0 and out.time_s == 7.0
