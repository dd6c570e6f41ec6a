"""JQODI (Alg. 1–4): the tree, the path search, the score; DP modes vs literal enumeration."""
from __future__ import annotations

import pytest

from jqodi.planner import (
    Candidate, EpochEstimates, LossEstimates, Option, PlanningInstance, check_solution, solve,
)
from jqodi.planner.generate import random_instance
from jqodi.planner.jqodi import _setting, create_tree, linear_loss_trajectory, traverse


def example(loss=None, deadline=7.0):
    """K^rob = 3, K^exp = 2; slow-cheap (3 s, 1 J) and fast-costly (1 s, 3 J)."""
    c = Candidate("lenet", 6, 0.0, 0.0, EpochEstimates(2, 3),
                  (Option("slow", 1, 3.0, 1.0), Option("fast", 2, 1.0, 3.0)), loss)
    return PlanningInstance(deadline, 0.5, (c,))


def test_tree_of_algorithm_1_by_hand():
    instance = example()
    s = _setting(instance, instance.candidates[0], "robust", prune=False)
    tree = create_tree(instance, s)
    levels = [sum(1 for v in tree.vertices if v[0] == k) for k in range(4)]
    assert levels == [1, 2, 4, 7]  # the 9 s path (slow×3) is cut off by the deadline
    assert len(tree.theta) == 7
    paths = traverse(tree, 0.0)
    assert sorted(w for _, w in paths) == [5, 5, 5, 7, 7, 7, 9]


def test_score_by_hand():
    # {slow, slow, fast} = 7 s, 5 J is the cheapest on time; the order slow, slow | fast puts the
    # slow epochs into the first K^exp = 2: T_exp = 6, T_rob = 7, score = 5 * 7/6
    sol = solve(example(), "jqodi", mode="literal")
    assert sol.energy_j == 5.0 and sol.time_s == 7.0
    assert [(e.edge, e.epochs) for e in sol.schedule] == [("slow", 2), ("fast", 1)]
    assert sol.extra["opp"] == pytest.approx(6 / 7)
    assert sol.extra["risk"] == 1.0  # no loss estimates
    assert sol.extra["score"] == pytest.approx(35 / 6)
    # with loss estimates, risk = L_rob / L_exp ≥ 1 multiplies the score
    loss = LossEstimates(start=0.9, final_expected=0.40, final_robust=0.48)
    sol = solve(example(loss), "jqodi", mode="literal")
    assert sol.extra["risk"] == pytest.approx(1.2)
    assert sol.extra["score"] == pytest.approx(35 / 6 * 1.2)
    assert sol.extra["predicted_final_loss"] == 0.48
    for mode in ("dp", "dp-exact"):
        again = solve(example(loss), "jqodi", mode=mode)
        assert again.extra["score"] == pytest.approx(sol.extra["score"])
        assert again.schedule == sol.schedule


def test_loss_trajectory_is_linear_between_start_and_final():
    loss = LossEstimates(start=0.9, final_expected=0.40, final_robust=0.48)
    traj = linear_loss_trajectory(example(loss).candidates[0], "robust")
    assert traj == pytest.approx([0.9, 0.76, 0.62, 0.48])
    assert linear_loss_trajectory(example().candidates[0], "robust") is None


@pytest.mark.parametrize("seed", range(30))
def test_dp_equals_literal_enumeration(seed):
    instance = random_instance(seed, models=2, bits=(2, 8), edges=2, cuts=3, epochs=(2, 6))
    for prune in (True, False):
        lit = solve(instance, "jqodi", mode="literal", prune_dominated=prune)
        for mode in ("dp-exact", "dp"):
            got = solve(instance, "jqodi", mode=mode, prune_dominated=prune)
            assert got.status == lit.status
            if lit.status != "infeasible":
                assert got.extra["score"] == pytest.approx(lit.extra["score"], rel=1e-9), mode
                assert got.energy_j == pytest.approx(lit.energy_j, rel=1e-9), mode
                assert check_solution(instance, got) == []


def test_bucketed_dp_is_exact_on_a_grid():
    # integer epoch times and a slack of 20 s cut into 80 buckets: every rounding is exact
    opts = tuple(Option(f"es{i}", 1 + i % 3, float(t), float(e))
                 for i, (t, e) in enumerate([(2, 9), (3, 6), (4, 5), (5, 3), (7, 2)]))
    c = Candidate("m", 8, 1.0, 2.0, EpochEstimates(4, 6), opts,
                  LossEstimates(1.0, 0.45, 0.49))
    instance = PlanningInstance(1.0 + 6 * 2 + 20.0, 0.5, (c,))
    lit = solve(instance, "jqodi", mode="literal", prune_dominated=False)
    dp = solve(instance, "jqodi", mode="dp", buckets=80, prune_dominated=False)
    assert dp.extra["score"] == pytest.approx(lit.extra["score"], rel=1e-12)


def test_jqodi_factors_penalise_uncertainty():
    for seed in range(10):
        instance = random_instance(seed)
        sol = solve(instance, "jqodi")
        if sol.status == "infeasible":
            continue
        assert 0 < sol.extra["opp"] <= 1 and sol.extra["risk"] >= 1
        assert sol.epochs == next(c.epochs.robust for c in instance.candidates
                                  if (c.model, c.bits) == (sol.model, sol.bits))
        assert check_solution(instance, sol) == []


def test_expected_estimate_has_no_opportunity_or_risk():
    instance = random_instance(3)
    sol = solve(instance, "jqodi", epochs="expected")
    assert sol.extra["opp"] == 1.0 and sol.extra["risk"] == 1.0
    opt = solve(instance, "optimal", epochs="expected")
    # with opp = risk = 1 JQODI minimises energy too: within the grid's rounding of optimal
    assert sol.energy_j == pytest.approx(opt.energy_j, rel=1e-3)


def test_bucketed_dp_is_close_to_exact_and_never_late():
    for seed in range(8):
        instance = random_instance(40 + seed, edges=4, cuts=4, epochs=(10, 60))
        exact = solve(instance, "jqodi", mode="dp-exact")
        dp = solve(instance, "jqodi")
        assert dp.status == exact.status
        if dp.status != "infeasible":
            assert check_solution(instance, dp) == []
            assert dp.extra["score"] <= exact.extra["score"] * (1 + 1e-3)


def test_literal_mode_refuses_huge_trees():
    instance = random_instance(0, edges=4, cuts=5, epochs=(50, 60), tightness=1.0)
    with pytest.raises(Exception, match="literal JQODI tree exceeds"):
        solve(instance, "jqodi", mode="literal", prune_dominated=False)


from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


@st.composite
def tie_heavy_instance(draw):
    """Small instances with integer times/energies (ties, equal times, zero energy, K = 1)."""
    n = draw(st.integers(1, 4))
    opts = tuple(Option(f"e{i}", 1 + i, float(draw(st.integers(1, 4))), float(draw(st.integers(0, 5))))
                 for i in range(n))
    k_rob = draw(st.integers(1, 5))
    k_exp = draw(st.integers(1, k_rob))
    tau = float(draw(st.integers(0, 2)))
    loss = draw(st.one_of(st.none(), st.just(LossEstimates(1.0, 0.4, 0.45))))
    c = Candidate("m", 8, tau, float(draw(st.integers(0, 3))), EpochEstimates(k_exp, k_rob), opts, loss)
    deadline = float(draw(st.integers(1, 25)))
    return PlanningInstance(deadline, 0.5, (c,))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tie_heavy_instance())
def test_property_solvers_agree_on_tie_heavy_instances(instance):
    import itertools

    c = instance.candidates[0]
    best = None
    for mix in itertools.combinations_with_replacement(range(len(c.options)), c.epochs.robust):
        t = c.quantize_time_s + sum(c.options[i].epoch_time_s for i in mix)
        if t <= instance.deadline_s:
            e = c.quantize_energy_j + sum(c.options[i].epoch_energy_j for i in mix)
            best = e if best is None else min(best, e)
    opt = solve(instance, "optimal")
    assert (opt.status == "infeasible") == (best is None)
    if best is not None:
        assert opt.status == "optimal" and opt.energy_j == pytest.approx(best)
    lit = solve(instance, "jqodi", mode="literal", prune_dominated=False)
    for mode in ("dp", "dp-exact"):
        got = solve(instance, "jqodi", mode=mode, prune_dominated=False)
        assert got.status == lit.status
        if lit.status != "infeasible":
            assert got.extra["score"] == pytest.approx(lit.extra["score"], rel=1e-9)
            assert check_solution(instance, got) == []


def test_bucketed_dp_keeps_paths_that_rounding_pushes_past_the_last_bucket():
    """Found by the tie-heavy property test: slack 10 s in 4096 buckets rounds the 3 s and 1 s
    excesses up, so 3×(4 s) + 1×(2 s) (exactly 10 s of excess) fell off the grid and the DP
    returned a worse-scoring plan than the literal enumeration."""
    opts = (Option("e0", 1, 1.0, 1.0), Option("e1", 2, 4.0, 0.0), Option("e2", 3, 2.0, 1.0))
    inst = PlanningInstance(15.0, 0.5, (Candidate("m", 8, 0.0, 0.0, EpochEstimates(4, 5), opts),))
    lit = solve(inst, "jqodi", mode="literal", prune_dominated=False)
    got = solve(inst, "jqodi", mode="dp", prune_dominated=False)
    assert lit.extra["score"] == pytest.approx(2 * 15 / 14)  # E = 2 J, T_rob = 15 s, T_exp = 14 s
    assert got.extra["score"] == pytest.approx(lit.extra["score"], rel=1e-12)
    assert got.time_s == pytest.approx(15.0)
