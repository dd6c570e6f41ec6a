"""Estimates tied to what they describe (issue 9 part 3, issue 15 part 3): every verb that applies
``--estimates`` to a scenario — plan, instance, run, evaluate — refuses a file made for another
model, data or target in one line (exit 2), and ``--allow-estimate-mismatch`` uses it with a note."""
from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml

from jqodi.cli import main
from jqodi.core.estimates import LearningEstimate, save_estimates

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "examples" / "cpu-demo.yaml"   # lenet 0.25, Fashion-MNIST data2 1000+500
TARGET = yaml.safe_load(SCENARIO.read_text())["target_loss"]   # the file's measured L_max (0.6387)

#: what `jqodi estimate` records for the scenario's LeNet (the checkpoint hash is not compared by planning)
MATCHING = {"model": "lenet", "pretrained_sha256": "0123456789abcdef", "pretrain_epochs": 4,
            "cloud_train_size": 60000, "width": 0.25, "dataset": "fashion-mnist", "data_name": "data2",
            "train_size": 1000, "val_size": 500, "data_seed": 0, "loss_kind": "cross-entropy"}


def cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def estimates_file(tmp_path, target=TARGET, **changed):
    prov = {**MATCHING, **changed}
    path = tmp_path / "est.json"
    save_estimates(path, [LearningEstimate("lenet", b, 4.739, 0.001, 4, 6, target, source="measured:probe",
                                           provenance=prov) for b in (4, 8)])
    return path


def verb_args(verb, tmp_path):
    return {"plan": ["plan", SCENARIO],
            "instance": ["instance", SCENARIO, "--json"],
            "run": ["run", SCENARIO, "--write-job", tmp_path / "job.json", "--quiet"],
            "evaluate": ["evaluate", SCENARIO, "--quiet"]}[verb]


VERBS = ("plan", "instance", "run", "evaluate")
MISMATCHES = [({"width": 1.0}, "width = 1.0, not 0.25"),
              ({"dataset": "cifar10"}, "dataset = cifar10, not fashion-mnist"),
              ({"data_name": "data1"}, "data_name = data1, not data2"),
              ({"train_size": 2000}, "train_size = 2000, not 1000"),
              ({"pretrain_epochs": 2}, "pretrain_epochs = 2, not 4"),
              ({"loss_kind": "mse"}, "loss_kind = mse, not cross-entropy")]


@pytest.mark.parametrize("verb", VERBS)
def test_matching_estimates_are_applied(verb, tmp_path):
    rc, out, err = cli(*verb_args(verb, tmp_path), "--estimates", estimates_file(tmp_path))
    assert rc == 0, err
    assert "estimates file" not in err   # no refusal, no note


@pytest.mark.parametrize("verb", VERBS)
def test_another_width_is_refused_in_one_line_and_the_flag_overrides(verb, tmp_path):
    est = estimates_file(tmp_path, width=1.0)
    rc, out, err = cli(*verb_args(verb, tmp_path), "--estimates", est)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"estimates file {est}" in lines[0] and "width = 1.0, not 0.25" in lines[0]
    assert "--allow-estimate-mismatch" in lines[0]
    rc, out, err = cli(*verb_args(verb, tmp_path), "--estimates", est, "--allow-estimate-mismatch")
    assert rc == 0, err
    assert "note: " in err and "used anyway: --allow-estimate-mismatch" in err


@pytest.mark.parametrize("verb", VERBS)
def test_another_target_is_refused(verb, tmp_path):
    rc, out, err = cli(*verb_args(verb, tmp_path), "--estimates", estimates_file(tmp_path, target=0.9))
    assert rc == 2 and f"is for target loss 0.9, not {TARGET}" in err


@pytest.mark.parametrize("changed,why", MISMATCHES)
def test_each_provenance_field_is_compared(changed, why, tmp_path):
    rc, out, err = cli("plan", SCENARIO, "--estimates", estimates_file(tmp_path, **changed))
    assert rc == 2 and why in err, err


def test_rows_without_provenance_are_used_with_a_note(tmp_path):
    est = tmp_path / "old.json"
    save_estimates(est, [LearningEstimate("lenet", 8, 4.739, 0.001, 4, 6, TARGET, source="measured")])
    rc, out, err = cli("plan", SCENARIO, "--estimates", est)
    assert rc == 0 and "rows without provenance" in err
    # their target loss is still compared
    save_estimates(est, [LearningEstimate("lenet", 8, 4.739, 0.001, 4, 6, 0.9, source="measured")])
    rc, out, err = cli("plan", SCENARIO, "--estimates", est)
    assert rc == 2 and f"is for target loss 0.9, not {TARGET}" in err, err


def test_rows_of_models_the_scenario_does_not_plan_are_not_compared(tmp_path):
    est = tmp_path / "est.json"
    rows = [LearningEstimate("lenet", 8, 4.739, 0.001, 4, 6, TARGET, source="measured:probe", provenance=MATCHING),
            LearningEstimate("vgg", 8, 4.0, 0.001, 4, 6, 0.9, source="measured:probe",
                             provenance={**MATCHING, "model": "vgg", "width": 0.125})]
    save_estimates(est, rows)
    rc, out, err = cli("plan", SCENARIO, "--estimates", est)
    assert rc == 0, err


def test_a_run_from_random_weights_compares_no_pretrained_model(tmp_path):
    est = estimates_file(tmp_path, pretrain_epochs=2)
    args = verb_args("run", tmp_path)
    assert cli(*args, "--estimates", est)[0] == 2
    rc, out, err = cli(*args, "--estimates", est, "--random-init")
    assert rc == 0, err


def test_estimates_apply_to_a_data2_shifted_scenario(tmp_path):
    """``split: data2-shifted`` (the Data 2 analog of any dataset) is a split name, not a dataset:
    planning with estimates made for it must not call it an unknown dataset."""
    shifted = tmp_path / "shifted.yaml"
    shifted.write_text(SCENARIO.read_text().replace("split: data2 ", "split: data2-shifted "))
    assert "split: data2-shifted" in shifted.read_text()
    rc, out, err = cli("plan", shifted, "--estimates", estimates_file(tmp_path, data_name="data2-shifted"))
    assert rc == 0 and "estimates file" not in err, err
    rc, out, err = cli("plan", shifted, "--estimates", estimates_file(tmp_path))   # made for data2
    assert rc == 2 and "data_name = data2, not data2-shifted" in err, err


@pytest.mark.parametrize("changed, flag", [({"width": 1.0}, "(--width 0.25)"), ({"train_size": 2000}, "(--train-size 1000)"),
                                           ({"data_name": "data1"}, "(--data data2)")])
def test_a_refusal_names_the_estimate_option_to_re_run_with(changed, flag, tmp_path):
    rc, out, err = cli("plan", SCENARIO, "--estimates", estimates_file(tmp_path, **changed))
    assert rc == 2 and flag in err, err
    rc, out, err = cli("plan", SCENARIO, "--estimates", estimates_file(tmp_path, target=0.5))
    assert rc == 2 and f"(--target-loss {TARGET})" in err, err

