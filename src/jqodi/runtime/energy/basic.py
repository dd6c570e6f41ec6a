"""Meters that need no hardware: ``null`` (0 J), ``model`` (busy power × busy time, the paper's
accounting) and ``replay`` (a recorded power trace)."""
from __future__ import annotations

import csv
import math
import os
import time
from typing import Callable, Iterable

from jqodi.runtime.energy.base import EnergyMeter, EnergyMeterError, Measurement, _Mark, _trapezoid_j

__all__ = ["NullMeter", "ModelMeter", "ReplayMeter"]


class NullMeter(EnergyMeter):
    """No meter here: every window costs 0 J. Never fails, not even on an unknown key."""

    name = "null"

    def __init__(self, reason: str = "no energy meter", **kw) -> None:
        super().__init__(**kw)
        self.description = f"null ({reason})"

    def _energy_counter_j(self) -> float:
        return 0.0

    def begin_window(self, key: str) -> None:
        with self._lock:
            self._windows[key] = _Mark(self._clock(), 0.0, 0.0)

    def end_window(self, key: str, busy_s: float | None = None, up_s: float | None = None) -> Measurement:
        with self._lock:
            begin = self._windows.pop(key, None)
        elapsed = max(0.0, self._clock() - begin.time_s) if begin is not None else 0.0
        return Measurement(0.0, elapsed, self.name)


# ---------------------------------------------------------------------------------------------
# model-based


class ModelMeter(EnergyMeter):
    """Busy power × busy time, the paper's accounting: idle time costs nothing — unless the node
    declares an idle power.

    ``busy_power_w`` (in watts) is the device's power while computing (the scenario's
    ``busy_power_w``, or ε·v). A window's busy time is the ``busy_s`` passed to
    :meth:`end_window` (in emulation: the compute time the device profile predicts), else the
    CPU time this process used during the window (all its threads).

    ``idle_power_w`` (in watts, optional): the power the node draws while it is up and not busy.
    Given, a window also costs idle power × (up time − busy time), where the up time is the
    ``up_s`` passed to :meth:`end_window`, else the window's wall-clock length × ``time_scale``
    (in emulation 1 / dilation: the device's seconds per wall second). That is the ``extended``
    cost model's ``idle_energy`` term (``end_idle_j``, ``edge_idle_j``, ``cloud_idle_j``) measured;
    the measurement's ``idle_j`` holds it. Without it (the ``paper`` model, Eq. (1)–(10)) idle time is free.
    """

    name = "model"

    def __init__(self, busy_power_w: float, idle_power_w: float | None = None, *, time_scale: float = 1.0,
                 **kw) -> None:
        _check_number("busy_power_w", busy_power_w, "≥ 0 (W)")
        if idle_power_w is not None:
            _check_number("idle_power_w", idle_power_w, "≥ 0 (W)")
        _check_number("time_scale", time_scale, "> 0", positive=True)
        super().__init__(**kw)
        self.busy_power_w = float(busy_power_w)
        self.idle_power_w = None if idle_power_w is None else float(idle_power_w)
        self.time_scale = float(time_scale)
        self.description = f"model ({self.busy_power_w:g} W × busy time" + (
            f" + {self.idle_power_w:g} W × idle time)" if self.idle_power_w is not None else ")")

    def _energy_counter_j(self) -> float:
        return 0.0  # energy is computed per window from busy time

    @staticmethod
    def _busy_s(begin: _Mark, end: _Mark, busy_s: float | None) -> float:
        return busy_s if busy_s is not None else max(0.0, end.cpu_s - begin.cpu_s)

    def _window_energy_j(self, begin: _Mark, end: _Mark, busy_s: float | None) -> float:
        return self.busy_power_w * self._busy_s(begin, end, busy_s)

    def _window_idle_j(self, begin: _Mark, end: _Mark, busy_s: float | None, up_s: float | None) -> float:
        if self.idle_power_w is None:
            return 0.0
        up = up_s if up_s is not None else max(0.0, end.time_s - begin.time_s) * self.time_scale
        return self.idle_power_w * max(0.0, up - self._busy_s(begin, end, busy_s))


def _check_number(name: str, v, bound: str, positive: bool = False) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise EnergyMeterError(f"model meter: {name} must be a finite number {bound}, got {v!r}")


class ReplayMeter(EnergyMeter):
    """Replays a recorded power trace: a window's energy is the trace's integral over it.

    ``samples`` are ``(time_s, power_w)`` pairs on the same time axis as ``clock`` (by default
    wall-clock epoch seconds, as an external power monitor logs them). Between samples power is
    linear; before the first and after the last sample it is 0 (nothing was recorded).
    """

    name = "replay"

    def __init__(self, samples: Iterable[tuple[float, float]], *,
                 clock: Callable[[], float] = time.time, **kw) -> None:
        pts = sorted((float(t), float(p)) for t, p in samples)
        if not pts:
            raise EnergyMeterError("replay meter: the recording has no samples")
        if any(not (math.isfinite(t) and math.isfinite(p) and p >= 0) for t, p in pts):
            raise EnergyMeterError("replay meter: samples must be finite with power ≥ 0 W")
        super().__init__(clock=clock, **kw)
        self._t = [t for t, _ in pts]
        self._p = [p for _, p in pts]
        self._cum = [0.0]
        for i in range(1, len(pts)):
            self._cum.append(self._cum[-1] + _trapezoid_j(self._t[i - 1], self._p[i - 1],
                                                          self._t[i], self._p[i]))
        self.description = f"replay ({len(pts)} samples, {self._t[0]:.3f}–{self._t[-1]:.3f} s)"

    @classmethod
    def from_csv(cls, path: str | os.PathLike, *, time_column: str = "time_s",
                 power_column: str = "power_w", **kw) -> "ReplayMeter":
        """Load a CSV with a header naming ``time_s`` and ``power_w`` columns."""
        try:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            samples = [(float(r[time_column]), float(r[power_column])) for r in rows]
        except OSError as e:
            raise EnergyMeterError(f"replay meter: cannot read {path}: {e.strerror or e}") from e
        except (KeyError, TypeError, ValueError) as e:
            raise EnergyMeterError(f"replay meter: {path} needs numeric columns "
                                   f"{time_column!r} and {power_column!r}") from e
        return cls(samples, **kw)

    def energy_at(self, t_s: float) -> float:
        """Energy (J) recorded from the start of the trace up to time ``t_s``."""
        import bisect

        t, p, cum = self._t, self._p, self._cum
        if t_s <= t[0]:
            return 0.0
        if t_s >= t[-1]:
            return cum[-1]
        i = bisect.bisect_right(t, t_s) - 1
        frac = (t_s - t[i]) / (t[i + 1] - t[i]) if t[i + 1] > t[i] else 0.0
        p_at = p[i] + frac * (p[i + 1] - p[i])
        return cum[i] + _trapezoid_j(t[i], p[i], t_s, p_at)

    def _energy_counter_j(self) -> float:
        return self.energy_at(self._clock())

    def _mark(self) -> _Mark:
        now = self._clock()  # one clock reading for both the time and the energy
        return _Mark(now, self.energy_at(now), self._cpu_clock())
