"""The foundation's CLI verbs: instance, profile, demo — good input and bad input."""
import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from jqodi.cli import main
from jqodi.planner import PlanningInstance

ROOT = Path(__file__).resolve().parents[1]
DATA1 = ROOT / "examples" / "paper-data1.yaml"


def run_cli(*argv):
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(list(argv))
    return rc, buf.getvalue()


def test_instance_json_validates_against_the_contract(tmp_path):
    out = tmp_path / "inst.json"
    rc, text = run_cli("instance", str(DATA1), "--json", "--out", str(out))
    assert rc == 0
    inst = PlanningInstance.from_dict(json.loads(text))
    assert inst.deadline_s == 180 and len(inst.candidates) == 18
    assert json.loads(out.read_text()) == json.loads(text)


def test_instance_table_and_estimates_override(tmp_path):
    rc, text = run_cli("instance")  # default scenario = Data 1
    assert rc == 0 and "instance of paper-data1 (extended cost model): deadline 180 s" in text
    assert "lenet     " in text and "target out of reach" in text
    from jqodi.core.estimates import LearningEstimate, save_estimates

    est = tmp_path / "est.json"
    save_estimates(est, [LearningEstimate("lenet", 8, 0.01, 0.001, 3, 4, source="measured")])
    rc, text = run_cli("instance", str(DATA1), "--estimates", str(est), "--json", "--cost-model", "paper")
    c = next(c for c in json.loads(text)["candidates"] if (c["model"], c["bits"]) == ("lenet", 8))
    assert c["epochs"] == {"expected": 3, "robust": 4}
    assert json.loads(text)["meta"]["cost_model"] == "paper"


def test_the_time_of_k_rob_epochs_at_the_fastest_option_keeps_its_digits_below_10_s():
    """The CPU demo's LeNet: 8 epochs × 0.19 s. Rounded to whole seconds it read '2 s ≤ deadline'
    (and '0 s' on a smaller scenario); long times stay whole seconds."""
    rc, text = run_cli("instance", str(ROOT / "examples" / "cpu-demo.yaml"))
    row = next(line for line in text.splitlines() if line.startswith("lenet        4"))
    assert rc == 0 and row.endswith(" s ≤ deadline") and not row.endswith(" 2 s ≤ deadline"), row
    t = float(row.split()[-4])
    assert 1.0 < t < 2.0 and len(row.split()[-4]) == 4, row   # e.g. 1.52
    rc, text = run_cli("instance", str(DATA1))
    assert " 487 s > deadline" in text


def test_instance_lists_options():
    rc, text = run_cli("instance", "--options")
    assert rc == 0 and "lenet @ 8 bits" in text and "rtx3090" in text


def test_profile_json_and_table():
    rc, text = run_cli("profile", "--model", "lenet", "--input", "3x32x32", "--json")
    d = json.loads(text)
    assert rc == 0 and d["model"] == "lenet" and len(d["blocks"]) == 5 and len(d["cuts"]) == 4
    assert d["params"] == 2334026 and d["cuts"][0]["act_elements"] == 64 * 16 * 16
    rc, text = run_cli("profile", "--model", "resnet20", "--input", "1x28x28", "--width", "0.5")
    assert rc == 0 and "resnet20  input 1x28x28" in text and "act elements" in text


def test_demo_prints_its_sections():
    from jqodi.app.demo import run_demo

    buf = io.StringIO()
    ctx = run_demo(out=buf)
    text = buf.getvalue()
    for title in ("== Scenario paper-data1", "== Models and their cut profiles", "== Candidates"):
        assert title in text
    assert "pi5" in text and "rtx4090" in text and ctx.instance.deadline_s == 180
    # sections can be extended
    extra = io.StringIO()
    run_demo(sections=[lambda c: c.print("hello", c.scenario.name)], out=extra)
    assert extra.getvalue() == "hello paper-data1\n"


@pytest.mark.parametrize("argv, content, expected", [
    (["instance", "{path}"], "deadline_s: [1, 2\n", "(yaml): line"),
    (["instance", "{path}"], None, "file not found"),
    (["instance", "{path}", "--json"], "BAD_BANDWIDTH", "edges[0].end_link.bandwidth_hz: Input should be greater than 0"),
    (["demo", "{path}"], "UNKNOWN_MODEL", "models[0].name: unknown model 'alexnet'"),
    (["profile", "--model", "alexnet"], None, "unknown model 'alexnet'"),
    (["instance", str(DATA1), "--estimates", "{path}"], None, "not found"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, argv, content, expected):
    path = tmp_path / "bad.yaml"
    if content == "BAD_BANDWIDTH":
        content = DATA1.read_text().replace("bandwidth_hz: 80.0e6", "bandwidth_hz: -5", 1)
    elif content == "UNKNOWN_MODEL":
        content = DATA1.read_text().replace("{name: lenet, width: 1.0}", "{name: alexnet}")
    if content is not None:
        path.write_text(content)
    cmd = [sys.executable, "-m", "jqodi", *[a.replace("{path}", str(path)) for a in argv]]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and expected in lines[0], lines[0]
    assert proc.stdout == ""


def run_cli_err(*argv):
    """In-process CLI run: (exit code, stdout, stderr); argparse's usage errors are exit 2 too."""
    out, err = io.StringIO(), io.StringIO()
    from contextlib import redirect_stderr

    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = main(list(argv))
        except SystemExit as e:
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def _scenario_with(tmp_path, old, new):
    text = DATA1.read_text()
    assert old in text
    p = tmp_path / "s.yaml"
    p.write_text(text.replace(old, new, 1))
    return str(p)


@pytest.mark.parametrize("argv, expected", [
    (["profile", "--width", "inf"], "width must be within (0, 16]"),
    (["profile", "--width", "1e308"], "width must be within (0, 16]"),
    (["profile", "--width", "nan"], "width must be within (0, 16]"),
    (["profile", "--width", "-1"], "width must be within (0, 16]"),
    (["profile", "--input", "3x4000x4000"], "parameters; at most 268,435,456 are supported"),
    (["profile", "--input", "3x99999999x99999999"], "elements per sample"),
    (["profile", "--classes", "1000000000000"], "parameters; at most"),
    (["profile", "--model", "resnet20", "--input", "3x20000x20000"], "elements per sample"),
    (["instance", "/dev/zero"], "not a regular file"),
    (["demo", "/dev/null"], "not a regular file"),
])
def test_absurd_sizes_and_special_files_are_one_line_errors(argv, expected):
    rc, out, err = run_cli_err(*argv)
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert expected in err and "Traceback" not in err, err


@pytest.mark.parametrize("old, new, expected", [
    ("input_shape: [3, 32, 32]", "input_shape: [3, 99999, 99999]", "s.yaml: models[0] (lenet, with data.input_shape"),
    ("input_shape: [3, 32, 32]", "input_shape: [3, 2, 2]", "too small for 3 2×2 max-pools"),
    ("{name: vgg, width: 1.0}", "{name: vgg, width: 16}", "models[1] (vgg, with data.input_shape"),
    ("train_size: 2000", "train_size: 1" + "0" * 400, "data.train_size"),
])
def test_scenarios_the_models_cannot_serve_are_one_line_errors(tmp_path, old, new, expected):
    rc, out, err = run_cli_err("instance", _scenario_with(tmp_path, old, new))
    assert rc == 2 and len(err.strip().splitlines()) == 1 and expected in err, err


def test_extreme_but_valid_rates_give_infeasible_options_without_warnings(tmp_path):
    import warnings

    path = _scenario_with(tmp_path, "bandwidth_hz: 80.0e6", "bandwidth_hz: 1.0e-320")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow/divide RuntimeWarnings would fail here
        rc, out, err = run_cli_err("instance", path, "--json")
    assert rc == 0 and err == "", err
    c = next(c for c in json.loads(out)["candidates"] if (c["model"], c["bits"]) == ("lenet", 8))
    assert {o["edge"] for o in c["options"]} == {"rtx4090"}  # rtx3090's Wi-Fi is useless now


def test_cli_tables_use_the_shared_report_layout():
    from jqodi.render.tables import format_table
    from jqodi.render.report import format_table as layout

    t = format_table(["name", "size"], [["a", "1.00 KiB"], ["bbb", "∞"]], indent="  ")
    # formatted numbers ("1.00 KiB", "∞") are right-aligned; the rule is report's
    assert t.splitlines() == ["  name      size", "  ────  ────────", "  a     1.00 KiB", "  bbb          ∞"]
    raw = layout([{"n": "a", "v": 1}], ["n", "v"]).splitlines()
    assert format_table(["n", "v"], [["a", 1]]).splitlines() == raw


def test_demo_names_the_file_when_a_model_cannot_serve_the_scenario(tmp_path):
    path = _scenario_with(tmp_path, "input_shape: [3, 32, 32]", "input_shape: [3, 99999, 99999]")
    rc, out, err = run_cli_err("demo", path)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert f"jqodi demo: error: {path}: models[0] (lenet" in err and "elements per sample" in err, err


def test_profile_bits_are_deduplicated_in_order():
    rc, text = run_cli("profile", "--model", "lenet", "--input", "1x28x28", "--width", "0.25", "--bits", "8,2,8", "--json")
    assert rc == 0 and list(json.loads(text)["bytes"]) == ["8", "2"]
