"""Who may join a job and what a peer may send (runtime/auth.py, runtime/messages.py).

Loopback only, bounded in time: every store and process is local and every wait has a timeout;
processes are killed by PID in ``finally`` blocks.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from jqodi.errors import RuntimeFailure
from jqodi.runtime.auth import (AuthRefused, Gatekeeper, JobSecret, join_job, load_secret, new_secret,
                                write_token_file)
from jqodi.runtime.job import Job
from jqodi.runtime.messages import ProtocolViolation, check_header, checked_cut, message_limits
from jqodi.runtime.transport import GlooTransport, InProcessHub, InProcessTransport, encode_message

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _stores():
    import torch.distributed as dist

    master = dist.TCPStore("127.0.0.1", 0, None, True, timedelta(seconds=10), wait_for_workers=False)
    def client():
        return dist.TCPStore("127.0.0.1", master.port, None, False, timedelta(seconds=10))
    return master, client


def _tiny_job(**kw) -> Job:
    d = {"model": "lenet", "bits": 4, "width": 0.125, "schedule": [{"edge": "a", "cut": 1, "epochs": 1}],
         "training": {"batch_size": 16, "eval_batch_size": 16}, "timeout_s": 5, "meter": "null"}
    d.update(kw)
    return Job.from_dict(d)


# --- admission ---------------------------------------------------------------------------------------

def test_strangers_are_refused_and_the_real_peers_then_join():
    master, client = _stores()
    secret = new_secret()
    gate = Gatekeeper(client(), secret, ["end", "edge:a"])
    # an old generation's valid request, replayed into this one
    old_master, old_client = _stores()
    old_gate = Gatekeeper(old_client(), secret, ["end"])
    old_admit = threading.Thread(target=old_gate.admit_all, args=(5,))
    old_admit.start()
    join_job(old_client(), secret, "end", 5)
    old_admit.join(timeout=10)
    old_req = old_client().get("auth/v1/end/req/1")

    outcome: dict[str, object] = {}

    def attempt(name, role, sec, raw=None):
        try:
            if raw is not None:  # write a captured request verbatim as a fresh attempt
                store = client()
                k = int(store.add(f"auth/v1/{role}/attempts", 1))
                store.set(f"auth/v1/{role}/req/{k}", raw)
                deadline = time.monotonic() + 5
                while not store.check([f"auth/v1/{role}/resp/{k}"]) and time.monotonic() < deadline:
                    time.sleep(0.02)
                outcome[name] = json.loads(store.get(f"auth/v1/{role}/resp/{k}"))
            else:
                outcome[name] = join_job(client(), sec, role, 5)
        except AuthRefused as e:
            outcome[name] = e

    admit = threading.Thread(target=gate.admit_all, args=(10,))
    admit.start()
    for name, role, sec, raw in [("wrong", "edge:a", JobSecret("f" * 64), None), ("none", "edge:a", None, None),
                                 ("replay", "end", None, old_req)]:
        attempt(name, role, sec, raw)
    assert "wrong or missing job token" in str(outcome["wrong"]) and "\n" not in str(outcome["wrong"])
    assert "no job token" in str(outcome["none"])
    assert outcome["replay"] == {"ok": False, "reason": "wrong or missing job token"}
    assert not gate.admitted  # the job is untouched: nobody got in
    attempt("edge", "edge:a", secret)
    attempt("end", "end", secret)
    admit.join(timeout=10)
    assert gate.admitted == {"end", "edge:a"}
    assert outcome["edge"] == outcome["end"] == gate.session_prefix

    # the same request once more within this generation, and a second claimant with the token
    gate.keep_refusing()
    try:
        first = client().get("auth/v1/end/req/2")
        attempt("again", "end", None, first)
        assert outcome["again"]["ok"] is False and "replayed" in outcome["again"]["reason"]
        attempt("second", "edge:a", secret)
        assert "already joined" in str(outcome["second"])
        attempt("unknown", "edge:zz", secret)
        assert "not part of this job" in str(outcome["unknown"])
    finally:
        gate.stop()
    # refused by the cloud: wrong token, the old generation's replay, this one's replay, the second
    # claimant (no token and an unknown role are refused before anything reaches the cloud)
    assert [r for r, _ in gate.refused] == ["edge:a", "end", "end", "edge:a"]


def test_a_rendezvous_that_does_not_know_the_token_cannot_admit_anyone():
    master, client = _stores()
    fake = client()
    fake.set("auth/v1/roles", json.dumps(["end"]))
    fake.set("auth/v1/nonce", "0" * 32)

    def answer():  # say yes to anything, without the secret
        deadline = time.monotonic() + 5
        while not fake.check(["auth/v1/end/req/1"]) and time.monotonic() < deadline:
            time.sleep(0.02)
        fake.set("auth/v1/end/resp/1", json.dumps({"ok": True, "mac": "00" * 32}))

    threading.Thread(target=answer, daemon=True).start()
    with pytest.raises(AuthRefused, match="without knowing the job token"):
        join_job(client(), new_secret(), "end", 5)


def test_token_sources_and_file_mode(tmp_path, monkeypatch):
    secret = new_secret()
    path = write_token_file(tmp_path / "job.token", secret)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert load_secret(path).token() == secret.token()
    assert secret.token() not in repr(secret) and secret.token() not in str(secret)
    monkeypatch.setenv("JQODI_JOB_TOKEN", secret.token())
    assert load_secret(None).token() == secret.token()
    (tmp_path / "short").write_text("abc")
    with pytest.raises(Exception, match="too short"):
        load_secret(tmp_path / "short")


# --- bounded, validated messages ---------------------------------------------------------------------

def _pair(limits, secret=None):
    hub = InProcessHub()
    a = InProcessTransport(hub, "edge:a", ["edge:a", "end"], timeout_s=5, heartbeat_s=10, limits=limits,
                           secret=secret).start()
    b = InProcessTransport(hub, "end", ["edge:a", "end"], timeout_s=5, heartbeat_s=10, limits=limits,
                           secret=secret).start()
    return a, b


def test_wrong_dtype_unknown_kind_and_wrong_shape_are_refused_by_name():
    job = _tiny_job()
    limits = message_limits(job)
    per_sample = limits.cut_shapes[1]
    a, b = _pair(limits)
    b.send("edge:a", "act", {"x": torch.zeros(4, *per_sample, dtype=torch.float64), "y": torch.zeros(4).long()})
    with pytest.raises(ProtocolViolation, match=r"'end'.*act\.x: dtype torch\.float64") as e:
        a.recv("end", "act")
    assert e.value.peer == "end"

    a, b = _pair(limits)
    b.send("edge:a", "gimme_weights")
    with pytest.raises(ProtocolViolation, match="unknown kind 'gimme_weights'"):
        a.recv("end")

    a, b = _pair(limits)
    b.send("edge:a", "act", {"x": torch.zeros(4, 3, 3, 3), "y": torch.zeros(4).long()})
    msg = a.recv("end", "act")
    with pytest.raises(ProtocolViolation, match=r"per-sample shape \(3, 3, 3\) at cut 1"):
        checked_cut(msg, limits, 1)
    b.send("edge:a", "act", {"x": torch.zeros(limits.max_batch + 1, *per_sample), "y": torch.zeros(1).long()})
    with pytest.raises(ProtocolViolation, match="batch of"):
        checked_cut(a.recv("end", "act"), limits, 1)


def test_truncated_bodies_and_oversized_lengths_are_refused_before_allocating():
    limits = message_limits(_tiny_job())
    buf = encode_message("act", {}, {"x": torch.zeros(2, *limits.cut_shapes[1]), "y": torch.zeros(2).long()})
    check_header(buf, "end", limits)
    with pytest.raises(ProtocolViolation, match="truncated body"):
        check_header(buf[:-9], "end", limits)
    with pytest.raises(ProtocolViolation, match="beyond its tensors"):
        check_header(buf + b"\0" * 3, "end", limits)
    big = encode_message("act", {}, {"x": torch.zeros(1), "y": torch.zeros(1).long()})
    with pytest.raises(ProtocolViolation, match="beyond the job's limit"):
        check_header(big + b"\0" * limits.max_message_bytes, "end", limits)

    class _FakeGloo:  # a peer whose length header claims a terabyte
        def recv(self, tensors, rank, tag):
            tensors[0].fill_(1 << 40)

            class _W:
                def wait(self, *a):
                    return True
            return _W()

    t = GlooTransport(_FakeGloo(), "edge:a", {"edge:a": 2, "end": 1}, timeout_s=5, limits=limits)
    t._receive_loop("end")  # returns at once: nothing allocated, the violation queued
    with pytest.raises(ProtocolViolation, match=r"'end'.*length header 1099511627776 B") as e:
        t.recv("end")
    assert e.value.peer == "end"


def test_message_integrity_tags_catch_altered_and_replayed_messages():
    limits = message_limits(_tiny_job())
    secret = new_secret()
    a, b = _pair(limits, secret)
    b.send("edge:a", "ready")
    assert a.recv("end", "ready").kind == "ready"
    # a frame from b, then the same frame again (a replay) and an altered one
    frames = []
    b._send_bytes = lambda dst, buf: frames.append(buf)
    b.send("edge:a", "ready")
    a._deliver("end", frames[0])
    a.recv("end", "ready")
    a._deliver("end", frames[0])
    with pytest.raises(ProtocolViolation, match="integrity check"):
        a.recv("end")
    a2, b2 = _pair(limits, secret)
    frames.clear()
    b2._send_bytes = lambda dst, buf: frames.append(buf)
    b2.send("edge:a", "ready", note="x")
    altered = bytearray(frames[0])
    altered[10] ^= 1
    a2._deliver("end", bytes(altered))
    with pytest.raises(ProtocolViolation, match="integrity check"):
        a2.recv("end")


def test_a_bad_activation_mid_run_fails_by_name_and_resume_loses_nothing(tmp_path, monkeypatch):
    """The end device sends a wrong-shaped activation in epoch 2: the edge refuses it naming 'end',
    the cloud keeps epoch 1's checkpoint, and a resumed run ends exactly like an undisturbed one."""
    from torch.utils.data import TensorDataset

    from jqodi.runtime.roles.base import _Role
    from jqodi.runtime.launch import run_job

    g = torch.Generator().manual_seed(0)

    class _Data:
        train = TensorDataset(torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g))
        val = TensorDataset(torch.randn(20, 1, 28, 28, generator=g), torch.randint(0, 10, (20,), generator=g))

    job = _tiny_job(schedule=[{"edge": "a", "cut": 2, "epochs": 3}], pretrained={"source": "random", "seed": 3})
    real = _Role.send_cut
    calls = {"n": 0}

    def bad_send_cut(self, dst, kind, x, bits, extra=None, **meta):
        if kind == "act" and self.t.me == "end":
            calls["n"] += 1
            if calls["n"] == 5:  # epoch 2 (4 batches an epoch): a tensor of another shape
                x = torch.zeros(x.shape[0], 3, 2, 2)
        return real(self, dst, kind, x, bits, extra, **meta)

    monkeypatch.setattr(_Role, "send_cut", bad_send_cut)
    with pytest.raises(RuntimeFailure) as e:
        run_job(job, transport="inprocess", workdir=tmp_path, data=_Data, say=lambda s: None)
    assert e.value.peer == "end" and "per-sample shape" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setattr(_Role, "send_cut", real)
    assert json.loads((tmp_path / "epochs.json").read_text())["completed"] == 1
    resumed = run_job(job, transport="inprocess", workdir=tmp_path, data=_Data, resume=True, say=lambda s: None)
    straight = run_job(job, transport="inprocess", workdir=tmp_path / "b", data=_Data, say=lambda s: None)
    assert [x["val_loss"] for x in resumed.epochs] == pytest.approx([x["val_loss"] for x in straight.epochs],
                                                                     rel=1e-5)


# --- across processes ------------------------------------------------------------------------------

@pytest.mark.skipif(not FMNIST.is_dir() and not os.environ.get("JQODI_DATA_DIR"), reason="Fashion-MNIST not installed")
def test_deployment_refuses_strangers_and_a_second_claimant_and_never_leaks_the_token(tmp_path):
    from jqodi.runtime.launch import free_port

    job = Job.from_dict({"model": "lenet", "bits": 4, "width": 0.125,
                         "schedule": [{"edge": "a", "cut": 1, "epochs": 3}],
                         "data": {"train_size": 256, "val_size": 64}, "pretrained": {"source": "random"},
                         "training": {"batch_size": 32}, "timeout_s": 60, "meter": "null"})
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "job.json").write_text(json.dumps(job.to_dict()))
    secret = new_secret()
    token_file = write_token_file(tmp_path / "job.token", secret)
    wrong_file = write_token_file(tmp_path / "wrong.token", new_secret())
    port = free_port("127.0.0.1")
    env = {k: v for k, v in os.environ.items() if k != "JQODI_JOB_TOKEN"}
    env.update(JQODI_HOME=str(tmp_path / "home"), JQODI_THREADS="1", PYTHONUNBUFFERED="1")
    conn = ["--host", "127.0.0.1", "--port", str(port), "--timeout", "60"]
    py = [sys.executable, "-m", "jqodi"]
    procs: list[subprocess.Popen] = []
    outputs: list[str] = []

    def start(args, name):
        out = open(tmp_path / f"{name}.log", "w")
        p = subprocess.Popen(py + args + conn, env=env, stdout=out, stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    def wait_line(name, text, timeout_s=60):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in (tmp_path / f"{name}.log").read_text():
                return
            time.sleep(0.05)
        raise AssertionError(f"{name} never said {text!r}: {(tmp_path / f'{name}.log').read_text()[-500:]}")

    ps_seen = ""
    try:
        cloud = start(["cloud", "--job", str(wd / "job.json"), "--workdir", str(wd), "--token-file", str(token_file)],
                      "cloud")
        for name, extra, why in [("wrong", ["--token-file", str(wrong_file)], "wrong or missing job token"),
                                 ("none", [], "no job token")]:
            p = start(["edge", "--name", "a"] + extra, name)
            assert p.wait(timeout=60) == 2
            err = (tmp_path / f"{name}.log").read_text().strip()
            assert why in err and len(err.splitlines()) == 1, err
        assert cloud.poll() is None  # the job is untouched, still waiting for the real peers
        edge = start(["edge", "--name", "a", "--token-file", str(token_file)], "edge")
        end = start(["end", "--token-file", str(token_file)], "end")
        wait_line("cloud", "admitted edge:a")
        wait_line("cloud", "admitted end")
        ps_seen = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, timeout=10).stdout
        # hold the run (the end device paused, well within the 60 s failure timeout) while a second
        # process with the right token claims the edge's role
        os.kill(end.pid, signal.SIGSTOP)
        try:
            second = start(["edge", "--name", "a", "--token-file", str(token_file)], "second")
            assert second.wait(timeout=50) == 2
        finally:
            os.kill(end.pid, signal.SIGCONT)
        assert "already joined" in (tmp_path / "second.log").read_text()
        for p in (cloud, edge, end):
            assert p.wait(timeout=180) == 0, (tmp_path / "cloud.log").read_text()[-800:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    token = secret.token()
    assert token not in ps_seen
    for f in list(tmp_path.rglob("*")):
        if f.is_file() and f != token_file:
            assert token.encode() not in f.read_bytes(), f
    # the same final weights as an undisturbed run
    from jqodi.runtime.local import run_inprocess
    from jqodi.runtime.process import initial_master

    torch.set_num_threads(1)
    master = initial_master(job)
    run_inprocess(job, master)
    ck = torch.load(wd / "checkpoint.pt", weights_only=False)
    for k, v in master.state_dict().items():
        torch.testing.assert_close(ck["master"][k], v, rtol=1e-4, atol=1e-5, msg=k)
