"""The phase table: the planning instance with each option's time and energy split per term.

:class:`PhaseTable` is the planning instance with each option's time and energy split into the
terms of Eq. (7)–(10) (:data:`jqodi.core.costs.TERMS`), each term charged to the resource that
does it, so measured speeds can rescale it: compute terms to ``end``, ``edge:X``, ``cloud``;
transfers to ``cloud|edge:X`` and ``edge:X|end``. A slower resource is assumed to draw the same
power for longer, so a term's energy scales with its time (busy power × time for compute,
transmit power / rate per bit for links).

Where the scenario counts idle energy (the ``extended`` model with ``idle_energy: true``), each
term also carries the idle power of the nodes that wait during it
(:func:`jqodi.core.costs.extended.waiting_power_w`: end device, the option's edge server and
cloud, less the one computing the term), and the option's idle energy is Σ term time × that
power, the term times taken *after* the speed factors: a slower link lengthens its transfer,
and the nodes waiting for it burn idle power for longer. With every factor 1 this is the cost
model's idle energy (:func:`jqodi.core.costs.extended.idle_energy_terms`), so the energies
re-plans compare (:meth:`PhaseTable.scaled`) are the option's ``epoch_energy_j``, the figure
the run's first plan was made on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from jqodi.core.costs import TERMS
from jqodi.core.instance import Candidate, PlanningInstance
from jqodi.errors import JqodiError


def term_resource(term: str, edge: str) -> str:
    """The device or link that does ``term`` of an epoch whose deep part runs on ``edge``."""
    if term == "end_compute":
        return "end"
    if term == "edge_compute":
        return f"edge:{edge}"
    if term == "cloud_update":
        return "cloud"
    if term in ("cloud_to_edge", "edge_to_cloud"):
        return f"cloud|edge:{edge}"
    return f"edge:{edge}|end"


# --------------------------------------------------------------------------- the phase table
@dataclass
class PhaseTable:
    """The planning instance with every option's time and energy per term (see the module docstring).

    ``terms_s[key][i, j]`` / ``terms_j[key][i, j]``: term ``TERMS[j]`` of option ``i`` of the
    candidate ``key`` (``model@bits``) at nominal speeds: its time and its active energy (busy or
    transmit). ``idle_w[key][i, j]``: the idle power (W) of the nodes waiting during that term,
    where the scenario counts idle energy (``idle_energy: true``); a candidate absent from
    ``idle_w`` waits for free. Each row of ``terms_s`` sums to the option's ``epoch_time_s``, and
    each row of ``terms_j`` + ``terms_s`` × ``idle_w`` to its ``epoch_energy_j`` (the idle part
    is ``EpochCost.*_idle_j`` summed over the nodes).
    """

    instance: PlanningInstance
    terms_s: dict[str, np.ndarray]
    terms_j: dict[str, np.ndarray]
    idle_w: dict[str, np.ndarray] = field(default_factory=dict)
    _res: dict[str, list[list[str]]] = field(default_factory=dict, repr=False)
    _res_ids: dict[str, tuple[list[str], np.ndarray]] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        for c in self.instance.candidates:
            shape = (len(c.options), len(TERMS))
            if c.key not in self.terms_s or self.terms_s[c.key].shape != shape:
                raise JqodiError(f"phase table: candidate {c.key} needs {len(c.options)}×{len(TERMS)} terms")
            if c.key in self.idle_w and np.shape(self.idle_w[c.key]) != shape:
                raise JqodiError(f"phase table: candidate {c.key} needs {len(c.options)}×{len(TERMS)} idle powers")
            rows = [[term_resource(t, o.edge) for t in TERMS] for o in c.options]
            self._res[c.key] = rows
            names = sorted({r for row in rows for r in row})
            ids = np.array([[names.index(r) for r in row] for row in rows], dtype=np.int64).reshape(-1, len(TERMS))
            self._res_ids[c.key] = (names, ids)

    def with_instance(self, instance: PlanningInstance) -> "PhaseTable":
        """This table's terms (and idle powers) for the candidates of ``instance``, the same
        candidates with other estimates, deadline or target."""
        keys = [c.key for c in instance.candidates]
        return PhaseTable(instance, {k: self.terms_s[k] for k in keys}, {k: self.terms_j[k] for k in keys},
                          {k: self.idle_w[k] for k in keys if k in self.idle_w})

    def candidate(self, model: str, bits: int) -> Candidate:
        for c in self.instance.candidates:
            if c.model == model and c.bits == bits:
                return c
        raise JqodiError(f"phase table: no candidate {model}@{bits}")

    def option_index(self, key: str, edge: str, cut: int) -> int | None:
        for i, o in enumerate(self.cand(key).options):
            if o.edge == edge and o.cut == cut:
                return i
        return None

    def cand(self, key: str) -> Candidate:
        return next(c for c in self.instance.candidates if c.key == key)

    def _idle(self, key: str) -> np.ndarray:
        w = self.idle_w.get(key)
        return np.zeros_like(self.terms_s[key]) if w is None else np.asarray(w, dtype=float)

    def terms(self, key: str, i: int) -> list[tuple[str, str, float, float]]:
        """(term, resource, seconds, joules) of option ``i`` of candidate ``key`` at nominal speeds;
        the joules are the term's active energy and the idle energy of the nodes waiting during it
        (same power for longer: both scale with the term's time)."""
        w = self._idle(key)[i]
        return [(t, self._res[key][i][j], float(self.terms_s[key][i, j]),
                 float(self.terms_j[key][i, j] + self.terms_s[key][i, j] * w[j]))
                for j, t in enumerate(TERMS)]

    def scaled(self, key: str, factors: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """Every option's epoch (time_s, energy_j) with each term's time and active energy × its
        resource's factor, and its idle energy = that scaled time × the idle power of the nodes
        waiting during it (the module docstring). With no factors: ``epoch_time_s``, ``epoch_energy_j``."""
        names, ids = self._res_ids[key]
        f = np.array([factors.get(r, 1.0) for r in names], dtype=float)[ids]
        t = self.terms_s[key] * f
        return t.sum(axis=1), (self.terms_j[key] * f + t * self._idle(key)).sum(axis=1)

    def to_dict(self) -> dict:
        return {"instance": self.instance.to_dict(), "terms": list(TERMS),
                "terms_s": {k: v.tolist() for k, v in self.terms_s.items()},
                "terms_j": {k: v.tolist() for k, v in self.terms_j.items()},
                "idle_w": {k: np.asarray(v, dtype=float).tolist() for k, v in self.idle_w.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PhaseTable":
        if list(d.get("terms", [])) != list(TERMS):
            raise JqodiError(f"phase table: terms must be {list(TERMS)}")
        inst = PlanningInstance.from_dict(d["instance"])

        def rows(m):
            return {k: np.asarray(v, dtype=float).reshape(-1, len(TERMS)) for k, v in (m or {}).items()}
        # a table written before idle powers were kept has none: its re-plans leave idle energy out
        return cls(inst, rows(d["terms_s"]), rows(d["terms_j"]), rows(d.get("idle_w")))


def phase_table(scenario, estimates=None, profiles=None, cost_model: str | None = None,
                instance: PlanningInstance | None = None) -> PhaseTable:
    """Compile ``scenario`` into a :class:`PhaseTable` (the instance of
    :func:`jqodi.core.costs.compile_instance` with the terms of its cost tables, and the idle
    power of the nodes waiting during each term where the cost tables charge idle energy);
    ``instance``: one already compiled from it (with its estimates)."""
    from jqodi.core.costs import compile_instance, cost_table, scenario_profiles
    from jqodi.core.costs.extended import waiting_power_w
    from jqodi.core.system import System

    profiles = dict(profiles) if profiles else scenario_profiles(scenario)
    inst = instance if instance is not None else compile_instance(scenario, estimates, profiles, cost_model)
    tables = {m.name: cost_table(scenario, m.name, profiles[m.name], cost_model=cost_model) for m in scenario.models}
    waiting = waiting_power_w(System.from_scenario(scenario), TERMS) \
        if any(ct.idle_j for ct in tables.values()) else None
    ts, tj, iw = {}, {}, {}
    for c in inst.candidates:
        ct = tables[c.model]
        b = ct.bits.index(c.bits)
        rows_s, rows_j, rows_w = [], [], []
        for o in c.options:
            j, x = ct.cuts.index(o.cut), ct.edges.index(o.edge)
            rows_s.append([float(ct.time[t][b, j, x]) for t in TERMS])
            rows_j.append([float(ct.energy[t][b, j, x]) for t in TERMS])
            if ct.idle_j:
                rows_w.append([float(waiting[t][x]) for t in TERMS])
        ts[c.key] = np.asarray(rows_s, dtype=float).reshape(-1, len(TERMS))
        tj[c.key] = np.asarray(rows_j, dtype=float).reshape(-1, len(TERMS))
        if ct.idle_j:
            iw[c.key] = np.asarray(rows_w, dtype=float).reshape(-1, len(TERMS))
    return PhaseTable(inst, ts, tj, iw)
