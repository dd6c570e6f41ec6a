"""The per-epoch cost types: :class:`EpochCost` (one option's terms, t(k) and e(k) of Eq. (5)–(6))
and :class:`CostTable` (every option of one model as numpy arrays over (bits, cuts, edges)).

They are filled by :func:`jqodi.core.costs.table.cost_table` (Eq. (1)–(10)); :data:`TERMS` names the
terms of one epoch, which the runtime measures too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from jqodi.errors import ScenarioError
from jqodi.core.profile import ModelProfile

__all__ = ["TERMS", "EpochCost", "CostTable"]

#: The terms of one epoch, in the order of Eq. (7) and (9); ``activations`` only in extended mode.
TERMS = ("end_compute", "edge_compute", "cloud_update", "cloud_to_edge", "edge_to_end",
         "end_to_edge", "edge_to_cloud", "activations")


@dataclass(frozen=True)
class EpochCost:
    """Every term of one epoch for (model, bits, cut, edge). Seconds and joules.

    ``time_s``/``energy_j`` are t(k), e(k) of Eq. (5)–(6): the sum of the terms, or ``inf``
    when the option is infeasible (``reason`` says why).
    """

    model: str
    bits: int
    cut: int
    edge: str
    cost_model: str
    end_compute_s: float
    end_compute_j: float
    edge_compute_s: float
    edge_compute_j: float
    cloud_update_s: float
    cloud_update_j: float
    cloud_to_edge_s: float
    cloud_to_edge_j: float
    edge_to_end_s: float
    edge_to_end_j: float
    end_to_edge_s: float
    end_to_edge_j: float
    edge_to_cloud_s: float
    edge_to_cloud_j: float
    activations_s: float
    activations_j: float
    time_s: float
    energy_j: float
    reason: str | None = None
    end_idle_j: float = 0.0     # extended + idle_energy: idle power × waiting time per node
    edge_idle_j: float = 0.0
    cloud_idle_j: float = 0.0

    @property
    def feasible(self) -> bool:
        return self.reason is None and math.isfinite(self.time_s)

    @property
    def run_s(self) -> float:
        """τ^run of Eq. (7)."""
        return self.end_compute_s + self.edge_compute_s + self.cloud_update_s

    @property
    def run_j(self) -> float:
        """ε^run of Eq. (8)."""
        return self.end_compute_j + self.edge_compute_j + self.cloud_update_j

    @property
    def tran_s(self) -> float:
        """τ^tran of Eq. (9) (+ the cut-layer traffic in extended mode)."""
        return (self.cloud_to_edge_s + self.edge_to_end_s + self.end_to_edge_s + self.edge_to_cloud_s
                + self.activations_s)

    @property
    def tran_j(self) -> float:
        """ε^tran of Eq. (10) (+ the cut-layer traffic in extended mode)."""
        return (self.cloud_to_edge_j + self.edge_to_end_j + self.end_to_edge_j + self.edge_to_cloud_j
                + self.activations_j)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        for k, v in d.items():
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None  # JSON has no infinity
        return d


@dataclass
class CostTable:
    """All epochs of one model: arrays of shape (bits, cuts, edges) per term.

    ``time[term]``/``energy[term]`` hold each term; ``time_s``/``energy_j`` the totals with
    ``inf`` where infeasible; ``reasons`` an object array of ``None`` or a string.
    ``quantize_time_s``/``quantize_energy_j`` (shape (bits,)) are τ_(a,q), ε_(a,q).
    """

    model: str
    cost_model: str
    bits: list[int]
    cuts: list[int]
    edges: list[str]
    time: dict[str, np.ndarray]
    energy: dict[str, np.ndarray]
    time_s: np.ndarray
    energy_j: np.ndarray
    reasons: np.ndarray
    quantize_time_s: np.ndarray
    quantize_energy_j: np.ndarray
    profile: ModelProfile = field(repr=False)
    idle_j: dict[str, np.ndarray] = field(default_factory=dict)   # end/edge/cloud idle energy

    def index(self, bits: int, cut: int, edge: str) -> tuple[int, int, int] | None:
        if bits not in self.bits or cut not in self.cuts or edge not in self.edges:
            return None
        return self.bits.index(bits), self.cuts.index(cut), self.edges.index(edge)

    def epoch(self, bits: int, cut: int, edge: str) -> EpochCost:
        """The :class:`EpochCost` of one option (inf + reason for an impossible cut)."""
        if bits not in self.bits:
            raise ScenarioError(f"bits: {bits} is not a bit-width of this scenario ({self.bits})")
        if edge not in self.edges:
            raise ScenarioError(f"edges: no edge server named {edge!r} (have: {', '.join(self.edges)})")
        if cut not in self.cuts:
            inf = math.inf
            terms = {f"{t}_{u}": inf for t in TERMS for u in ("s", "j")}
            return EpochCost(self.model, bits, cut, edge, self.cost_model, **terms, time_s=inf, energy_j=inf,
                             reason=f"cut {cut} is out of range for model {self.model} (valid: "
                                    f"{self.cuts[0]}..{self.cuts[-1]})")
        b, j, x = self.index(bits, cut, edge)  # type: ignore[misc]
        terms = {}
        for t in TERMS:
            terms[f"{t}_s"] = float(self.time[t][b, j, x])
            terms[f"{t}_j"] = float(self.energy[t][b, j, x])
        for node, arr in self.idle_j.items():
            terms[f"{node}_idle_j"] = float(arr[b, j, x])
        return EpochCost(self.model, bits, cut, edge, self.cost_model, **terms,
                         time_s=float(self.time_s[b, j, x]), energy_j=float(self.energy_j[b, j, x]),
                         reason=self.reasons[b, j, x])

