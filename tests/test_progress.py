"""Progress: a redrawn bar with rate and ETA on a terminal, plain periodic lines otherwise,
nothing with ``--quiet``; one-time costs announced with their expected duration."""
from __future__ import annotations

import io

import pytest

from jqodi.core import progress as progress_mod
from jqodi.core.progress import Progress, format_duration, one_time


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.fixture()
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: now[0])
    return now


def _run(bar: Progress, clock, epochs: int, batches: int, step_s: float) -> None:
    for _ in range(epochs):
        for i in range(batches):
            clock[0] += step_s
            bar.batch(i + 1, batches, 0.5)
        bar.line("epoch done")


def test_format_duration():
    assert [format_duration(s) for s in (0, 7.4, 127, 3900)] == ["0s", "7s", "2m07s", "1h05m"]
    assert format_duration(float("inf")) == "?"


def test_terminal_bar_shows_rate_and_eta_of_the_whole_job(clock):
    out = _Stream(tty=True)
    bar = Progress(None, "pretrain lenet", total_steps=40, stream=out)
    _run(bar, clock, epochs=1, batches=20, step_s=0.5)  # 2 batch/s, 20 of 40 steps done
    text = out.getvalue()
    assert "\r" in text and "pretrain lenet [" in text
    last_bar = text.split("\r")[-2]  # the final redraw before the epoch line
    assert "20/20" in last_bar and "2 batch/s" in last_bar and "ETA 10s" in last_bar
    assert text.endswith("epoch done\n")


def test_plain_lines_every_period_when_not_a_terminal(clock):
    out = _Stream(tty=False)
    bar = Progress(None, "fine-tune", total_steps=600, every_s=10, stream=out)
    _run(bar, clock, epochs=2, batches=300, step_s=0.1)  # 60 s in all: a line every 10 s
    lines = out.getvalue().splitlines()
    periodic = [ln for ln in lines if ln.startswith("fine-tune: ")]
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert 4 <= len(periodic) <= 6
    assert "10 batch/s" in periodic[0] and "ETA" in periodic[0]
    etas = [int(ln.rsplit("ETA ", 1)[1].rstrip("s")) for ln in periodic]
    assert etas == sorted(etas, reverse=True) and etas[0] in (49, 50)  # ~500 steps left at 10/s
    assert lines.count("epoch done") == 2


def test_eta_spans_epochs(clock):
    bar = Progress(None, "x", total_steps=300, stream=_Stream(tty=False))
    for i in range(100):  # epoch 1 at 1 s per batch
        clock[0] += 1.0
        bar.batch(i + 1, 100)
    clock[0] += 1.0
    bar.batch(1, 100)  # epoch 2 begins: 101 of 300 steps done at 1 step/s
    assert bar.steps_done == 101
    assert bar.status(1, 100, now=clock[0]).endswith("ETA 3m19s")


def test_quiet_writes_nothing(clock):
    out = _Stream(tty=True)
    bar = Progress(False, "quiet", total_steps=10, stream=out)
    _run(bar, clock, epochs=1, batches=10, step_s=20)
    one_time(False, "pretraining", 60.0, stream=out)
    assert out.getvalue() == ""


def test_one_time_cost_says_what_and_how_long():
    out = io.StringIO()
    one_time(None, "pretraining the cloud model lenet", 845.0, "once: later runs load X", stream=out)
    assert out.getvalue() == ("one-time: pretraining the cloud model lenet "
                              "(expected ≈ 14m05s; once: later runs load X)\n")
