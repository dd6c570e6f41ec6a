"""The timeline of changing resources: validation (one line naming the event and field) and state over time."""
import numpy as np
import pytest

from jqodi.core.linktrace import MBIT
from jqodi.core.timeline import parse_timeline_events, resolve_timeline
from jqodi.errors import ScenarioError

EDGES = ["rtx3090", "rtx4090"]


def resolve(items, tmp_path=None):
    return resolve_timeline(parse_timeline_events(items, "s.yaml"), cloud="a100", end="pi5", edges=EDGES,
                            base_dir=tmp_path, source="s.yaml")


def test_state_over_time(tmp_path):
    (tmp_path / "link.txt").write_text("0 10\n1 0\n2 20\n")
    tl = resolve([{"at_s": 5, "event": "link_trace", "edge": "rtx3090", "trace": "link.txt"},
                  {"at_s": 40, "event": "edge_leaves", "edge": "rtx4090"},
                  {"at_s": 90, "event": "edge_returns", "edge": "rtx4090"},
                  {"at_s": 60, "event": "slowdown", "device": "pi5", "factor": 1.5},
                  {"at_s": 70, "event": "slowdown", "device": "end", "factor": 1}], tmp_path)
    assert tl.edge_available("rtx4090", 39.9) and not tl.edge_available("rtx4090", 40)
    assert tl.edge_available("rtx4090", 90) and tl.edges_down(50) == {"rtx4090"}
    assert tl.next_return_s("rtx4090", 50) == 90 and tl.next_return_s("rtx3090", 50) == 50
    assert tl.availability_events(0, 100) == [(40, "rtx4090", False), (90, "rtx4090", True)]
    assert [tl.slowdown("end", t) for t in (59, 60, 69, 70)] == [1.0, 1.5, 1.5, 1.0]
    assert tl.slowdown_array("end", np.array([59.0, 65.0])).tolist() == [1.0, 1.5]
    assert np.isinf(tl.leaves_between("rtx4090", 0.0, 40.0)) and tl.leaves_between("rtx4090", 30.0, 41.0) == 40
    assert tl.leaves_between("rtx4090", 50.0, 51.0) == 50  # away already
    link = "edge:rtx3090|end"
    assert tl.link_rate_bps(link, 4.0, 100 * MBIT) == 100 * MBIT  # nominal before the trace starts
    assert tl.link_rate_bps(link, 5.5, 100 * MBIT) == 10 * MBIT
    # 1 s at nominal 100 Mbit/s before the trace (100 Mbit), then 10 Mbit in the trace's first second
    assert tl.transfer_s(link, 110 * MBIT, 4.0, 100 * MBIT) == pytest.approx(2.0)
    assert tl.transfer_s("edge:rtx4090|end", 50 * MBIT, 0.0, 100 * MBIT) == pytest.approx(0.5)


@pytest.mark.parametrize("items, problem", [
    ([{"at_s": 1, "event": "slowdown", "device": "tpu", "factor": 2}], "timeline[0].device: unknown device 'tpu'"),
    ([{"at_s": 1, "event": "edge_leaves", "edge": "rtx5090"}], "timeline[0].edge: unknown edge server 'rtx5090'"),
    ([{"at_s": 1, "event": "edge_returns", "edge": "rtx4090"}], "timeline[0]: edge 'rtx4090' returns without having left"),
    ([{"at_s": 1, "event": "edge_leaves", "edge": "rtx4090"}, {"at_s": 2, "event": "edge_leaves", "edge": "rtx4090"}],
     "timeline[1]: edge 'rtx4090' leaves while already away"),
    ([{"at_s": -1, "event": "edge_leaves", "edge": "rtx4090"}], "timeline[0].at_s: Input should be greater than or equal to 0"),
    ([{"at_s": 1, "event": "slowdown", "device": "end", "factor": 0}], "timeline[0].factor"),
    ([{"at_s": 1, "event": "teleport", "edge": "rtx4090"}], "timeline[0]"),
    ([{"at_s": 1, "event": "slowdown", "device": "end", "factor": 2, "until": 3}], "timeline[0].until"),
    ([{"at_s": 0, "event": "link_trace", "edge": "rtx3090", "trace": "x", "scale": 2, "mean_rate_bps": 1e6}],
     "at most one of 'scale' and 'mean_rate_bps'"),
])
def test_bad_events_name_the_event_and_field(items, problem):
    with pytest.raises(ScenarioError) as e:
        resolve(items)
    assert str(e.value).startswith("s.yaml: ") and problem in str(e.value) and "\n" not in str(e.value)


def test_bad_trace_file_names_file_and_line(tmp_path):
    (tmp_path / "t.txt").write_text("0 1\n1 -3\n")
    with pytest.raises(ScenarioError, match=r"t\.txt:2: negative rate"):
        resolve([{"at_s": 0, "event": "link_trace", "edge": "rtx3090", "trace": "t.txt"}], tmp_path)
    (tmp_path / "u.txt").write_text("0 1\n")
    with pytest.raises(ScenarioError, match="already follows a trace"):
        resolve([{"at_s": 0, "event": "link_trace", "edge": "rtx3090", "trace": "u.txt"},
                 {"at_s": 1, "event": "link_trace", "edge": "rtx3090", "link": "end", "trace": "u.txt"}], tmp_path)


def test_mean_rate_rescales_the_trace(tmp_path):
    (tmp_path / "t.txt").write_text("0 1\n1 3\n")
    tl = resolve([{"at_s": 0, "event": "link_trace", "edge": "rtx4090", "link": "cloud", "trace": "t.txt",
                   "mean_rate_bps": 1e9}], tmp_path)
    assert tl.traces["cloud|edge:rtx4090"].trace.mean_bps == pytest.approx(1e9)


def test_timeline_travels_as_plain_data_and_runs_on_a_wall_clock(tmp_path):
    import json

    from jqodi.core.timeline import Timeline
    from jqodi.runtime.control import EmulatedTimeline

    (tmp_path / "link.txt").write_text("0 8\n1 80\n")
    tl = resolve([{"at_s": 0, "event": "link_trace", "edge": "rtx3090", "trace": "link.txt"},
                  {"at_s": 2, "event": "slowdown", "device": "end", "factor": 3},
                  {"at_s": 4, "event": "edge_leaves", "edge": "rtx4090"}], tmp_path)
    again = Timeline.from_dict(json.loads(json.dumps(tl.to_dict())))
    assert again.changes == tl.changes
    assert again.traces["edge:rtx3090|end"].trace.mean_bps == tl.traces["edge:rtx3090|end"].trace.mean_bps
    emu = EmulatedTimeline(again.to_dict(), dilation=10.0, origin=1000.0)
    # 1 MB = 8 Mbit starting at testbed 0: 1 s at 8 Mbit/s = 10 s of wall time at dilation 10
    assert emu.wire_done("edge:rtx3090|end", 1_000_000, 1000.0, 100e6) == pytest.approx(1010.0)
    assert emu.wire_done("edge:rtx4090|end", 1_000_000, 1000.0, 100e6) == pytest.approx(1000.8)
    assert emu.slowdown("cloud") is None and emu.edge_events(0, 5) == [(4.0, "rtx4090", False)]
    emu.start(0.0)  # long ago: now is far past every event
    assert emu.slowdown("end")() == 3.0


def _scenario_with(tmp_path, timeline, trace_text=None):
    import yaml
    from importlib import resources

    d = yaml.safe_load((resources.files("jqodi") / "scenarios" / "cpu-demo.yaml").read_text())
    d["timeline"] = timeline
    if trace_text is not None:
        (tmp_path / "link.tsv").write_text(trace_text)
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


@pytest.mark.parametrize("timeline, trace, expect", [
    ([{"at_s": 1, "event": "slowdown", "device": "gpu9", "factor": 2}], None,
     "s.yaml: timeline[0].device: unknown device 'gpu9'"),
    ([{"at_s": 0, "event": "link_trace", "edge": "rtx3090", "trace": "link.tsv"}], "0 5\n1 x\n",
     "s.yaml: timeline[0].trace: {tmp}/link.tsv:2: rate 'x' is not a number"),
    ([{"at_s": 0, "event": "link_trace", "edge": "rtx3090", "trace": "link.tsv"}], "",
     "link.tsv: empty trace"),
    ([{"at_s": 0, "event": "link_trace", "edge": "rtx3090", "trace": "link.tsv"}], "0 5\n2 5\n1 5\n",
     "link.tsv:3: time 1 s is not after"),
    ([{"at_s": 0, "event": "link_trace", "edge": "rtx3090", "trace": "link.tsv"}], "0 -5\n",
     "link.tsv:1: negative rate"),
])
def test_scenario_timeline_errors_are_one_line_exit_2(tmp_path, timeline, trace, expect):
    import subprocess
    import sys

    p = _scenario_with(tmp_path, timeline, trace)
    r = subprocess.run([sys.executable, "-m", "jqodi", "instance", str(p)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert expect.format(tmp=tmp_path) in lines[0], lines[0]


def test_scenario_timeline_loads_with_the_packaged_trace(tmp_path):
    from importlib import resources

    from jqodi.core.scenario import load_scenario

    trace = str(resources.files("jqodi") / "scenarios" / "traces" / "demo-commute.tsv")
    p = _scenario_with(tmp_path, [{"at_s": 0, "event": "link_trace", "edge": "rtx3090", "trace": trace},
                                  {"at_s": 1.5, "event": "edge_leaves", "edge": "rtx3090"}])
    s = load_scenario(p)
    tl = s.resolved_timeline()
    assert list(tl.traces) == ["edge:rtx3090|end"] and tl.edges_down(2.0) == {"rtx3090"}
    assert s.with_changes(target_loss=0.5).resolved_timeline().edges_down(2.0) == {"rtx3090"}
