"""benchmarks/estimators.py --loco scoring on a tiny synthetic store: both truth seeds are questions,
session 4's library and questions are scored beside the whole store's (nothing is trained)."""
import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from jqodi.core.traces import TraceStore

REPO = Path(__file__).resolve().parents[1]


def bench(monkeypatch):
    spec = importlib.util.spec_from_file_location("estimators_bench", REPO / "benchmarks" / "estimators.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, mod)   # its workers' function is pickled by module name
    spec.loader.exec_module(mod)
    return mod


def curve(n, size, bits, seed):
    k = np.arange(1, n + 1, dtype=float)
    tail = np.random.default_rng([size, bits]).uniform(0.2, 0.5)
    noise = np.random.default_rng([size, bits, seed]).normal(0, 0.01, n)
    return (0.5 + 3.0 * np.exp(-0.8 * (size / 1000) ** 0.3 * (k - 1)) + 1.2 * k ** -tail) * np.exp(noise)


def record_grid(store, grid, truth_seeds):
    """A seed-0 probe (5 epochs) and a full run (8 epochs) per truth seed of every configuration."""
    for c in grid:
        for source, seed, n in [("probe", 0, 5)] + [("finetune", t, 8) for t in truth_seeds]:
            store.record({"model": "lenet", "bits": c["bits"], "dataset": "fashion-mnist", "data_name": "data2",
                          "train_size": c["train_size"], "val_size": 300, "seed": seed, "width": 0.25,
                          "base_loss": 7.9, "start_loss": 7.5, "gamma": 0.1, "gamma_robust": 0.2, "source": source,
                          "config": {"pretrain_epochs": 4, "pretrain_cloud_size": None}},
                         [{"epoch": i + 1, "val_loss": float(v)}
                          for i, v in enumerate(curve(n, c["train_size"], c["bits"], seed))])


def three_configs() -> list[dict]:
    """Three LeNet Data 2 configurations (500 images 2-bit, 1000 4-bit, 2000 2-bit; horizon 8): the tests' grid."""
    return [{"model": "lenet", "width": 0.25, "pretrain_epochs": 4, "cloud_size": None, "dataset": "fashion-mnist",
             "data": "data2", "train_size": size, "val_size": 300, "bits": bits, "horizon": 8, "session": 2}
            for size, bits in ((500, 2), (1000, 4), (2000, 2))]


def test_loco_scores_both_truth_seeds_and_session_4_library_side_by_side(tmp_path, capsys, monkeypatch):
    from jqodi.learning import curves

    b = bench(monkeypatch)
    probe_alone = curves.estimate_from_probe   # the bare probe's bootstrap is the slow part: one resample
    monkeypatch.setattr(curves, "estimate_from_probe", lambda *a, **kw: probe_alone(*a, **{**kw, "n_boot": 1}))
    assert b.TRUTH_SEEDS == (1, 2)
    grid = [{"model": "lenet", "width": 0.25, "pretrain_epochs": 4, "cloud_size": None, "dataset": "fashion-mnist",
             "data": "data2", "train_size": size, "val_size": 300, "bits": bits, "horizon": 8, "session": session}
            for size, bits, session in ((500, 2, 2), (1000, 4, 2), (2000, 2, 2), (1000, 8, 5))]
    db = tmp_path / "loco.db"
    with TraceStore(db) as s:
        record_grid(s, grid, (1, 2))
        runs = b.loco_runs(s, grid, None, 1, log=lambda m: None)   # all cached: nothing is trained
    assert all(len(runs[b.config_key(c)]["truths"]) == 2 for c in grid)
    args = argparse.Namespace(store=str(db), frozen_after=None, out=str(tmp_path / "r.json"), markdown=None,
                              jobs=2)   # the benchmark scores in forked workers
    assert b.loco_evaluate(args, grid, runs, False, 0.0) == 0
    capsys.readouterr()
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["library_runs"] == 12 and res["session4_library_runs"] == 6   # probes + seed-1 runs of the first 3
    n_all = sum(len(b.loco_targets(list(curve(8, c["train_size"], c["bits"], seed)), 8))
                for c in grid for seed in (1, 2))
    n_old = sum(len(b.loco_targets(list(curve(8, c["train_size"], c["bits"], 1)), 8)) for c in grid[:3])
    assert res["metrics"][b.AFTER]["5"]["n"] == res["metrics"][b.SESSION4_LIBRARY]["5"]["n"] == n_all
    assert res["metrics_session4_questions"][b.AFTER]["5"]["n"] == n_old < n_all
    assert res["session5_configs"] == [b.config_key(grid[3])]
    seeds = {t["truth_seed"] for pc in res["per_config"] for t in pc["targets"]}
    assert seeds == {1, 2}
    assert "Session 4's questions only" in res["markdown"]


def test_the_held_out_seed_is_a_question_only_and_both_methods_are_scored_side_by_side(tmp_path, capsys, monkeypatch):
    """Session 6 (--test-seed 3): seed-3 runs are never in the library; their targets are the test questions,
    seeds 1-2 the development ones; session 5's and session 6's methods in one run; the probe length of record
    is the rule applied to the development questions."""
    b = bench(monkeypatch)
    grid = three_configs()
    db = tmp_path / "loco.db"
    with TraceStore(db) as s:
        record_grid(s, grid, (1, 2, 3))
        runs = b.loco_runs(s, grid, None, 1, log=lambda m: None, truth_seeds=b.TRUTH_SEEDS + (3,))
    args = argparse.Namespace(store=str(db), out=str(tmp_path / "t.json"), markdown=None, jobs=1, test_seed=3)
    assert b.loco_test_evaluate(args, grid, runs, False, 0.0) == 0
    capsys.readouterr()
    res = json.loads((tmp_path / "t.json").read_text())
    assert res["library_runs"] == 9 and res["test_runs"] == 3   # probes + seeds 1, 2; seed 3 only asks
    n_test = sum(len(b.loco_targets(list(curve(8, c["train_size"], c["bits"], 3)), 8)) for c in grid)
    n_dev = sum(len(b.loco_targets(list(curve(8, c["train_size"], c["bits"], s)), 8)) for c in grid for s in (1, 2))
    for name in (b.TEST_OLD, b.TEST_NEW):
        assert res["metrics_test"][name]["5"]["n"] == n_test and res["metrics_dev"][name]["5"]["n"] == n_dev
    assert res["chosen_probe_epochs"] == b.probe_rule(res["metrics_dev"][b.TEST_NEW])
    assert res["figure_of_record"]["n"] == n_test and res["figure_of_record"]["probe_epochs"] == res["chosen_probe_epochs"]
    assert {t["part"] for pc in res["per_config"] for t in pc["targets"] if t["truth_seed"] == 3} == {"test"}
    assert "never scored before this run" in res["markdown"]


def test_the_fourth_seed_is_scored_with_seeds_1_to_3_as_development_and_session_6_beside_session_7(
        tmp_path, capsys, monkeypatch):
    """Session 7 (--test-seed 4): the seed-3 runs join the library and the development questions; the
    seed-4 runs only ask; session 6's method (drop_bandwidth 0) beside session 7's in one run."""
    b = bench(monkeypatch)
    assert b.dev_seeds(3) == (1, 2) and b.dev_seeds(4) == (1, 2, 3) and b.dev_seeds(None) == (1, 2)
    (old, old_opts), (new, new_opts) = b.test_methods(4)
    # (since session 8 both spell out session 7's per-kind rule and fixed level, since session 9 session 8's level
    # rule: the defaults moved)
    assert (old, new) == (b.TEST7_OLD, b.TEST7_NEW)
    session7 = {"mondrian_finite": False, "level_safety": None, "least_margin_level": False, "bias_quantile": None}
    assert old_opts == {"drop_bandwidth": 0.0, **session7} and new_opts == session7
    assert b.test_methods(3)[1][0] == b.TEST_NEW
    grid = three_configs()
    db = tmp_path / "loco.db"
    with TraceStore(db) as s:
        record_grid(s, grid, (1, 2, 3, 4))
        runs = b.loco_runs(s, grid, None, 1, log=lambda m: None, truth_seeds=b.dev_seeds(4) + (4,))
    args = argparse.Namespace(store=str(db), out=str(tmp_path / "t.json"), markdown=None, jobs=1, test_seed=4)
    assert b.loco_test_evaluate(args, grid, runs, False, 0.0) == 0
    capsys.readouterr()
    res = json.loads((tmp_path / "t.json").read_text())
    assert res["library_runs"] == 12 and res["test_runs"] == 3   # probes + seeds 1-3; seed 4 only asks
    n_test = sum(len(b.loco_targets(list(curve(8, c["train_size"], c["bits"], 4)), 8)) for c in grid)
    n_dev = sum(len(b.loco_targets(list(curve(8, c["train_size"], c["bits"], s)), 8)) for c in grid for s in (1, 2, 3))
    for name in (old, new):
        assert res["metrics_test"][name]["5"]["n"] == n_test and res["metrics_dev"][name]["5"]["n"] == n_dev
    assert res["figure_of_record"]["row"] == new and res["dev_truth_seeds"] == [1, 2, 3]
    assert "truth seeds 1, 2, 3" in res["markdown"]
    # each configuration records the level and scheme its estimates used: session 7's fixed level 0.9
    for pc in res["per_config"]:
        assert pc["levels_by_nested_loo_probe5"] == {old: 0.9, new: 0.9}
        assert set(pc["schemes_by_nested_loo_probe5"]) == {old, new}


def test_the_fifth_seed_scores_session_7_beside_session_8_with_seeds_1_to_4_as_development(monkeypatch):
    """Session 8 (--test-seed 5, pre-registered): session 7's method is the same code with session 7's per-kind
    rule and fixed level 0.9 (mondrian_finite=False, level_safety=None); the earlier tests keep their methods;
    a subset of probe lengths (--probe-lengths 5) is ruled on alone."""
    b = bench(monkeypatch)
    assert b.dev_seeds(5) == (1, 2, 3, 4)
    (old, old_opts), (new, new_opts) = b.test_methods(5)
    # (since session 9 session 8's method spells out its level rule: the default moved)
    session8 = {"least_margin_level": False, "bias_quantile": None}   # (session 11 adopted bias_quantile=0.5)
    assert (old, new) == (b.TEST8_OLD, b.TEST8_NEW) and new_opts == session8
    assert old_opts == {"mondrian_finite": False, "level_safety": None, **session8}
    assert b.test_methods(4)[1] == (b.TEST7_NEW, {"mondrian_finite": False, "level_safety": None, **session8})
    assert all(opts.get("mondrian_finite") is False and opts["level_safety"] is None for _, opts in b.test_methods(3))
    assert all(opts["least_margin_level"] is False for s in (3, 4, 5) for _, opts in b.test_methods(s))
    m = {"median_rel_error": 0.1, "coverage": 0.95, "mean_margin_rel": 0.4, "wrongly_excluded": 0.0}
    assert b.probe_rule({"5": m}) == 5
    assert b.probe_rule({"3": {**m, "mean_margin_rel": 0.2}, "5": m}) == 3


def test_the_sixth_seed_scores_session_9s_candidate_beside_session_8s_default_with_seeds_1_to_5_as_development(
        monkeypatch):
    """Session 9 (--test-seed 6, pre-registered): no change was adopted on development data, so the second method
    (the figure of record) is the default — session 8's rule — and the candidate (least_margin_level) is scored
    beside it; seeds 1-5 develop."""
    from jqodi.learning.prior.curve_prior import LEAST_MARGIN_LEVEL

    b = bench(monkeypatch)
    assert b.dev_seeds(6) == (1, 2, 3, 4, 5)
    (first, first_opts), (record, record_opts) = b.test_methods(6)
    assert (first, record) == (b.TEST9_CANDIDATE, b.TEST9_RECORD)
    assert first_opts == {"least_margin_level": True, "bias_quantile": None} and record_opts == {"bias_quantile": None}
    assert LEAST_MARGIN_LEVEL is False


def test_probe_lengths_are_refused_before_any_run_when_they_cannot_be_ruled_on(monkeypatch, tmp_path, capsys):
    """--probe-lengths outside 1 2 3 5 (probe_rule would find no length to rule on, after the whole scoring run)
    or without --test-seed (the development benchmark scores every length), and a --test-seed seed given twice
    or a development seed (1, 2) as a held-out one: one argparse line, exit 2."""
    b = bench(monkeypatch)
    for argv, says in ((["--probe-lengths", "4", "--test-seed", "5"], "invalid choice: 4"),
                       (["--probe-lengths", "5"], "--probe-lengths: only with --test-seed"),
                       (["--test-seed", "7", "7"], "--test-seed: each held-out seed once"),
                       (["--test-seed", "2", "7"], "each 3 or more")):
        with pytest.raises(SystemExit) as e:
            b.loco_main(["--store", str(tmp_path / "t.db"), *argv])
        assert e.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "t.db").exists()


def test_methods_that_differ_only_in_the_level_rule_share_their_calibration_and_estimate_as_separate_ones(
        tmp_path, monkeypatch):
    """share_calibration (the held-out test scores two methods in one pass over the residuals): the second method
    reads the first's caches, and every estimate, level and scheme equals that of a separately built method;
    a method whose residuals differ (another drop_bandwidth) shares nothing."""
    from jqodi.learning.prior import CurvePrior
    from jqodi.learning.prior.curve_prior import run_query

    b = bench(monkeypatch)
    grid = three_configs()
    with TraceStore(tmp_path / "loco.db") as s:
        record_grid(s, grid, (1, 2))
        library = CurvePrior.from_store(s).runs
    (_, old_opts), (_, new_opts) = b.test_methods(6)
    shared_old, shared_new = CurvePrior(library, **old_opts), CurvePrior(library, **new_opts)
    assert b.share_calibration(shared_old, shared_new) and shared_new._residuals is shared_old._residuals
    assert shared_new._schemes is shared_old._schemes   # same quantile rule: the scheme tables too
    assert not b.share_calibration(shared_old, CurvePrior(library, drop_bandwidth=0.0))
    assert not b.share_calibration(shared_old, CurvePrior(library[1:], **new_opts))
    probes = [r for r in library if r.source == "probe"]
    for opts, shared in ((old_opts, shared_old), (new_opts, shared_new)):
        alone = CurvePrior(library, **opts)
        for r in probes:
            ex = frozenset([r.group])
            assert shared.select_level(5, ex) == alone.select_level(5, ex)
            for target in (float(r.losses[2]), float(r.losses[-1]) * 0.8):
                got = shared.estimate(list(r.losses[:5]), target, run_query(r), start_loss=r.start_loss,
                                      exclude_group=r.group)
                want = alone.estimate(list(r.losses[:5]), target, run_query(r), start_loss=r.start_loss,
                                      exclude_group=r.group)
                assert (got.expected, got.robust, got.note) == (want.expected, want.robust, want.note)


def test_development_seeds_are_scored_from_the_store_alone_with_the_named_methods(tmp_path, capsys, monkeypatch):
    """Session 10 (--dev-seeds, development only): the named methods (session 8's defaults beside a local scale)
    score every development seed's targets in one run; nothing is fine-tuned (a missing run — here the fresh
    seed 3's — is refused with one line, exit 2, before any scoring); unknown method names are refused too."""
    import jqodi.learning.reference as reference

    b = bench(monkeypatch)

    def no_finetune(*a, **kw):
        raise AssertionError("the development-only mode fine-tuned a run")

    monkeypatch.setattr(reference, "finetune", no_finetune)
    grid = three_configs()
    monkeypatch.setattr(b, "loco_grid", lambda cifar: grid)
    db = tmp_path / "loco.db"
    with TraceStore(db) as s:
        record_grid(s, grid, (1, 2))
    base = ["--store", str(db), "--no-cifar", "--dev-seeds", "1", "2", "--probe-lengths", "5"]
    assert b.loco_main([*base[:-4], "3", "--methods", "session8,vote", "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "3 run(s) missing" in err and "finetune seed 3" in err
    assert not (tmp_path / "x.json").exists()
    for argv, says in ((["--methods", "session8,bogus"], "name distinct methods"),
                       (["--methods", "vote,vote"], "name distinct methods"),
                       (["--test-seed", "3"], "--dev-seeds: not with --test-seed")):
        with pytest.raises(SystemExit) as e:
            b.loco_main([*base, *argv])
        assert e.value.code == 2 and says in capsys.readouterr().err
    with TraceStore(db) as s:
        record_grid(s, grid, (3,))   # the fresh seed's runs arrive: neither in the library nor asked about
    assert b.loco_main([*base, "--methods", "session8,vote", "--jobs", "1", "--out", str(tmp_path / "d.json")]) == 0
    capsys.readouterr()
    res = json.loads((tmp_path / "d.json").read_text())
    rows = [b.DEV_METHODS[n][0] for n in ("session8", "vote")]
    assert list(res["methods"]) == rows
    assert res["methods"][rows[1]] == {"name": "vote", "local_scale": "vote", "bias_quantile": None}
    assert res["dev_truth_seeds"] == [1, 2] and res["library_runs"] == 9 and "test_seed" not in res
    n_dev = sum(len(b.loco_targets(list(curve(8, c["train_size"], c["bits"], s)), 8)) for c in grid for s in (1, 2))
    assert set(res["metrics_dev"]) == set(rows)
    assert all(list(res["metrics_dev"][r]) == ["5"] and res["metrics_dev"][r]["5"]["n"] == n_dev for r in rows)
    assert {(t["part"], t["truth_seed"]) for pc in res["per_config"] for t in pc["targets"]} == {("dev", 1), ("dev", 2)}
    assert "truth seeds 1, 2; nothing fine-tuned" in res["markdown"]


def test_two_fresh_seeds_are_scored_pooled_and_each_apart_with_session_11s_candidate_beside_session_8(
        tmp_path, capsys, monkeypatch):
    """Session 11 (--test-seed 7 8, pre-registered): several fresh seeds are questions only, scored pooled (the figure
    of record) and each apart; the development seeds are those before the first; seeds from 7 score session 8's
    default beside the learned bias correction of K^exp."""
    b = bench(monkeypatch)
    assert b.test_seeds(None) is None and b.test_seeds(6) == (6,) and b.test_seeds([7, 8]) == (7, 8)
    assert b.dev_seeds((7, 8)) == (1, 2, 3, 4, 5, 6) and b.dev_seeds(6) == (1, 2, 3, 4, 5)
    (old, old_opts), (new, new_opts) = b.test_methods((7, 8))
    assert (old, new) == (b.TEST11_DEFAULT, b.TEST11_CANDIDATE)
    assert old_opts == {"bias_quantile": None} and new_opts == {"bias_quantile": 0.5}
    assert b.test_methods(6)[1] == (b.TEST9_RECORD, {"bias_quantile": None})   # session 9's test keeps its methods
    grid = three_configs()
    db = tmp_path / "loco.db"
    with TraceStore(db) as s:
        record_grid(s, grid, (1, 2, 3, 4))
        runs = b.loco_runs(s, grid, None, 1, log=lambda m: None, truth_seeds=b.TRUTH_SEEDS + (3, 4))
    args = argparse.Namespace(store=str(db), out=str(tmp_path / "t.json"), markdown=None, jobs=1, test_seed=[3, 4],
                              probe_lengths=[5])
    assert b.loco_test_evaluate(args, grid, runs, False, 0.0) == 0
    capsys.readouterr()
    res = json.loads((tmp_path / "t.json").read_text())
    assert res["library_runs"] == 9 and res["test_runs"] == 6 and res["test_seeds"] == [3, 4]
    n = {s: sum(len(b.loco_targets(list(curve(8, c["train_size"], c["bits"], s)), 8)) for c in grid) for s in (3, 4)}
    for name in (b.TEST_OLD, b.TEST_NEW):
        assert res["metrics_test"][name]["5"]["n"] == n[3] + n[4]
        assert all(res["metrics_test_by_seed"][str(s)][name]["5"]["n"] == n[s] for s in (3, 4))
    assert res["figure_of_record"]["questions"] == "truth seeds 3, 4 pooled"
    assert {t["part"] for pc in res["per_config"] for t in pc["targets"] if t["truth_seed"] in (3, 4)} == {"test"}
    assert "Truth seed 4 alone" in res["markdown"] and "truth seeds 3, 4 pooled, never scored" in res["markdown"]


def test_development_mode_scores_every_probe_length_on_the_probes_first_epochs_and_rules_on_the_length(
        tmp_path, capsys, monkeypatch):
    """Issue 15 item 4 (--dev-seeds with --probe-lengths 1 2 3 5): a shorter probe is the stored 5-epoch probe's
    first P epochs, every length is scored for every method, and the JSON names the length the benchmark's rule
    picks per method (:func:`probe_rule` on those rows) beside jqodi's default."""
    from jqodi.learning.estimate import DEFAULT_PROBE_EPOCHS
    from jqodi.learning.prior import CurvePrior

    b = bench(monkeypatch)
    grid = [{"model": "lenet", "width": 0.25, "pretrain_epochs": 4, "cloud_size": None, "dataset": "fashion-mnist",
             "data": "data2", "train_size": size, "val_size": 300, "bits": bits, "horizon": 8, "session": 2}
            for size, bits in ((500, 2), (1000, 4), (2000, 2))]
    monkeypatch.setattr(b, "loco_grid", lambda cifar: grid)
    db = tmp_path / "loco.db"
    with TraceStore(db) as s:
        record_grid(s, grid, (1, 2))
    probes = {tuple(np.round(curve(5, c["train_size"], c["bits"], 0), 6)) for c in grid}
    seen = []
    real = CurvePrior.estimate

    def spy(self, probe, *a, **kw):
        seen.append(tuple(np.round(probe, 6)))
        return real(self, probe, *a, **kw)

    monkeypatch.setattr(CurvePrior, "estimate", spy)
    argv = ["--store", str(db), "--no-cifar", "--dev-seeds", "1", "2", "--probe-lengths", "1", "2", "3", "5",
            "--methods", "session8,bias", "--jobs", "1", "--out", str(tmp_path / "p.json")]
    assert b.loco_main(argv) == 0
    capsys.readouterr()
    assert {len(p) for p in seen} == {1, 2, 3, 5}
    assert all(any(full[:len(p)] == p for full in probes) for p in seen)   # each is a stored probe's first epochs
    res = json.loads((tmp_path / "p.json").read_text())
    rows = [b.DEV_METHODS[n][0] for n in ("session8", "bias")]
    assert res["probe_lengths"] == [1, 2, 3, 5] and all(list(res["metrics_dev"][r]) == ["1", "2", "3", "5"] for r in rows)
    assert res["chosen_probe_epochs"] == {r: b.probe_rule(res["metrics_dev"][r]) for r in rows}
    assert res["chosen_probe_epochs_meets_all"] == {
        r: all(b.meets(res["metrics_dev"][r][str(P)]).values()) for r, P in res["chosen_probe_epochs"].items()}
    assert res["default_probe_epochs"] == DEFAULT_PROBE_EPOCHS
    assert "Probe length by the benchmark's rule" in res["markdown"]
