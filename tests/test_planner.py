"""Planner: optimal vs exhaustive enumeration and an independent exact DP, baselines, feasibility,
infeasibility explanations, the API."""
from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest

from jqodi.errors import PlanningError
from jqodi.planner import (
    SOLVERS, Candidate, EpochEstimates, LossEstimates, Option, PlanningInstance, check_solution,
    compare, solve,
)
from jqodi.planner.common import TIME_RTOL, lp_bound, pareto_front
from jqodi.planner.generate import random_instance
from jqodi.planner.optimal import exact_pareto_dp


def brute_force(instance: PlanningInstance, epochs: str = "robust"):
    """Every multiset of K options (all options, dominated ones too) of every candidate."""
    best = None
    limit = instance.deadline_s * (1 + TIME_RTOL)
    for c in instance.candidates:
        K = c.epochs.get(epochs)
        if K is None or not c.options:
            continue
        for mix in itertools.combinations_with_replacement(range(len(c.options)), K):
            t = c.quantize_time_s + math.fsum(c.options[i].epoch_time_s for i in mix)
            if t > limit:
                continue
            e = c.quantize_energy_j + math.fsum(c.options[i].epoch_energy_j for i in mix)
            if best is None or e < best:
                best = e
    return best


def tiny(seed, **kw):
    args = dict(models=2, bits=(2, 8), edges=2, cuts=2, epochs=(2, 7), p_unreachable=0.2)
    args.update(kw)
    return random_instance(seed, **args)


def inst(deadline, cands, target=0.5):
    return PlanningInstance(deadline, target, tuple(cands))


def cand(model, bits, opts, K=(3, 4), tau=0.0, eps=0.0, loss=None):
    return Candidate(model, bits, tau, eps, EpochEstimates(*K),
                     tuple(Option(e, c, t, en) for e, c, t, en in opts), loss)


def test_planner_never_imports_torch():
    code = ("import sys, jqodi.planner, jqodi.cli.plan\n"
            "from jqodi.planner.generate import random_instance\n"
            "jqodi.planner.compare(random_instance(0))\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("seed", range(40))
def test_optimal_equals_exhaustive_enumeration(seed):
    instance = tiny(seed, tightness=[0.0, 0.1, 0.3, 0.6, 1.0][seed % 5])
    want = brute_force(instance)
    for method in ("auto", "milp"):
        sol = solve(instance, "optimal", method=method)
        if want is None:
            assert sol.status == "infeasible"
        else:
            assert sol.status == "optimal"
            assert sol.energy_j == pytest.approx(want, rel=1e-9)
            assert check_solution(instance, sol) == []


@pytest.mark.parametrize("seed", range(25))
def test_optimal_matches_independent_exact_dp(seed):
    instance = random_instance(100 + seed, models=3, bits=(2, 4, 8, 32), edges=3, cuts=4,
                               epochs=(5, 40))
    ref = exact_pareto_dp(instance)
    for method in ("auto", "milp"):
        sol = solve(instance, "optimal", method=method)
        if ref is None:
            assert sol.status == "infeasible"
            continue
        assert sol.status == "optimal"
        assert abs(sol.energy_j - ref[0]) <= 1e-6 * abs(ref[0])
        assert check_solution(instance, sol) == []


def test_optimal_expected_estimate_matches_exact_dp():
    for seed in range(5):
        instance = random_instance(300 + seed, edges=3, cuts=3, epochs=(5, 30))
        ref = exact_pareto_dp(instance, epochs="expected")
        sol = solve(instance, "optimal", epochs="expected")
        assert sol.extra["epochs_estimate"] == "expected"
        if ref is not None:
            assert sol.energy_j == pytest.approx(ref[0], rel=1e-6)
            assert sol.epochs == next(c.epochs.expected for c in instance.candidates
                                      if c.model == sol.model and c.bits == sol.bits)


def test_deadline_met_exactly_counts_as_on_time():
    # 10 epochs × 10 s == 100 s deadline: on time (T ≤ T_max, see common.TIME_RTOL)
    c = cand("a", 8, [("x", 1, 10.0, 5.0), ("x", 2, 5.0, 9.0)], K=(10, 10))
    sol = solve(inst(100.0, [c]), "optimal")
    assert sol.status == "optimal" and sol.energy_j == 50.0 and sol.time_s == 100.0
    assert solve(inst(99.9, [c]), "optimal").energy_j > 50.0


def test_optimal_mixes_options_under_tight_deadline():
    # slow-cheap (10 s, 1 J) and fast-costly (2 s, 10 J); K = 10, 60 s: 5 slow + 5 fast
    c = cand("a", 8, [("x", 1, 10.0, 1.0), ("y", 1, 2.0, 10.0)], K=(10, 10), tau=0.0)
    sol = solve(inst(60.0, [c]), "optimal")
    assert sol.status == "optimal"
    assert {(s.edge, s.epochs) for s in sol.schedule} == {("x", 5), ("y", 5)}
    assert sol.energy_j == 55.0
    static = solve(inst(60.0, [c]), "static")
    assert static.energy_j == 100.0  # one option for every epoch: only the fast one fits


def test_quantization_cost_is_included():
    c = cand("a", 8, [("x", 1, 1.0, 1.0)], K=(4, 4), tau=3.0, eps=7.0)
    sol = solve(inst(7.0, [c]), "optimal")
    assert sol.energy_j == 11.0 and sol.time_s == 7.0
    assert solve(inst(6.9, [c]), "optimal").status == "infeasible"


def test_pareto_front_and_lp_bound():
    rng = np.random.default_rng(0)
    for _ in range(50):
        t = rng.uniform(1, 10, 30)
        e = rng.uniform(1, 10, 30)
        f = pareto_front(t, e)
        assert np.all(np.diff(t[f]) > 0) and np.all(np.diff(e[f]) < 0)
        for i in range(30):  # every option is on the front or dominated by a front option
            assert i in f or np.any((t[f] <= t[i]) & (e[f] <= e[i]))
        K = int(rng.integers(1, 20))
        budget = K * rng.uniform(t.min(), t.max())
        lp = lp_bound(t, e, f, K, budget)
        # the LP bound is below every integer plan, and its duals price every option ≥ 0
        rc = e - lp.lam + lp.mu * t
        assert np.all(rc >= -1e-9)
        assert lp.value_j <= min(K * e[i] for i in range(30) if K * t[i] <= budget) + 1e-9


def test_every_solver_returns_feasible_plans():
    for seed in range(12):
        instance = random_instance(500 + seed)
        for epochs in ("robust", "expected"):
            for row in compare(instance, epochs=epochs):
                sol = row["solution"]
                assert check_solution(instance, sol, epochs) == [], (seed, row["solver"])
                if sol.status != "infeasible":
                    assert sol.time_s <= instance.deadline_s * (1 + TIME_RTOL)


def test_heuristics_never_beat_optimal():
    for seed in range(20):
        instance = random_instance(700 + seed, edges=3, cuts=4)
        rows = {r["solver"]: r for r in compare(instance)}
        opt = rows["optimal"]
        for name, r in rows.items():
            if r["status"] != "infeasible":
                assert opt["status"] == "optimal"
                assert r["energy_j"] >= opt["energy_j"] * (1 - 1e-9), name


def test_static_is_brute_force_over_single_options():
    for seed in range(10):
        instance = random_instance(900 + seed)
        want = None
        for c in instance.candidates:
            K = c.epochs.robust
            if K is None:
                continue
            for o in c.options:
                if c.quantize_time_s + K * o.epoch_time_s <= instance.deadline_s * (1 + TIME_RTOL):
                    e = c.quantize_energy_j + K * o.epoch_energy_j
                    want = e if want is None else min(want, e)
        sol = solve(instance, "static")
        assert (sol.status == "infeasible") == (want is None)
        if want is not None:
            assert sol.energy_j == pytest.approx(want) and len(sol.schedule) == 1


def test_baselines_restrict_the_search():
    instance = random_instance(4, tightness=1.0)
    full = solve(instance, "full-model")
    assert full.status == "infeasible" or full.bits == 32
    mini = solve(instance, "minimal-model")
    assert mini.status == "infeasible" or mini.bits == 1
    c = next(c for c in instance.candidates if c.epochs.robust is not None)
    part = solve(instance, "partition-only", model=c.model, bits=c.bits)
    assert part.status == "infeasible" or (part.model, part.bits) == (c.model, c.bits)
    with pytest.raises(PlanningError, match="partition-only needs"):
        solve(instance, "partition-only")
    with pytest.raises(PlanningError, match="no candidate"):
        solve(instance, "partition-only", model="nope", bits=8)


def test_full_model_reports_best_plan_ignoring_deadline():
    slow = cand("vgg", 32, [("x", 1, 10.0, 5.0)], K=(10, 10))
    fast = cand("vgg", 8, [("x", 1, 1.0, 5.0)], K=(10, 10))
    sol = solve(inst(50.0, [slow, fast]), "full-model")
    assert sol.status == "infeasible"
    assert sol.extra["best_ignoring_deadline"]["time_s"] == 100.0


def test_infeasible_explanation():
    a = cand("a", 8, [("x", 1, 2.0, 1.0), ("x", 2, 3.0, 0.5)], K=(8, 10), tau=1.0)
    b = cand("b", 4, [("x", 1, 1.5, 1.0)], K=(12, 15), tau=0.5)
    never = cand("c", 1, [("x", 1, 0.1, 0.1)], K=(None, None))
    empty = Candidate("d", 2, 0.0, 0.0, EpochEstimates(3, 3), (), None,
                      ({"edge": "x", "cut": 1, "reason": "memory too small"},))
    instance = inst(15.0, [a, b, never, empty])
    for name in SOLVERS:
        kw = {"model": "a", "bits": 8} if name == "partition-only" else {}
        sol = solve(instance, name, **kw)
        assert sol.status == "infeasible"
    ex = solve(instance, "optimal").extra["explanation"]
    assert {u["candidate"] for u in ex["unreachable"]} == {"c@1", "d@2"}
    assert "memory too small" in ex["message"]
    assert [(r["candidate"], r["fastest_time_s"]) for r in ex["too_slow"]] == [("a@8", 21.0),
                                                                                ("b@4", 23.0)]
    assert ex["min_deadline_s"] == 21.0
    # the smallest deadline it names is indeed enough
    fixed = PlanningInstance(ex["min_deadline_s"], 0.5, instance.candidates)
    for name in ("optimal", "jqodi", "static"):
        assert solve(fixed, name).status != "infeasible"


def test_solve_rejects_bad_requests():
    instance = random_instance(0)
    with pytest.raises(PlanningError, match="unknown solver"):
        solve(instance, "magic")
    with pytest.raises(PlanningError, match="does not take"):
        solve(instance, "optimal", buckets=3)
    with pytest.raises(PlanningError, match="robust"):
        solve(instance, "jqodi", epochs="median")


def test_solution_round_trips_through_json():
    instance = random_instance(2)
    sol = solve(instance.to_dict(), "optimal")
    again = type(sol).from_dict(sol.to_dict())
    assert again == sol and check_solution(instance, again) == []


def test_compare_rows():
    instance = random_instance(1)
    rows = compare(instance)
    assert [r["solver"] for r in rows] == list(SOLVERS)
    opt = next(r for r in rows if r["solver"] == "optimal")
    assert opt["vs_optimal_pct"] == 0.0
    for r in rows:
        assert r["plan_time_ms"] >= 0
        if r["status"] != "infeasible":
            assert r["vs_optimal_pct"] >= -1e-7


def test_optimal_on_adversarial_random_options():
    # uniform random (time, energy) clouds: many integer optima are off the LP hull
    rng = np.random.default_rng(7)
    off_hull = 0
    for _ in range(150):
        n, K = int(rng.integers(2, 7)), int(rng.integers(2, 7))
        t, e = rng.uniform(1, 10, n).round(3), rng.uniform(1, 10, n).round(3)
        deadline = K * rng.uniform(t.min(), t.max())
        c = cand("a", 8, [("x", i + 1, float(t[i]), float(e[i])) for i in range(n)], K=(K, K))
        instance = inst(float(deadline), [c])
        want = brute_force(instance)
        sol = solve(instance, "optimal")
        if want is None:
            assert sol.status == "infeasible"
            continue
        assert sol.status == "optimal" and sol.energy_j == pytest.approx(want, rel=1e-9)
        f = pareto_front(t, e)
        lp = lp_bound(t, e, f, K, deadline * (1 + TIME_RTOL))
        used = {s.cut - 1 for s in sol.schedule}
        off_hull += not used <= {lp.low, lp.high}
    assert off_hull > 0  # the test did reach plans the LP rounding alone would miss


def test_each_exact_step_alone_matches_enumeration():
    """The gap search, the layered DP and HiGHS, each run alone on the Pareto front."""
    from jqodi.planner.optimal import _gap_search, _layered_dp, _milp, _plan_cost

    rng = np.random.default_rng(11)
    for _ in range(80):
        n, K = int(rng.integers(2, 7)), int(rng.integers(2, 7))
        t, e = rng.uniform(1, 10, n).round(2), rng.uniform(1, 10, n).round(2)
        budget = K * rng.uniform(t.min(), t.max())
        c = cand("a", 8, [("x", i + 1, float(t[i]), float(e[i])) for i in range(n)], K=(K, K))
        want = brute_force(inst(float(budget), [c]))
        f = pareto_front(t, e)
        lp = lp_bound(t, e, f, K, budget * (1 + TIME_RTOL))
        if want is None:
            continue
        B = budget * (1 + TIME_RTOL)
        for name, got in (("gap", _gap_search(t, e, lp, f, K, B, math.inf, 0.0, 10**6)),
                          ("layered", _layered_dp(t, e, f, f, K, B, math.inf, 0.0, 10**6)),
                          ("milp", _milp(t, e, f, K, B, None))):
            status, counts = got
            assert status == "optimal", name
            energy, used = _plan_cost(t, e, counts)
            assert energy == pytest.approx(want, rel=1e-9), name
            assert sum(k for _, k in counts) == K and used <= B


def test_hard_instance_is_proven_quickly_and_matches_exact_dp():
    # HiGHS needed > 10 s to prove this one (its LP gap holds many plans: the layered DP runs)
    instance = random_instance(5, bits=(1, 2, 4, 6, 8, 32), edges=2, cuts=10, epochs=(20, 200),
                               tightness=0.3, anchor="cheapest")
    sol = solve(instance, "optimal")
    assert sol.status == "optimal"
    ref = exact_pareto_dp(PlanningInstance(
        instance.deadline_s, instance.target_loss,
        tuple(c for c in instance.candidates if (c.model, c.bits) == (sol.model, sol.bits))))
    assert abs(sol.energy_j - ref[0]) <= 1e-6 * ref[0]


def test_compare_passes_solver_options():
    instance = random_instance(1)
    rows = compare(instance, ["jqodi", "optimal"], **{"jqodi.buckets": 1024, "optimal.method": "milp"})
    assert rows[0]["solution"].extra["buckets"] == 1024
    assert rows[1]["solution"].extra["method"] == "milp"
    c = next(c for c in instance.candidates if c.epochs.robust is not None)
    row = compare(instance, ["partition-only"], model=c.model, bits=c.bits)[0]
    assert row["status"] == "infeasible" or (row["model"], row["bits"]) == (c.model, c.bits)
