"""The rendezvous as a user meets it: a role pointed at the wrong port stops within its start-up
timeout, in one line, instead of waiting forever."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_port_that_accepts_but_never_answers_is_one_line_within_the_startup_timeout(tmp_path):
    """Something else listens on the port (a web server waiting for its request line, a hung
    process): torch's TCPStore client connects, then waits for a handshake reply without any
    timeout. ``jqodi end --startup-timeout 2`` must still end, exit 2, one line naming the port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)   # the kernel accepts connections into the backlog; nobody ever answers
    port = listener.getsockname()[1]
    env = dict(os.environ, JQODI_HOME=str(tmp_path / "home"),
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    (tmp_path / "job.token").write_text("0" * 64)
    try:
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "jqodi", "end", "--port", str(port), "--startup-timeout", "2",
                            "--token-file", str(tmp_path / "job.token")],
                           capture_output=True, text=True, timeout=150, env=env, cwd=tmp_path)
        took = time.monotonic() - t0
    finally:
        listener.close()
    err = p.stderr.strip()
    assert p.returncode == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.count(f"127.0.0.1:{port}") == 1 and "does not answer as a jqodi cloud" in err, err
    # start-up timeout 2 s + 5 s of grace; the rest is importing torch on a loaded host
    assert took < 120, took


def test_a_cloud_whose_port_is_taken_says_so_in_one_line_and_keeps_the_record(tmp_path):
    """``jqodi cloud`` on a port in use: the error line alone (no empty run report before it), exit 2,
    and the failed run's record.json still written."""
    from jqodi.cli import main

    job = tmp_path / "job.json"
    assert main(["run", str(REPO / "examples/cpu-demo.yaml"), "--random-init", "--no-emulate", "--quiet",
                 "--write-job", str(job)]) == 0
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    env = dict(os.environ, JQODI_HOME=str(tmp_path / "home"),
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    try:
        p = subprocess.run([sys.executable, "-m", "jqodi", "cloud", "--job", str(job), "--workdir", str(tmp_path / "wd"),
                            "--port", str(taken.getsockname()[1]), "--startup-timeout", "5"],
                           capture_output=True, text=True, timeout=150, env=env, cwd=tmp_path)
    finally:
        taken.close()
    assert p.returncode == 2, p.stderr
    lines = [s for s in p.stderr.strip().splitlines() if "EMULATION" not in s]
    assert len(lines) == 1 and "Address already in use" in lines[0] and "Traceback" not in p.stderr, p.stderr
    assert "per epoch" not in p.stdout and "(no epoch completed)" not in p.stdout, p.stdout
    assert (tmp_path / "wd" / "record.json").is_file()
