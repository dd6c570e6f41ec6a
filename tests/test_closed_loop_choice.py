"""The closed loop's pre-run choice of candidate (least expected energy under the K estimate's
spread) and the weight of the pre-run estimate in the online refit (no torch, deterministic)."""
import math
from dataclasses import replace

import pytest

from jqodi.app.controller import ClosedLoopController, Observation
from jqodi.app.controller.choice import epoch_distribution, plan_by_expected_energy
from jqodi.core.instance import Candidate, EpochEstimates, Option, PlanningInstance
from jqodi.errors import JqodiError
from jqodi.planner import solve
from test_controller import make_table

OPTIONS = (Option("es", 1, 10.0, 100.0), Option("es", 2, 4.0, 200.0))


def two_candidates(deadline=110.0, a=(5, 12), b=(8, 9)):
    """Same options; ``a`` is likely to stop early but has a wide estimate, ``b`` a narrow one."""
    return PlanningInstance(deadline, 1.0, (Candidate("net", 4, 0.0, 0.0, EpochEstimates(*a), OPTIONS),
                                            Candidate("net", 8, 0.0, 0.0, EpochEstimates(*b), OPTIONS)))


def test_epoch_distribution_has_median_k_exp_and_k_rob_at_its_90_percent_quantile():
    ps = epoch_distribution(10, 14)
    assert sum(p for _, p in ps) == pytest.approx(1.0)
    cdf = {}
    acc = 0.0
    for k, p in ps:
        acc += p
        cdf[k] = acc
    assert cdf[9] < 0.5 < cdf[10]
    assert cdf[13] < 0.9 <= cdf[14] + 0.02
    narrow = dict(epoch_distribution(10, 10))  # K^rob = K^exp: within an epoch of it
    assert narrow[10] > 0.6 and narrow[9] + narrow[10] + narrow[11] > 0.95


def test_the_candidate_of_least_expected_energy_is_chosen_not_the_least_k_rob_plan():
    inst = two_candidates()
    planner = solve(inst, "optimal")
    assert (planner.bits, planner.epochs) == (8, 9)  # the K^rob plans: 9 epochs beat 12
    sol = plan_by_expected_energy(inst)
    assert (sol.model, sol.bits) == ("net", 4)
    assert sol.epochs == 12 and sol.time_s <= inst.deadline_s  # still planned for its K^rob in time
    rows = {r["candidate"]: r for r in sol.extra["choice"]["candidates"]}
    assert rows["net@4"]["expected_energy_j"] < rows["net@8"]["expected_energy_j"]
    assert rows["net@4"]["plan_energy_j"] > rows["net@8"]["plan_energy_j"]
    # the expected energy: cheapest epochs first, stopped after K (≈ 5 of the 12 planned epochs)
    assert rows["net@4"]["expected_energy_j"] < 0.6 * rows["net@4"]["plan_energy_j"]


def test_a_candidate_whose_k_rob_plan_misses_the_deadline_or_is_unbounded_is_not_chosen():
    # 12 epochs cannot finish in 45 s (12 × 4 s = 48 s): only net@8 (9 epochs) fits
    sol = plan_by_expected_energy(two_candidates(deadline=45.0))
    assert sol.bits == 8 and sol.time_s <= 45.0
    sol = plan_by_expected_energy(two_candidates(a=(5, None)))
    assert sol.bits == 8
    rows = {r["candidate"]: r for r in sol.extra["choice"]["candidates"]}
    assert "net@4" not in rows
    # nothing fits with K^rob: the planner's answer (infeasible) stands
    none = plan_by_expected_energy(two_candidates(deadline=20.0))
    assert none.status == "infeasible"


def with_excluded(deadline=110.0):
    """:func:`two_candidates` (Ω = {4, 8}) and three candidates that can be in no plan: one that never
    reaches the target, one whose 30 fastest epochs (120 s) miss T_max, one outside Ω (32 bits)."""
    base = two_candidates(deadline)
    extra = (Candidate("net", 2, 0.0, 0.0, EpochEstimates(None, None), OPTIONS),
             Candidate("big", 4, 0.0, 0.0, EpochEstimates(20, 30), OPTIONS),
             Candidate("net", 32, 0.0, 0.0, EpochEstimates(4, 5), OPTIONS))
    return replace(base, candidates=base.candidates + extra, meta={"search_bits": [2, 4, 8]})


@pytest.mark.parametrize("solver", ["optimal", "jqodi"])
def test_the_expected_energy_choice_lists_the_whole_instances_excluded_candidates(solver):
    """Each candidate is planned alone, but the answer lists the excluded candidates of the whole
    instance, as the planner's answer on it does (``jqodi plan``), not the lone candidate's none."""
    inst = with_excluded()
    sol = plan_by_expected_energy(inst, solver)
    assert sol.status != "infeasible" and (sol.model, sol.bits) in (("net", 4), ("net", 8))  # one of Ω's two
    reasons = {r["candidate"]: r["reason"] for r in sol.extra["excluded"]}
    assert reasons == {"net@2": "target", "big@4": "deadline", "net@32": "outside-omega"}
    assert sol.extra["excluded"] == solve(inst, solver).extra["excluded"]


def test_the_pre_run_estimate_weighs_as_many_epochs_as_asked_in_the_refit():
    tab = make_table(deadline=200.0, K=(8, 11))
    sol = solve(tab.instance, "optimal")
    slow = [3.0, 2.6, 2.35]  # three epochs of a curve the power law extrapolates far
    est = {}
    for pe in (None, 40.0):
        ctl = ClosedLoopController(tab, sol, prior_epochs=pe)
        for k, v in enumerate(slow, 1):
            ctl.after_epoch(Observation(k, "fast", 1, v, 1.0, float(k)))
        est[pe] = ctl.remaining_estimate
        assert ctl.options["prior_epochs"] == pe
    prior_left = 8 - len(slow)
    assert abs(est[40.0][0] - prior_left) < abs(est[None][0] - prior_left)
    assert ClosedLoopController.from_spec(ctl.to_spec()).prior_epochs == 40.0
    with pytest.raises(JqodiError, match="prior weight"):
        ClosedLoopController(tab, sol, prior_epochs=-1)
    with pytest.raises(JqodiError, match="prior weight"):
        ClosedLoopController(tab, sol, prior_epochs=math.inf)


def _benchmark():
    from _scripts import load_script

    return load_script("benchmarks/closed_loop.py", "closed_loop_benchmark")


def test_benchmark_store_estimates_never_see_the_runs_true_curve():
    """Leave-one-out: each candidate's store estimate comes from the pool's other runs of its bit-width."""
    import json

    import numpy as np

    from jqodi.app.simulate import true_epochs

    bm = _benchmark()
    testbed = json.loads(bm.TESTBED.read_text())
    # L_max is drawn in [1, 1.25] × the worst final loss (1.0): the fast curve is below it from epoch 3,
    # the slow one from epoch 10 or 11
    fast = [3.0, 1.5, 0.9, 0.8, 0.7, 0.6, 0.55, 0.5] + [0.45] * 8
    slow = [3.0 - 0.2 * k for k in range(10)] + [1.0] * 6
    by_bits = {b: [fast, slow] for b in (2, 4, 6, 8)}
    seen, worlds = set(), 0
    for seed in range(40):
        made = bm.make_run(np.random.default_rng(seed), testbed, by_bits, [], sources=("store",))
        if made is None:  # no probe estimate fits: the benchmark draws another world
            continue
        world, tables, info = made
        worlds += 1
        target = world.table.instance.target_loss
        for key, curve in world.curves.items():
            other = slow if curve is fast else fast
            k_store = tables["store"].cand(key).epochs.expected
            assert abs(k_store - true_epochs(other, target)) <= 1  # (the store estimator smooths)
            assert abs(k_store - true_epochs(curve, target)) >= 5
            seen.add(curve is fast)
        # the world is the one main's benchmark drew: same probe estimates, same deadline
        again = bm.make_run(np.random.default_rng(seed), testbed, by_bits, [])
        assert again[0].table.instance.deadline_s == world.table.instance.deadline_s
        assert set(again[1]) == {"probe"}
        if worlds == 3:
            break
    assert worlds == 3 and seen == {True, False}
