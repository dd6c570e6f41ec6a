"""Resources that change during a run: the scenario's ``timeline:`` block.

The paper says resources "may dynamically vary in both spatial and temporal dimensions" (§I) and
that JQODI is triggered again "when there is a significant change in resource status" (§V-A).
A timeline lists what changes, in testbed seconds since fine-tuning started (``at_s``):

.. code-block:: yaml

    timeline:
      - {at_s: 0,  event: link_trace, edge: rtx3090, link: end, trace: traces/commute.txt}
      - {at_s: 40, event: edge_leaves, edge: rtx4090}
      - {at_s: 90, event: edge_returns, edge: rtx4090}
      - {at_s: 60, event: slowdown, device: end, factor: 1.5}

* ``link_trace``: from ``at_s`` on, the link between ``edge`` and the ``end`` device (or the
  ``cloud``) follows a rate trace file (:mod:`jqodi.core.linktrace`; a relative path is read
  from the scenario file's folder, ``jqodi:traces/NAME`` is a trace shipped with the package). ``scale`` multiplies the trace's rates; ``mean_rate_bps``
  instead rescales the trace so its mean is that rate (keeping its shape and outages). Before
  ``at_s`` the link has its nominal rate.
* ``edge_leaves`` / ``edge_returns``: the edge server stops (its process is stopped) and comes
  back. A run learns of these at once (a resource event).
* ``slowdown``: from ``at_s`` on, ``device`` (``cloud``, ``end``, an edge's name, or a device's
  own name) computes ``factor`` times slower (``factor: 1`` restores it). Busy power is unchanged,
  so its energy per FLOP grows by the same factor.

Slowdowns and link rates are *not* announced to the planner: a closed-loop run sees them only
through what it measures (plans see only the past). :class:`Timeline` answers "what is the state
at time t" for the emulated runtime and the simulator.

Device and link keys are the runtime's: devices ``cloud``, ``end``, ``edge:NAME``; links
``cloud|edge:NAME`` and ``edge:NAME|end``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, Union

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from jqodi.core.linktrace import RateTrace, load_rate_trace
from jqodi.errors import ScenarioError

__all__ = ["TimelineEvent", "LinkTraceEvent", "EdgeLeavesEvent", "EdgeReturnsEvent", "SlowdownEvent",
           "Timeline", "resolve_timeline", "parse_timeline_events", "link_key", "device_key"]


def _no_bool(v: Any) -> Any:
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {str(v).lower()}")
    return v


_Time = Annotated[float, BeforeValidator(_no_bool), Field(ge=0, allow_inf_nan=False)]
_Pos = Annotated[float, BeforeValidator(_no_bool), Field(gt=0, allow_inf_nan=False)]
_Str = Annotated[str, Field(min_length=1, max_length=4096)]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at_s: _Time


class LinkTraceEvent(_Event):
    """From ``at_s`` on, the ``edge``–``link`` link follows the rate trace in ``trace``."""

    event: Literal["link_trace"]
    edge: _Str
    link: Literal["end", "cloud"] = "end"
    trace: _Str
    scale: _Pos | None = None
    mean_rate_bps: _Pos | None = None

    @model_validator(mode="after")
    def _one_rescaling(self):
        if self.scale is not None and self.mean_rate_bps is not None:
            raise ValueError("give at most one of 'scale' and 'mean_rate_bps'")
        return self


class EdgeLeavesEvent(_Event):
    """The edge server leaves (its process stops) at ``at_s``."""

    event: Literal["edge_leaves"]
    edge: _Str


class EdgeReturnsEvent(_Event):
    """The edge server is back at ``at_s``."""

    event: Literal["edge_returns"]
    edge: _Str


class SlowdownEvent(_Event):
    """From ``at_s`` on, ``device`` computes ``factor`` times slower (1 restores it)."""

    event: Literal["slowdown"]
    device: _Str
    factor: _Pos


TimelineEvent = Annotated[Union[LinkTraceEvent, EdgeLeavesEvent, EdgeReturnsEvent, SlowdownEvent],
                          Field(discriminator="event")]
_EVENTS = TypeAdapter(list[TimelineEvent])


def parse_timeline_events(items: Any, source: str = "timeline") -> list:
    """Validate a list of event mappings (the scenario's ``timeline:`` block, or a benchmark's)."""
    if items is None:
        return []
    try:
        return _EVENTS.validate_python(items)
    except ValidationError as e:
        err = e.errors()[0]
        loc = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in err["loc"]
                      if x not in ("link_trace", "edge_leaves", "edge_returns", "slowdown"))
        msg = err["msg"].removeprefix("Value error, ")
        raise ScenarioError(f"{source}: timeline{loc}: {msg}") from None


def link_key(edge: str, other: str) -> str:
    """The runtime's key of the link between edge ``edge`` and ``other`` (``end`` or ``cloud``)."""
    return f"edge:{edge}|end" if other == "end" else f"cloud|edge:{edge}"


def device_key(name: str, *, cloud: str, end: str, edges: Iterable[str]) -> str | None:
    """``cloud`` / ``end`` / ``edge:NAME`` for a role or device name; ``None`` when unknown."""
    edges = list(edges)
    if name in ("cloud", cloud):
        return "cloud"
    if name in ("end", end):
        return "end"
    bare = name.removeprefix("edge:")
    return f"edge:{bare}" if bare in edges else None


@dataclass(frozen=True)
class TimedTrace:
    """A link following ``trace`` from ``start_s`` on."""

    start_s: float
    trace: RateTrace


@dataclass
class Timeline:
    """The resolved timeline: availability and slowdown changes in time order, link traces.

    ``changes``: ``(at_s, kind, key, value)`` with kind ``edge`` (value True = available) or
    ``slowdown`` (value = factor), sorted by time (stable: file order among equal times).
    """

    changes: list[tuple[float, str, str, Any]] = field(default_factory=list)
    traces: dict[str, TimedTrace] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.changes and not self.traces

    def edge_available(self, edge: str, t_s: float) -> bool:
        """Is ``edge`` (a bare name) up at ``t_s``? (An event at exactly ``t_s`` has happened.)"""
        up = True
        for at, kind, key, value in self.changes:
            if at > t_s:
                break
            if kind == "edge" and key == f"edge:{edge}":
                up = bool(value)
        return up

    def edges_down(self, t_s: float) -> set[str]:
        names = {k.removeprefix("edge:") for _, kind, k, _ in self.changes if kind == "edge"}
        return {e for e in names if not self.edge_available(e, t_s)}

    def slowdown(self, device: str, t_s: float) -> float:
        """Compute-time factor of ``device`` (a device key) at ``t_s``; 1 when none applies."""
        f = 1.0
        for at, kind, key, value in self.changes:
            if at > t_s:
                break
            if kind == "slowdown" and key == device:
                f = float(value)
        return f

    def slowdown_array(self, device: str, t_s: np.ndarray) -> np.ndarray:
        """:meth:`slowdown` for an array of times."""
        t = np.asarray(t_s, dtype=float)
        out = np.ones_like(t)
        for at, kind, key, value in self.changes:
            if kind == "slowdown" and key == device:
                out = np.where(t >= at, float(value), out)
        return out

    def leaves_between(self, edge: str, t0_s: float | np.ndarray, t1_s: float | np.ndarray) -> np.ndarray:
        """First time in ``[t0_s, t1_s)`` at which ``edge`` is away (``inf`` if it stays up);
        ``t0_s`` itself when it is away already (vectorised over the intervals)."""
        t0 = np.asarray(t0_s, dtype=float)
        t1 = np.asarray(t1_s, dtype=float)
        out = np.where(self._up_array(edge, t0), np.inf, t0)
        for at, kind, key, value in self.changes:
            if kind == "edge" and key == f"edge:{edge}" and not value:
                hit = (at > t0) & (at < t1)
                out = np.where(hit, np.minimum(out, at), out)
        return out

    def _up_array(self, edge: str, t_s: np.ndarray) -> np.ndarray:
        up = np.ones(np.shape(t_s), dtype=bool)
        for at, kind, key, value in self.changes:
            if kind == "edge" and key == f"edge:{edge}":
                up = np.where(t_s >= at, bool(value), up)
        return up

    def availability_events(self, t0_s: float, t1_s: float) -> list[tuple[float, str, bool]]:
        """Edge leave/return events with ``t0_s < at_s ≤ t1_s``: ``(at_s, edge, available)``."""
        return [(at, key.removeprefix("edge:"), bool(v)) for at, kind, key, v in self.changes
                if kind == "edge" and t0_s < at <= t1_s]

    def next_return_s(self, edge: str, t_s: float) -> float | None:
        """When ``edge`` is next available at or after ``t_s`` (``t_s`` if it is up now)."""
        if self.edge_available(edge, t_s):
            return t_s
        for at, kind, key, v in self.changes:
            if at > t_s and kind == "edge" and key == f"edge:{edge}" and v:
                return at
        return None

    def to_dict(self) -> dict:
        """Plain JSON (what a job carries to every role process)."""
        return {"changes": [list(c) for c in self.changes],
                "traces": {k: {"start_s": tt.start_s, "source": tt.trace.source, "times_s": tt.trace.times_s.tolist(),
                               "rates_bps": tt.trace.rates_bps.tolist(), "duration_s": tt.trace.duration_s}
                           for k, tt in self.traces.items()}}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Timeline":
        if not d:
            return cls()
        changes = [(float(at), str(kind), str(key), v) for at, kind, key, v in d.get("changes", [])]
        traces = {k: TimedTrace(float(t["start_s"]), RateTrace.from_samples(t["times_s"], t["rates_bps"],
                                                                           t.get("source", k), float(t["duration_s"])))
                  for k, t in (d.get("traces") or {}).items()}
        return cls(sorted(changes, key=lambda c: c[0]), traces)

    def change_times(self) -> list[float]:
        return sorted({at for at, *_ in self.changes} | {tt.start_s for tt in self.traces.values()})

    # -- links -------------------------------------------------------------------------------------
    def link_rate_bps(self, link: str, t_s: float, nominal_bps: float) -> float:
        tt = self.traces.get(link)
        if tt is None or t_s < tt.start_s:
            return nominal_bps
        return float(tt.trace.rate_bps_at(t_s - tt.start_s))

    def transfer_s(self, link: str, bits: float | np.ndarray, start_s: float | np.ndarray,
                   nominal_bps: float) -> np.ndarray | float:
        """Seconds to send ``bits`` over ``link`` from ``start_s`` (the nominal rate before its
        trace starts; vectorised)."""
        bits_a, start = np.asarray(bits, dtype=float), np.asarray(start_s, dtype=float)
        tt = self.traces.get(link)
        if tt is None:
            out = np.broadcast_to(bits_a / nominal_bps, np.broadcast(bits_a, start).shape).astype(float)
        else:
            lead = np.maximum(tt.start_s - start, 0.0)           # nominal-rate time before the trace
            before = np.minimum(bits_a, lead * nominal_bps)
            rest = bits_a - before
            on_trace = tt.trace.transfer_s(rest, np.maximum(start - tt.start_s, 0.0))
            out = np.where(rest > 0, lead + on_trace, before / nominal_bps)
        return float(out) if np.ndim(out) == 0 else out


#: A trace path starting with this names a trace shipped with the package (``jqodi:traces/X.tsv``).
PACKAGED = "jqodi:"


def trace_path(name: str, base_dir: str | Path | None) -> Path:
    """Where a timeline's ``trace`` is: ``jqodi:traces/X`` in the package's scenarios folder, a
    relative path in ``base_dir`` (the scenario file's folder), an absolute path as it is."""
    if name.startswith(PACKAGED):
        from importlib import resources

        return Path(str(resources.files("jqodi") / "scenarios" / name[len(PACKAGED):]))
    p = Path(name)
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    return p


def resolve_timeline(events: Iterable, *, cloud: str, end: str, edges: Iterable[str],
                     base_dir: str | Path | None = None, source: str = "timeline") -> Timeline:
    """Check names and load trace files: the :class:`Timeline` of validated ``events``.

    Unknown edges and devices, a leave while away or a return while present raise a
    :class:`ScenarioError` naming ``source``, the event's index and the field; trace file
    problems name the file and line. A trace with neither ``scale`` nor ``mean_rate_bps`` is
    used as written (Mbit/s).
    """
    edges = list(edges)
    known = ", ".join(["cloud", "end", *edges])
    tl = Timeline()
    state: dict[str, bool] = {}
    for i, ev in enumerate(events):
        where = f"{source}: timeline[{i}]"
        if isinstance(ev, (LinkTraceEvent, EdgeLeavesEvent, EdgeReturnsEvent)) and ev.edge not in edges:
            raise ScenarioError(f"{where}.edge: unknown edge server {ev.edge!r} (known: {', '.join(edges)})")
        if isinstance(ev, SlowdownEvent):
            key = device_key(ev.device, cloud=cloud, end=end, edges=edges)
            if key is None:
                raise ScenarioError(f"{where}.device: unknown device {ev.device!r} (known: {known}, "
                                    f"{cloud}, {end})")
            tl.changes.append((ev.at_s, "slowdown", key, float(ev.factor)))
        elif isinstance(ev, (EdgeLeavesEvent, EdgeReturnsEvent)):
            tl.changes.append((ev.at_s, "edge", f"edge:{ev.edge}", isinstance(ev, EdgeReturnsEvent)))
        elif isinstance(ev, LinkTraceEvent):
            key = link_key(ev.edge, ev.link)
            if key in tl.traces:
                raise ScenarioError(f"{where}: the {ev.edge}–{ev.link} link already follows a trace")
            p = trace_path(ev.trace, base_dir)
            try:
                trace = load_rate_trace(p)
            except ScenarioError as e:
                raise ScenarioError(f"{where}.trace: {e}") from None
            if ev.scale is not None:
                trace = trace.scaled(ev.scale)
            elif ev.mean_rate_bps is not None:
                trace = trace.with_mean(ev.mean_rate_bps)
            tl.traces[key] = TimedTrace(float(ev.at_s), trace)
    tl.changes.sort(key=lambda c: c[0])
    for at, kind, key, up in tl.changes:  # a leave while away, or a return while present, is a typo
        if kind != "edge":
            continue
        if state.get(key, True) == up:
            i = next(j for j, ev in enumerate(events) if getattr(ev, "edge", None) == key[5:]
                     and getattr(ev, "at_s", None) == at)
            raise ScenarioError(f"{source}: timeline[{i}]: edge {key[5:]!r} "
                                f"{'returns without having left' if up else 'leaves while already away'} "
                                f"(at {at:g} s)")
        state[key] = up
    return tl
