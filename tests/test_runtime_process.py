"""Runtime as separate processes over gloo: failures are detected and named, resume loses nothing.

Each test starts the cloud, edge and end processes on loopback with a short failure (silence)
timeout, a start-up timeout long enough for a loaded machine, and a small model; kills or stops
one of them by PID mid-epoch, and kills every process it started (by PID) in a finally block.
Bounded: the failing run ends within the failure timeout plus a grace period, every run within
``wall_limit_s``. How to run them under load: docs/runtime.md ("Testing under load").
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from jqodi.errors import RuntimeFailure
from jqodi.runtime.job import Job
from jqodi.runtime.launch import run_job

pytestmark = pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir()
                                and not os.environ.get("JQODI_DATA_DIR"), reason="Fashion-MNIST not installed")

TIMEOUT_S = 4.0          # failure detection: short, so the kill tests end quickly
STARTUP_TIMEOUT_S = 45.0  # rendezvous + process group: importing torch in 4 processes on 2 busy cores
# A safety net only (what is tested are the detection bounds above): a whole run, start-up included,
# took over 60 s at load average 10-14; two runs per test stay under pytest's 300 s timeout.
WALL_LIMIT_S = 120.0


def _job(**kw) -> Job:
    d = {"model": "lenet", "bits": 4, "width": 0.125,
         "schedule": [{"edge": "a", "cut": 1, "epochs": 2}, {"edge": "b", "cut": 2, "epochs": 1}],
         "data": {"train_size": 512, "val_size": 64}, "pretrained": {"source": "random"},
         "training": {"batch_size": 32, "wire_act_bits": 8, "wire_grad_bits": 8},
         "timeout_s": TIMEOUT_S, "startup_timeout_s": STARTUP_TIMEOUT_S, "meter": "null"}
    d.update(kw)
    return Job.from_dict(d)


class _Killer:
    """Once ``after`` epochs are checkpointed and the next one is under way, signal ``role`` by PID."""

    def __init__(self, workdir: Path, role: str, sig: int, after: int = 1):
        self.workdir, self.role, self.sig, self.after = workdir, role, sig, after
        self.procs = {}
        self.fired_at: float | None = None
        self.done = threading.Event()

    def on_start(self, procs):
        self.procs = procs
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self):
        path = self.workdir / "epochs.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self.done.is_set():
            try:
                if json.loads(path.read_text())["completed"] >= self.after:
                    time.sleep(0.05)  # the next epoch has begun (it lasts ≥ 0.2 s even on a fast host)
                    os.kill(self.procs[self.role].pid, self.sig)
                    self.fired_at = time.monotonic()
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)

    def cleanup(self):
        self.done.set()
        for p in self.procs.values():
            p.kill()


def _run_until_killed(job, tmp_path, killer: _Killer) -> tuple[RuntimeFailure, float]:
    """Run ``job`` while ``killer`` signals its role; the failure raised and when it surfaced."""
    try:
        with pytest.raises(RuntimeFailure) as e:
            run_job(job, workdir=tmp_path, on_start=killer.on_start, say=lambda s: None, wall_limit_s=WALL_LIMIT_S)
        detected = time.monotonic()
    finally:
        killer.cleanup()
    assert killer.fired_at is not None, "the role was never signalled"
    return e.value, detected


def test_end_device_killed_mid_epoch_is_named_then_resume_loses_nothing(tmp_path):
    """SIGKILL the end process during epoch 2: the run fails naming 'end' within the timeout;
    ``resume`` continues after epoch 1 and ends with the same model as an uninterrupted run."""
    job = _job()
    killer = _Killer(tmp_path, "end", signal.SIGKILL)
    err, detected = _run_until_killed(job, tmp_path, killer)
    assert err.peer == "end" and "end" in str(err) and "\n" not in str(err)
    assert detected - killer.fired_at < TIMEOUT_S + 6
    done = json.loads((tmp_path / "epochs.json").read_text())["completed"]
    assert done == 1
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["status"] == "failed" and len(record["epochs"]) == 1

    lines: list[str] = []
    resumed = run_job(job, workdir=tmp_path, resume=True, say=lines.append, wall_limit_s=WALL_LIMIT_S)
    assert any("resuming after epoch 1/3" in s for s in lines)
    assert [e["epoch"] for e in resumed.epochs] == [1, 2, 3]

    # privacy, across processes: nothing the cloud or an edge process received is image-shaped
    logs = {p.name: json.loads(p.read_text()) for p in tmp_path.glob("messages-*.json")}
    assert {"messages-cloud.json", "messages-edge-a.json", "messages-edge-b.json"} <= set(logs)
    received = [m for name, log in logs.items() if name != "messages-end.json"
                for m in log["messages"] if m["direction"] == "recv"]
    assert {m["kind"] for m in received} >= {"act", "val_act", "shallow_back", "model_back"}
    for m in received:
        for _, shape, _ in m["tensors"]:
            assert tuple(shape[-3:]) != tuple(job.input_shape), m

    # the uninterrupted run, in one process: same weights at the end (deterministic protocol)
    from jqodi.runtime.local import run_inprocess
    from jqodi.runtime.process import initial_master

    torch.set_num_threads(1)
    master = initial_master(job)
    full = run_inprocess(job, master).state.epochs
    assert resumed.epochs[-1]["val_loss"] == pytest.approx(full[-1]["val_loss"], rel=1e-4)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ck["epoch"] == 3
    for k, v in master.state_dict().items():
        torch.testing.assert_close(ck["master"][k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_edge_that_hangs_mid_epoch_is_named_within_the_timeout(tmp_path):
    """SIGSTOP the edge during epoch 2 (a hang: no crash, no heartbeats): the others notice
    within the timeout and the failure names the edge."""
    job = _job(schedule=[{"edge": "a", "cut": 2, "epochs": 3}])
    killer = _Killer(tmp_path, "edge:a", signal.SIGSTOP)
    err, detected = _run_until_killed(job, tmp_path, killer)
    assert err.peer == "edge:a", str(err)
    assert "edge:a" in str(err) and "timeout" in str(err)
    # silence is counted from the last message (heartbeats every timeout/5 = 0.8 s), so at least
    # timeout - 0.8 s pass between the stop and the detection
    assert TIMEOUT_S - 1.0 < detected - killer.fired_at < TIMEOUT_S + 6


def test_edge_killed_mid_epoch_is_named_then_resume_completes(tmp_path):
    job = _job(schedule=[{"edge": "a", "cut": 1, "epochs": 3}])
    killer = _Killer(tmp_path, "edge:a", signal.SIGKILL)
    err, detected = _run_until_killed(job, tmp_path, killer)
    assert err.peer == "edge:a" and "edge:a" in str(err)
    assert detected - killer.fired_at < TIMEOUT_S + 6
    # resume, then serve inference from the same processes (SD + the edge, and SD alone)
    resumed = run_job(job.replace(inference_requests=8), workdir=tmp_path, resume=True, say=lambda s: None,
                      wall_limit_s=WALL_LIMIT_S)
    assert [e["epoch"] for e in resumed.epochs] == [1, 2, 3] and resumed.status == "completed"
    assert [(r["edge"], r["requests"]) for r in resumed.inference] == [("a", 8), (None, 8)]
    assert all(r["latency_p50_s"] > 0 for r in resumed.inference)


def test_a_role_waits_for_the_startup_timeout_not_the_failure_timeout(tmp_path):
    """An end device started with no cloud fails after ``--startup-timeout`` (not ``--timeout``),
    in one line naming the start-up timeout, exit code 2."""
    from jqodi.runtime.launch import free_port

    argv = [sys.executable, "-m", "jqodi", "end", "--port", str(free_port()), "--timeout", "600",
            "--startup-timeout", "2"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
    assert p.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "start-up timeout of 2 s" in lines[0], err
