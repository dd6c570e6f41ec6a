"""The runtime's side of the closed loop: the controller it asks, the timeline it applies.

**The controller** (Flower's Strategy/Grid split): after every epoch the cloud hands an
observation to a controller that the app injects, and runs what it answers; the runtime never
imports the planner. Any object with these methods will do (the app's is
:class:`jqodi.app.controller.ClosedLoopController`):

* ``after_epoch(observation: dict) -> decision`` — ``observation`` has ``epoch`` (epochs
  completed), ``edge``, ``cut``, ``val_loss``, ``time_s`` (the epoch, testbed seconds),
  ``elapsed_s`` (testbed seconds since fine-tuning started), ``energy_j``, ``phases_s``
  (measured seconds per cost-model term), ``model``, ``bits``;
* ``on_event(kind, edge, at_s) -> decision`` — ``kind`` = ``edge_leaves`` | ``edge_returns``;
* ``summary() -> dict`` — what the record keeps.

A *decision* has ``action`` (``continue``: run ``schedule``, the remaining epochs in order,
entries with ``edge``, ``cut``, ``epochs``; ``stop``; ``pause``: nothing can run now, end at
this epoch boundary), ``reason`` and ``replan`` (``None`` or an object with ``text()`` and
``to_dict()``). Without a controller the runtime runs the job's schedule as it is.

**The timeline** (:class:`jqodi.core.timeline.Timeline`, carried by the job as plain data) is
applied for real by the emulation: a device's compute is padded by its current slowdown factor
(:class:`~jqodi.runtime.emulation.ComputeClock`), a link following a trace occupies the wire
until the trace has carried the message's bits (:meth:`EmulatedTimeline.wire_done`), and the
cloud stops (SIGSTOP) and continues (SIGCONT) an edge server's process as it leaves and comes
back, at the first epoch boundary at or after the event's time (an epoch in flight finishes
first). Testbed time is wall-clock time since the shared origin divided by the dilation; every
role learns the origin from the cloud's ``epoch`` / ``model`` messages.
"""
from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np

from jqodi.core.timeline import Timeline

__all__ = ["Controller", "EmulatedTimeline", "expand_schedule"]


class Controller(Protocol):
    def after_epoch(self, observation: dict) -> Any: ...

    def on_event(self, kind: str, edge: str, at_s: float | None = None) -> Any: ...

    def summary(self) -> dict: ...


def expand_schedule(schedule) -> list[tuple[str, int]]:
    """A decision's schedule (entries with ``edge``, ``cut``, ``epochs``) as one (edge, cut) per epoch."""
    return [(s.edge, int(s.cut)) for s in schedule for _ in range(int(s.epochs))]


class EmulatedTimeline:
    """A :class:`Timeline` on the wall clock of one host: testbed seconds = (now − origin) / dilation."""

    def __init__(self, timeline: Timeline | dict | None, dilation: float = 1.0, origin: float | None = None):
        self.timeline = timeline if isinstance(timeline, Timeline) else Timeline.from_dict(timeline)
        self.dilation = float(dilation)
        self.origin = origin

    @property
    def empty(self) -> bool:
        return self.timeline.empty

    def start(self, origin: float) -> None:
        """Set the wall-clock time (``time.time()``) at which testbed time was 0."""
        self.origin = float(origin)

    def now_s(self) -> float:
        """Testbed seconds since fine-tuning started (0 before the origin is known)."""
        if self.origin is None:
            return 0.0
        return max(0.0, (time.time() - self.origin) / self.dilation)

    def slowdown(self, device: str):
        """A callable giving ``device``'s current compute-time factor (for the compute clock)."""
        if not any(kind == "slowdown" and key == device for _, kind, key, _ in self.timeline.changes):
            return None
        return lambda: self.timeline.slowdown(device, self.now_s())

    def follows_trace(self, link: str) -> bool:
        return link in self.timeline.traces

    def wire_done(self, link: str, nbytes: int, begin_wall: float, nominal_bps: float) -> float:
        """Wall-clock time (``time.time()`` scale) at which a message of ``nbytes`` that starts
        occupying ``link`` at ``begin_wall`` has crossed it (``nominal_bps`` before the trace starts)."""
        t0 = max(0.0, (begin_wall - (self.origin if self.origin is not None else begin_wall)) / self.dilation)
        dur = float(np.asarray(self.timeline.transfer_s(link, 8.0 * nbytes, t0, nominal_bps)))
        return begin_wall + dur * self.dilation

    def edge_events(self, since_s: float, until_s: float) -> list[tuple[float, str, bool]]:
        """Edge leave/return events with ``since_s < at_s ≤ until_s``: ``(at_s, edge, available)``."""
        return self.timeline.availability_events(since_s, until_s)


class EpochDriver:
    """The cloud's epoch loop: which (edge, cut) runs next, and what to do after each epoch.

    Without a controller it runs ``plan`` (the job's epochs) as it is. With one, it hands every
    epoch's observation to ``controller.after_epoch`` and runs what comes back; it announces an
    edge leaving or returning (the emulated timeline's events, applied at epoch boundaries) with
    ``controller.on_event``. ``stop_edge(name, away)`` stops or continues an edge's process.
    ``status`` ends as ``completed`` or ``paused`` (nothing can run now; ``reason`` says why).
    """

    def __init__(self, plan: list[tuple[str, int]], *, controller: Controller | None = None,
                 timeline: EmulatedTimeline | None = None, stop_edge=None, say=lambda s: None,
                 elapsed_s: float = 0.0, away: set[str] | None = None):
        self.plan = list(plan)
        self.controller = controller
        self.timeline = timeline
        self.stop_edge = stop_edge or (lambda name, away: None)
        self.say = say
        self.status = "completed"
        self.reason = ""
        self.away: set[str] = set(away or ())
        self._seen_s = elapsed_s
        self.replans: list[dict] = []

    def _decide(self, decision) -> None:
        if decision is None:
            return
        rp = getattr(decision, "replan", None)
        if rp is not None:
            self.replans.append(rp.to_dict())
            self.say(rp.text())
        if decision.action == "continue":
            self.plan = expand_schedule(decision.schedule)
        elif decision.action == "stop":
            self.plan, self.status, self.reason = [], "completed", decision.reason
        else:  # pause
            self.plan, self.status, self.reason = [], "paused", decision.reason

    def events(self, now_s: float) -> None:
        """Apply the timeline's edge events up to ``now_s`` (testbed seconds)."""
        if self.timeline is None or self.timeline.empty:
            return
        for at, edge, up in self.timeline.edge_events(self._seen_s, now_s):
            if up:
                self.away.discard(edge)
            else:
                self.away.add(edge)
            self.stop_edge(edge, not up)
            self.say(f"t = {at:.3g} s: edge {edge} {'is back' if up else 'left'}")
            if self.controller is not None:
                self._decide(self.controller.on_event("edge_returns" if up else "edge_leaves", edge, at))
        self._seen_s = max(self._seen_s, now_s)

    def next(self, now_s: float) -> tuple[str, int] | None:
        """The next epoch's (edge, cut), or ``None`` when the run ends here (see ``status``)."""
        self.events(now_s)
        if not self.plan:
            return None
        edge, cut = self.plan[0]
        if edge in self.away and self.status != "paused":
            if self.controller is None:
                self.status, self.reason = "paused", f"edge {edge} is away and the plan needs it"
            else:
                self._decide(self.controller.on_event("edge_leaves", edge, now_s))
                if self.plan and self.plan[0][0] in self.away:
                    self.status, self.reason = "paused", f"edge {self.plan[0][0]} is away"
            if self.status == "paused":
                self.plan = []
                return None
            return self.next(now_s)
        return self.plan[0]

    def after_epoch(self, observation: dict) -> None:
        """An epoch finished: the plan without it, or the controller's answer."""
        if self.plan:
            self.plan.pop(0)
        if self.controller is not None:
            self._decide(self.controller.after_epoch(observation))
            if not self.plan and self.status == "completed" and not self.reason:
                self.reason = "the plan's epochs are done"
        elif not self.plan:
            self.reason = "the plan's epochs are done"


def end_assignments(role):
    """The end device's epochs as the cloud assigns them: ``(epoch, edge, cut)`` until ``done``.

    Each ``epoch`` message also carries the testbed clock's origin (the emulated timeline's)."""
    while True:
        m = role.t.recv("cloud", ("epoch", "done"))
        if m.kind == "done":
            return
        _origin(role, m.meta)
        yield int(m.meta["epoch"]), str(m.meta["edge"]), int(m.meta["cut"])


def edge_assignments(role):
    """An edge server's epochs: ``(epoch, cut, model message)`` for each ``model`` the cloud sends
    it, until ``done``."""
    while True:
        m = role.t.recv("cloud", ("model", "done"))
        if m.kind == "done":
            return
        _origin(role, m.meta)
        yield int(m.meta["epoch"]), int(m.meta["cut"]), m


def _origin(role, meta: dict) -> None:
    tl = getattr(role.ctx, "timeline", None)
    if tl is not None and meta.get("origin") is not None:
        tl.start(float(meta["origin"]))
