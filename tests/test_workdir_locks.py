"""One job per workdir for the main job (jqodi demo) and a fleet run (jqodi run FLEET.yaml, the
demo's fleet section), as for 'jqodi run' and 'jqodi cloud' (tests/test_by_hand_closed_loop.py).

Why they need it: the main job deletes the workdir's checkpoint, epochs and record before it runs
the plan, and a fleet run removes the workdir's per-device records at its start, so a second job
in the same workdir would destroy the first one's while it runs. The holder here is another
process that took the lock and sleeps; it is ended by its PID. The heavy steps after the lock are
replaced by a sentinel, so a job that does not take the lock fails on the sentinel instead.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jqodi.errors import JqodiError


class Reached(Exception):
    """The job got past the point where it should have taken the workdir's lock."""


def _reached(*a, **k):
    raise Reached()


@pytest.fixture
def holder(tmp_path):
    wd = tmp_path / "wd"
    env = {**os.environ, "JQODI_HOME": str(tmp_path / "home")}
    p = subprocess.Popen([sys.executable, "-c", "import time; from jqodi.app.run import WorkdirLock; "
                          f"WorkdirLock({str(wd)!r}, 'run').acquire(); print('held', flush=True); time.sleep(120)"],
                         env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        yield wd, p.pid
    finally:
        p.kill()
        p.wait(timeout=10)


def test_the_main_job_refuses_a_workdir_another_job_holds(holder, monkeypatch):
    import jqodi.app.main_job as mj

    wd, pid = holder
    monkeypatch.setattr(mj, "pretrain", _reached)  # step 1, right after the scenario is loaded
    with pytest.raises(JqodiError, match=rf"another 'jqodi run' \(PID {pid}\) is running in this workdir"):
        mj.main_job(mj.MainJobConfig(workdir=wd), say=lambda line: None)
    with pytest.raises(Reached):  # a free workdir: it runs (and leaves no lock behind when it fails)
        mj.main_job(mj.MainJobConfig(workdir=wd.parent / "free"), say=lambda line: None)
    assert not (wd.parent / "free" / "jqodi.lock").exists()


def test_a_fleet_run_refuses_a_workdir_another_job_holds(holder, monkeypatch):
    import jqodi.runtime.fleet_launch as fl
    from jqodi.app.fleet_run import FleetRunOptions, fleet_demo_path, run_fleet_scenario

    wd, pid = holder
    monkeypatch.setattr(fl, "run_fleet", _reached)
    opts = FleetRunOptions(workdir=wd, max_epochs=1, train_size=64, val_size=32, dilation=10.0, random_init=True,
                           trace_store=None)
    with pytest.raises(JqodiError, match=rf"another 'jqodi run' \(PID {pid}\) is running in this workdir"):
        run_fleet_scenario(fleet_demo_path(), opts, say=lambda line: None)
    free = Path(wd.parent / "free")
    with pytest.raises(Reached):
        run_fleet_scenario(fleet_demo_path(), FleetRunOptions(**{**opts.__dict__, "workdir": free}), say=lambda line: None)
    assert not (free / "jqodi.lock").exists()


def test_the_lock_stays_held_while_the_cloud_of_a_killed_run_still_writes_the_workdir(tmp_path):
    """'jqodi run' starts its roles in their own sessions: killed (SIGKILL), it leaves them running
    the job to its end, writing the workdir's checkpoint and epochs. The cloud joins its parent's lock,
    so a second run refuses until the cloud has ended too (it took the lock over before)."""
    from jqodi.app.run import WorkdirLock

    wd = tmp_path / "wd"
    env = {**os.environ, "JQODI_HOME": str(tmp_path / "home")}
    # the parent takes the lock and starts a 'cloud' that acquires it as 'jqodi cloud' does
    cloud = ("import time; from jqodi.app.run import WorkdirLock; "
             f"WorkdirLock({str(wd)!r}, 'cloud').acquire(); print('joined', flush=True); time.sleep(120)")
    run = ("import subprocess, sys, time; from jqodi.app.run import WorkdirLock; "
           f"WorkdirLock({str(wd)!r}, 'run').acquire(); "
           f"c = subprocess.Popen([sys.executable, '-c', {cloud!r}], stdout=subprocess.PIPE, text=True, "
           "start_new_session=True); assert c.stdout.readline().strip() == 'joined'; "
           "print(c.pid, flush=True); time.sleep(120)")
    parent = subprocess.Popen([sys.executable, "-c", run], env=env, stdout=subprocess.PIPE, text=True)
    cloud_pid = None
    try:
        cloud_pid = int(parent.stdout.readline())
        parent.kill()  # the run is killed; its cloud goes on
        parent.wait(timeout=10)
        with pytest.raises(JqodiError, match=rf"another 'jqodi run' \(PID {cloud_pid}\) is running in this workdir"):
            WorkdirLock(wd, "run").acquire()
        os.kill(cloud_pid, 9)
        for _ in range(100):  # ended: gone from /proc, or a zombie its new parent has not reaped
            try:
                if open(f"/proc/{cloud_pid}/stat").read().rsplit(") ", 1)[1][0] in "ZX":
                    break
            except OSError:
                break
            time.sleep(0.05)
        lock = WorkdirLock(wd, "run").acquire()  # both ended: stale, taken over
        assert lock.held
        lock.release()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)
        if cloud_pid is not None:
            try:
                os.kill(cloud_pid, 9)
            except ProcessLookupError:
                pass
