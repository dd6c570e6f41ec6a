"""Progress for long work (epochs of batches): a bar with rate and ETA, or plain periodic lines.

On a terminal the bar is redrawn in place (at most 10 times a second)::

    pretrain lenet epoch 2/4 [#########...............] 160/430  loss 0.4412  21.3 batch/s  ETA 2m07s

When the stream is not a terminal (a log file, a pipe, a parent process relaying lines) the same
information is written as a plain line every ``every_s`` seconds (default 10), so a long wait is
never silent for long. ``enabled=False`` (``--quiet``) writes nothing at all.

The ETA covers the whole job when ``total_steps`` is known (e.g. epochs × batches), else the
current unit (epoch). :func:`one_time` announces a one-time cost (pretraining, building a cache)
with its expected duration before it starts.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

__all__ = ["Progress", "Ticker", "format_duration", "one_time"]


def format_duration(seconds: float) -> str:
    """``7s``, ``2m07s``, ``1h05m``."""
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return "?"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def one_time(enabled: bool | None, what: str, expected_s: float | None = None, note: str = "",
             stream: TextIO | None = None) -> None:
    """Announce a one-time cost before it starts: ``one-time: WHAT (expected ≈ 14m05s; NOTE)``."""
    if enabled is False:
        return
    stream = stream or sys.stderr
    extra = [f"expected ≈ {format_duration(expected_s)}"] if expected_s is not None else []
    extra += [note] if note else []
    stream.write(f"one-time: {what}" + (f" ({'; '.join(extra)})" if extra else "") + "\n")
    stream.flush()


class Progress:
    """Progress of work measured in steps (batches), grouped in units (epochs).

    ``batch(done, total, loss)`` reports ``done`` of ``total`` steps of the current unit; a
    ``done`` lower than the previous one starts a new unit. ``line(text)`` prints a line
    (clearing the bar). ``unit`` names a step in the rate (``batch/s``). ``started``: the
    :func:`time.monotonic` time the work began, for a bar shown only once the work has run a while.
    """

    def __init__(self, enabled: bool | None, label: str, *, total_steps: int | None = None,
                 every_s: float = 10.0, unit: str = "batch", stream: TextIO | None = None,
                 started: float | None = None):
        self.enabled = True if enabled is None else bool(enabled)
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.label = label
        self.total_steps = total_steps
        self.every_s = float(every_s)
        self.unit = unit
        self._t0 = time.monotonic() if started is None else float(started)  # rate and ETA count from here
        self._steps_before = 0     # steps of finished units
        self._last_done = 0
        self._last_write = float("-inf")
        self._drawn = False

    @property
    def steps_done(self) -> int:
        return self._steps_before + self._last_done

    def status(self, done: int, total: int, loss: float | None = None, now: float | None = None) -> str:
        """The text of one update: count, loss, rate and ETA (no bar)."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self._t0, 1e-9)
        rate = self.steps_done / elapsed
        parts = [f"{done}/{total}"]
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        if rate > 0:
            parts.append(f"{rate:.3g} {self.unit}/s" if rate >= 1 else f"{1 / rate:.3g} s/{self.unit}")
            remaining = (self.total_steps - self.steps_done) if self.total_steps else (total - done)
            parts.append(f"ETA {format_duration(max(0, remaining) / rate)}")
        return "  ".join(parts)

    def batch(self, done: int, total: int, loss: float | None = None) -> None:
        if done < self._last_done:  # a new unit (epoch) began
            self._steps_before += self._last_done
        self._last_done = done
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            if now - self._last_write < 0.1 and done < total:
                return
            w = 24
            fill = int(w * done / max(1, total))
            self.stream.write(f"\r{self.label} [{'#' * fill}{'.' * (w - fill)}] "
                              f"{self.status(done, total, loss, now)}\x1b[K")
            self._drawn = True
        else:
            if now - self._last_write < self.every_s:
                return
            if self._last_write == float("-inf"):  # the first call only starts the clock
                self._last_write = now
                return
            self.stream.write(f"{self.label}: {self.status(done, total, loss, now)}\n")
        self._last_write = now
        self.stream.flush()

    def clear(self) -> None:
        """Erase the bar (before someone else prints a line)."""
        if self.enabled and self.tty and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False

    def line(self, text: str) -> None:
        if self.enabled:
            self.stream.write(("\r\x1b[K" if self.tty and self._drawn else "") + text + "\n")
            self.stream.flush()
            self._drawn = False


class Ticker:
    """Around a long step that reports nothing itself (a fleet solve): say it began, show the seconds
    elapsed (in place on a terminal, a line every 10 s otherwise) and the time it took, on stderr; a
    daemon thread that sleeps between updates, so the step runs as fast.

    ``after_s``: say nothing unless the step is still running after this many seconds (then begin
    as above): a quick step stays quiet, a long one is never silent for longer than ``after_s``."""

    every_s = 10.0  # between lines when stderr is not a terminal

    def __init__(self, label: str, after_s: float = 0.0):
        self.label, self.after_s = label, float(after_s)
        self.tty = sys.stderr.isatty()
        self.done = threading.Event()
        self.announced = False
        self.thread = threading.Thread(target=self._tick, daemon=True)

    def _announce(self) -> None:
        self.announced = True
        sys.stderr.write(f"{self.label} …" + ("" if self.tty else "\n"))
        sys.stderr.flush()

    def _tick(self) -> None:
        if not self.announced:
            if self.done.wait(self.after_s):
                return
            self._announce()
        while not self.done.wait(0.5 if self.tty else self.every_s):
            text = f"{self.label} … {format_duration(time.monotonic() - self.t0)}"
            sys.stderr.write(f"\r{text}\x1b[K" if self.tty else text + "\n")
            sys.stderr.flush()

    def __enter__(self):
        self.t0 = time.monotonic()
        if self.after_s <= 0:
            self._announce()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()
        if self.announced:
            sys.stderr.write(("\r\x1b[K" if self.tty else "")
                             + f"{self.label}: {'done' if exc[0] is None else 'stopped'} in "
                               f"{format_duration(time.monotonic() - self.t0)}\n")
            sys.stderr.flush()
