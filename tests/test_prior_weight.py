"""The online K refit's prior weight follows the estimate (jqodi.app.controller.loop.prior_weight):
the number of epochs of evidence the pre-run K counts for, from the spread the estimate states;
``controller_for`` passes it to the controller, and a cold start keeps 5 (no torch, deterministic)."""
import math
from importlib import resources
from statistics import NormalDist

import pytest

from jqodi.app.controller import ClosedLoopController, Observation, controller_for
from jqodi.app.controller.loop import PRIOR_WEIGHT_MAX, PRIOR_WEIGHT_MIN, prior_weight, prior_weight_for
from jqodi.learning.online import PRIOR_EPOCHS
from jqodi.planner import solve
from test_controller import curve, make_table
from test_pre_run import COLD, CONFORMAL, estimate

SIGMA0 = math.log(1.8) / NormalDist().inv_cdf(0.9)  # the cold start's spread: K^rob = 1.8·K^exp at 90 %


def test_the_weight_is_five_times_the_cold_start_variance_over_the_stated_one_bounded():
    assert PRIOR_WEIGHT_MIN == PRIOR_EPOCHS == 5 and PRIOR_WEIGHT_MAX == 40
    # a conformal K^rob at 90 % with margin +30 %: σ = ln 1.3 / z_0.9, weight 5·(σ0/σ)²
    sigma = math.log(1.3) / NormalDist().inv_cdf(0.9)
    w, why = prior_weight(estimate(4, 10, 13, CONFORMAL, margin=0.3))
    assert w == pytest.approx(5 * (SIGMA0 / sigma) ** 2) and 20 < w < 30
    assert "conformal 90% margin +30%" in why and f"{sigma:.3f}" in why
    # the same margin stated at 80 % is a wider spread: less weight
    assert prior_weight(estimate(4, 10, 13, "static", margin=0.3, level=0.8))[0] < w
    # a margin as wide as the cold start's is worth the probe; wider stays at the floor
    assert prior_weight(estimate(4, 10, 18, CONFORMAL, margin=0.8))[0] == pytest.approx(5.0)
    assert prior_weight(estimate(4, 10, 30, CONFORMAL, margin=2.0))[0] == 5.0
    # narrow (and zero) margins are capped at the 40 the benchmark tested
    assert prior_weight(estimate(4, 10, 11, CONFORMAL, margin=0.05))[0] == 40.0
    assert prior_weight(estimate(4, 10, 10, CONFORMAL, margin=0.0))[0] == 40.0
    # narrower spread, more weight
    ws = [prior_weight(estimate(4, 10, 20, CONFORMAL, margin=m))[0] for m in (0.6, 0.4, 0.3, 0.25)]
    assert ws == sorted(ws) and len(set(ws)) == len(ws)


def test_a_cold_start_or_an_estimate_without_a_stated_spread_keeps_five():
    for est in (None, estimate(4, 4, 8, COLD), estimate(4, 4, 5, "static"), estimate(4, 4, 5, CONFORMAL)):
        w, why = prior_weight(est)
        assert w == 5.0 and "no stated spread" in why
    assert "the probe alone" in prior_weight(estimate(4, 4, 8, COLD))[1]


def test_the_weight_is_the_trained_candidates():
    ests = [estimate(4, 10, 13, CONFORMAL, margin=0.3), estimate(8, 6, 11, COLD)]
    assert prior_weight_for(ests, "net", 4) == prior_weight(ests[0])
    assert prior_weight_for(ests, "net", 8)[0] == 5.0
    assert prior_weight_for(ests, "other", 4)[0] == 5.0 and prior_weight_for(None, "net", 4)[0] == 5.0


def test_controller_for_passes_the_weight_into_the_spec():
    from jqodi.core.costs import compile_instance
    from jqodi.core.scenario import load_scenario

    sc = load_scenario(resources.files("jqodi") / "scenarios" / "cpu-demo.yaml")
    inst = compile_instance(sc)
    sol = solve(inst, "optimal")
    ctl = controller_for(sc, sol, instance=inst, prior_epochs=23.5)
    assert ctl.prior_epochs == 23.5 and ctl.to_spec()["options"]["prior_epochs"] == 23.5
    assert ClosedLoopController.from_spec(ctl.to_spec()).prior_epochs == 23.5
    assert controller_for(sc, sol, instance=inst).prior_epochs is None  # the refit's default, 5


def test_the_weight_moves_the_refit():
    # the curve reaches L_max at epoch 14, the plan said K^exp 8: after 5 epochs the refit disagrees
    tab = make_table(deadline=60.0, K=(8, 11))
    sol = solve(tab.instance, "optimal")
    losses = curve(14)
    shares = {}
    for p in (None, 5.0, 40.0):
        ctl = ClosedLoopController(tab, sol, prior_epochs=p)
        for k, v in enumerate(losses[:5], start=1):
            ctl.after_epoch(Observation(k, "fast", 1, v, 1.0, float(k)))
        shares[p] = ctl.refits[-1]["weight_observed"]
    assert shares[None] == shares[5.0] > shares[40.0] > 0


def test_a_store_estimate_counts_ten_epochs_per_stored_run_up_to_the_benchmarks_forty():
    """The store estimator states no level; its K comes from N complete stored runs of the
    configuration. The benchmark tuned 40 for its store estimates of 4 runs: 10 per run, bounded."""
    from jqodi.app.controller.loop import STORE_WEIGHT_PER_RUN

    assert STORE_WEIGHT_PER_RUN == 10.0
    for runs, want in ((4, 40.0), (1, 10.0), (2, 20.0), (3, 30.0), (12, 40.0)):
        w, why = prior_weight(estimate(4, 10, 14, f"measured:store({runs} runs)"))
        assert w == want and f"K from {runs} stored run(s) of the configuration" in why
    # what jqodi run gets for the trained candidate; a source that only looks like it keeps 5
    ests = [estimate(4, 10, 14, "measured:store(4 runs)"), estimate(8, 10, 14, "static (store(4 runs))")]
    assert prior_weight_for(ests, "net", 4)[0] == 40.0 and prior_weight_for(ests, "net", 8)[0] == 5.0
    # a store estimate that states a spread is weighed by it, like any other
    stated = estimate(4, 10, 13, "measured:store(4 runs)", margin=0.3)
    assert prior_weight(stated)[0] == prior_weight(estimate(4, 10, 13, CONFORMAL, margin=0.3))[0]


def test_the_weight_is_said_once_when_the_controller_refits_k():
    from jqodi.app.controller.loop import said_prior_weight

    said = []
    weighed = prior_weight(estimate(4, 10, 13, CONFORMAL, margin=0.3))
    assert said_prior_weight(weighed, "replan", said.append) == weighed[0]
    assert said == [f"online K refit: the pre-run K counts as {weighed[0]:.3g} epochs of evidence ({weighed[1]})"]
    assert said_prior_weight(weighed, "static", said.append) == weighed[0] and len(said) == 1  # static never refits
