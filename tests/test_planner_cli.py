"""``jqodi plan``: human output, JSON output, the comparison table, exit codes."""
from __future__ import annotations

import json

import pytest

from jqodi.cli import main
from jqodi.planner import PlanningInstance, Solution, check_solution
from jqodi.planner.generate import random_instance


@pytest.fixture()
def instance_file(tmp_path):
    path = tmp_path / "inst.json"
    path.write_text(random_instance(1).to_json())
    return path


@pytest.fixture()
def infeasible_file(tmp_path):
    inst = random_instance(1)
    inst = PlanningInstance(0.5, inst.target_loss, inst.candidates)
    path = tmp_path / "infeasible.json"
    path.write_text(inst.to_json())
    return path


def test_plan_instance_json_is_the_contract(instance_file, capsys):
    assert main(["plan", "--instance", str(instance_file), "--solver", "optimal", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    sol = Solution.from_dict(out)
    assert sol.status == "optimal" and sol.schedule
    inst = PlanningInstance.from_json(instance_file.read_text())
    assert check_solution(inst, sol) == []


def test_plan_prints_the_decision(instance_file, capsys):
    assert main(["plan", "--instance", str(instance_file)]) == 0
    out = capsys.readouterr().out
    for word in ("solver", "jqodi", "model", "schedule", "energy", "final loss"):
        assert word in out


def test_plan_all_prints_a_table(instance_file, capsys):
    assert main(["plan", "--instance", str(instance_file), "--solver", "all"]) == 0
    out = capsys.readouterr().out
    for name in ("jqodi", "optimal", "static", "full-model", "minimal-model", "partition-only"):
        assert name in out
    assert "optimal saves" in out
    assert main(["plan", "--instance", str(instance_file), "--solver", "all", "--json"]) == 0
    sols = json.loads(capsys.readouterr().out)
    assert [s["solver"] for s in sols][:3] == ["jqodi", "optimal", "static"]


def test_plan_infeasible_explains(infeasible_file, capsys):
    assert main(["plan", "--instance", str(infeasible_file), "--solver", "optimal"]) == 1
    out = capsys.readouterr().out
    assert "no plan" in out and "smallest deadline" in out
    assert main(["plan", "--instance", str(infeasible_file), "--solver", "optimal", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "infeasible" and out["explanation"]["min_deadline_s"] > 0.5


def test_plan_infeasible_is_a_result_with_the_nearest_miss(infeasible_file, capsys):
    """No plan reads as a result (T_max, L_max, the nearest miss), not as '<solver>: infeasible'."""
    inst = PlanningInstance.from_json(infeasible_file.read_text())
    assert main(["plan", "--instance", str(infeasible_file)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert not any(line.endswith(": infeasible") for line in lines)
    assert lines[0].startswith("result        no plan: no option meets T_max 0.5 s and L_max "
                               f"{inst.target_loss:g}")
    assert lines[1].startswith("nearest miss  ") and "s over T_max" in lines[1]


def test_plan_errors_are_one_line(tmp_path, instance_file, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"deadline_s": -1, "target_loss": 1, "candidates": []}')
    assert main(["plan", "--instance", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "deadline_s" in err and len(err.strip().splitlines()) == 1
    assert main(["plan", "--instance", str(tmp_path / "missing.json")]) == 2
    assert main(["plan", "--instance", str(instance_file), "--solver", "magic"]) == 2
    assert main(["plan", "--instance", str(instance_file), "--solver", "partition-only"]) == 2
    assert main(["plan"]) == 2
    capsys.readouterr()


def test_plan_partition_only_with_model_and_bits(instance_file, capsys):
    inst = PlanningInstance.from_json(instance_file.read_text())
    c = next(c for c in inst.candidates if c.epochs.robust is not None)
    assert main(["plan", "--instance", str(instance_file), "--solver", "partition-only",
                 "--model", c.model, "--bits", str(c.bits), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "infeasible" or (out["model"], out["bits"]) == (c.model, c.bits)


@pytest.mark.parametrize("name", ["paper-data1.yaml", "paper-data2.yaml"])
def test_plan_paper_scenarios(name, capsys):
    from pathlib import Path

    from jqodi.core.costs import compile_instance
    from jqodi.core.scenario import load_scenario

    path = Path(__file__).resolve().parents[1] / "examples" / name
    assert main(["plan", str(path), "--solver", "all", "--json"]) == 0
    sols = [Solution.from_dict(d) for d in json.loads(capsys.readouterr().out)]
    inst = compile_instance(load_scenario(path))
    search = set(inst.meta["search_bits"])
    by = {s.solver: s for s in sols}
    assert by["optimal"].status == "optimal"
    for s in sols:
        assert check_solution(inst, s) == [], s.solver
    for name_ in ("jqodi", "optimal", "static"):
        assert by[name_].bits in search  # Ω only; 1 and 32 bits are for the baselines
        assert by[name_].energy_j >= by["optimal"].energy_j * (1 - 1e-9)
    assert by["full-model"].status == "infeasible" or by["full-model"].bits == 32
    assert main(["plan", str(path), "--solver", "optimal"]) == 0
    assert "schedule" in capsys.readouterr().out


def test_search_bits_restricts_the_search():
    inst = random_instance(3, bits=(1, 4, 8, 32))
    restricted = PlanningInstance(inst.deadline_s, inst.target_loss, inst.candidates,
                                  {"search_bits": [4, 8], "baseline_bits": [1, 32]})
    from jqodi.planner import solve

    for solver in ("jqodi", "optimal", "static"):
        sol = solve(restricted, solver)
        assert sol.status == "infeasible" or sol.bits in (4, 8)
    assert solve(restricted, "full-model").bits in (None, 32)


def test_plan_scenario_with_measured_estimates(tmp_path, capsys):
    from pathlib import Path

    from jqodi.core.estimates import LearningEstimate, save_estimates

    path = Path(__file__).resolve().parents[1] / "examples" / "paper-data1.yaml"
    assert main(["plan", str(path), "--solver", "optimal", "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    # a measured estimate: lenet 8-bit needs only 5 epochs, with predicted losses
    est = tmp_path / "est.json"
    save_estimates(est, [LearningEstimate("lenet", 8, 0.01, 0.004, 4, 5, 0.02,
                                          final_loss_expected=0.015, final_loss_robust=0.018,
                                          source="measured")])
    assert main(["plan", str(path), "--solver", "optimal", "--json", "--estimates", str(est)]) == 0
    after = json.loads(capsys.readouterr().out)
    assert (after["model"], after["bits"]) == ("lenet", 8)
    assert sum(e["epochs"] for e in after["schedule"]) == 5
    assert after["energy_j"] < before["energy_j"]
    assert main(["plan", "--instance", str(path), "--estimates", str(est)]) == 2
    assert main(["plan", str(path), "--estimates", str(tmp_path / "none.json")]) == 2
    capsys.readouterr()


def _baselines_instance(deadline_s: float, time_32_s: float):
    """Ω = {8}; lenet@32 (a baseline bit-width) costs half of lenet@8 per epoch; lenet@1 never reaches the target."""
    from jqodi.planner import Candidate, EpochEstimates, Option

    def c(bits, t, e, K=(3, 4)):
        return Candidate("lenet", bits, 0.0, 0.0, EpochEstimates(*K), (Option("es", 1, t, e),))

    return PlanningInstance(deadline_s, 0.5, (c(8, 1.0, 10.0), c(32, time_32_s, 5.0), c(1, 1.0, 1.0, K=(None, None))),
                            meta={"search_bits": [8], "baseline_bits": [1, 32]})


def test_baselines_outside_omega_and_missing_plans_are_marked_not_a_negative_gap(tmp_path, capsys):
    from jqodi.planner import compare

    rows = {r["solver"]: r for r in compare(_baselines_instance(10.0, 1.0))}
    assert rows["optimal"]["energy_j"] == pytest.approx(40.0) and rows["optimal"]["in_search_space"]
    full = rows["full-model"]   # meets deadline and target, and is cheaper: a bit-width optimal does not search
    assert full["energy_j"] == pytest.approx(20.0) and not full["in_search_space"]
    assert full["vs_optimal_pct"] == pytest.approx(-50.0) and full["misses"] is None
    assert rows["minimal-model"]["misses"] == "target" and rows["minimal-model"]["vs_optimal_pct"] is None
    path = tmp_path / "i.json"
    path.write_text(_baselines_instance(10.0, 1.0).to_json())
    assert main(["plan", "--instance", str(path), "--solver", "all"]) == 0
    out = capsys.readouterr().out
    row = {line.split()[0]: line for line in out.splitlines() if line.split()[:1] and line.split()[0] in rows}
    assert "-50.00% outside Ω" in row["full-model"] and "misses target" in row["minimal-model"]
    assert "vs optimal: energy above optimal's plan" in out and "Ω = bits {8}" in out
    assert "note: full-model's 32-bit plan needs 50.00% less energy than the optimum over Ω" in out
    assert "optimal saves" in out and "over full-model" not in out.split("optimal saves")[1].splitlines()[0]

    path.write_text(_baselines_instance(10.0, 5.0).to_json())   # 32 bits: 4 epochs × 5 s > 10 s
    assert main(["plan", "--instance", str(path), "--solver", "all"]) == 0
    out = capsys.readouterr().out
    row = {line.split()[0]: line for line in out.splitlines() if line.split()[:1] and line.split()[0] in rows}
    assert "misses deadline" in row["full-model"] and "-50" not in out and "note:" not in out


@pytest.mark.parametrize("name", ["cpu-demo", "paper-data1", "paper-data2"])
def test_packaged_scenarios_show_no_unexplained_negative_gap(name, capsys):
    from pathlib import Path

    import jqodi

    scenario = Path(jqodi.__file__).parent / "scenarios" / f"{name}.yaml"
    assert main(["plan", str(scenario), "--solver", "all"]) == 0
    out = capsys.readouterr().out
    for line in out.splitlines():
        cells = line.split()
        if cells[:1] and cells[0] in ("jqodi", "optimal", "static", "full-model", "minimal-model", "partition-only"):
            gap = next((c for c in cells if c.endswith("%")), None)
            if gap is not None and gap.startswith("-"):
                assert "outside Ω" in line, line
    assert "vs optimal:" in out and "optimal saves -" not in out


def _excluded_instance():
    """Ω = {4, 8}: lenet@8 plans; vgg@8 never reaches the target; vgg@4 misses the 10 s deadline on its
    only option (3 epochs × 5 s); lenet@32 is a baseline bit-width; lenet@1 has no learning estimate."""
    from jqodi.planner import Candidate, EpochEstimates, Option

    def c(model, bits, t, K=(2, 3)):
        return Candidate(model, bits, 0.0, 0.0, EpochEstimates(*K), (Option("es", 1, t, 10.0),))

    return PlanningInstance(10.0, 0.5, (c("lenet", 8, 1.0), c("vgg", 8, 1.0, K=(4, None)), c("vgg", 4, 5.0),
                                        c("lenet", 32, 1.0)),
                            meta={"search_bits": [4, 8], "baseline_bits": [1, 32], "missing_estimates": ["lenet@1"]})


def test_plan_lists_the_excluded_candidates_and_why(tmp_path, capsys):
    path = tmp_path / "i.json"
    path.write_text(_excluded_instance().to_json())
    assert main(["plan", "--instance", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["model"], out["bits"]) == ("lenet", 8)       # the contract's fields are all still there
    why = {r["candidate"]: r["reason"] for r in out["excluded"]}
    assert why == {"vgg@8": "target", "vgg@4": "deadline", "lenet@32": "outside-omega"}
    slow = next(r for r in out["excluded"] if r["candidate"] == "vgg@4")
    assert (slow["epochs"], slow["fastest_time_s"]) == (3, pytest.approx(15.0))
    assert Solution.from_dict(out).extra["excluded"] == out["excluded"]

    assert main(["plan", "--instance", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(ln.startswith("excluded      vgg@8") and "never reaches target loss 0.5 (K^rob: none)" in ln
               for ln in lines)
    assert any(ln.split()[:1] == ["vgg@4"] and "misses T_max 10 s on every (edge, cut): ≥ 15 s for 3 epochs" in ln
               for ln in lines)
    assert any(ln.startswith("not searched  lenet@32 (bits 32: baseline_bits") for ln in lines)
    # K^exp: vgg@8 reaches the target in 4 epochs, vgg@4 takes 2 × 5 s = T_max: both can plan
    assert main(["plan", "--instance", str(path), "--json", "--epochs", "expected"]) == 0
    assert {r["candidate"] for r in json.loads(capsys.readouterr().out)["excluded"]} == {"lenet@32"}


def test_minimal_model_without_a_one_bit_candidate_says_which_bits_it_used(tmp_path, capsys):
    """The fewest bits present stand in for the paper's 1 bit: said on screen, with the 1-bit pairs left out."""
    path = tmp_path / "i.json"
    path.write_text(_excluded_instance().to_json())
    assert main(["plan", "--instance", str(path), "--solver", "minimal-model", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bits_used"] == 4 and out["status"] == "infeasible"   # vgg@4, the only 4-bit one, is too slow
    assert {r["candidate"]: r["reason"] for r in out["excluded"]} == {"lenet@1": "no-estimate", "vgg@4": "deadline"}
    note = ("note: minimal-model used the fewest bits present, 4, not the paper's 1 bit "
            "(1-bit lenet@1 left out for want of a learning estimate)")
    assert main(["plan", "--instance", str(path), "--solver", "minimal-model"]) == 1
    assert note in capsys.readouterr().out.splitlines()
    assert main(["plan", "--instance", str(path), "--solver", "all"]) == 0
    assert note in capsys.readouterr().out.splitlines()
    # with a 1-bit candidate that never reaches the target it stays at 1 bit (no plan), and says nothing more
    rows = {r["solver"]: r for r in __import__("jqodi.planner", fromlist=["compare"]).compare(_baselines_instance(10.0, 1.0))}
    minimal = rows["minimal-model"]["solution"]
    assert minimal.extra["bits_used"] == 1 and minimal.status == "infeasible"
    assert [r["reason"] for r in minimal.extra["excluded"]] == ["target"]


def test_the_not_searched_line_names_at_most_eight_candidates(tmp_path, capsys):
    """Like the excluded lines above it: a scenario of many models lists the first eight outside Ω, then a count."""
    from jqodi.planner import Candidate, EpochEstimates, Option

    def c(model, bits):
        return Candidate(model, bits, 0.0, 0.0, EpochEstimates(2, 3), (Option("es", 1, 1.0, 10.0),))

    models = [f"m{i}" for i in range(6)]
    inst = PlanningInstance(10.0, 0.5, tuple(c(m, b) for m in models for b in (8, 1, 32)),
                            meta={"search_bits": [8], "baseline_bits": [1, 32]})
    path = tmp_path / "i.json"
    path.write_text(inst.to_json())
    assert main(["plan", "--instance", str(path)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("not searched"))
    assert line.startswith("not searched  m0@1, m0@32, m1@1, m1@32, m2@1, m2@32, m3@1, m3@32 (+4 more) (bits 1, 32:")
    assert main(["plan", "--instance", str(path), "--json"]) == 0
    assert sum(r["reason"] == "outside-omega" for r in json.loads(capsys.readouterr().out)["excluded"]) == 12
