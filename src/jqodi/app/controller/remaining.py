"""The work left in a run: the cost of a schedule under updated resource factors, its epochs
cheapest first, a prefix of it, and the planning instance of the remaining work that re-planning
solves (:func:`remaining_instance`). Pure functions of a :class:`PhaseTable`."""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

from jqodi.app.controller.phases import PhaseTable
from jqodi.core.instance import Candidate, EpochEstimates, Option, PlanningInstance, ScheduleEntry


def schedule_cost(table: PhaseTable, key: str, schedule: Sequence[ScheduleEntry],
                  factors: Mapping[str, float]) -> tuple[float, float] | None:
    """(time_s, energy_j) of ``schedule`` for candidate ``key`` under ``factors``; ``None``
    when it uses an option the candidate does not have."""
    t, e = table.scaled(key, factors)
    tt = ee = 0.0
    for s in schedule:
        i = table.option_index(key, s.edge, s.cut)
        if i is None:
            return None
        tt += s.epochs * float(t[i])
        ee += s.epochs * float(e[i])
    return tt, ee


def order_cheapest_first(table: PhaseTable, key: str, schedule: Sequence[ScheduleEntry],
                         factors: Mapping[str, float]) -> tuple[ScheduleEntry, ...]:
    """``schedule`` with its entries by epoch energy, cheapest first (same entries merged)."""
    _, e = table.scaled(key, factors)
    merged: dict[tuple[str, int], int] = {}
    for s in schedule:
        if s.epochs > 0:
            merged[(s.edge, s.cut)] = merged.get((s.edge, s.cut), 0) + s.epochs

    def energy(k):
        i = table.option_index(key, *k)
        return (math.inf if i is None else float(e[i]), k)
    return tuple(ScheduleEntry(ed, c, n) for (ed, c), n in sorted(merged.items(), key=lambda kv: energy(kv[0])))


def truncate(schedule: Sequence[ScheduleEntry], epochs: int) -> tuple[ScheduleEntry, ...]:
    """The first ``epochs`` epochs of ``schedule`` (in order)."""
    out, left = [], epochs
    for s in schedule:
        if left <= 0:
            break
        n = min(s.epochs, left)
        out.append(ScheduleEntry(s.edge, s.cut, n))
        left -= n
    return tuple(out)


def remaining_instance(table: PhaseTable, *, current: str, remaining: tuple[int | None, int | None],
                       deadline_left_s: float, factors: Mapping[str, float], edges_down: Iterable[str] = (),
                       allow_switch: bool = False, priors: Mapping[str, tuple[int | None, int | None]] | None = None
                       ) -> PlanningInstance:
    """The planning instance of the work left (:mod:`jqodi.app.controller`, step 3).

    ``current`` = the candidate being trained (``model@bits``), ``remaining`` its (expected,
    robust) epochs still needed; with ``allow_switch`` the other candidates of the table (those
    in Ω, ``meta.search_bits``) come with their ``priors`` (default: the table's K^exp / K^rob,
    a fresh start) and quantization cost. ``deadline_left_s`` ≤ 0 gives a tiny positive deadline (nothing fits).
    """
    down = set(edges_down)
    cands = []
    f_cloud = factors.get("cloud", 1.0)
    omega = table.instance.meta.get("search_bits") if isinstance(table.instance.meta, dict) else None
    for c in table.instance.candidates:
        if c.key != current and (not allow_switch or (omega and c.bits not in omega)):
            continue
        t, e = table.scaled(c.key, factors)
        options = tuple(Option(o.edge, o.cut, float(t[i]), float(e[i]))
                        for i, o in enumerate(c.options) if o.edge not in down and t[i] > 0)
        if c.key == current:
            epochs = EpochEstimates(*remaining)
            qt = qe = 0.0
        else:
            pe = (priors or {}).get(c.key, (c.epochs.expected, c.epochs.robust))
            epochs = EpochEstimates(*pe)
            qt, qe = c.quantize_time_s * f_cloud, c.quantize_energy_j * f_cloud
        cands.append(Candidate(c.model, c.bits, qt, qe, epochs, options, c.loss))
    meta = dict(table.instance.meta)
    meta.pop("search_bits", None)  # the current candidate is searched whatever its bits
    return PlanningInstance(max(deadline_left_s, 1e-9), table.instance.target_loss, tuple(cands), meta)
