"""Link-rate traces: a link's rate over time, read from a two-column text file.

The format is the one of the Norwegian 3G and FCC broadband traces (and of the small trace
shipped with the package for ``make demo``): one sample a line, ``time_s  rate_Mbit_per_s``,
separated by tabs or spaces. Blank lines and lines starting with ``#`` are skipped.

Semantics (the usual ones of trace-driven link emulation, e.g. Mahimahi):

* times are shifted so that the first sample is at 0 s (FCC traces start at 180 s);
* a sample's rate holds until the next sample's time; the last sample holds for the median
  interval between samples, which gives the trace its duration;
* past its end the trace starts over (a run longer than the trace loops it);
* a rate of 0 is an outage: a transfer waits until the rate comes back.

Validation is strict: a file that is empty, has a line that is not two finite numbers, times
that do not strictly increase, a negative rate, or only zero rates raises a
:class:`~jqodi.errors.ScenarioError` whose one line names the file and the line.

A transfer of ``b`` bits that starts at ``t`` ends at ``B⁻¹(B(t) + b)`` with ``B`` the
cumulative bits the trace carries (piecewise linear), which :meth:`RateTrace.transfer_end_s`
computes for arrays of start times at once (numpy).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from jqodi.core.userfile import read_user_file
from jqodi.errors import ScenarioError

__all__ = ["RateTrace", "load_rate_trace", "parse_rate_trace", "MBIT"]

#: Bits in one Mbit (the trace files' unit is Mbit/s).
MBIT = 1e6
#: Largest trace file read (a trace is text; anything bigger is not one).
MAX_TRACE_BYTES = 64 * 2**20


@dataclass(frozen=True)
class RateTrace:
    """A link's rate over time. ``times_s[i]`` (first 0) starts segment ``i`` of rate
    ``rates_bps[i]``; the trace lasts ``duration_s`` and then repeats."""

    source: str
    times_s: np.ndarray
    rates_bps: np.ndarray
    duration_s: float
    _cum: np.ndarray = field(repr=False, compare=False)  # bits carried up to times_s[i] (and at the end)

    @classmethod
    def from_samples(cls, times_s: Iterable[float], rates_bps: Iterable[float], source: str = "trace",
                     duration_s: float | None = None) -> "RateTrace":
        """A trace from samples already validated (times increasing from any origin, rates ≥ 0)."""
        t = np.asarray(list(times_s), dtype=float)
        r = np.asarray(list(rates_bps), dtype=float)
        t = t - t[0]
        if duration_s is None:
            step = float(np.median(np.diff(t))) if t.size > 1 else 1.0
            duration_s = float(t[-1] + step)
        ends = np.append(t[1:], duration_s)
        cum = np.concatenate(([0.0], np.cumsum(r * (ends - t))))
        return cls(source, t, r, float(duration_s), cum)

    # -- queries -------------------------------------------------------------------------------
    @property
    def bits_per_loop(self) -> float:
        return float(self._cum[-1])

    @property
    def mean_bps(self) -> float:
        """Time-weighted mean rate over one loop."""
        return self.bits_per_loop / self.duration_s

    def scaled(self, factor: float) -> "RateTrace":
        """The same trace with every rate multiplied by ``factor`` (> 0)."""
        if not (math.isfinite(factor) and factor > 0):
            raise ScenarioError(f"{self.source}: scale factor must be a finite number > 0, got {factor!r}")
        return RateTrace.from_samples(self.times_s, self.rates_bps * factor, self.source, self.duration_s)

    def with_mean(self, mean_bps: float) -> "RateTrace":
        """The trace's shape (outages included), rescaled so its mean rate is ``mean_bps``."""
        return self.scaled(mean_bps / self.mean_bps)

    def rate_bps_at(self, t_s: float | np.ndarray) -> float | np.ndarray:
        """Rate at time ``t_s`` (seconds from the trace's start; loops)."""
        tt = np.mod(np.asarray(t_s, dtype=float), self.duration_s)
        i = np.searchsorted(self.times_s, tt, side="right") - 1
        out = self.rates_bps[np.clip(i, 0, self.rates_bps.size - 1)]
        return float(out) if np.ndim(out) == 0 else out

    def bits_until(self, t_s: float | np.ndarray) -> np.ndarray:
        """B(t): bits the link carries from time 0 to ``t_s`` (loops)."""
        t = np.asarray(t_s, dtype=float)
        loops = np.floor(t / self.duration_s)
        tt = t - loops * self.duration_s
        knots = np.append(self.times_s, self.duration_s)
        return loops * self.bits_per_loop + np.interp(tt, knots, self._cum)

    def transfer_end_s(self, bits: float | np.ndarray, start_s: float | np.ndarray) -> np.ndarray:
        """When a transfer of ``bits`` that starts at ``start_s`` ends (vectorised, loops)."""
        target = self.bits_until(start_s) + np.asarray(bits, dtype=float)
        loops = np.floor(target / self.bits_per_loop)
        rem = target - loops * self.bits_per_loop
        # a remainder of exactly 0 belongs to the end of the previous loop (outages at the end)
        at_edge = (rem <= 0) & (loops > 0)
        loops = np.where(at_edge, loops - 1, loops)
        rem = np.where(at_edge, self.bits_per_loop, rem)
        i = np.clip(np.searchsorted(self._cum, rem, side="left") - 1, 0, self.rates_bps.size - 1)
        rate = self.rates_bps[i]
        within = np.where(rate > 0, (rem - self._cum[i]) / np.where(rate > 0, rate, 1.0), 0.0)
        end = loops * self.duration_s + self.times_s[i] + within
        return np.maximum(end, np.asarray(start_s, dtype=float))

    def transfer_s(self, bits: float | np.ndarray, start_s: float | np.ndarray) -> np.ndarray | float:
        """How long a transfer of ``bits`` starting at ``start_s`` takes."""
        out = self.transfer_end_s(bits, start_s) - np.asarray(start_s, dtype=float)
        return float(out) if np.ndim(out) == 0 else out

    def mean_bps_between(self, t0_s: float, t1_s: float) -> float:
        """Mean rate over ``[t0_s, t1_s]``."""
        if t1_s <= t0_s:
            return float(self.rate_bps_at(t0_s))
        return float((self.bits_until(t1_s) - self.bits_until(t0_s)) / (t1_s - t0_s))


def parse_rate_trace(text: str, source: str = "trace") -> RateTrace:
    """Parse and validate a trace (``time_s  Mbit/s`` per line); errors name ``source:line``."""
    times: list[float] = []
    rates: list[float] = []
    for no, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.split()
        if len(parts) != 2:
            raise ScenarioError(f"{source}:{no}: expected two numbers 'time_s Mbit/s', got {len(parts)} "
                                f"field(s): {_short(s)!r}")
        vals = []
        for what, p in zip(("time", "rate"), parts):
            try:
                v = float(p)
            except ValueError:
                raise ScenarioError(f"{source}:{no}: {what} {_short(p)!r} is not a number") from None
            if not math.isfinite(v):
                raise ScenarioError(f"{source}:{no}: {what} {p!r} is not a finite number")
            vals.append(v)
        t, r = vals
        if r < 0:
            raise ScenarioError(f"{source}:{no}: negative rate {r:g} Mbit/s")
        if times and t <= times[-1]:
            raise ScenarioError(f"{source}:{no}: time {t:g} s is not after the previous sample's "
                                f"{times[-1]:g} s (times must increase)")
        times.append(t)
        rates.append(r * MBIT)
    if not times:
        raise ScenarioError(f"{source}: empty trace: no 'time_s Mbit/s' samples")
    trace = RateTrace.from_samples(times, rates, source)
    if trace.bits_per_loop <= 0:
        raise ScenarioError(f"{source}: every rate is 0: the link would never carry a bit")
    return trace


def load_rate_trace(path: str | Path) -> RateTrace:
    """Read and validate a trace file (see the module docstring)."""
    p = Path(path)
    raw = read_user_file(p, MAX_TRACE_BYTES, "trace file", missing="trace file not found")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ScenarioError(f"{p}: unreadable: not UTF-8 text (byte {e.start})") from None
    return parse_rate_trace(text, str(p))


def _short(s: str, n: int = 40) -> str:
    return s if len(s) <= n else s[: n - 3] + "..."
