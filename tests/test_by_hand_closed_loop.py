"""A job started by hand (docs/your-own-setup.md step 6): 'jqodi run --write-job' writes the closed
loop into the job and 'jqodi cloud --job' attaches it, so the cloud stops at L_max and re-plans as
'jqodi run' does; a job file without it runs as before, and the cloud says why in one line.

The roles are separate processes on loopback with a tiny model (LeNet ×0.25 at 4 bits, 128 + 64
images, random initial weights); every wait has a timeout and every process is ended by its PID.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jqodi.cli import main
from test_closed_loop_runtime import scenario_file  # tests/ is on sys.path (no __init__.py)

pytestmark = pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                                reason="Fashion-MNIST not installed (Debian package dataset-fashion-mnist)")


def write_job(tmp_path: Path, *extra: str, target: float = 5.0) -> Path:
    path = scenario_file(tmp_path, [], target=target)  # random init starts near ln 10 ≈ 2.3: 5.0 is reached at once
    job = tmp_path / "job.json"
    assert main(["run", str(path), "--write-job", str(job), "--no-emulate", "--random-init", "--no-traces",
                 "--meter", "null", "--timeout", "60", *extra]) == 0
    return job


def _env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "JQODI_JOB_TOKEN"}
    src = str(Path(__file__).resolve().parents[1] / "src")  # this checkout's code, from any folder
    env.update(JQODI_HOME=str(tmp_path / "home"), JQODI_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p))
    return env


def run_by_hand(tmp_path: Path, job_path: Path, job: dict, wd: Path, *, end_args: tuple[str, ...] = (),
                cwd: Path | None = None) -> None:
    """The cloud, every edge of the job and the end (with ``end_args``) as separate processes, each
    by its PID, started in ``cwd``."""
    from jqodi.runtime.auth import new_secret, write_token_file
    from jqodi.runtime.launch import free_port

    token = write_token_file(tmp_path / "job.token", new_secret())
    conn = ["--host", "127.0.0.1", "--port", str(free_port("127.0.0.1")), "--timeout", "60",
            "--startup-timeout", "120", "--token-file", str(token)]
    py = [sys.executable, "-m", "jqodi"]
    procs: dict[str, subprocess.Popen] = {}

    def start(name: str, args: list[str]) -> None:
        with open(tmp_path / f"{name}.log", "w") as log:
            procs[name] = subprocess.Popen(py + args + conn, env=_env(tmp_path), stdout=log, stderr=subprocess.STDOUT,
                                           cwd=cwd)

    try:
        start("cloud", ["cloud", "--job", str(job_path), "--workdir", str(wd)])
        for e in job["edges"]:
            start(f"edge-{e}", ["edge", "--name", e])
        start("end", ["end", *end_args])
        deadline = time.monotonic() + 400
        for name, p in procs.items():
            rc = p.wait(timeout=max(1.0, deadline - time.monotonic()))
            assert rc == 0, f"{name}: {(tmp_path / f'{name}.log').read_text()[-1500:]}"
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.kill(p.pid, 9)
                p.wait(timeout=10)


def test_a_job_started_by_hand_stops_at_the_target_before_its_last_planned_epoch(tmp_path, capsys):
    job_path = write_job(tmp_path)
    out = capsys.readouterr().out
    job = json.loads(job_path.read_text())
    planned = sum(s["epochs"] for s in job["schedule"])
    assert planned > 1 and job["closed_loop"]["policy"] == "replan"
    assert "closed loop: policy replan" in out and all(e in out for e in job["edges"])
    wd = tmp_path / "wd"
    run_by_hand(tmp_path, job_path, job, wd)
    log = (tmp_path / "cloud.log").read_text()
    on = [ln for ln in log.splitlines() if "closed loop on" in ln]
    assert len(on) == 1 and "policy replan (from the job)" in on[0] and "L_max 5" in on[0], log[-1500:]
    rec = json.loads((wd / "record.json").read_text())
    assert 1 == len(rec["epochs"]) < planned, log[-1500:]  # stopped at L_max, before the plan's last epoch
    assert "target reached" in rec["control"]["reason"], rec["control"]
    assert rec["job"]["closed_loop"] is None  # the controller stayed in the cloud


def test_an_old_job_file_runs_without_the_closed_loop_and_says_why(tmp_path):
    job_path = write_job(tmp_path)
    job = json.loads(job_path.read_text())
    del job["closed_loop"]  # a job written before the block existed
    old = tmp_path / "old.json"
    old.write_text(json.dumps(job))
    from jqodi.runtime.launch import free_port

    # no peer ever joins: the cloud says its line at start, then fails on its start-up timeout
    p = subprocess.run([sys.executable, "-m", "jqodi", "cloud", "--job", str(old), "--workdir", str(tmp_path / "wd"),
                        "--host", "127.0.0.1", "--port", str(free_port("127.0.0.1")), "--startup-timeout", "1"],
                       env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    lines = [ln for ln in (p.stdout + p.stderr).splitlines() if "closed loop" in ln]
    assert p.returncode == 2 and len(lines) == 1, p.stdout + p.stderr
    assert "closed loop off: the job has no closed_loop block" in lines[0] and "--write-job" in lines[0]
    assert "job token written" in p.stdout + p.stderr  # it listened (then no peer came)


def test_the_cloud_takes_the_jobs_policy_or_its_own(tmp_path):
    from jqodi.app.run import controller_from_job
    from jqodi.errors import JqodiError
    from jqodi.runtime.job import Job

    job = Job.from_dict(json.loads(write_job(tmp_path, "--policy", "static").read_text()))
    ctl, line = controller_from_job(job, "job.json")
    assert ctl.policy == "static" and "policy static (from the job)" in line and ctl.target_loss == 5.0
    ctl, line = controller_from_job(job, "job.json", policy="replan")
    assert ctl.policy == "replan" and "policy replan (from --policy)" in line
    broken = job.replace(closed_loop={**job.closed_loop, "version": 99})
    with pytest.raises(JqodiError, match=r"^job.json: closed_loop: version 99"):
        controller_from_job(broken, "job.json")


def test_startup_timeout_help_shows_the_value_not_a_constant_name(capsys):
    from jqodi.runtime.job import DEFAULT_STARTUP_TIMEOUT_S

    for verb in ("run", "cloud", "edge", "end"):
        assert main([verb, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        help_line = text[text.rindex("--startup-timeout"):][:300]  # the option, not the usage
        assert f"(default {DEFAULT_STARTUP_TIMEOUT_S:g})" in help_line and "DEFAULT_" not in text, (verb, help_line)


def test_a_second_run_or_cloud_into_the_same_workdir_refuses_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    from jqodi.app.run import LOCK_NAME, WorkdirLock

    wd = tmp_path / "wd"
    job_path = write_job(tmp_path)
    capsys.readouterr()
    # the holder: another process that took the workdir's lock and is still running
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from jqodi.app.run import WorkdirLock; "
                               f"WorkdirLock({str(wd)!r}, 'run').acquire(); print('held', flush=True); time.sleep(120)"],
                              env=_env(tmp_path), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        p = subprocess.run([sys.executable, "-m", "jqodi", "cloud", "--job", str(job_path), "--workdir", str(wd),
                            "--port", "1", "--startup-timeout", "1"], env=_env(tmp_path), capture_output=True,
                           text=True, timeout=300)
        err = [ln for ln in p.stderr.splitlines() if "error" in ln]
        assert p.returncode == 2 and len(err) == 1 and f"another 'jqodi run' (PID {holder.pid})" in err[0], p.stderr
        assert main(["run", str(tmp_path / "s.yaml"), "--workdir", str(wd), "--random-init", "--no-traces"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"(PID {holder.pid}) is running in this workdir" in err, err
    finally:
        holder.kill()
        holder.wait(timeout=10)
    # the holder died without releasing its lock: stale, taken over
    assert json.loads((wd / LOCK_NAME).read_text())["pid"] == holder.pid
    with WorkdirLock(wd, "cloud"):
        assert json.loads((wd / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (wd / LOCK_NAME).exists()


def test_the_cloud_asks_for_peers_only_once_it_listens(tmp_path):
    """A port in use: the error line alone, no 'job token written … give it to the edge and end'."""
    import socket

    job_path = write_job(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        p = subprocess.run([sys.executable, "-m", "jqodi", "cloud", "--job", str(job_path), "--workdir",
                            str(tmp_path / "wd"), "--host", "127.0.0.1", "--port", str(busy.getsockname()[1]),
                            "--startup-timeout", "5"], env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "error" in p.stderr, p.stderr
    assert "job token written" not in p.stdout + p.stderr and "give it to the edge" not in p.stdout + p.stderr


def test_epochs_the_closed_loop_adds_beyond_the_plan_carry_the_prediction_of_their_option(tmp_path, capsys):
    """A one-epoch plan whose target the first epochs miss: the closed loop adds epochs (and may move
    them to another cut); each shows the cost model's prediction of the option it ran on, as in
    'jqodi run' (it used to show '-' beyond the plan's epochs)."""
    import yaml

    from jqodi.core.scenario import load_scenario
    from jqodi.runtime.plan import predict_epoch

    path = scenario_file(tmp_path, [], target=2.2)  # random init starts near 2.30: needs a few epochs
    d = yaml.safe_load(path.read_text())
    for r in d["learning"]:
        r["epochs_expected"], r["epochs_robust"] = 1, 1  # plan one epoch
    path.write_text(yaml.safe_dump(d))
    job_path = tmp_path / "job.json"
    assert main(["run", str(path), "--write-job", str(job_path), "--no-emulate", "--random-init", "--no-traces",
                 "--meter", "null", "--timeout", "60"]) == 0
    capsys.readouterr()
    job = json.loads(job_path.read_text())
    assert sum(s["epochs"] for s in job["schedule"]) == 1
    wd = tmp_path / "wd"
    run_by_hand(tmp_path, job_path, job, wd)
    log = (tmp_path / "cloud.log").read_text()
    rec = json.loads((wd / "record.json").read_text())
    assert len(rec["epochs"]) > 1, log[-1500:]  # the closed loop added epochs beyond the plan's one
    sc = load_scenario(path)
    for e in rec["epochs"]:
        want = predict_epoch(sc, job["model"], job["bits"], e["cut"], e["edge"])
        assert e.get("predicted") is not None, (e["epoch"], log[-1500:])
        assert e["predicted"]["time_s"] == pytest.approx(want["time_s"]) and \
            e["predicted"]["energy_j"] == pytest.approx(want["energy_j"])
    rows = [r for r in log[log.index("per epoch"):log.index("time per phase")].splitlines()[2:] if r.strip()]
    assert len(rows) == len(rec["epochs"]) and not any(r.split()[3] == "-" for r in rows), log[-1500:]
    assert "predicted '-'" not in log
    assert "epoch 2 (plan: 1) [" in log and "epoch 2/1" not in log, log[-1500:]  # not 'epoch 2/1'


def test_predictions_per_option_and_the_line_when_a_job_lacks_them(tmp_path, capsys):
    from jqodi.app.run import controller_from_job, job_predictions, unpredicted_note
    from jqodi.core.scenario import load_scenario
    from jqodi.runtime.job import Job
    from jqodi.runtime.plan import predict_epoch
    from jqodi.runtime.record import RunRecord

    job = Job.from_dict(json.loads(write_job(tmp_path).read_text()))
    sc = load_scenario(tmp_path / "s.yaml")
    ctl, _ = controller_from_job(job, "job.json")
    options = [(o.edge, o.cut) for o in ctl.table.cand(ctl.key).options]
    planned = {(s.edge, s.cut) for s in job.schedule}
    assert set(options) - planned, "the test needs an option outside the plan"
    predicted = job_predictions(job, job.closed_loop)
    for edge, cut in options:  # every option the controller may move an epoch to
        assert predicted(edge, cut)["time_s"] == pytest.approx(predict_epoch(sc, job.model, job.bits, cut, edge)["time_s"])
    old = {k: v for k, v in job.closed_loop.items() if k != "predictions"}  # a block written before them
    edge, cut = next(o for o in options if o not in planned)
    assert job_predictions(job, old)(edge, cut) is None and job_predictions(job, old)(*next(iter(planned))) is not None
    rec = RunRecord(job={}, epochs=[{"epoch": 1, "predicted": {}}, {"epoch": 2}, {"epoch": 3}])
    note = unpredicted_note(rec)
    assert note.startswith("predicted '-' for epoch(s) 2, 3:") and "--write-job" in note
    assert unpredicted_note(RunRecord(job={}, epochs=[{"epoch": 1, "predicted": {}}])) is None


def test_the_cloud_refuses_a_closed_loop_made_for_another_plan_and_keeps_off_edges_without_a_process(tmp_path):
    from jqodi.app.run import controller_from_job
    from jqodi.core.instance import ScheduleEntry
    from jqodi.errors import JqodiError
    from jqodi.runtime.job import Job

    job = Job.from_dict(json.loads(write_job(tmp_path).read_text()))
    ctl, line = controller_from_job(job, "job.json")
    assert not ctl.edges_down and "never onto" not in line
    # edited after --write-job: other bits, or another schedule, under the same block
    for edited in (job.replace(bits=8 if job.bits != 8 else 4),
                   job.replace(schedule=[ScheduleEntry(s.edge, s.cut, s.epochs + 1) for s in job.schedule])):
        with pytest.raises(JqodiError, match=r"^job.json: closed_loop: its controller was made for lenet@"):
            controller_from_job(edited, "job.json")
    # an edge taken out of the job by hand has no process: the controller never moves an epoch onto it
    spare = [e for e in job.edges if e not in {s.edge for s in job.schedule}]
    assert spare, "the test needs a standby edge"
    fewer = job.replace(standby_edges=[e for e in job.standby_edges if e != spare[0]],
                        inference_edges=[e for e in job.inference_edges if e != spare[0]])
    ctl, line = controller_from_job(fewer, "job.json")
    assert ctl.edges_down == {spare[0]} and f"never onto {spare[0]} (no process in the job)" in line


def test_the_cloud_started_alone_waits_for_every_edge_of_the_job_and_names_the_missing(tmp_path, capsys):
    """A job by hand cannot run over an edge nobody started: the cloud admits exactly the job's roles
    (the plan's edges and the standby ones a re-plan may use) and fails at its start-up timeout naming
    those that did not join. And --policy beside --controller is refused (one line)."""
    from jqodi.runtime.launch import free_port

    job_path = write_job(tmp_path)
    capsys.readouterr()
    job = json.loads(job_path.read_text())
    p = subprocess.run([sys.executable, "-m", "jqodi", "cloud", "--job", str(job_path), "--workdir", str(tmp_path / "wd"),
                        "--host", "127.0.0.1", "--port", str(free_port("127.0.0.1")), "--startup-timeout", "2"],
                       env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    err = [ln for ln in p.stderr.splitlines() if "error" in ln]
    assert p.returncode == 2 and len(err) == 1, p.stdout + p.stderr
    assert all(f"edge:{e}" in err[0] for e in job["edges"]) and "did not join" in err[0], err[0]
    ctl = tmp_path / "controller.json"
    ctl.write_text(json.dumps(job["closed_loop"]["controller"]))
    p = subprocess.run([sys.executable, "-m", "jqodi", "cloud", "--job", str(job_path), "--workdir", str(tmp_path / "wd"),
                        "--controller", str(ctl), "--policy", "static"], env=_env(tmp_path), capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "give one of them" in p.stderr, p.stderr
