"""Every run ends with the same record and report: target reached or not (at which epoch),
predicted vs measured, energy per node with its meter, and whether emulation was on — a cloud,
edge and end started by hand included."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jqodi.render.runs import run_outcome, run_report
from jqodi.runtime.job import Job
from jqodi.runtime.record import RunRecord, record_from_epochs

REPO = Path(__file__).resolve().parents[1]
HAVE_FMNIST = Path("/usr/share/datasets/fashion-mnist").is_dir() or bool(os.environ.get("JQODI_DATA_DIR"))


def _epoch(k: int, val_loss: float, edge: str = "a") -> dict:
    node = {"busy_s": {"fwd": 0.1}, "send_s": {}, "energy_j": 1.5, "meter": "null", "bytes": {"end->edge:a": 100}}
    return {"epoch": k, "edge": edge, "cut": 1, "train_loss": val_loss + 0.1, "val_loss": val_loss,
            "val_accuracy": 0.5, "wall_s": 0.2,
            "nodes": [{**node, "node": "end"}, {**node, "node": "edge:a"}, {**node, "node": "cloud"}]}


def _job(**kw) -> Job:
    d = {"model": "lenet", "bits": 4, "width": 0.125, "schedule": [{"edge": "a", "cut": 1, "epochs": 3}],
         "data": {"train_size": 256, "val_size": 64}, "pretrained": {"source": "random"},
         "training": {"batch_size": 32}, "meter": "null", "timeout_s": 10.0, "startup_timeout_s": 90.0}
    d.update(kw)
    return Job.from_dict(d)


def test_the_record_says_whether_and_when_the_target_was_reached(tmp_path):
    pred = {"time_s": 1.0, "energy_j": 2.0, "phases_s": {}, "phases_j": {}}
    job = _job(target_loss=0.6, predicted_epochs=[pred])
    assert job.predicted_per_epoch() == [pred] * 3
    (tmp_path / "epochs.json").write_text(json.dumps(
        {"completed": 3, "epochs": [_epoch(0, 0.9), _epoch(1, 0.59), _epoch(2, 0.55)]}))
    rec = record_from_epochs(job, tmp_path / "epochs.json")
    assert rec.target == {"target_loss": 0.6, "reached": True, "epoch": 2, "final_val_loss": 0.55}
    assert rec.totals["predicted_energy_j"] == pytest.approx(6.0)
    assert rec.totals["meters"] == {"cloud": "null", "edge:a": "null", "end": "null"}
    text = run_report(rec, tmp_path)
    assert "L_max 0.6: REACHED at epoch 2" in text and "meters: cloud=null" in text
    assert "emulation off" in text and str(tmp_path / "record.json") in text
    back = RunRecord.load(rec.save(tmp_path / "record.json"))
    assert back.target == rec.target


def test_an_unemulated_run_says_what_the_model_meter_charges(tmp_path):
    """``--no-emulate`` with the model meter: the energy is the scenario's device power × this host's
    busy time (a Pi's or an A100's watts on this CPU), not a measurement; the report says so."""
    def model_epoch(k, val_loss):
        ep = _epoch(k, val_loss)
        return {**ep, "nodes": [{**n, "meter": "model"} for n in ep["nodes"]]}

    (tmp_path / "epochs.json").write_text(json.dumps({"completed": 1, "epochs": [model_epoch(0, 0.9)]}))
    text = run_outcome(record_from_epochs(_job(target_loss=0.6), tmp_path / "epochs.json"))
    assert "meters: cloud=model" in text and "not a measurement of this host" in text
    (tmp_path / "epochs.json").write_text(json.dumps({"completed": 1, "epochs": [_epoch(0, 0.9)]}))
    assert "not a measurement" not in run_outcome(record_from_epochs(_job(), tmp_path / "epochs.json"))


def test_a_run_that_misses_the_target_says_so():
    rec = RunRecord(job={}, target_loss=0.5, epochs=[])
    assert "NOT reached" in run_outcome(rec)
    job = _job(target_loss=0.5)
    rec = record_from_epochs(job, "/nonexistent/epochs.json")
    assert rec.target["reached"] is False and rec.epochs == []


@pytest.mark.skipif(not HAVE_FMNIST, reason="Fashion-MNIST not installed")
def test_a_deployment_started_by_hand_writes_the_record_and_report(tmp_path):
    """cloud, edge and end as three commands (as on three machines): the cloud ends with record.json
    and the same report as 'jqodi run'; 'jqodi infer' then serves from that workdir."""
    from jqodi.runtime.launch import free_port

    wd = tmp_path / "cloud"
    wd.mkdir()
    job = _job(target_loss=50.0, max_epochs=1)
    (wd / "job.json").write_text(json.dumps(job.to_dict()))
    port = str(free_port("127.0.0.1"))
    env = dict(os.environ, JQODI_HOME=str(tmp_path / "home"), JQODI_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    conn = ["--host", "127.0.0.1", "--port", port, "--startup-timeout", "90", "--timeout", "20"]
    py = [sys.executable, "-m", "jqodi"]
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen(py + ["cloud", "--job", str(wd / "job.json"), "--workdir", str(wd)] + conn,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
        deadline = time.monotonic() + 90
        while not (wd / "job.token").is_file():
            assert time.monotonic() < deadline and procs[0].poll() is None, "the cloud wrote no job.token"
            time.sleep(0.1)
        token = ["--token-file", str(wd / "job.token")]
        procs.append(subprocess.Popen(py + ["edge", "--name", "a"] + conn + token, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True, env=env))
        procs.append(subprocess.Popen(py + ["end"] + conn + token, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True, env=env))
        out, err = procs[0].communicate(timeout=240)
        for p in procs[1:]:
            p.wait(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    assert procs[0].returncode == 0, err
    assert all(p.returncode == 0 for p in procs), [p.stderr.read() for p in procs[1:]]
    rec = RunRecord.load(wd / "record.json")
    assert rec.status == "completed" and len(rec.epochs) == 1
    assert rec.target["reached"] and rec.target["epoch"] == 1
    assert "L_max 50: REACHED at epoch 1" in out and "meters: cloud=null" in out
    assert "EMULATION ON" not in err

    from jqodi.cli import main

    assert main(["infer", "--workdir", str(wd), "--requests", "2", "--no-emulate"]) == 0


def test_write_job_says_whether_the_job_emulates(tmp_path, capsys, monkeypatch):
    from jqodi.cli import main

    monkeypatch.setenv("JQODI_HOME", str(tmp_path / "home"))
    assert main(["run", str(REPO / "src/jqodi/scenarios/cpu-demo.yaml"), "--write-job", str(tmp_path / "j.json"),
                 "--dilation", "1"]) == 0
    assert "EMULATES" in capsys.readouterr().out
    assert main(["run", str(REPO / "src/jqodi/scenarios/cpu-demo.yaml"), "--write-job", str(tmp_path / "k.json"),
                 "--no-emulate"]) == 0
    assert "emulation off" in capsys.readouterr().out
    job = Job.from_dict(json.loads((tmp_path / "k.json").read_text()))
    assert job.target_loss is not None and job.predicted_per_epoch() is not None


def test_roles_started_by_hand_say_loudly_that_the_job_emulates(tmp_path, capsys, monkeypatch):
    """The edge and end learn the job from the cloud: each says EMULATION ON (and how to turn it
    off) on stderr as soon as it has an emulating job, and nothing for a job that does not emulate."""
    import jqodi.runtime.process as process
    from jqodi.cli import main

    monkeypatch.setenv("JQODI_HOME", str(tmp_path / "home"))
    assert main(["run", str(REPO / "src/jqodi/scenarios/cpu-demo.yaml"), "--write-job", str(tmp_path / "j.json"),
                 "--dilation", "1"]) == 0
    out = capsys.readouterr().out
    assert "EMULATION ON" in out and "--no-emulate" in out
    emulating = Job.from_dict(json.loads((tmp_path / "j.json").read_text()))
    quiet = emulating.replace(emulation=None)
    served = []

    def fake_serve_role(role, *, on_job=None, **kw):   # the job as the cloud would hand it over
        served.append(role)
        on_job(job_given)
        return 0

    def fake_exit(code):
        raise SystemExit(code)

    monkeypatch.setattr(process, "serve_role", fake_serve_role)
    monkeypatch.setattr(os, "_exit", fake_exit)
    for job_given, loud in ((emulating, True), (quiet, False)):
        for argv in (["edge", "--name", "rtx3090"], ["end"]):
            with pytest.raises(SystemExit):
                main(argv + ["--port", "29999"])
            err = capsys.readouterr().err
            assert ("EMULATION ON" in err and "--no-emulate" in err and "rtx3090" in err) is loud, err
    assert served == ["edge:rtx3090", "end"] * 2
