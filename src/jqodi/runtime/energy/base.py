"""The meter every energy meter is: windows over a cumulative energy counter, and what one costs.

:class:`EnergyMeter` is the abstract device (a subclass gives ``_energy_counter_j``; a window is the
difference between its two ends), :class:`Measurement` one window's joules and seconds, and
:class:`_PowerIntegrator` the trapezoid integral of power samples shared by the NVML sampler and
the replay meter.
"""
from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar

from jqodi.errors import JqodiError

__all__ = ["EnergyMeter", "EnergyMeterError", "Measurement"]


class EnergyMeterError(JqodiError):
    """A meter cannot be created or read (names the meter and the reason)."""


@dataclass(frozen=True)
class Measurement:
    """What one window cost.

    Attributes:
        energy_j: energy spent during the window (in joules).
        time_s: wall-clock length of the window (in seconds).
        meter: name of the meter that measured it (``nvml``, ``rapl``, ``model``, ``replay``,
            ``null``), so every figure says where it came from.
        idle_j: the part of ``energy_j`` charged for idle time (in joules): only a ``model``
            meter given an idle power charges it (the node up and waiting); 0 otherwise.
    """

    energy_j: float
    time_s: float
    meter: str
    idle_j: float = 0.0

    @property
    def busy_j(self) -> float:
        """The part of ``energy_j`` spent busy (in joules): all of it unless idle is charged."""
        return self.energy_j - self.idle_j

    @property
    def avg_power_w(self) -> float:
        """Mean power over the window (in watts); 0 for an empty window."""
        return self.energy_j / self.time_s if self.time_s > 0 else 0.0

    def __add__(self, other: "Measurement") -> "Measurement":
        """Sum of two windows (per-phase totals); the meter name is kept when both agree."""
        if not isinstance(other, Measurement):
            return NotImplemented
        meter = self.meter if self.meter == other.meter else f"{self.meter}+{other.meter}"
        return Measurement(self.energy_j + other.energy_j, self.time_s + other.time_s, meter,
                           self.idle_j + other.idle_j)


@dataclass(frozen=True)
class _Mark:
    """The state of the world when a window began."""

    time_s: float
    energy_j: float
    cpu_s: float


class EnergyMeter(ABC):
    """One energy meter. Subclasses give a cumulative energy counter; windows are differences.

    Attributes:
        name: the meter's kind (``nvml``, ``rapl``, ``model``, ``replay``, ``null``).
        description: one human line saying what exactly is measured (device, zones, power).
    """

    name: ClassVar[str]

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 cpu_clock: Callable[[], float] = time.process_time) -> None:
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._windows: dict[str, _Mark] = {}
        self._lock = threading.Lock()
        self.description = self.name

    # -- what a subclass provides ---------------------------------------------------------
    @abstractmethod
    def _energy_counter_j(self) -> float:
        """Energy (in joules) spent since an arbitrary origin; never decreases."""

    def _window_energy_j(self, begin: _Mark, end: _Mark, busy_s: float | None) -> float:
        return max(0.0, end.energy_j - begin.energy_j)

    def _window_idle_j(self, begin: _Mark, end: _Mark, busy_s: float | None, up_s: float | None) -> float:
        """The idle share of a window (in joules): 0 unless the meter charges idle power."""
        return 0.0

    # -- the public surface -----------------------------------------------------------------
    def _mark(self) -> _Mark:
        return _Mark(self._clock(), self._energy_counter_j(), self._cpu_clock())

    def begin_window(self, key: str) -> None:
        """Start the window ``key``. Keys are unique among open windows."""
        with self._lock:
            if key in self._windows:
                raise ValueError(f"{self.name} meter: window {key!r} is already open")
            self._windows[key] = self._mark()

    def end_window(self, key: str, busy_s: float | None = None, up_s: float | None = None) -> Measurement:
        """Close the window ``key`` and return its energy and time.

        Args:
            key: the key given to :meth:`begin_window`.
            busy_s: seconds the node was busy during the window (in seconds). Only the
                ``model`` meter uses it (busy power × busy_s); hardware meters measure.
            up_s: seconds the node was up during the window (in seconds; default: the window's
                length, × the meter's time scale). Only a ``model`` meter with an idle power uses
                it: idle power × (up_s − busy_s).
        """
        for name, v in (("busy_s", busy_s), ("up_s", up_s)):
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{self.name} meter: {name} must be a finite number ≥ 0, got {v!r}")
        with self._lock:
            if key not in self._windows:
                raise ValueError(f"{self.name} meter: no open window {key!r}")
            begin = self._windows.pop(key)
            end = self._mark()
        idle_j = self._window_idle_j(begin, end, busy_s, up_s)
        return Measurement(self._window_energy_j(begin, end, busy_s) + idle_j,
                           max(0.0, end.time_s - begin.time_s), self.name, idle_j)

    @property
    def open_windows(self) -> tuple[str, ...]:
        """Keys of the windows begun and not yet ended."""
        with self._lock:
            return tuple(self._windows)

    def close(self) -> None:
        """Release the hardware handle (and stop any sampling thread). Idempotent."""

    def __enter__(self) -> "EnergyMeter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description!r}>"


# ---------------------------------------------------------------------------------------------
# power traces (shared by the NVML sampler and the replay meter)


def _trapezoid_j(t0: float, p0_w: float, t1: float, p1_w: float) -> float:
    return 0.5 * (p0_w + p1_w) * max(0.0, t1 - t0)


class _PowerIntegrator:
    """A running integral of power samples: energy (J) = Σ trapezoids of (time s, power W)."""

    def __init__(self) -> None:
        self.energy_j = 0.0
        self.last: tuple[float, float] | None = None

    def add(self, t_s: float, power_w: float) -> float:
        if self.last is not None and t_s > self.last[0]:
            self.energy_j += _trapezoid_j(*self.last, t_s, power_w)
        if self.last is None or t_s >= self.last[0]:
            self.last = (t_s, power_w)
        return self.energy_j

