"""The run's first plan (jqodi.app.pre_run): the candidate by expected energy or the planner's, the
spread of K each estimate states, and the closed loop's time reserve kept by the first schedule
(no torch, deterministic)."""
import math
from statistics import NormalDist

import numpy as np
import pytest

from jqodi.app.pre_run import choice_lines, first_plan, k_spread, reserve_s
from jqodi.core.estimates import LearningEstimate
from jqodi.core.instance import Candidate, EpochEstimates, Option, PlanningInstance
from jqodi.errors import JqodiError
from jqodi.planner import solve
from test_closed_loop_choice import OPTIONS, two_candidates

Z90 = NormalDist().inv_cdf(0.9)


def estimate(bits, k_exp, k_rob, source="static", margin=None, level=None):
    """A row; ``margin`` (relative, before rounding) states K^rob's spread at ``level`` (default 0.9)."""
    if margin is not None and level is None:
        level = 0.9
    return LearningEstimate(model="net", bits=bits, base_loss=1.0, gamma=0.0, epochs_expected=k_exp,
                            epochs_robust=k_rob, source=source, epochs_robust_level=level, epochs_robust_margin=margin)


CONFORMAL = ("measured:prior+probe(5 epochs; pow3 (best of 4 calibrated variants) fitted to 5 probe epochs, "
             "calibrated on 12 stored net runs (3.1 effective configurations, held-out error 9%); K^rob: "
             "conformal 90% margin +5% (6.2 effective residuals; pooled, raw scores, rounded up))")
COLD = "measured:probe(5 epochs; cold start: no stored runs of net; K^rob widened to ≥ 1.8·K^exp)"


def test_the_spread_of_k_is_the_stated_conformal_margin_not_the_rounded_k_rob():
    # K^exp 3 with a +5 % margin is rounded up to K^rob 4: the ratio 4/3 would read as a wide estimate
    # the spread is read from the estimate's fields (unrounded), not from its text
    sigma, how = k_spread(estimate(4, 3, 4, CONFORMAL, margin=0.0512))
    assert sigma == pytest.approx(math.log(1.0512) / Z90) and "conformal 90% margin +5%" in how
    assert sigma < 0.2 * math.log(4 / 3) / Z90
    doubled = CONFORMAL.replace("+5%", "+44% (doubled: cold start)")
    assert k_spread(estimate(4, 3, 5, doubled, margin=0.44))[0] == pytest.approx(math.log(1.44) / Z90)
    z80 = NormalDist().inv_cdf(0.8)
    sigma, how = k_spread(estimate(4, 3, 5, "static", margin=0.3, level=0.8))
    assert sigma == pytest.approx(math.log(1.3) / z80) and "stated 80% margin +30%" in how
    # the same text without the fields (an estimates file written before them): K^rob as the 90 % quantile
    sigma, how = k_spread(estimate(4, 3, 4, CONFORMAL))
    assert sigma is None and "K^rob as the 90% quantile (the learned prior)" in how
    # the probe alone, a store or a static row state no level: K^rob is read as the 90 % quantile
    few = CONFORMAL.replace("conformal 90% margin +5%", "too few conformal residuals: the variants' 90% quantile, "
                                                         "widened to ≥ 1.8·K^exp")
    for source, said in ((COLD, "the probe alone, K^rob widened"), (few, "the learned prior, K^rob widened"),
                         ("static", "the scenario's table"), ("paper-table-vi", "paper")):
        sigma, how = k_spread(estimate(4, 4, 8, source))
        assert sigma is None and "K^rob as the 90% quantile" in how and said in how
    assert k_spread(None)[0] is None


def test_expected_choice_trains_the_likely_early_stopper_and_planner_choice_the_least_k_rob_plan():
    inst = two_candidates()
    exp = first_plan(inst, choice="expected", solver="optimal", reserve_epochs=0)
    plan = first_plan(inst, choice="planner", solver="optimal", reserve_epochs=0)
    assert (exp.bits, exp.epochs) == (4, 12) and (plan.bits, plan.epochs) == (8, 9)
    assert exp.extra["choice"]["rule"] == "expected" and plan.extra["choice"]["rule"] == "planner"
    rows = {r["candidate"]: r for r in exp.extra["choice"]["candidates"]}
    assert rows["net@4"]["expected_energy_j"] < rows["net@8"]["expected_energy_j"]
    assert all("K^rob as the 90% quantile" in r["spread"] for r in rows.values())
    text = "\n".join(choice_lines(exp))
    assert "choice (expected energy)" in text and "net@4" in text and "net@8" in text
    assert "choice (planner)" in "\n".join(choice_lines(plan))
    # no controller: every planned epoch runs, so the planner's choice, and the answer says why
    blind = first_plan(inst, choice="expected", solver="optimal", policy=None)
    assert blind.bits == 8 and blind.extra["choice"]["rule"] == "planner" and "no closed loop" in blind.extra["choice"]["note"]
    assert blind.extra["choice"]["reserve_s"] == 0
    k_exp = first_plan(inst, choice="expected", solver="optimal", epochs="expected", reserve_epochs=0)
    assert k_exp.extra["choice"]["rule"] == "planner" and "K^exp" in "\n".join(choice_lines(k_exp))
    with pytest.raises(JqodiError, match="--choice"):
        first_plan(inst, choice="cheapest")


def test_a_stated_narrow_spread_lowers_the_expected_energy_of_a_wide_k_rob():
    inst = two_candidates()
    wide = first_plan(inst, solver="optimal", reserve_epochs=0, estimates=[estimate(4, 5, 12), estimate(8, 8, 9)])
    narrow = first_plan(inst, solver="optimal", reserve_epochs=0,
                        estimates=[estimate(4, 5, 12, CONFORMAL.replace("+5%", "+10%"), margin=0.1),
                                   estimate(8, 8, 9)])
    w = {r["candidate"]: r for r in wide.extra["choice"]["candidates"]}
    n = {r["candidate"]: r for r in narrow.extra["choice"]["candidates"]}
    assert n["net@4"]["expected_energy_j"] < w["net@4"]["expected_energy_j"]
    assert n["net@4"]["sigma_ln_k"] == pytest.approx(math.log(1.1) / Z90) and "sigma_ln_k" not in w["net@4"]
    assert n["net@8"]["expected_energy_j"] == pytest.approx(w["net@8"]["expected_energy_j"])
    assert "conformal 90% margin +10%" in n["net@4"]["spread"]


def tight_instance(deadline):
    """One candidate, 6 epochs: the cheap option (10 s, 100 J) or the fast one (4 s, 200 J)."""
    return PlanningInstance(deadline, 1.0, (Candidate("net", 4, 0.0, 0.0, EpochEstimates(4, 6), OPTIONS),))


@pytest.mark.parametrize("choice", ["expected", "planner"])
def test_the_first_schedule_keeps_the_controllers_time_reserve(choice):
    inst = tight_instance(60.0)
    full = solve(inst, "optimal")
    assert full.time_s == pytest.approx(60.0)  # the plan for T_max fills it: no reserve left
    reserve = reserve_s(inst.candidates[0], 1.5)
    assert reserve == pytest.approx(6.0)  # 1.5 epochs of the fastest option (4 s)
    # policy replan: the controller's 1.5 epochs (its spread part off here; see the next test)
    sol = first_plan(inst, choice=choice, solver="optimal", spread_share=0)
    c = sol.extra["choice"]
    assert c["reserve_kept"] and c["reserve_s"] == pytest.approx(6.0) and c["planned_deadline_s"] == pytest.approx(54.0)
    assert sol.time_s <= 54.0 + 1e-9 and sol.energy_j > full.energy_j
    assert c["deadline_s"] == 60.0  # the run's deadline stays T_max
    assert "planned for T_max − reserve = 60 − 6 = 54 s" in "\n".join(choice_lines(sol))
    # the static policy keeps no reserve: the plan for T_max
    static = first_plan(inst, choice=choice, solver="optimal", policy="static")
    assert static.time_s == pytest.approx(60.0) and static.extra["choice"]["reserve_s"] == 0
    # when nothing fits T_max − reserve the plan for T_max is taken, and it says so
    tight = first_plan(tight_instance(25.0), choice=choice, solver="optimal")
    assert tight.status != "infeasible" and tight.time_s <= 25.0 and not tight.extra["choice"]["reserve_kept"]
    assert "no plan fits T_max − reserve" in "\n".join(choice_lines(tight))


def test_the_first_schedule_keeps_the_spread_part_of_the_reserve_too():
    """The controller's default reserve also holds ρ₀ = 10 % of the planned time before any epoch is
    seen: a plan of t seconds keeps both parts when t + 6 + 0.1·t ≤ 60, i.e. t ≤ 54 / 1.1."""
    inst = tight_instance(60.0)
    sol = first_plan(inst, choice="planner", solver="optimal")
    c = sol.extra["choice"]
    assert c["reserve_kept"] and c["reserve_spread_share"] == pytest.approx(0.1)
    assert c["planned_deadline_s"] == pytest.approx(54.0 / 1.1) and c["reserve_s"] == pytest.approx(60.0 - 54.0 / 1.1)
    assert sol.time_s + reserve_s(inst.candidates[0], 1.5) + 0.1 * sol.time_s <= 60.0 + 1e-9
    assert "and 10% of the planned time" in "\n".join(choice_lines(sol))
    # the static policy keeps neither part
    assert first_plan(inst, choice="planner", solver="optimal", policy="static").extra["choice"]["reserve_s"] == 0


#: one option both the fastest and the cheapest (4 s, 100 J): no trade of time for energy
DOMINANT = (Option("es", 1, 4.0, 100.0), Option("es", 2, 10.0, 200.0))


@pytest.mark.parametrize("condition", ["trade-off", "always"])
def test_the_first_plan_keeps_the_spread_part_only_where_the_controller_does(condition):
    """The controller applies the spread part only where the options trade time for energy
    (``spread_condition`` trade-off, its default); the first plan follows the same rule: on a table
    whose fastest option is also the cheapest it keeps only the 1.5 fast epochs, and the controller
    that starts the run keeps exactly that reserve for the plan's budget."""
    from jqodi.app.controller import ClosedLoopController

    for options, trades in ((DOMINANT, False), (OPTIONS, True)):
        inst = PlanningInstance(60.0, 1.0, (Candidate("net", 4, 0.0, 0.0, EpochEstimates(4, 6), options),))
        sol = first_plan(inst, choice="planner", solver="optimal", spread_condition=condition)
        c = sol.extra["choice"]
        applies = trades or condition == "always"
        assert c["reserve_kept"] and c["spread_condition"] == condition and c["reserve_spread_applies"] is applies
        assert c["reserve_spread_share"] == pytest.approx(0.1)  # the controller's default, applied or not
        assert c["reserve_s"] == pytest.approx(60.0 - 54.0 / 1.1 if applies else 6.0)
        assert c["reserve_s"] == pytest.approx(reserve_s(inst.candidates[0], 1.5, 60.0, 0.1, condition))
        ctl = ClosedLoopController(phase_table(inst), sol, spread_condition=condition)
        assert ctl.spread_applies() is applies
        assert ctl.reserve_s(60.0 - c["reserve_s"], 60.0) == pytest.approx(c["reserve_s"], rel=1e-12)
        text = "\n".join(choice_lines(sol))
        assert ("and 10% of the planned time" in text) is applies
        assert ("no spread part: its options do not trade time for energy" in text) is not applies
    with pytest.raises(JqodiError, match="spread condition"):
        first_plan(inst, choice="planner", solver="optimal", spread_condition="sometimes")


def test_the_reserve_is_the_trained_candidates_own():
    """Two candidates with different fastest epochs: the plan keeps the reserve of the one it trains."""
    slow_opts = (Option("es", 1, 10.0, 100.0), Option("es", 2, 8.0, 150.0))
    inst = PlanningInstance(58.0, 1.0, (Candidate("net", 4, 0.0, 0.0, EpochEstimates(5, 6), OPTIONS),
                                        Candidate("big", 4, 0.0, 0.0, EpochEstimates(4, 5), slow_opts)))
    sol = first_plan(inst, choice="planner", solver="optimal", spread_share=0)
    c = sol.extra["choice"]
    # big is trained (5 epochs for 500–750 J; net's 6 need ≥ 900 J in time); its reserve is 1.5 × 8 s,
    # twice net's: planned for 58 − 12 = 46 s, where the 5 cheap epochs (50 s) no longer fit
    assert sol.model == "big" and c["reserve_kept"] and c["reserve_s"] == pytest.approx(12.0)
    assert sol.time_s <= 46.0 + 1e-9 and any(s.cut == 2 for s in sol.schedule)


def phase_table(inst):
    """``inst`` as the controller's phase table: each option's whole time and energy on the end device."""
    from jqodi.app.controller import PhaseTable
    from jqodi.core.costs import TERMS

    def terms(c, what):
        rows = np.zeros((len(c.options), len(TERMS)))
        rows[:, TERMS.index("end_compute")] = [getattr(o, what) for o in c.options]
        return rows
    return PhaseTable(inst, {c.key: terms(c, "epoch_time_s") for c in inst.candidates},
                      {c.key: terms(c, "epoch_energy_j") for c in inst.candidates})


@pytest.mark.parametrize("deadline", [60.0, 200.0, 25.0])
@pytest.mark.parametrize("rule", [{}, {"reserve_epochs": 2.0, "reserve_spread": 3.0, "spread_prior": 0.05},
                                  {"reserve_epochs": 1.0, "reserve_spread": 0.0}])
def test_the_first_plans_reserve_is_the_controllers_rule(rule, deadline):
    """One rule for both: the controller that starts the run (no epoch seen, all of T_max left) keeps
    for a plan of the first plan's budget exactly the reserve the first plan kept, and the plan made
    keeps it; controller defaults ({}) or other settings passed to both."""
    from jqodi.app.controller import ClosedLoopController
    from jqodi.app.controller.loop import DEFAULT_RESERVE_EPOCHS, DEFAULT_RESERVE_SPREAD, DEFAULT_SPREAD_PRIOR

    inst = tight_instance(deadline)
    share = rule.get("reserve_spread", DEFAULT_RESERVE_SPREAD) * rule.get("spread_prior", DEFAULT_SPREAD_PRIOR)
    sol = first_plan(inst, choice="planner", solver="optimal", reserve_epochs=rule.get("reserve_epochs"),
                     spread_share=share if rule else None)
    c = sol.extra["choice"]
    ctl = ClosedLoopController(phase_table(inst), sol, **rule)
    n = rule.get("reserve_epochs", DEFAULT_RESERVE_EPOCHS)
    if not c["reserve_kept"]:  # T_max 25 s: no plan fits T_max less the reserve; the figure still agrees
        assert deadline == 25.0 and c["reserve_s"] == pytest.approx(reserve_s(inst.candidates[0], n, deadline, share))
    assert c["reserve_s"] > n * 4.0 if share > 0 else c["reserve_s"] == n * 4.0
    budget = c["deadline_s"] - c["reserve_s"]
    assert ctl.reserve_s(budget, c["deadline_s"]) == pytest.approx(c["reserve_s"], rel=1e-12)
    if c["reserve_kept"]:
        assert budget == pytest.approx(c["planned_deadline_s"])
        assert sol.time_s + ctl.reserve_s(sol.time_s, deadline) <= deadline + 1e-9
    # the spread part alone, as the controller's re-plans see it, is share × the planned time
    assert ctl.spread_reserve_s(ctl.schedule, deadline) == pytest.approx(share * sol.time_s)


@pytest.mark.parametrize("choice", ["expected", "planner"])
def test_the_first_plan_lists_the_excluded_candidates_of_the_runs_instance(choice):
    """Whichever the rule, and although the schedule is planned for T_max less the reserve, the
    answer's ``excluded`` is the planner's on the run's instance (T_max): what ``jqodi plan`` lists."""
    from test_closed_loop_choice import with_excluded

    inst = with_excluded()
    sol = first_plan(inst, choice=choice, solver="optimal")
    c = sol.extra["choice"]
    assert c["rule"] == choice and c["reserve_kept"] and c["planned_deadline_s"] < inst.deadline_s
    assert sol.extra["excluded"] == solve(inst, "optimal").extra["excluded"]
    assert {r["candidate"] for r in sol.extra["excluded"]} == {"net@2", "big@4", "net@32"}
    assert "misses T_max 110 s" in next(r["why"] for r in sol.extra["excluded"] if r["candidate"] == "big@4")


def test_jqodi_run_writes_the_excluded_candidates_jqodi_plan_lists(tmp_path, capsys):
    """The run's recorded solution (here the job's controller block, ``--write-job``; ``record.json``
    holds the same solution) lists the candidates ``jqodi plan`` excludes on the packaged Data 1."""
    import json

    from jqodi.cli import main

    assert main(["plan", "jqodi:paper-data1", "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)["excluded"]
    job = tmp_path / "job.json"
    # --dilation: a fixed one (the automatic one times the host on the plan's model, ≈ 9 s, and is
    # no part of the plan; tests/test_auto_dilation.py tests it)
    assert main(["run", "jqodi:paper-data1", "--write-job", str(job), "--dilation", "10"]) == 0
    assert "choice (expected energy)" in capsys.readouterr().out
    recorded = json.loads(job.read_text())["closed_loop"]["controller"]["solution"]["excluded"]
    assert recorded == planned and len(planned) == 13


def test_jqodi_run_prints_the_choice_and_the_reserve_and_writes_them_in_the_job_plan(tmp_path, capsys):
    """``jqodi run --write-job`` plans as a run would: the choice (default expected, or --choice
    planner) and the first schedule within T_max less the reserve, printed; a bad value exits 2."""
    from jqodi.cli import main

    job = tmp_path / "job.json"
    assert main(["run", "--write-job", str(job), "--dilation", "10"]) == 0  # as above: no host timing
    out = capsys.readouterr().out
    assert "choice (expected energy)" in out and "planned for T_max − reserve = 180 − " in out
    assert main(["run", "--write-job", str(job), "--choice", "planner", "--policy", "static", "--dilation", "10"]) == 0
    out = capsys.readouterr().out
    assert "choice (planner)" in out and "time reserve" not in out and "of T_max 180 s" in out
    assert main(["run", "--write-job", str(job), "--choice", "cheapest"]) == 2
    assert "--choice" in capsys.readouterr().err


def test_run_and_demo_share_one_choice_option_with_the_values_pre_run_knows():
    """``--choice`` is declared once (:func:`jqodi.cli._choices.add_choice_argument`) for ``jqodi run``
    and ``jqodi demo``: the same values (:data:`jqodi.app.pre_run.CHOICES`) and default."""
    import argparse

    from jqodi.app.pre_run import CHOICES, DEFAULT_CHOICE
    from jqodi.cli import demo, run

    for verb in (run, demo):
        p = argparse.ArgumentParser()
        verb.add_arguments(p)
        (opt,) = [a for a in p._actions if "--choice" in a.option_strings]
        assert tuple(opt.choices) == CHOICES and opt.default == DEFAULT_CHOICE, verb.__name__
        assert "least expected energy" in opt.help
        assert p.parse_args(["--choice", "planner"]).choice == "planner"
        with pytest.raises(SystemExit):
            p.parse_args(["--choice", "cheapest"])
