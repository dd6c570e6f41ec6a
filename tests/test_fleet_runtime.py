"""The fleet runtime (issue 12, parts 3 and 4): one cloud, E edge and Y end-device processes.

The process test runs six end devices on two edge servers (tiny LeNet, a few batches), kills one
end-device process by PID during its second epoch and checks that only its job failed, that the
record and the trace store say which and why, and that every process is gone afterwards. The
other tests need no processes: the processor-sharing server, the capacity model's shared epoch
time, the per-device views over one transport (a device's failure stays its own), the record.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from jqodi.core.fleet import processor_sharing_epoch_s

ROOT = Path(__file__).resolve().parents[1]
HAS_FMNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").is_file() \
    or bool(os.environ.get("JQODI_DATA_DIR"))


# --- the capacity model's epoch time when devices share an edge --------------------------------

def test_shared_epoch_time_limits():
    assert processor_sharing_epoch_s([10.0], [4.0]) == pytest.approx([10.0])  # alone: the cost model's
    # edge-bound devices share it fully: each epoch takes everyone's edge work
    assert processor_sharing_epoch_s([10.0] * 20, [9.0] * 20)[0] == pytest.approx(180.0, rel=0.01)
    two = processor_sharing_epoch_s([10.0, 10.0], [4.0, 4.0])
    assert 10.0 < two[0] < 14.0 and two[0] == pytest.approx(two[1])
    # by hand (mean value analysis): R_a = 1·(1 + Q_b) with Q_b = 8/10 alone, R_b = 8·(1 + 1/10)
    assert processor_sharing_epoch_s([10.0, 10.0], [1.0, 8.0]) == pytest.approx([9.0 + 1.8, 2.0 + 8.8])
    assert processor_sharing_epoch_s([], []) == []


def test_processor_sharing_server_shares_equally():
    from jqodi.runtime.fleet_emulation import ProcessorSharing

    ps = ProcessorSharing()
    done = {}

    def job(name, work, delay):
        time.sleep(delay)
        t0 = time.perf_counter()
        done[name] = ps.wait(ps.arrive(work)) - t0

    ths = [threading.Thread(target=job, args=("a", 0.3, 0.0)), threading.Thread(target=job, args=("b", 0.3, 0.0))]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    # two equal steps together: each takes twice its dedicated time (fluid processor sharing)
    assert done["a"] == pytest.approx(0.6, abs=0.08) and done["b"] == pytest.approx(0.6, abs=0.08)
    t0 = time.perf_counter()
    alone = ps.wait(ps.arrive(0.2)) - t0
    assert alone == pytest.approx(0.2, abs=0.05)
    assert ps.busy_s == pytest.approx(0.8, abs=0.1)  # work-conserving: busy = the work served


# --- one process's transport shared by several devices' jobs ------------------------------------

def test_device_views_keep_a_failure_to_its_device():
    from jqodi.errors import RuntimeFailure
    from jqodi.runtime.fleet_transport import DeviceView, Mux
    from jqodi.runtime.transport import InProcessHub, InProcessTransport

    hub = InProcessHub()
    names = ["cloud", "edge:a", "end:d1", "end:d2"]
    ts = {n: InProcessTransport(hub, n, names, timeout_s=2.0, heartbeat_s=0.1) for n in names}
    for t in ts.values():
        t.start()
    try:
        edge = Mux(ts["edge:a"], ["cloud", "end:d1", "end:d2"]).start()
        cloud = Mux(ts["cloud"], ["edge:a", "end:d1", "end:d2"]).start()
        e1 = DeviceView(edge, "d1", "edge:a", {"cloud": "cloud", "end": "end:d1"})
        e2 = DeviceView(edge, "d2", "edge:a", {"cloud": "cloud", "end": "end:d2"})
        c1 = DeviceView(cloud, "d1", "cloud", {"end": "end:d1", "edge:a": "edge:a"})
        c2 = DeviceView(cloud, "d2", "cloud", {"end": "end:d2", "edge:a": "edge:a"})
        # messages of two devices on one link reach their own device's view, in order
        c2.send("edge:a", "epoch", epoch=0, edge="a", cut=1)
        c1.send("edge:a", "epoch", epoch=7, edge="a", cut=1)
        assert e1.recv("cloud", "epoch").meta["epoch"] == 7
        assert e2.recv("cloud", "epoch").meta["epoch"] == 0
        assert c1.sent["edge:a"].messages == 1 and c2.sent["edge:a"].messages == 1
        # end device d1 crashes: d1's edge thread fails and tells d1's cloud; d2 carries on
        hub.kill("end:d1")
        with pytest.raises(RuntimeFailure, match="end:d1"):
            e1.recv("end", "act")
        e1.fail("edge:a: lost end:d1", "end:d1")
        with pytest.raises(RuntimeFailure, match="lost end:d1"):
            c1.recv("edge:a", "model_back")
        ts["end:d2"].send("edge:a", "ready", device="d2", pid=1)
        assert e2.recv("end", "ready").meta["pid"] == 1
        e2.send("cloud", "progress", epoch=0, batch=1, batches=2, loss=1.0)
        assert c2.recv("edge:a", "progress").meta["batch"] == 1
    finally:
        for t in ts.values():
            t._closing.set()


# --- the record ---------------------------------------------------------------------------------

def test_utilisation_spreads_each_epochs_work():
    from jqodi.runtime.fleet_record import utilisation

    ivs = [{"device": "d1", "edge": "a", "start_s": 0.0, "end_s": 4.0, "work_s": 2.0},
           {"device": "d2", "edge": "a", "start_s": 2.0, "end_s": 4.0, "work_s": 2.0}]
    u = utilisation(ivs, ["a", "b"], bins=4)
    assert u["bin_s"] == pytest.approx(1.0)
    assert u["edges"]["a"] == pytest.approx([0.5, 0.5, 1.5, 1.5])
    assert u["edges"]["b"] == [0.0] * 4
    assert sum(u["edges"]["a"]) * u["bin_s"] == pytest.approx(4.0)  # all the work, nowhere else


def test_fleet_job_round_trip_and_bad_input(tmp_path):
    from jqodi.runtime.fleet_job import FleetJob, fleet_ranks
    from jqodi.runtime.job import Job, JobError

    def job(edge):
        return Job.from_dict({"model": "lenet", "bits": 4, "width": 0.125,
                              "schedule": [{"edge": edge, "cut": 1, "epochs": 1}]})
    fj = FleetJob({"d1": job("a"), "d2": job("b"), "d3": job("a")}, run_id="r")
    assert fj.edges == ["a", "b"] and fj.devices_on("a") == ["d1", "d3"]
    d = fj.to_dict()
    assert FleetJob.from_dict(d).devices["d2"].schedule == fj.devices["d2"].schedule
    assert fleet_ranks(d) == {"cloud": 0, "edge:a": 1, "edge:b": 2, "end:d1": 3, "end:d2": 4, "end:d3": 5}
    with pytest.raises(JobError, match="unknown key 'colour'"):
        FleetJob.from_dict({**d, "colour": 1})
    with pytest.raises(JobError, match="devices.d1"):
        FleetJob.from_dict({**d, "devices": {"d1": {"model": "lenet"}}})
    with pytest.raises(JobError, match="edge_sharing"):
        FleetJob({"d1": job("a")}, edge_sharing="round-robin")


def test_trace_store_keeps_fleet_results(tmp_path):
    from jqodi.core.traces import TraceStore

    with TraceStore(tmp_path / "t.db") as ts:
        assert ts.fleet("f1") == {}
        ts.record_fleet("f1", {"d1": {"status": "completed", "time_s": 3.0, "energy_j": 5.0, "deadline_s": 4.0,
                                      "deadline_met": True, "epochs": 2},
                               "d2": {"status": "failed", "error": "end:d2 was killed", "epochs": 1}},
                        job_ids={"d1": "f1-d1"})
        got = ts.fleet("f1")
    assert got["d1"]["deadline_met"] is True and got["d1"]["job_id"] == "f1-d1"
    assert got["d2"]["status"] == "failed" and "killed" in got["d2"]["error"]


def test_run_rejects_single_device_flags_on_a_fleet(capsys):
    from jqodi.cli import main

    code = main(["run", str(ROOT / "examples" / "fleet-demo.yaml"), "--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--resume" in err[0] and "fleet" in err[0]


# --- six end-device processes on two edges ------------------------------------------------------

SIX = """
end_devices:
  - {name: cam-1}
  - {name: cam-2}
  - {name: cam-3}
  - {name: cam-4, deadline_s: 30}
  - {name: cam-5, deadline_s: 30}
  - {name: cam-6, deadline_s: 30}
"""


@pytest.mark.skipif(not HAS_FMNIST, reason="Fashion-MNIST not installed")
def test_six_devices_one_killed_the_others_finish(tmp_path, monkeypatch):
    """Six end-device processes (+ cloud + 2 edges); end:cam-3 is killed by PID in its second epoch."""
    from jqodi.app.fleet_run import FleetRunOptions, run_fleet_scenario
    from jqodi.core.traces import TraceStore

    monkeypatch.setenv("JQODI_HOME", str(tmp_path / "home"))
    text = (ROOT / "examples" / "fleet-demo.yaml").read_text()
    head, rest = text.split("end_devices:", 1)
    scenario = tmp_path / "six.yaml"
    scenario.write_text(head + SIX + "\nfleet:" + rest.split("\nfleet:", 1)[1])
    wd, store = tmp_path / "run", tmp_path / "traces.db"
    opts = FleetRunOptions(workdir=wd, max_epochs=2, train_size=128, val_size=32, random_init=True,
                           trace_store=str(store), timeout_s=30.0, startup_timeout_s=240.0, wall_limit_s=400.0)
    pids: list[int] = []
    victim = {}

    def on_start(procs):
        pids.extend(p.pid for p in procs.values())
        victim["pid"] = procs["end:cam-3"].pid

        def kill_in_second_epoch():  # once cam-3's first epoch is checkpointed, its second is under way
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not (wd / "devices" / "cam-3" / "epochs.json").is_file():
                time.sleep(0.02)
            os.kill(victim["pid"], signal.SIGKILL)
        threading.Thread(target=kill_in_second_epoch, daemon=True).start()

    lines: list[str] = []
    rec, workdir = run_fleet_scenario(scenario, opts, say=lines.append, on_start=on_start)
    try:
        assert len(pids) == 1 + 2 + 6
        assert rec.status == "partial"
        assert rec.failed().keys() == {"cam-3"}
        assert "end:cam-3" in rec.devices["cam-3"]["error"] and "SIGKILL" in rec.devices["cam-3"]["error"]
        for name, d in rec.devices.items():
            if name != "cam-3":
                assert d["status"] == "completed" and d["epochs"] == 2, name
                assert d["energy_j"] > 0 and d["time_s"] > 0
                assert d["predicted"]["shared_epoch_s"] >= d["predicted"]["alone_epoch_s"] - 1e-9
        assert rec.devices["cam-3"]["epochs"] == 1
        t = rec.totals
        assert t["completed"] == 5 and t["failed"] == 1
        assert t["energy_j"] == pytest.approx(sum(d["energy_j"] for d in rec.devices.values()))
        # each device's data stayed in its own process: no image reached the cloud or an edge
        for role in ("cloud", "edge-jetson-a", "edge-jetson-b"):
            log = json.loads((workdir / f"messages-{role}.json").read_text())
            shapes = [tuple(t[1][1:]) for m in log["messages"] if m["direction"] == "recv" for t in m["tensors"]]
            assert shapes and (1, 28, 28) not in shapes, role
        assert set(rec.utilisation["edges"]) == set(rec.edges) and any(max(s) > 0 for s in rec.utilisation["edges"].values())
        assert (workdir / "record.json").is_file() and (workdir / "utilisation.png").stat().st_size > 1000
        with TraceStore(store) as ts:
            rows = ts.fleet(rec.run_id)
            runs = ts.runs()
        assert rows["cam-3"]["status"] == "failed" and rows["cam-1"]["status"] == "completed"
        assert {r.config.get("job_id") for r in runs} >= {f"{rec.run_id}-cam-1", f"{rec.run_id}-cam-6"}
        # every process was ended by the launcher
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        for pid in pids:  # whatever failed above: leave no process behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(wd, ignore_errors=True)


def test_packaged_fleet_demo_matches_example():
    from jqodi.app.fleet_run import fleet_demo_path

    assert fleet_demo_path().read_text() == (ROOT / "examples" / "fleet-demo.yaml").read_text()
