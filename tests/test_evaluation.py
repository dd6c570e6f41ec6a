"""The Section V evaluation on a small hand-made instance (and on the paper's scenarios when the
scenario compiler and the planner are present)."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from jqodi.errors import PlanningError
from jqodi.app.evaluation import evaluate_instance, write_outputs
from jqodi.app.paper import paper_key_for
from jqodi.app.trajectories import NODE_TERMS, geometric_loss_trajectory, node_breakdown
from jqodi.render.evaluation import summary_tables
from jqodi.core.instance import PlanningInstance, ScheduleEntry, Solution

ROOT = Path(__file__).resolve().parents[1]


def cand(model, bits, k, loss, options, q=(1.0, 10.0)):
    return {"model": model, "bits": bits, "quantize_time_s": q[0], "quantize_energy_j": q[1],
            "epochs": {"expected": k[0] if k else None, "robust": k[1] if k else None},
            "loss": dict(zip(("start", "final_expected", "final_robust"), loss)),
            "options": [{"edge": e, "cut": c, "epoch_time_s": t, "epoch_energy_j": j}
                        for e, c, t, j in options]}


INSTANCE = PlanningInstance.from_dict({
    "deadline_s": 180.0, "target_loss": 0.0186,
    "candidates": [
        cand("lenet", 8, (26, 29), (0.5, 0.0186, 0.017),
             [("rtx3090", 1, 4.0, 200.0), ("rtx4090", 1, 3.0, 260.0)]),
        cand("lenet", 6, (33, 36), (0.6, 0.0186, 0.0175),
             [("rtx3090", 1, 3.5, 170.0), ("rtx3090", 2, 4.5, 165.0)]),
        cand("vgg", 32, (20, 22), (0.3, 0.0188, 0.018), [("rtx4090", 1, 15.0, 900.0)], q=(0, 0)),
        cand("lenet", 1, None, (2.0, 0.5, 0.55), [("rtx3090", 2, 2.0, 100.0),
                                                   ("rtx4090", 2, 1.5, 120.0)]),
    ]})


def fake_solve(instance: PlanningInstance, solver: str = "jqodi", *, epochs: str = "robust"):
    """Brute force over one fixed option per plan, restricted by the baselines' bit-widths."""
    if solver not in ("jqodi", "static", "optimal", "full-model", "minimal-model"):
        raise PlanningError(f"unknown solver {solver!r}")
    best = None
    for c in instance.candidates:
        if solver == "full-model" and c.bits != 32 or solver == "minimal-model" and c.bits != 1:
            continue
        if solver in ("jqodi", "static", "optimal") and c.bits in (1, 32):
            continue
        k = c.epochs.get(epochs)
        if k is None:
            continue
        for o in c.options:
            if solver == "jqodi" and (c.bits == 8):  # make JQODI differ from the optimum
                continue
            t = c.quantize_time_s + k * o.epoch_time_s
            e = c.quantize_energy_j + k * o.epoch_energy_j
            if t <= instance.deadline_s and (best is None or e < best.energy_j):
                best = Solution("feasible", solver, c.model, c.bits,
                                (ScheduleEntry(o.edge, o.cut, k),), e, t)
    return best or Solution("infeasible", solver, extra={"explanation": "nothing fits"})


def fake_epoch_cost(model, bits, cut, edge):
    o = next(o for c in INSTANCE.candidates if (c.model, c.bits) == (model, bits)
             for o in c.options if (o.edge, o.cut) == (edge, cut))
    shares = {"end_compute": 0.4, "edge_compute": 0.3, "cloud_update": 0.05, "cloud_to_edge": 0.05,
              "edge_to_cloud": 0.05, "edge_to_end": 0.05, "end_to_edge": 0.05, "activations": 0.05}
    d = {"time_s": o.epoch_time_s, "energy_j": o.epoch_energy_j}
    for term, s in shares.items():
        d[f"{term}_s"] = s * o.epoch_time_s
        d[f"{term}_j"] = s * o.epoch_energy_j
    return d


def test_geometric_loss_trajectory_passes_the_anchors():
    c = INSTANCE.candidates[0]
    ls = geometric_loss_trajectory(c, 35)
    assert len(ls) == 36
    assert ls[0] == 0.5 and ls[26] == pytest.approx(0.0186) and ls[29] == pytest.approx(0.017)
    assert all(a > b for a, b in zip(ls[:29], ls[1:30]))  # decreasing up to K^rob
    assert ls[29:] == [pytest.approx(0.017)] * 7  # held after the last anchor
    # geometric: constant ratio between anchors
    assert ls[1] / ls[0] == pytest.approx(ls[2] / ls[1])
    unreachable = geometric_loss_trajectory(INSTANCE.candidates[3], 10, reachable=False)
    assert unreachable[0] == 2.0 and unreachable[-1] == pytest.approx(0.5)
    assert min(unreachable) > INSTANCE.target_loss


def test_loss_anchors_from_estimates():
    from jqodi.app.trajectories import loss_anchors_from_estimates
    from jqodi.core.estimates import LearningEstimate

    ests = [LearningEstimate("lenet", 6, 0.0186, 0.004, 33, 36, target_loss=0.0186),
            LearningEstimate("lenet", 1, 0.0186, 0.08, None, None),
            LearningEstimate("vgg", 8, 0.02, 0.01, 10, 12, final_loss_expected=0.019,
                             final_loss_robust=0.018)]
    a = loss_anchors_from_estimates(ests, target_loss=0.02)
    six = a[("lenet", 6)]
    assert six.start == pytest.approx(0.0226) and six.final_expected == 0.0186
    assert six.final_robust == pytest.approx(0.0186 * (0.0186 / 0.0226) ** (3 / 33))
    one = a[("lenet", 1)]
    assert one.start == pytest.approx(0.0986) and one.final_expected == pytest.approx((0.0986 * 0.02) ** 0.5)
    assert a[("vgg", 8)].final_robust == 0.018
    # used when the candidate has no loss of its own
    bare = dataclasses.replace(INSTANCE.candidates[1], loss=None, model="lenet", bits=6)
    assert geometric_loss_trajectory(bare, 36)[0] is None
    ls = geometric_loss_trajectory(bare, 36, loss=six)
    assert ls[0] == pytest.approx(0.0226) and ls[33] == pytest.approx(0.0186)
    assert ls[36] == pytest.approx(six.final_robust)
    assert ls[34] / ls[33] == pytest.approx(ls[1] / ls[0])  # the same rate after K^exp


def test_strategies_and_baselines():
    ev = evaluate_instance(INSTANCE, solve=fake_solve, epoch_cost=fake_epoch_cost,
                           paper_key="data1", name="toy")
    jq, opt, full, mini = (ev.strategy(n) for n in ("JQODI", "Optimum", "Full Model", "Minimal Model"))
    assert (opt.model, opt.bits, opt.schedule) == ("lenet", 8, (ScheduleEntry("rtx3090", 1, 29),))
    assert opt.energy_j == pytest.approx(10 + 29 * 200) and opt.time_s == pytest.approx(1 + 29 * 4)
    assert opt.reaches_target and opt.meets_deadline and not opt.relaxed
    assert (jq.model, jq.bits) == ("lenet", 6) and jq.energy_j == pytest.approx(10 + 36 * 165)
    # Full Model: 22 × 15 s = 330 s > 180 s → shown with the deadline lifted
    assert full.relaxed == "deadline" and full.reaches_target and not full.meets_deadline
    assert full.time_s == pytest.approx(330.0)
    # Minimal Model: K = ∞ → cheapest option until the deadline, a square
    assert mini.relaxed == "target" and not mini.reaches_target
    assert mini.schedule == (ScheduleEntry("rtx3090", 2, int((180 - 1) // 2.0)),)
    assert mini.trajectory[-1].loss > INSTANCE.target_loss
    # trajectory: cumulative and consistent with the totals
    assert jq.trajectory[0].energy_j == 10 and len(jq.trajectory) == 37
    # the breakdown adds up to the totals; the quantization is on the CS
    for r in (jq, opt, full, mini):
        assert set(r.breakdown) == set(NODE_TERMS)
        assert sum(v["energy_j"] for v in r.breakdown.values()) == pytest.approx(r.energy_j)
        assert sum(v["time_s"] for v in r.breakdown.values()) == pytest.approx(r.time_s)
    assert jq.breakdown["CS"]["energy_j"] == pytest.approx(10 + 36 * 165 * 0.05)
    # the comparison with the paper
    row = next(r for r in ev.comparison if r["strategy"] == "Optimum")
    assert row["paper_energy_j"] == 6988.1 and row["same_model"] and row["same_bits"]
    assert row["same_cut"] and row["same_edge"]
    row = next(r for r in ev.comparison if r["strategy"] == "Full Model")
    assert row["same_model"] and row["ours_meets_deadline"] is False
    lenet6 = next(r for r in ev.epochs_table if (r["model"], r["bits"]) == ("lenet", 6))
    assert (lenet6["K_exp"], lenet6["paper_K_exp"], lenet6["paper_K"]) == (33, 33, "33±3")


def test_breakdown_reports_unassigned_cost_as_other():
    def partial(model, bits, cut, edge):
        return {"time_s": 10.0, "energy_j": 100.0, "end_compute_s": 4.0, "end_compute_j": 30.0}

    bd = node_breakdown(partial, "m", 8, [ScheduleEntry("e", 1, 3)], quantize_energy_j=5.0)
    assert bd["SD"] == {"time_s": 12.0, "energy_j": 90.0}
    assert bd["other"] == {"time_s": pytest.approx(18.0), "energy_j": pytest.approx(210.0)}
    assert bd["CS"]["energy_j"] == 5.0


def test_unknown_solver_is_reported_not_fatal():
    ev = evaluate_instance(INSTANCE, solve=fake_solve, strategies=[("X", "nope"), ("JQODI", "jqodi")])
    assert ev.strategy("X").status == "unavailable" and ev.strategy("JQODI").model == "lenet"
    assert ev.strategy("JQODI").breakdown is None


def test_outputs(tmp_path):
    pytest.importorskip("matplotlib")
    ev = evaluate_instance(INSTANCE, solve=fake_solve, epoch_cost=fake_epoch_cost,
                           paper_key="data1", name="toy")
    files = write_outputs(ev, tmp_path)
    for key in ("time_energy", "loss_curves", "breakdown"):
        assert Path(files[key]).read_bytes()[:4] == b"\x89PNG"
    data = json.loads((tmp_path / "evaluation.json").read_text())
    assert [s["label"] for s in data["strategies"]][:2] == ["JQODI", "Optimum"]
    assert data["strategies"][0]["trajectory"][0]["epoch"] == 0
    text = summary_tables(ev)
    assert "6988.1" in text and "lenet 8-bit cut 1 @ rtx3090" in text and "33±3" in text


def test_paper_key():
    class S:
        name = "paper-data2"

    assert paper_key_for(S()) == "data2"
    assert paper_key_for(None, "examples/paper-data1.yaml") == "data1"
    assert paper_key_for(None, "mine.yaml") is None


@pytest.mark.parametrize("name", ["paper-data1", "paper-data2"])
def test_paper_scenarios_end_to_end(name, tmp_path):
    costs = pytest.importorskip("jqodi.core.costs")
    planner = pytest.importorskip("jqodi.planner")
    if not hasattr(costs, "compile_instance") or not hasattr(planner, "solve"):
        pytest.skip("scenario compiler or planner not merged yet")
    from jqodi.cli import main

    path = ROOT / "examples" / f"{name}.yaml"
    assert main(["evaluate", str(path), "--out", str(tmp_path), "--quiet"]) == 0
    data = json.loads((tmp_path / "evaluation.json").read_text())
    jq = next(s for s in data["strategies"] if s["label"] == "JQODI")
    assert jq["status"] in ("optimal", "feasible") and jq["meets_deadline"] and jq["reaches_target"]
    opt = next(s for s in data["strategies"] if s["label"] == "Optimal (mixed)")
    assert opt["energy_j"] <= jq["energy_j"] * (1 + 1e-9)
    assert math.isfinite(jq["energy_j"]) and (tmp_path / "time_energy.png").exists()


def test_alternative_obs4_testbed_evaluates_by_name(tmp_path, capsys):
    """``jqodi evaluate jqodi:paper-data1-obs4``: the packaged scenario by name, on the alternative
    testbed where the paper's Observation 4 holds, first decreasing and then increasing
    (src/jqodi/devices/obs4/; docs/foundation.md "Observation 4 on the fitted testbed"): the Optimum
    keeps the paper's model, LeNet 8-bit at cut 1, and the rows are compared with the paper's Data 1
    figures."""
    from jqodi.cli import main

    assert main(["evaluate", "jqodi:paper-data1-obs4", "--out", str(tmp_path), "--quiet"]) == 0
    data = json.loads((tmp_path / "evaluation.json").read_text())
    opt = next(s for s in data["strategies"] if s["label"] == "Optimum")
    assert (opt["model"], opt["bits"]) == ("lenet", 8) and opt["meets_deadline"]
    assert "paper-data1-obs4" in capsys.readouterr().out and "6988.1" in (tmp_path / "summary.txt").read_text()


def test_choice_text():
    from jqodi.app.evaluation import StrategyResult

    r = StrategyResult("JQODI", "jqodi", "optimal", "lenet", 8,
                       (ScheduleEntry("rtx3090", 3, 24), ScheduleEntry("rtx3090", 1, 4)))
    assert r.choice() == "lenet 8-bit @ rtx3090, cuts 1×4 3×24"
    assert r.main_option == ScheduleEntry("rtx3090", 3, 24)
    r.schedule = (ScheduleEntry("a", 1, 2), ScheduleEntry("b", 2, 3))
    r.bits = 32
    assert r.choice() == "lenet fp32, 1@a×2 2@b×3"
    assert StrategyResult("X", "x", "infeasible").choice() == "-"


def test_evaluate_cli_user_errors(tmp_path, capsys):
    pytest.importorskip("jqodi.core.scenario")
    from jqodi.cli import main

    assert main(["evaluate", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jqodi evaluate: error:") and "nope.yaml" in err[0]
