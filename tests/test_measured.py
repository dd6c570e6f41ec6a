"""The measured CIFAR-10 evaluation (jqodi.app.measured): one tiny real run, and Table VI, the held-out
estimators, Observation 2, the estimates and the plan built from synthetic runs (no ../shared needed)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

from jqodi.app.measured import (MeasureConfig, estimator_metrics, held_out_group, measure_run, measured_estimates,
                                observation_2, plan_with_estimates, table_vi)

REPO = Path(__file__).resolve().parents[1]


def _curve(k_reach: int | None, n: int, target: float = 0.1) -> list[float]:
    """A falling training loss that crosses ``target`` at epoch ``k_reach`` (never if ``None``)."""
    if k_reach is None:
        return [1.0 - 0.02 * i for i in range(n)]
    return [target * (1.0 + 0.2 * (k_reach - e)) if e < k_reach else target * (0.95 - 0.01 * (e - k_reach))
            for e in range(1, n + 1)]


def _run(model, bits, seed, k, n=12, target=0.1):
    losses = _curve(k, n if k is None else max(k, 3), target)
    return {"model": model, "width": 0.25, "bits": bits, "seed": seed, "target_loss": target, "K": k,
            "epochs_run": len(losses), "max_epochs": n, "L_a": 0.05, "start_loss": 0.3 + 0.1 / bits,
            "gamma": 0.2 / bits, "gamma_robust": 0.25 / bits, "gamma_val": 0.1 / bits, "train_losses": losses,
            "val_losses": [1.0] * len(losses), "epoch_s": [1.0] * len(losses)}


KS = {1: (None, None, None), 4: (6, 7, 6), 8: (5, 5, 4)}


@pytest.fixture
def runs():
    return [_run("lenet", b, s, k) for b, ks in KS.items() for s, k in enumerate(ks)]


def test_table_vi_observation_2_and_estimates_from_runs(runs):
    cfg = MeasureConfig(widths={"lenet": 0.25}, target_loss={"lenet": 0.1}, max_epochs=12, probe_epochs=3,
                        probe_boot=5)
    rows = table_vi(runs, cfg)
    by = {r["bits"]: r for r in rows}
    assert [r["bits"] for r in rows] == [1, 4, 8]
    assert by[1]["K_mean"] is None and by[1]["reached"] == "0/3"
    assert by[4]["K_mean"] == pytest.approx(19 / 3) and by[4]["K_std"] == pytest.approx(math.sqrt(2 / 9))
    assert by[4]["paper_K"] == "44±4" and by[4]["paper_K_rob"] == 48 and "paper_K" not in by[1]
    assert len(by[4]["held_out"]) == 3 and by[4]["gamma"] == pytest.approx(0.05)
    m = estimator_metrics(rows)
    assert m["probe"]["predictions"] == m["store"]["predictions"] == 9
    assert 0 <= m["store"]["coverage_K_rob_ge_K"] <= 1
    # the store estimator sees the other seeds' whole curves: never reached → ∞ for the 1-bit runs
    assert all(h["store"]["K_exp"] is None and h["store"]["K_rob"] is None for h in by[1]["held_out"])

    (o,) = observation_2(rows)
    assert o["fewer_bits_more_epochs"] and o["one_bit_reached"] is False and o["K_by_bits"]["1"] is None
    swapped = [dict(r, K_mean=12.0 if r["bits"] == 8 else r["K_mean"]) for r in rows]
    (o,) = observation_2(swapped)
    assert not o["fewer_bits_more_epochs"] and o["violations"] == ["4-bit K=6.3 < 8-bit K=12.0"]

    est = measured_estimates(rows, runs, cfg)
    assert {e.bits for e in est} == {1, 4, 8} and all(e.source.startswith("measured:probe") for e in est)
    # the held-out predictions computed per group elsewhere (paper_cifar.py's worker processes) give the same table
    pre = {(m, b): held_out_group([r for r in runs if (r["model"], r["bits"]) == (m, b)], cfg)
           for m, b in {(r["model"], r["bits"]) for r in runs}}
    assert table_vi(runs, cfg, held_out=pre) == rows
    assert next(e for e in est if e.bits == 1).epochs_expected is None

    # the store source: seed 0's probe aligned to the *other* seeds' curves (never seed 0's later epochs)
    store = {e.bits: e for e in measured_estimates(rows, runs, cfg, source="store")}
    assert all(e.source.startswith("measured:store(seeds [1, 2]") for e in store.values())
    assert store[1].epochs_expected is None                       # seeds 1 and 2 never reach at 1 bit
    assert 4 <= store[4].epochs_expected <= 8 and store[4].epochs_robust >= store[4].epochs_expected
    poisoned = [dict(r, train_losses=r["train_losses"][:3] + [9.0] * (len(r["train_losses"]) - 3))
                if r["seed"] == 0 else r for r in runs]
    assert {e.bits: e.epochs_expected for e in measured_estimates(rows, poisoned, cfg, source="store")} == \
        {b: e.epochs_expected for b, e in store.items()}
    with pytest.raises(ValueError):
        measured_estimates(rows, runs, cfg, source="oracle")


def test_measured_estimates_plan_the_papers_testbed_with_planning_energy():
    from jqodi.core.estimates import LearningEstimate

    est = [LearningEstimate(model="lenet", bits=b, base_loss=0.05, gamma=0.1 / b, epochs_expected=k,
                            epochs_robust=None if k is None else k + 2, target_loss=0.1)
           for b, k in ((1, None), (4, 12), (8, 9), (32, 8))]
    plan = plan_with_estimates(REPO / "examples" / "paper-data1.yaml", est, 0.1)
    jq = next(s for s in plan["strategies"] if s["label"] == "JQODI")
    assert jq["model"] == "lenet" and jq["status"] != "infeasible" and jq["bits"] in (4, 8)
    v = plan["table_v"]
    assert v["planning_time_s"] > 0 and v["jqodi_energy_j"] == pytest.approx(v["planning_time_s"] * v["cloud_busy_power_w"])
    assert v["paper"]["jqodi_energy_j"] == 28.35 and 0 < v["jqodi_share"] < 1
    assert {c["strategy"] for c in plan["comparison"]} >= {"JQODI", "Optimum", "Full Model", "Minimal Model"}
    assert all(c["ours_model"] in (None, "lenet") for c in plan["comparison"])   # only the measured model


def test_table_v_prices_planning_by_cpu_time_not_by_the_waits_of_a_loaded_host(monkeypatch):
    """A solver that waits (here: sleeps 50 ms, as a busy host makes it wait for a core) costs no
    more planning energy: Table V multiplies the process's CPU time by the cloud's power."""
    import time

    import jqodi.planner
    from jqodi.core.estimates import LearningEstimate

    real = jqodi.planner.solve

    def waiting_solve(*a, **kw):
        time.sleep(0.05)
        return real(*a, **kw)

    monkeypatch.setattr(jqodi.planner, "solve", waiting_solve)
    est = [LearningEstimate(model="lenet", bits=b, base_loss=0.05, gamma=0.1 / b, epochs_expected=k,
                            epochs_robust=k + 2, target_loss=0.1) for b, k in ((4, 12), (8, 9))]
    plan = plan_with_estimates(REPO / "examples" / "paper-data1.yaml", est, 0.1)
    v = plan["table_v"]
    assert v["clock"] == "process CPU time"
    assert v["solve_wall_s_median"] - v["solve_s_median"] >= 0.04   # the wait is not CPU
    assert v["planning_wall_s"] - v["planning_time_s"] >= 0.04
    assert v["jqodi_energy_j"] == pytest.approx(v["planning_time_s"] * v["cloud_busy_power_w"])
    jq = next(s for s in plan["strategies"] if s["label"] == "JQODI")  # the evaluation's first solve
    assert jq["plan_time_s"] - jq["plan_cpu_s"] >= 0.04 and v["solve_s_first"] == jq["plan_cpu_s"]


def test_the_measured_runs_dilation_times_the_host_by_cpu_time():
    """run_measured_plan's automatic dilation: the host's speed by one thread's CPU time (the
    wall-clock figure ``jqodi run --dilation auto`` takes is returned beside it)."""
    from jqodi.app.measured import _cpu_dilation
    from jqodi.app.run import RunOptions, load_for_run, plan_for_run
    from jqodi.runtime.emulation import auto_dilation
    from jqodi.runtime.plan import dilation_choice, plan_dilation, predict_epoch

    opts = RunOptions(cpu_scale=True, policy=None, trace_store=None)
    d = _cpu_dilation(REPO / "examples" / "paper-data1.yaml", opts)
    assert d["clock"] == "thread CPU time" and d["dilation"] >= 1 and d["wall_clock_dilation"] >= 1
    # the clock is the one given: a fake clock ticking 10 ms per reading times each step at 10 ms
    scenario = load_for_run(REPO / "examples" / "paper-data1.yaml", opts)
    sol = plan_for_run(scenario, opts, say=lambda line: None)
    ticks = iter(range(10**6))
    got = plan_dilation(scenario, sol, clock=lambda: 0.01 * next(ticks))
    from jqodi.core.profile import profile_named_model

    data, width = scenario.data, scenario.model_entry(sol.model).width
    flops = profile_named_model(sol.model, data.input_shape, data.num_classes, width).flops
    host = 3.0 * flops * scenario.training.batch_size / 0.01
    want = auto_dilation((3.0 * data.train_size + data.val_size) * flops / host,
                         min(predict_epoch(scenario, sol.model, sol.bits, s.cut, s.edge)["time_s"] for s in sol.schedule))
    ticks = iter(range(10**6))
    choice = dilation_choice(scenario, sol, clock=lambda: 0.01 * next(ticks))
    assert choice["epoch_rule"] == pytest.approx(want, rel=1e-12)  # the epoch rule, timed by the clock given
    assert got == pytest.approx(max(want, choice["overrun_rule"]), rel=1e-12)  # and the overrun rule (test_auto_dilation.py)


def test_one_real_run_stops_at_the_target_and_measures_gamma_on_the_training_split():
    from types import SimpleNamespace

    from torch.utils.data import TensorDataset

    from jqodi.core.zoo import build_model

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, 3, 32, 32, generator=g), torch.randint(0, 10, (48,), generator=g)
    data = SimpleNamespace(train=TensorDataset(x[:32], y[:32]), val=TensorDataset(x[32:], y[32:]))
    model = build_model("lenet", (3, 32, 32), 10, 0.125, seed=0)
    pre = SimpleNamespace(model=model.eval(), calibration=x[:8], meta={"width": 0.125, "dataset": "synthetic"})
    cfg = MeasureConfig(widths={"lenet": 0.125}, target_loss={"lenet": 5.0}, max_epochs=4, probe_epochs=2,
                        batch_size=16)
    r = measure_run("lenet", 4, 0, cfg, pretrained=pre, data=data)
    assert r["K"] == 1 and r["epochs_run"] == 2       # reached at once, but a probe's worth of epochs ran
    assert math.isfinite(r["gamma"]) and r["gamma_robust"] >= r["gamma"]
    assert r["L_a"] > 0 and len(r["train_losses"]) == len(r["val_losses"]) == 2
    cfg2 = MeasureConfig(widths={"lenet": 0.125}, target_loss={"lenet": 1e-6}, max_epochs=3, probe_epochs=2,
                         batch_size=16)
    r2 = measure_run("lenet", 32, 1, cfg2, pretrained=pre, data=data)
    assert r2["K"] is None and r2["epochs_run"] == 3 and r2["gamma"] == pytest.approx(0.0, abs=1e-6)
    # the fp32 losses cached across runs (paper_cifar.py's workers): the same run, value for value
    cache: dict = {}
    measure_run("lenet", 32, 1, cfg2, pretrained=pre, data=data, fp_cache=cache)
    r3 = measure_run("lenet", 32, 1, cfg2, pretrained=pre, data=data, fp_cache=cache)
    assert len(cache) == 1
    assert {k: v for k, v in r3.items() if k not in ("wall_s", "epoch_s")} == \
        {k: v for k, v in r2.items() if k not in ("wall_s", "epoch_s")}


def test_paper_cifar_rescore_scores_saved_runs_again_and_keeps_the_plan_run(runs, tmp_path, capsys):
    """benchmarks/paper_cifar.py --rescore: nothing trained and no dataset needed; the estimators,
    estimates and plan come from the saved runs, run.json and the training run's timings are kept;
    a run missing from OUT/runs is one line, exit 2."""
    import json

    from _scripts import load_script
    from jqodi.app.measured import run_path

    bench = load_script("benchmarks/paper_cifar.py")
    out = tmp_path / "out"
    for r in runs:
        p = run_path(out, r["model"], r["width"], r["bits"], r["seed"])
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({**r, "lr": 1e-3}))
    old_store = {"predictions": 9, "median_rel_error_K_exp": 0.5, "coverage_K_rob_ge_K": 0.5}
    (out / "summary.json").write_text(json.dumps({"wall_s": 123.0, "runs_trained_now": 9,
                                                  "estimators": {"store": old_store}}))
    (out / "run.json").write_text(json.dumps({"status": "not run", "why": "kept from the training run"}))
    argv = ["--rescore", "--out", str(out), "--models", "lenet=0.25", "--bits", "1", "4", "8", "--target", "lenet=0.1",
            "--max-epochs", "12", "--probe-epochs", "3", "--quiet", "--data-dir", str(tmp_path / "no-such-folder")]
    assert bench.main(argv) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["wall_s"] == 123.0 and s["runs_trained_now"] == 9                     # the training run's
    assert s["rescored"]["runs_trained_now"] == 0 and s["rescored"]["run_kept"] is True
    assert s["rescored"]["estimators_before"] == {"store": old_store}
    assert s["run"]["why"] == "kept from the training run" and "before the re-score" in s["run"]["note"]
    # the store estimator reads the saved curves (which stop the epoch they reach L_max) at their
    # last epoch: K^exp = the median of the other seeds' K, never an extrapolation past them
    held = {row["bits"]: [h["store"]["K_exp"] for h in row["held_out"]] for row in s["table_vi"]}
    assert held == {1: [None] * 3, 4: [7, 6, 7], 8: [5, 5, 5]}
    assert s["estimators_reached_runs"]["store"]["predictions"] == 6
    assert s["estimators_reached_runs"]["store"]["coverage_K_rob_ge_K"] == 1.0
    assert (out / "estimates.json").is_file() and (out / "plan.json").is_file()
    capsys.readouterr()
    run_path(out, "lenet", 0.25, 4, 1).unlink()
    assert bench.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lenet_w0.25_4bit_s1.json" in err and "--rescore" in err, err
