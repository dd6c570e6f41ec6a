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
    env.update(JQODI_HOME=str(tmp_path / "home"), JQODI_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def test_a_job_started_by_hand_stops_at_the_target_before_its_last_planned_epoch(tmp_path, capsys):
    from jqodi.runtime.auth import new_secret, write_token_file
    from jqodi.runtime.launch import free_port

    job_path = write_job(tmp_path)
    out = capsys.readouterr().out
    job = json.loads(job_path.read_text())
    planned = sum(s["epochs"] for s in job["schedule"])
    assert planned > 1 and job["closed_loop"]["policy"] == "replan"
    assert "closed loop: policy replan" in out and all(e in out for e in job["edges"])

    token = write_token_file(tmp_path / "job.token", new_secret())
    wd = tmp_path / "wd"
    conn = ["--host", "127.0.0.1", "--port", str(free_port("127.0.0.1")), "--timeout", "60",
            "--startup-timeout", "120", "--token-file", str(token)]
    py = [sys.executable, "-m", "jqodi"]
    procs: dict[str, subprocess.Popen] = {}

    def start(name: str, args: list[str]) -> None:
        with open(tmp_path / f"{name}.log", "w") as log:
            procs[name] = subprocess.Popen(py + args + conn, env=_env(tmp_path), stdout=log, stderr=subprocess.STDOUT)

    try:
        start("cloud", ["cloud", "--job", str(job_path), "--workdir", str(wd)])
        for e in job["edges"]:
            start(f"edge-{e}", ["edge", "--name", e])
        start("end", ["end"])
        deadline = time.monotonic() + 400
        for name, p in procs.items():
            rc = p.wait(timeout=max(1.0, deadline - time.monotonic()))
            assert rc == 0, f"{name}: {(tmp_path / f'{name}.log').read_text()[-1500:]}"
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.kill(p.pid, 9)
                p.wait(timeout=10)
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
