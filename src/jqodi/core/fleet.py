"""Fleets: many end devices (the paper's SD = {SD_1, …, SD_Y}) sharing the scenario's edge servers.

A scenario still describes one cloud and its edge servers; ``end_device`` is the template of every
end device. A fleet adds devices in two ways, both optional (a scenario with neither is the
one-device scenario it always was):

* ``end_devices:`` a list; each entry has a ``name`` and may override the template's device
  (``device:``, merged field by field onto ``end_device``), the data sizes (``train_size``,
  ``val_size``), the deadline (``deadline_s``), the candidate models (``models``) and its wireless
  link to any edge server (``links: {EDGE: {bandwidth_hz, snr_db, tx_power_w, …}}``);
* ``fleet.generate:`` ``count`` devices named ``<prefix>-<i>`` whose ``train_size``, ``val_size``,
  ``deadline_s``, ``snr_db`` and ``bandwidth_hz`` are numbers or distributions
  (``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``, ``{normal: [mean, sd]}``,
  ``{choice: [a, b, …]}``) drawn with ``seed``, so a 1,000-device fleet is a few lines.

The target loss (and so each candidate's K^exp, K^rob from the ``learning`` table) is the
scenario's for every device.

Edge capacity (processor sharing)
---------------------------------
An edge server ES_x shares its compute among the devices whose deep layers it trains, as a
processor-sharing server: concurrent jobs stretch each other's epoch times, and the server is
work-conserving, so however the jobs interleave, its busy compute time is the sum of their
stand-alone compute times D^es/v_x (Eq. 4, 7). Over a window of W seconds it can therefore
deliver at most c_x·W busy seconds, ``c_x`` ∈ (0, 1] being the share of ES_x the fleet may use
(``fleet.edge_capacity``, default 1). The planner's capacity row is

    Σ_devices Σ_epochs  edge_compute_s(device, option)  ≤  c_x · W        for every ES_x

with W = ``fleet.window_s`` (default: the largest device deadline: every job must be done by
then). It is the exact aggregate condition for a fluid (processor-sharing) server with every
job present from time 0; it does not order jobs with different deadlines inside the window
(an edge whose load fits W may still finish a short-deadline device late if it shares
equally), so plans keep each device's stand-alone epoch times for its own deadline and the
capacity row for the edge. Transfers use links, not the edge's compute, and are not counted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Union

import numpy as np
from pydantic import Field, model_validator

from jqodi.core.devices import EndDevice, WirelessLink
from jqodi.core.validation import FieldProblem, Name, NoBool, PosFloat, Strict

__all__ = ["Distribution", "EndDeviceEntry", "GeneratedFleet", "FleetSpec", "FleetMember", "FleetInstance",
           "fleet_devices", "device_scenario", "compile_fleet", "processor_sharing_epoch_s", "DEFAULT_EDGE_CAPACITY"]

DEFAULT_EDGE_CAPACITY = 1.0

Number = Annotated[float, NoBool, Field(allow_inf_nan=False)]


class Distribution(Strict):
    """One of ``uniform: [lo, hi]``, ``loguniform: [lo, hi]``, ``normal: [mean, sd]``, ``choice: [...]``."""

    uniform: tuple[Number, Number] | None = None
    loguniform: tuple[PosFloat, PosFloat] | None = None
    normal: tuple[Number, Annotated[float, NoBool, Field(ge=0, allow_inf_nan=False)]] | None = None
    choice: list[Number] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one(self):
        given = [k for k in ("uniform", "loguniform", "normal", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of uniform, loguniform, normal, choice")
        for k in ("uniform", "loguniform"):
            v = getattr(self, k)
            if v is not None and v[0] > v[1]:
                raise ValueError(f"{k}: low {v[0]:g} is above high {v[1]:g}")
        return self

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.uniform is not None:
            return rng.uniform(self.uniform[0], self.uniform[1], n)
        if self.loguniform is not None:
            lo, hi = math.log(self.loguniform[0]), math.log(self.loguniform[1])
            return np.exp(rng.uniform(lo, hi, n))
        if self.normal is not None:
            return rng.normal(self.normal[0], self.normal[1], n)
        return rng.choice(np.asarray(self.choice, dtype=float), n)

    def bounds(self) -> tuple[float, float]:
        """The smallest and largest value it can draw (±inf for a normal with sd > 0)."""
        if self.uniform is not None:
            return self.uniform
        if self.loguniform is not None:
            return self.loguniform
        if self.normal is not None:
            return (self.normal[0], self.normal[0]) if self.normal[1] == 0 else (-math.inf, math.inf)
        return min(self.choice), max(self.choice)  # type: ignore[arg-type]


Value = Union[Number, Distribution]

#: Allowed ranges of the generated quantities (inclusive); a distribution that can only draw
#: outside them is refused, single draws outside are clipped into them.
_RANGES = {"train_size": (1, 10**9), "val_size": (1, 10**9), "deadline_s": (1e-9, math.inf),
           "snr_db": (-30.0, 90.0), "bandwidth_hz": (1e-9, math.inf)}


class GeneratedFleet(Strict):
    """``count`` devices with quantities drawn from distributions (see the module docstring)."""

    count: Annotated[int, NoBool, Field(ge=1, le=100_000)]
    seed: Annotated[int, NoBool, Field(ge=0)] = 0
    prefix: Name = "sd"
    train_size: Value | None = None
    val_size: Value | None = None
    deadline_s: Value | None = None
    snr_db: Value | None = None
    bandwidth_hz: Value | None = None

    @model_validator(mode="after")
    def _possible(self):
        for k, (lo, hi) in _RANGES.items():
            v = getattr(self, k)
            if v is None:
                continue
            a, b = (v, v) if isinstance(v, (int, float)) else v.bounds()
            if b < lo or a > hi:
                raise FieldProblem(k, f"cannot draw a value within {lo:g}..{hi:g} (it draws {a:g}..{b:g})")
        return self

    def draw(self) -> dict[str, np.ndarray]:
        """The drawn quantities (only those given), one array of ``count`` values each."""
        rng = np.random.default_rng(self.seed)
        out = {}
        for k, (lo, hi) in _RANGES.items():  # fixed order: the same seed gives the same fleet
            v = getattr(self, k)
            if v is None:
                continue
            x = np.full(self.count, float(v)) if isinstance(v, (int, float)) else v.sample(rng, self.count)
            x = np.clip(x, lo, hi)
            out[k] = np.rint(x) if k in ("train_size", "val_size") else x
        return out


class EndDeviceEntry(Strict):
    """One end device of a fleet; every field but ``name`` defaults to the scenario's."""

    name: Name
    device: dict[str, Any] | None = None
    train_size: Annotated[int, NoBool, Field(gt=0, le=10**9)] | None = None
    val_size: Annotated[int, NoBool, Field(gt=0, le=10**9)] | None = None
    deadline_s: PosFloat | None = None
    models: list[Name] | None = Field(default=None, min_length=1)
    links: dict[Name, WirelessLink] = Field(default_factory=dict)


class FleetSpec(Strict):
    """``fleet:`` the capacity model's parameters and an optional generated fleet."""

    window_s: PosFloat | None = None
    edge_capacity: dict[Name, Annotated[float, NoBool, Field(gt=0, le=1, allow_inf_nan=False)]] = \
        Field(default_factory=dict)
    generate: GeneratedFleet | None = None


@dataclass(frozen=True)
class FleetDeviceSpec:
    """A fully resolved end device of a fleet (what :func:`compile_fleet` compiles)."""

    name: str
    device: EndDevice
    train_size: int
    val_size: int
    deadline_s: float
    models: tuple[str, ...]
    links: dict[str, WirelessLink]


def check_fleet(sc) -> None:
    """Cross-checks of ``end_devices`` and ``fleet`` against the rest of a scenario (raises FieldProblem)."""
    edges = {e.name for e in sc.edges}
    models = {m.name for m in sc.models}
    taken = {sc.cloud.name: "the cloud", **{e: "an edge server" for e in edges}}
    seen: dict[str, str] = {}
    for i, d in enumerate(sc.end_devices):
        path = f"end_devices[{i}]"
        if d.name in taken:
            raise FieldProblem(f"{path}.name", f"{d.name!r} is already the name of {taken[d.name]}")
        if d.name in seen:
            raise FieldProblem(f"{path}.name", f"device {d.name!r} is listed twice (also {seen[d.name]})")
        seen[d.name] = path
        for m in d.models or ():
            if m not in models:
                raise FieldProblem(f"{path}.models", f"{m!r} is not one of the scenario's models "
                                                     f"({', '.join(sorted(models))})")
        for e in d.links:
            if e not in edges:
                raise FieldProblem(f"{path}.links.{e}", f"no edge server named {e!r}")
        if d.device is not None:
            try:
                _merged_device(sc.end_device, d.device, d.name)
            except Exception as err:  # pydantic ValidationError or FieldProblem
                from pydantic import ValidationError

                from jqodi.core.validation import error_line
                msg = error_line(err) if isinstance(err, ValidationError) else str(err)
                raise FieldProblem(f"{path}.device", msg) from None
    if sc.fleet is not None:
        for e in sc.fleet.edge_capacity:
            if e not in edges:
                raise FieldProblem(f"fleet.edge_capacity.{e}", f"no edge server named {e!r}")
        g = sc.fleet.generate
        if g is not None:
            clash = next((n for n in seen if n.startswith(g.prefix + "-")
                          and n[len(g.prefix) + 1:].isdigit() and 1 <= int(n[len(g.prefix) + 1:]) <= g.count), None)
            if clash:
                raise FieldProblem("fleet.generate.prefix", f"generated name {clash!r} is also in end_devices")


def _merged_device(template: EndDevice, override: dict, name: str) -> EndDevice:
    base = template.model_dump(exclude_none=True)
    base.update(override)
    base["name"] = name
    return EndDevice.model_validate(base)


def fleet_devices(sc) -> list[FleetDeviceSpec]:
    """The scenario's end devices, resolved: the explicit ``end_devices`` then the generated ones.

    A scenario without a fleet gives its one ``end_device``.
    """
    out: list[FleetDeviceSpec] = []
    all_models = tuple(m.name for m in sc.models)
    for d in sc.end_devices:
        dev = sc.end_device.model_copy(update={"name": d.name}) if d.device is None else \
            _merged_device(sc.end_device, d.device, d.name)
        out.append(FleetDeviceSpec(d.name, dev, d.train_size or sc.data.train_size, d.val_size or sc.data.val_size,
                                   d.deadline_s or sc.deadline_s, tuple(d.models or all_models), dict(d.links)))
    g = sc.fleet.generate if sc.fleet is not None else None
    if g is not None:
        drawn = g.draw()
        width = len(str(g.count))
        for i in range(g.count):
            links = {}
            if "snr_db" in drawn or "bandwidth_hz" in drawn:
                for e in sc.edges:
                    upd: dict[str, Any] = {}
                    if "snr_db" in drawn:
                        upd.update(snr_db=float(drawn["snr_db"][i]), snr=None)
                    if "bandwidth_hz" in drawn:
                        upd["bandwidth_hz"] = float(drawn["bandwidth_hz"][i])
                    links[e.name] = e.end_link.model_copy(update=upd)
            name = f"{g.prefix}-{i + 1:0{width}d}"
            out.append(FleetDeviceSpec(
                name, sc.end_device.model_copy(update={"name": name}),
                int(drawn["train_size"][i]) if "train_size" in drawn else sc.data.train_size,
                int(drawn["val_size"][i]) if "val_size" in drawn else sc.data.val_size,
                float(drawn["deadline_s"][i]) if "deadline_s" in drawn else sc.deadline_s,
                all_models, links))
    if not out:
        d = sc.end_device
        out.append(FleetDeviceSpec(d.name, d, sc.data.train_size, sc.data.val_size, sc.deadline_s, all_models, {}))
    return out


# --- the compiled fleet --------------------------------------------------------------------------

@dataclass(frozen=True)
class FleetMember:
    """One device's planning instance and, per candidate, each option's busy time on its edge
    (``edge_busy_s[c][o]`` = edge_compute_s of ``instance.candidates[c].options[o]``)."""

    name: str
    instance: Any  # PlanningInstance
    edge_busy_s: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class FleetInstance:
    """Every device's instance, the edge servers and their capacity c_x·W in busy seconds."""

    members: tuple[FleetMember, ...]
    edges: tuple[str, ...]
    capacity_s: tuple[float, ...]
    window_s: float
    meta: dict = field(default_factory=dict, compare=False)

    def capacity_of(self, edge: str) -> float:
        return self.capacity_s[self.edges.index(edge)]


def device_scenario(sc, d: FleetDeviceSpec):
    """The one-device scenario of fleet device ``d``: its device, links, deadline, data sizes and models."""
    edges = [e.model_copy(update={"end_link": d.links[e.name]}) if e.name in d.links else e for e in sc.edges]
    return sc.model_copy(update={
        "end_device": d.device, "deadline_s": d.deadline_s, "edges": edges,
        "data": sc.data.model_copy(update={"train_size": d.train_size, "val_size": d.val_size}),
        "models": [m for m in sc.models if m.name in d.models]})


def processor_sharing_epoch_s(alone_s, edge_s) -> list[float]:
    """Epoch times of devices that train on one edge server at the same time (processor sharing).

    Device ``d`` alone takes ``alone_s[d]`` per epoch, ``edge_s[d]`` of it computing on the edge
    (the cost model's edge_compute term, Eq. 4 and 7); the rest (its own compute, its links) it
    does without the edge. Sharing the edge stretches only the edge part. Each device is one job
    cycling between its own work (Z_d = alone − edge) and the shared processor-sharing edge;
    this closed network has product form (BCMP: processor sharing and a per-job delay station
    are insensitive to the service-time distribution), so exact mean value analysis gives each
    device's time at the edge, R_d(S) = edge_d · (1 + Σ_{j∈S∖d} Q_j(S∖d)), and its epoch time
    Z_d + R_d. Two limits check it: one device alone gets ``alone_s``; devices whose edge work
    dominates share the edge fully (epoch ≈ Σ edge_s). Exact up to 14 devices on the edge; above,
    Schweitzer's approximation of the same equations.
    """
    b = np.asarray(edge_s, dtype=float)
    z = np.maximum(np.asarray(alone_s, dtype=float) - b, 0.0)
    n = len(b)
    if n == 0:
        return []
    if n > 14:  # Bard–Schweitzer fixed point: Q_j(S∖d) ≈ Q_j(S)
        q = np.full(n, 0.5)
        for _ in range(500):
            r = b * (1 + q.sum() - q)
            q_new = r / np.maximum(z + r, 1e-300)
            if np.max(np.abs(q_new - q)) < 1e-12:
                break
            q = q_new
        return [float(x) for x in z + b * (1 + q.sum() - q)]
    queue = np.zeros((1 << n, n))  # queue[S][j]: mean jobs of device j at the edge with devices S cycling
    resid = np.zeros(n)
    for mask in range(1, 1 << n):
        for d in range(n):
            if mask >> d & 1:
                rest = mask & ~(1 << d)
                resid[d] = b[d] * (1 + queue[rest].sum())
                cycle = z[d] + resid[d]
                queue[mask, d] = resid[d] / cycle if cycle > 0 else 1.0
    return [float(x) for x in z + resid]


def compile_fleet(sc, estimates=None, profiles=None, progress=None) -> FleetInstance:
    """Compile every device of the scenario (Eq. 1–10 per device, with its own data sizes, links
    and deadline) and the edges' capacity. Profiles are computed once per model (needs torch
    unless ``profiles`` are given); devices with identical parameters share one compilation."""
    from jqodi.core.costs import compile_instance, cost_table, scenario_profiles
    from jqodi.core.instance import PlanningInstance
    from jqodi.core.system import System

    profiles = dict(profiles) if profiles else scenario_profiles(sc)
    devices = fleet_devices(sc)
    cache: dict[tuple, tuple] = {}
    members = []
    for k, d in enumerate(devices):
        key = (d.device.model_dump_json(exclude={"name"}), d.train_size, d.val_size, d.deadline_s, d.models,
               tuple(sorted((e, l.model_dump_json()) for e, l in d.links.items())))
        if key not in cache:
            dsc = device_scenario(sc, d)
            system = System.from_scenario(dsc)  # once per device, its cost tables once per model
            tables = {m: cost_table(dsc, m, profiles[m], system=system) for m in d.models}
            inst = compile_instance(dsc, estimates=estimates, profiles=profiles, tables=tables)
            busy = []
            for c in inst.candidates:
                ct = tables[c.model]
                cut_at = {j: k for k, j in enumerate(ct.cuts)}
                edge_at = {x: k for k, x in enumerate(ct.edges)}
                busy.append(np.asarray(ct.time["edge_compute"][ct.bits.index(c.bits)][
                    [cut_at[o.cut] for o in c.options], [edge_at[o.edge] for o in c.options]], dtype=float))
            cache[key] = (inst, tuple(busy))
        inst, busy = cache[key]
        meta = dict(inst.meta, end_device=d.name)
        members.append(FleetMember(d.name, PlanningInstance(inst.deadline_s, inst.target_loss, inst.candidates, meta),
                                   busy))
        if progress is not None:
            progress(k + 1, len(devices))
    window = sc.fleet.window_s if sc.fleet is not None and sc.fleet.window_s else max(d.deadline_s for d in devices)
    shares = sc.fleet.edge_capacity if sc.fleet is not None else {}
    cap = tuple(float(shares.get(e.name, DEFAULT_EDGE_CAPACITY)) * window for e in sc.edges)
    return FleetInstance(tuple(members), tuple(e.name for e in sc.edges), cap, float(window),
                         {"scenario": sc.name, "devices": len(members),
                          "edge_capacity": {e.name: float(shares.get(e.name, DEFAULT_EDGE_CAPACITY)) for e in sc.edges}})
