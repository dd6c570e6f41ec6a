"""K^rob's stated level and margin (``epochs_robust_level``/``epochs_robust_margin`` of a learning
estimate): set by the learned prior's conformal K^rob, kept through estimates files (older files
without them stay valid), validated with one line and exit 2, and read by the pre-run choice."""
import json
import math
from statistics import NormalDist
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from jqodi.app.pre_run import k_spread
from jqodi.cli import main
from jqodi.core.estimates import LearningEstimate, load_estimates, save_estimates
from jqodi.core.traces import TraceStore
from jqodi.errors import JqodiError
from jqodi.learning.estimate import estimate_from_probe_run
from test_prior import held_out, library, query, true_curve  # noqa: F401 (library: the fixture)

Z90 = NormalDist().inv_cdf(0.9)
CPU_DEMO = Path(__file__).resolve().parents[1] / "src/jqodi/scenarios/cpu-demo.yaml"


def row(**kw):
    return LearningEstimate("lenet", 4, 0.3, 0.1, 12, 16, target_loss=0.9, source="measured:prior+probe", **kw)


def test_the_learned_prior_states_the_level_and_the_unrounded_margin_of_its_conformal_k_rob(library):
    for size, bits in ((1000, 4), (500, 2), (2000, 4)):
        truth = true_curve(20, size, bits, 7 + bits + size)
        e, _, _ = held_out(library, size, bits, 5, truth[9])
        assert "conformal 90% margin" in e.note
        assert e.robust_level == 0.9 and e.robust_margin >= 0
        # the text keeps the margin rounded to whole percent; K^rob is K^exp·(1 + m) in whole epochs
        assert f"conformal 90% margin {e.robust_margin:+.0%}" in e.note
        x = e.expected * (1 + e.robust_margin)
        assert max(e.expected, math.floor(x + 1e-9)) <= e.robust <= max(e.expected, math.ceil(x - 1e-9))
    probe = true_curve(5, 1000, 4, 3)
    cold = library.estimate(probe, 1.5, query(model="vgg"), start_loss=7.5)   # doubled margin: stated doubled
    assert "doubled" in cold.note and f"margin {cold.robust_margin:+.0%} (doubled" in cold.note
    # no calibrated level: the variants' quantile vote, or the probe alone (widened K^rob)
    vote = library.estimate(probe, 1.5, query(), start_loss=7.5, conformal=False)
    alone = library.estimate(probe, 1.5, query(model="vgg"), start_loss=7.5, other_models=False)
    assert (vote.robust_level, vote.robust_margin, alone.robust_level, alone.robust_margin) == (None,) * 4


def test_a_probe_runs_estimate_carries_them_and_files_keep_them(library, tmp_path):
    probe = true_curve(5, 1000, 4, 3)
    r = SimpleNamespace(model="lenet", dataset="fashion-mnist", data_name="data2", bits=4, width=0.25,
                        train_size=1000, config={}, start_loss=7.5, base_loss=7.9, gamma=0.1, gamma_robust=0.2,
                        val_losses=list(probe))
    e = estimate_from_probe_run(r, 1.5, library)
    assert e.epochs_robust_level == 0.9 and e.epochs_robust_margin is not None and "conformal 90%" in e.source
    f = tmp_path / "e.json"
    save_estimates(f, [e, row()])
    back = load_estimates(f)
    assert back == [e, row()] and back[0].epochs_robust_margin == e.epochs_robust_margin
    assert k_spread(back[0])[0] == pytest.approx(math.log1p(e.epochs_robust_margin) / Z90)
    # a file written before the fields: valid, and the spread falls back to K^rob as the 90 % quantile
    d = json.loads(f.read_text())
    for x in d["estimates"]:
        del x["epochs_robust_level"], x["epochs_robust_margin"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(d))
    rows = load_estimates(old)
    assert rows[0].epochs_robust_level is None and k_spread(rows[0])[0] is None


def test_jqodi_estimate_writes_the_fields(tmp_path, capsys):
    """``jqodi estimate --out``: the store estimator states no level (null), and the file loads."""
    db = tmp_path / "t.db"
    with TraceStore(db) as s:
        for seed in (0, 1):
            s.record({"model": "lenet", "bits": 4, "dataset": "fashion-mnist", "data_name": "data1",
                      "train_size": 2000, "val_size": 500, "seed": seed, "width": 0.25, "base_loss": 0.22,
                      "start_loss": 1.5, "gamma": 0.1, "gamma_robust": 0.2, "config": {"pretrain_epochs": 2}},
                     [{"epoch": k, "val_loss": 0.2 + 1.0 * k ** -0.8} for k in range(1, 21)])
    out = tmp_path / "e.json"
    assert main(["estimate", "--target-loss", "0.35", "--models", "lenet", "--bits", "4", "--method", "store",
                 "--store", str(db), "--out", str(out), "--quiet", "--pretrain-epochs", "2"]) == 0
    rows = json.loads(out.read_text())["estimates"]
    assert rows[0]["epochs_robust_level"] is None and rows[0]["epochs_robust_margin"] is None
    assert load_estimates(out)[0].source == "measured:store(2 runs)"


@pytest.mark.parametrize("fields, said", [
    ({"epochs_robust_level": 1.0, "epochs_robust_margin": 0.2}, "estimates[0].epochs_robust_level"),
    ({"epochs_robust_level": 0, "epochs_robust_margin": 0.2}, "estimates[0].epochs_robust_level"),
    ({"epochs_robust_level": 0.9, "epochs_robust_margin": -0.1}, "estimates[0].epochs_robust_margin"),
    ({"epochs_robust_level": 0.9, "epochs_robust_margin": "wide"}, "estimates[0].epochs_robust_margin"),
    ({"epochs_robust_level": 0.9}, "epochs_robust_level and epochs_robust_margin must both be numbers or both null"),
])
def test_a_bad_level_or_margin_is_one_line_and_exit_2(tmp_path, capsys, fields, said):
    f = tmp_path / "bad.json"
    d = {"model": "lenet", "bits": 4, "base_loss": 0.3, "gamma": 0.1, "epochs_expected": 4, "epochs_robust": 6,
         "target_loss": 0.6339, **fields}
    f.write_text(json.dumps({"estimates": [d]}))
    with pytest.raises(JqodiError):
        load_estimates(f)
    assert main(["instance", str(CPU_DEMO), "--estimates", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and said in err and "bad.json" in err and "Traceback" not in err
    # positive and finite in the type too (a row built in code)
    with pytest.raises((ValueError, JqodiError)):
        LearningEstimate.from_dict({**d, "epochs_robust_level": float("nan"), "epochs_robust_margin": 0.1})


def test_the_choice_on_the_stated_margin_equals_the_choice_on_its_rounded_text():
    """Before these fields the choice read the margin from the text, rounded to whole percent: on the
    packaged cpu-demo's table with learned-prior margins the choice is the same."""
    from dataclasses import replace

    from jqodi.app.pre_run import first_plan
    from jqodi.core.costs import compile_instance
    from jqodi.core.scenario import load_scenario

    scenario = load_scenario(str(CPU_DEMO))
    table = scenario.estimates()
    instance = compile_instance(scenario)
    rng = np.random.default_rng(0)
    for _ in range(3):
        margins = {e.key: float(rng.uniform(0.2, 0.6)) for e in table if e.epochs_expected is not None}
        exact = [replace(e, epochs_robust_level=0.9, epochs_robust_margin=margins[e.key]) if e.key in margins
                 else e for e in table]
        text = [replace(e, epochs_robust_margin=round(e.epochs_robust_margin, 2)) if e.key in margins else e
                for e in exact]
        a, b = (first_plan(instance, solver="optimal", estimates=x) for x in (exact, text))
        assert (a.model, a.bits, a.epochs, a.schedule) == (b.model, b.bits, b.epochs, b.schedule)
        assert a.extra["choice"]["rule"] == "expected"
        assert all("conformal" not in r["spread"] and "stated 90% margin" in r["spread"]
                   for r in a.extra["choice"]["candidates"] if r.get("sigma_ln_k") is not None)
