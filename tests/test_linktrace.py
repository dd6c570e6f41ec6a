"""Link-rate traces: strict parsing (one line naming file and line), rates over time, transfers."""
import os
from pathlib import Path

import numpy as np
import pytest

from jqodi.core.linktrace import MBIT, RateTrace, load_rate_trace, parse_rate_trace
from jqodi.errors import ScenarioError

TRACES = Path(os.environ.get("JQODI_TRACES_DIR", Path(__file__).resolve().parents[2] / "shared" / "traces"))


def test_parse_shifts_time_and_reads_mbits():
    tr = parse_rate_trace("# a comment\n180.0\t2.0\n181.0\t4.0\n\n182.0 0\n183.0 1\n", "t.txt")
    assert tr.times_s.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert tr.rates_bps.tolist() == [2 * MBIT, 4 * MBIT, 0.0, 1 * MBIT]
    assert tr.duration_s == 4.0  # the last sample holds for the median interval
    assert tr.mean_bps == pytest.approx(7 * MBIT / 4)
    assert tr.rate_bps_at(1.5) == 4 * MBIT
    assert tr.rate_bps_at(5.5) == 4 * MBIT  # loops


def test_transfer_waits_through_outages_and_loops():
    tr = parse_rate_trace("0 8\n1 0\n2 0\n3 8\n", "t")  # 8 Mbit/s, 2 s outage, 8 Mbit/s; 4 s loop
    # 4 Mbit from t = 0.5: 0.5 s at 8 Mbit/s
    assert tr.transfer_s(4 * MBIT, 0.5) == pytest.approx(0.5)
    # 8 Mbit from t = 0.5: 4 Mbit before the outage, 2 s outage, 0.5 s after
    assert tr.transfer_s(8 * MBIT, 0.5) == pytest.approx(3.0)
    # starting inside the outage: wait for it to end
    assert tr.transfer_s(8 * MBIT, 1.0) == pytest.approx(3.0)
    # 40 Mbit = two 4 s loops of 16 Mbit, then 8 Mbit in the next loop's first second
    assert tr.transfer_s(40 * MBIT, 0.0) == pytest.approx(2 * 4.0 + 1.0)
    # 24 Mbit from t = 0: 8 Mbit, the outage, 8 Mbit, then the next loop's first second
    assert tr.transfer_s(24 * MBIT, 0.0) == pytest.approx(5.0)
    ends = tr.transfer_end_s(np.array([1.0, 2.0, 3.0]) * MBIT, np.array([0.0, 3.5, 9.0]))
    got = tr.bits_until(ends) - tr.bits_until(np.array([0.0, 3.5, 9.0]))
    assert np.allclose(got, [1 * MBIT, 2 * MBIT, 3 * MBIT])


def test_rescaling_keeps_the_shape():
    tr = parse_rate_trace("0 1\n1 3\n", "t")
    assert tr.with_mean(10 * MBIT).mean_bps == pytest.approx(10 * MBIT)
    assert tr.with_mean(10 * MBIT).rates_bps.tolist() == pytest.approx([5 * MBIT, 15 * MBIT])
    assert tr.scaled(2).rates_bps.tolist() == [2 * MBIT, 6 * MBIT]
    with pytest.raises(ScenarioError, match="scale factor"):
        tr.scaled(0)


@pytest.mark.parametrize("text, where, problem", [
    ("", "bad.txt", "empty trace"),
    ("# only a comment\n\n", "bad.txt", "empty trace"),
    ("0 1\n1 fast\n", "bad.txt:2", "rate 'fast' is not a number"),
    ("zero 1\n", "bad.txt:1", "time 'zero' is not a number"),
    ("0 1\n1 nan\n", "bad.txt:2", "not a finite number"),
    ("0 1\n2 1\n1 1\n", "bad.txt:3", "time 1 s is not after the previous sample's 2 s"),
    ("0 1\n0 1\n", "bad.txt:2", "times must increase"),
    ("0 1\n1 -2\n", "bad.txt:2", "negative rate -2 Mbit/s"),
    ("0 1 2\n", "bad.txt:1", "expected two numbers"),
    ("0 0\n1 0\n", "bad.txt", "every rate is 0"),
])
def test_bad_trace_files_name_file_and_line(tmp_path, text, where, problem):
    p = tmp_path / "bad.txt"
    p.write_text(text)
    with pytest.raises(ScenarioError) as e:
        load_rate_trace(p)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{tmp_path / where}") and problem in msg


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(ScenarioError, match="trace file not found"):
        load_rate_trace(tmp_path / "nope.txt")
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ScenarioError, match="not UTF-8"):
        load_rate_trace(tmp_path / "bin")
    with pytest.raises(ScenarioError, match="is a directory"):
        load_rate_trace(tmp_path)


def test_packaged_demo_trace_is_valid():
    from importlib import resources

    p = Path(str(resources.files("jqodi") / "scenarios" / "traces" / "demo-commute.tsv"))
    tr = load_rate_trace(p)
    assert tr.duration_s >= 3 and tr.mean_bps > 0
    from jqodi.core.timeline import trace_path

    assert trace_path("jqodi:traces/demo-commute.tsv", "/elsewhere") == p  # how scenarios name it


@pytest.mark.skipif(not TRACES.is_dir(), reason="../shared/traces not present")
def test_every_real_trace_loads_and_transfers_add_up():
    files = sorted(f for f in TRACES.glob("*/*") if f.is_file())
    assert len(files) > 100
    rng = np.random.default_rng(0)
    for f in files:
        tr = load_rate_trace(f)
        assert isinstance(tr, RateTrace) and tr.mean_bps > 0
        start = rng.uniform(0, 2 * tr.duration_s, 5)
        bits = rng.uniform(0.1, 50, 5) * MBIT
        end = tr.transfer_end_s(bits, start)
        assert np.allclose(tr.bits_until(end) - tr.bits_until(start), bits, rtol=1e-9)
