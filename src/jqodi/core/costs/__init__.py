"""The per-epoch time and energy of Section III-B/C, Eq. (1)–(10), and the planning instance.

Four modules, one concept each:

* :mod:`jqodi.core.costs.epoch` — the cost types: :class:`EpochCost` (one option's terms, t(k)
  and e(k) of Eq. (5)–(6)), :class:`CostTable` (every option of one model), :data:`TERMS`;
* :mod:`jqodi.core.costs.table` — Eq. (1)–(10) for every (bits, cut, edge) of a model
  (:func:`cost_table`, :func:`epoch_costs`), the one-off quantization cost τ_(a,q), ε_(a,q),
  training memory and feasibility; its docstring states every reading of the paper we chose;
* :mod:`jqodi.core.costs.extended` — the ``extended`` model's per-layer rooflines and idle energy;
* :mod:`jqodi.core.costs.planning` — :func:`compile_instance`: a scenario compiled into the
  planning instance (docs/interfaces.md contract).

Everything public is importable from here (``from jqodi.core.costs import compile_instance``).
"""
from __future__ import annotations

from jqodi.core.costs.epoch import TERMS, CostTable, EpochCost
from jqodi.core.costs.planning import compile_instance
from jqodi.core.costs.table import (cost_table, epoch_costs, quantization_cost, scenario_profiles,
                                    training_memory_bytes)

__all__ = ["TERMS", "EpochCost", "CostTable", "cost_table", "epoch_costs", "compile_instance",
           "scenario_profiles", "quantization_cost", "training_memory_bytes"]
