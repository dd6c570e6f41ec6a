"""The result of fleet planning: :class:`FleetSolution` (one :class:`~jqodi.core.instance.Solution`
per device, the fleet's total energy, each edge server's planned load against its capacity c_x·W)."""
from __future__ import annotations

from dataclasses import dataclass, field

from jqodi.core.instance import Solution

#: Relative slack of the capacity rows (the same role as TIME_RTOL for deadlines).
CAPACITY_RTOL = 1e-9


@dataclass
class FleetSolution:
    """A fleet plan: one :class:`Solution` per device (``infeasible`` = not served), totals and loads."""

    solver: str
    status: str                       # optimal | feasible | infeasible (some device not served)
    plans: dict[str, Solution]
    energy_j: float                   # total over the served devices
    edge_load_s: dict[str, float]     # busy seconds planned on each edge
    edge_capacity_s: dict[str, float]
    extra: dict = field(default_factory=dict)

    @property
    def served(self) -> int:
        return sum(1 for s in self.plans.values() if s.status != "infeasible")

    @property
    def unserved(self) -> list[str]:
        return [n for n, s in self.plans.items() if s.status == "infeasible"]

    @property
    def overload_s(self) -> dict[str, float]:
        return {x: max(0.0, self.edge_load_s[x] - self.edge_capacity_s[x]) for x in self.edge_load_s}

    @property
    def capacity_ok(self) -> bool:
        return all(self.edge_load_s[x] <= self.edge_capacity_s[x] * (1 + CAPACITY_RTOL) + 1e-9
                   for x in self.edge_load_s)

    def edge_devices(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {x: [] for x in self.edge_load_s}
        for n, s in self.plans.items():
            for x in sorted({e.edge for e in s.schedule}):
                out[x].append(n)
        return out

    def to_dict(self) -> dict:
        return {"solver": self.solver, "status": self.status, "energy_j": self.energy_j,
                "devices": len(self.plans), "served": self.served, "unserved": self.unserved,
                "edges": {x: {"load_s": self.edge_load_s[x], "capacity_s": self.edge_capacity_s[x],
                              "overload_s": self.overload_s[x], "devices": len(d)}
                          for x, d in self.edge_devices().items()},
                **self.extra,
                "plans": {n: s.to_dict() for n, s in self.plans.items()}}
