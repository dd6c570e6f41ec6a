"""Every verb's bad inputs: one line on stderr naming what is wrong, exit code 2, never a traceback.

The table runs in-process through :func:`jqodi.cli.main` (bad values are refused before any
pretraining, data loading or rendezvous starts); a few smoke cases run ``python -m jqodi`` as a
subprocess (with a timeout) to see what a user's terminal shows, torch's C++ logging included.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jqodi.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Files the cases name: ``{tmp}`` folders, a corrupt JSON, a scenario that fails validation."""
    root = tmp_path_factory.mktemp("bad-inputs")
    (root / "empty").mkdir()
    (root / "corrupt.json").write_text("{not json")
    (root / "corrupt-run").mkdir()
    (root / "corrupt-run" / "job.json").write_text("{\"model\": ")
    (root / "wrong-job").mkdir()
    (root / "wrong-job" / "job.json").write_text(json.dumps({"model": "lenet", "colour": "red"}))
    (root / "fleet-run").mkdir()
    (root / "fleet-run" / "fleet_job.json").write_text("{}")   # what 'jqodi run FLEET.yaml' leaves
    (root / "list.json").write_text("[1, 2]")
    (root / "bad-yaml.yaml").write_text("name: x\n  devices: [\n")
    text = (REPO / "src/jqodi/scenarios/cpu-demo.yaml").read_text()
    if "batch_size:" in text:
        text = "\n".join(line.split("batch_size:")[0] + "batch_size: 1" if "batch_size:" in line else line
                         for line in text.splitlines())
    else:
        text += "\ntraining:\n  batch_size: 1\n"
    (root / "batch1.yaml").write_text(text)
    return root


S = "src/jqodi/scenarios/cpu-demo.yaml"

# (argv, a piece of the one line it must print)
CASES = [
    # top level
    (["no-such-verb"], "invalid choice"),
    (["--plugin", "no_such_plugin_module_xyz", "plan"], "no_such_plugin_module_xyz"),
    # calibrate
    (["calibrate", "--tdp-w", "nan"], "--tdp-w: expected a finite number"),
    (["calibrate", "--tdp-w", "-5"], "--tdp-w"),
    (["calibrate", "--idle-w", "-1"], "--idle-w"),
    (["calibrate", "--power", "psu"], "invalid choice"),
    # run
    (["run", "--port", "99999"], "--port: must be a TCP port"),
    (["run", "--port", "0"], "--port"),
    (["run", "--port", "abc"], "expected an integer"),
    (["run", "--max-epochs", "0"], "--max-epochs: must be an integer ≥ 1"),
    (["run", "--requests", "-1"], "--requests: must be an integer ≥ 0"),
    (["run", "--timeout", "nan"], "--timeout: expected a finite number"),
    (["run", "--timeout", "-1"], "--timeout: must be a finite number > 0"),
    (["run", "--startup-timeout", "inf"], "--startup-timeout"),
    (["run", "--dilation", "0.5"], "--dilation: must be a number ≥ 1"),
    (["run", "--dilation", "fast"], "--dilation"),
    (["run", "--train-size", "0"], "--train-size"),
    (["run", "--val-size", "-4"], "--val-size"),
    (["run", "--solver", "nope"], "--solver"),
    (["run", "--transport", "pigeon"], "--transport"),
    (["run", "--meter", "nope"], "--meter"),
    (["run", "--epochs-estimate", "lucky"], "--epochs-estimate"),
    (["run", "{tmp}/missing.yaml"], "missing.yaml"),
    (["run", "--resume", "--workdir", "{tmp}/empty"], "--resume"),
    (["run", "{tmp}/batch1.yaml"], "batch_size"),
    # demo
    (["demo", "--requests", "-1"], "--requests"),
    (["demo", "--transport", "pigeon"], "--transport"),
    (["demo", "{tmp}/missing.yaml"], "missing.yaml"),
    # cloud / edge / end
    (["fleet-node", "cloud"], "--job"),
    (["fleet-node", "cloud", "--job", "{tmp}/missing.json"], "--job {tmp}/missing.json: cannot read"),
    (["fleet-node", "cloud", "--job", "{tmp}/list.json"], "not a fleet job"),
    (["fleet-node", "bishop"], "ROLE must be cloud, edge:NAME or end:DEVICE"),
    (["fleet-node", "end:cam-1", "--timeout", "nan"], "--timeout"),
    (["cloud"], "--job"),
    (["cloud", "--job", "{tmp}/missing.json"], "--job: cannot read"),
    (["cloud", "--job", "{tmp}/corrupt.json"], "--job: cannot read"),
    (["cloud", "--job", "{tmp}/list.json"], "job"),
    (["cloud", "--job", "x.json", "--timeout", "nan"], "--timeout"),
    (["cloud", "--job", "x.json", "--timeout", "0"], "--timeout"),
    (["cloud", "--job", "x.json", "--port", "70000"], "--port"),
    (["edge"], "--name"),
    (["edge", "--name", "a", "--startup-timeout", "-5"], "--startup-timeout"),
    (["edge", "--name", "a", "--port", "-1"], "--port"),
    (["end", "--timeout", "soon"], "--timeout"),
    (["end", "--startup-timeout", "0"], "--startup-timeout"),
    # infer
    (["infer", "--workdir", "{tmp}/empty"], "holds no job.json"),
    (["infer", "--workdir", "{tmp}/fleet-run"], "fleet-run is a fleet run: a fleet's devices are not served"),
    (["infer", "--workdir", "{tmp}/corrupt-run"], "cannot read"),
    (["infer", "--workdir", "{tmp}/wrong-job"], "missing fields"),
    (["infer", "--requests", "0"], "--requests"),
    (["infer", "--cut", "-1"], "--cut"),
    # meters
    (["meters", "--busy-power-w", "nan"], "--busy-power-w"),
    (["meters", "--busy-power-w", "-10"], "--busy-power-w"),
    (["meters", "--window-ms", "-5"], "--window-ms"),
    (["meters", "--window-ms", "0"], "--window-ms"),
    (["meters", "--gpu-index", "-1"], "--gpu-index"),
    (["meters", "--kind", "sundial"], "--kind"),
    (["meters", "--window-ms", "1", "--idle", "--json", "{tmp}/empty"], "{tmp}/empty"),
    # pretrain
    (["pretrain", "--epochs", "0"], "--epochs"),
    (["pretrain", "--threads", "0"], "--threads"),
    (["pretrain", "--width", "0"], "--width"),
    (["pretrain", "--width", "nan"], "--width"),
    (["pretrain", "--models", "no-such-model"], "no-such-model"),
    # finetune
    (["finetune", "--model", "lenet"], "--bits"),
    (["finetune", "--model", "lenet", "--bits", "3x"], "--bits"),
    (["finetune", "--model", "lenet", "--bits", "9"], "--bits: must be a bit-width"),
    (["finetune", "--model", "lenet", "--bits", "4", "--threads", "-3"], "--threads"),
    (["finetune", "--model", "lenet", "--bits", "4", "--epochs", "0"], "--epochs"),
    (["finetune", "--model", "lenet", "--bits", "4", "--batch-size", "1"], "--batch-size"),
    (["finetune", "--model", "lenet", "--bits", "4", "--lr", "-0.1"], "--lr"),
    (["finetune", "--model", "lenet", "--bits", "4", "--target-loss", "inf"], "--target-loss"),
    (["finetune", "--model", "lenet", "--bits", "4", "--train-size", "0"], "--train-size"),
    (["finetune", "--model", "lenet", "--bits", "4", "--data", "data3"], "unknown end-device data 'data3'"),
    (["finetune", "--model", "lenet", "--bits", "4", "--data", "./nowhere"], "no such folder"),
    (["finetune", "--model", "lenet", "--bits", "4", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["pretrain", "--dataset", "{tmp}/empty"], "sub-folder per class"),
    (["estimate", "--target-loss", "0.5", "--data", "{tmp}/corrupt.json"], "corrupt.json"),
    (["run", "--data-dir", "{tmp}/empty"], "CIFAR10 not found"),
    (["finetune", "--model", "no-such-model", "--bits", "4"], "no-such-model"),
    # estimate
    (["estimate"], "--target-loss"),
    (["estimate", "--target-loss", "0"], "--target-loss"),
    (["estimate", "--target-loss", "nan"], "--target-loss"),
    (["estimate", "--target-loss", "0.5", "--bits", "0"], "--bits"),
    (["estimate", "--target-loss", "0.5", "--probe-epochs", "0"], "--probe-epochs"),
    (["estimate", "--target-loss", "0.5", "--out", "{tmp}"], "--out"),
    (["estimate", "--target-loss", "0.5", "--models", "no-such-model"], "no-such-model"),
    # plan / instance
    (["plan"], "SCENARIO"),
    (["plan", "{tmp}/missing.yaml"], "missing.yaml"),
    (["plan", "--instance", "{tmp}/missing.json"], "missing.json"),
    (["plan", "--instance", "{tmp}/corrupt.json"], "instance"),
    (["plan", S, "--solver", "nope"], "--solver"),
    (["plan", S, "--bits", "0"], "--bits"),
    (["plan", S, "--estimates", "{tmp}/missing.json"], "missing.json"),
    (["plan", S, "--estimates", "{tmp}/corrupt.json"], "corrupt.json"),
    (["plan", "{tmp}/batch1.yaml"], "batch_size"),
    (["plan", "{tmp}/bad-yaml.yaml"], "bad-yaml.yaml"),
    (["instance", "{tmp}/missing.yaml"], "missing.yaml"),
    (["instance", S, "--cost-model", "magic"], "--cost-model"),
    (["instance", "{tmp}/batch1.yaml"], "batch_size"),
    # profile
    (["profile", "--model", "no-such-model"], "no-such-model"),
    (["profile", "--input", "3x32"], "--input"),
    (["profile", "--width", "0"], "--width"),
    (["profile", "--bits", "9"], "--bits"),
    (["profile", "--classes", "1"], "--classes"),
    (["profile", "--act-bits", "0"], "--act-bits"),
    # traces, evaluate
    (["traces", "--store", "{tmp}/none.db"], "no trace store"),
    (["traces", "--bits", "0"], "--bits"),
    (["traces", "--format", "xml"], "--format"),
    (["evaluate"], "scenario"),
    (["evaluate", "{tmp}/missing.yaml"], "missing.yaml"),
    # report
    (["report"], "DIR"),
    (["report", "{tmp}/missing-dir"], "missing-dir: not a directory"),
    (["report", "{tmp}/empty"], "nothing to report"),
]


def _argv(argv, tmp):
    return [a.replace("{tmp}", str(tmp)) for a in argv]


@pytest.mark.parametrize("argv,needle", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_line_and_exit_2(argv, needle, files, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("JQODI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("JQODI_DATA_DIR", str(tmp_path / "no-data"))
    rc = main(_argv(argv, files))
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert needle.replace("{tmp}", str(files)) in err, err


def test_the_table_covers_every_verb():
    from jqodi.cli import _verb_modules

    verbs = {v for v, _ in _verb_modules()}
    assert verbs <= {a[0] for a, _ in CASES}, verbs - {a[0] for a, _ in CASES}
    assert len(CASES) >= 60


SMOKE = [
    # an unreachable cloud: no C++ TCPStore stack before the line
    (["end", "--port", "1", "--startup-timeout", "2"], "cannot reach the cloud's rendezvous"),
    (["edge", "--name", "a", "--host", "host.invalid", "--startup-timeout", "2"], "host.invalid"),
    (["run", "--port", "99999"], "--port"),
    (["cloud", "--job", "{tmp}/corrupt.json"], "--job: cannot read"),
    (["meters", "--busy-power-w", "nan"], "--busy-power-w"),
]


@pytest.mark.parametrize("argv,needle", SMOKE, ids=[" ".join(a) for a, _ in SMOKE])
def test_bad_input_in_a_terminal(argv, needle, files, tmp_path):
    env = dict(os.environ, JQODI_HOME=str(tmp_path / "home"),
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    env.pop("TORCH_CPP_LOG_LEVEL", None)
    p = subprocess.run([sys.executable, "-m", "jqodi", *_argv(argv, files)], capture_output=True, text=True,
                       timeout=120, env=env, cwd=REPO)
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_a_missing_fields_error_names_every_missing_field():
    from jqodi.core.scenario import parse_scenario
    from jqodi.errors import ScenarioError

    import yaml

    data = yaml.safe_load((REPO / S).read_text())
    del data["learning"][0]["base_loss"], data["learning"][0]["gamma"]
    with pytest.raises(ScenarioError) as e:
        parse_scenario(data)
    assert "learning[0].base_loss, learning[0].gamma: missing fields" in str(e.value)
    assert "more" not in str(e.value)


def test_plan_explains_an_empty_candidate_set(tmp_path, capsys):
    """No ``learning:`` rows: 'plan' names the pairs without an estimate and how to get them, as 'instance' does."""
    import yaml

    data = yaml.safe_load((REPO / S).read_text())
    data.pop("learning")
    path = tmp_path / "no-learning.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["plan", str(path)]) == 1
    out = capsys.readouterr().out
    assert "no learning estimate" in out and "lenet@4" in out and "jqodi estimate" in out
    assert main(["instance", str(path)]) == 0
    assert "no learning estimate (left out)" in capsys.readouterr().out
