"""A peer stopped (SIGSTOP) for longer than every timeout must not take the others' connections
with it: gloo closes all pairs of a process when any wait on it times out (the "Application
timeout caused pair closure" seen once in a long ``jqodi run`` at dilation ×170, an edge away
for 255 s of wall time). Three processes over gloo: cloud ↔ a keep talking while b is stopped,
then b answers."""
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

# the transport's silence timeout: 4 s as in test_runtime_process (2 s is short on a loaded 2-core
# host); b is stopped 2 × it + 8 s (gloo's old receive wait + 3 s)
TIMEOUT_S = 4.0
NAMES = {"cloud": 0, "a": 1, "b": 2}


def _role(rank: int, port: int, ready: Path) -> None:
    import torch.distributed as dist

    from jqodi.runtime.transport.gloo import GlooTransport

    me = next(n for n, r in NAMES.items() if r == rank)
    store = dist.TCPStore("127.0.0.1", port, 3, rank == 0, timeout=timedelta(seconds=120))
    pg = dist.ProcessGroupGloo(store, rank, 3, timedelta(seconds=120))
    t = GlooTransport(pg, me, NAMES, timeout_s=TIMEOUT_S).start()
    (ready / me).touch()
    if me == "cloud":
        while not (ready / "b-stopped").exists():
            time.sleep(0.05)
        k = 0
        while not (ready / "b-continued").exists():  # cloud ↔ a while b is stopped
            t.send("a", "ping", k=k)
            t.recv("a", "pong")
            k += 1
            time.sleep(0.1)
        t.send("a", "ping", k=-1)
        t.recv("a", "pong")
        t.send("b", "ping", k=-1)
        t.recv("b", "pong", timeout_s=30)
        print(f"cloud: {k} round trips with a while b was stopped; b answered", flush=True)
    else:
        while True:
            m = t.recv("cloud", "ping", timeout_s=120)
            t.send("cloud", "pong")
            if m.meta.get("k", 0) < 0:
                break
    t.close(wait_s=5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_peer_stopped_longer_than_the_timeouts_does_not_close_the_others(tmp_path):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, __file__, str(r), str(port), str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(3)]
    try:
        deadline = time.monotonic() + 240  # three torch imports on a loaded 2-core host
        while not all((tmp_path / n).exists() for n in NAMES):
            assert time.monotonic() < deadline, "the roles did not start"
            assert all(p.poll() is None for p in procs), [p.communicate()[0][-2000:] for p in procs]
            time.sleep(0.1)
        os.kill(procs[2].pid, signal.SIGSTOP)
        (tmp_path / "b-stopped").touch()
        time.sleep(2 * TIMEOUT_S + 5 + 3)
        os.kill(procs[2].pid, signal.SIGCONT)
        (tmp_path / "b-continued").touch()
        outs = [p.communicate(timeout=120)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], outs
        assert "pair closure" not in "".join(outs)
        assert "b answered" in outs[0]
        assert int(outs[0].split("cloud: ")[1].split()[0]) > 10
    finally:
        for p in procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                p.kill()
                p.wait(timeout=10)


if __name__ == "__main__":
    _role(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
