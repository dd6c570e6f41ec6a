"""An emulated edge server shared by several devices: a processor-sharing compute clock.

The capacity model (:mod:`jqodi.core.fleet`) treats an edge server as a processor-sharing
server: the compute steps of the devices it serves progress at once, each at an equal share of
the edge's speed, and the server is work-conserving. :class:`ProcessorSharing` is that server on
this host's clock: a step of the device's dedicated duration ``w`` (``flops / v × dilation``,
what :class:`~jqodi.runtime.emulation.ComputeClock` pads to) ends when it has received ``w``
seconds of service, at rate ``1/n(t)`` while ``n(t)`` steps are in service. The host's real
compute runs inside the step; a step the host could not finish in time counts as overrun.

Energy stays the device's: each step bills ``w`` (its dedicated busy time), so the edge's energy
over a window is its busy power × the work it did, however it was shared.
"""
from __future__ import annotations

import itertools
import threading
import time
from contextlib import contextmanager

from jqodi.runtime.emulation import ComputeClock, Step

__all__ = ["ProcessorSharing", "SharedComputeClock"]


class ProcessorSharing:
    """A fluid processor-sharing server on ``time.perf_counter`` (thread-safe)."""

    def __init__(self):
        self._cv = threading.Condition()
        self._left: dict[int, float] = {}   # step -> seconds of dedicated work left
        self._done: dict[int, float] = {}   # step -> when it completed
        self._t = time.perf_counter()
        self._ids = itertools.count()
        self.busy_s = 0.0                   # seconds with a step in service (= dedicated seconds served)

    def _advance(self, now: float) -> None:
        t = self._t
        while self._left and t < now:
            n = len(self._left)
            step = min(now - t, min(self._left.values()) * n)
            for k in self._left:
                self._left[k] -= step / n
            t += step
            self.busy_s += step
            for k in [k for k, v in self._left.items() if v <= 1e-12]:
                del self._left[k]
                self._done[k] = t
        self._t = now

    def arrive(self, work_s: float) -> int:
        """A step of ``work_s`` dedicated seconds enters service now; returns its id."""
        with self._cv:
            self._advance(time.perf_counter())
            k = next(self._ids)
            self._left[k] = max(0.0, float(work_s))
            if self._left[k] <= 0:
                del self._left[k]
                self._done[k] = self._t
            self._cv.notify_all()  # the others' shares shrink: they recompute their finish
            return k

    def wait(self, k: int) -> float:
        """Block until step ``k`` has been served; returns when it completed (perf_counter)."""
        with self._cv:
            while True:
                self._advance(time.perf_counter())
                if k in self._done:
                    self._cv.notify_all()
                    return self._done.pop(k)
                mine = self._left[k]
                # with no arrivals, each step in service gets min(its work, mine) before mine ends
                finish = self._t + sum(min(v, mine) for v in self._left.values())
                left = finish - time.perf_counter()
                if left > 0.002:
                    self._cv.wait(left - 0.001)
                else:
                    self._cv.release()  # spin the last milliseconds, as the single-device clock does
                    try:
                        time.sleep(0)
                    finally:
                        self._cv.acquire()


class SharedComputeClock(ComputeClock):
    """A :class:`ComputeClock` whose padded steps are served by a shared :class:`ProcessorSharing`."""

    def __init__(self, server: ProcessorSharing, device, dilation: float = 1.0, **rooflines):
        """``rooflines``: the device's ``model``/``blocks``/``bits`` (as :class:`ComputeClock`), so a
        step is the device model's time for it; without them, FLOPs / v."""
        super().__init__(device, dilation, **rooflines)
        self.server = server

    @classmethod
    def sharing(cls, server: ProcessorSharing, clock: ComputeClock) -> "SharedComputeClock":
        """``clock``'s device, dilation and rooflines, its steps served by ``server``."""
        return cls(server, clock.device, clock.dilation, **clock.rooflines())

    @contextmanager
    def compute(self, phase: str, flops: float = 0.0, step: Step | None = None):
        own = self.device_time_s(flops, step, phase) if self.device is not None else None
        if own is None:
            with super().compute(phase, flops, step):
                yield
            return
        t0 = time.perf_counter()
        work = own * self.dilation * (self.slowdown() if self.slowdown else 1.0)
        k = self.server.arrive(work)
        yield
        spent = time.perf_counter() - t0
        done = self.server.wait(k)
        if spent > done - t0:
            self.overrun_s += spent - (done - t0)
        total = time.perf_counter() - t0
        self.device_s[phase] = self.device_s.get(phase, 0.0) + work
        self.busy_s[phase] = self.busy_s.get(phase, 0.0) + total
        self.compute_s[phase] = self.compute_s.get(phase, 0.0) + spent
        self.flops[phase] = self.flops.get(phase, 0.0) + flops
