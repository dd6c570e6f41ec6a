"""The paper's comparison strategies (Section V-A): one (model, bits, edge, cut) for every epoch.

* ``static`` — the paper's brute-force *Optimum*: the best single option kept for all epochs,
  over every candidate.
* ``full-model`` — *Full Model*: full precision only (32-bit candidates), same search.
* ``minimal-model`` — *Minimal Model*: 1-bit candidates only (the smallest bit-width present when
  the instance has no 1-bit candidate, e.g. no learning estimate for the 1-bit pairs;
  ``extra["bits_used"]`` says which, and ``jqodi plan`` prints it), same search. When 1-bit
  candidates exist but none reaches the target (K null) or meets the deadline, the answer is
  ``infeasible`` at 1 bit: it never moves up to the next bit-width.
* ``partition-only`` — Neurosurgeon-style: model and bit-width fixed by the user
  (``model=``, ``bits=``), best cut and edge.

Each is exact for its restricted space, but the status is ``feasible`` (not ``optimal``): the
status speaks about problem (13), where per-epoch switching may do better. When nothing in the
restricted space meets the deadline, the answer is ``infeasible`` with the explanation, and
``extra["best_ignoring_deadline"]`` shows what the strategy would pick without the deadline
(as the paper's figures report *Full Model* even when it runs late).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from jqodi.errors import PlanningError
from jqodi.planner.common import (
    Stopwatch, check_epochs, deadline_limit_s, find_candidate, fixed_energy_j, make_solution, option_arrays,
    search_candidates,
)
from jqodi.planner.explain import infeasible_solution
from jqodi.core.instance import Candidate, PlanningInstance, Solution


def _static_search(instance: PlanningInstance, cands: Iterable[Candidate], epochs: str, solver: str,
                   scope: str | None, extra: dict | None = None) -> Solution:
    clock = Stopwatch()
    cands = list(cands)
    limit = deadline_limit_s(instance.deadline_s)
    best = late = None
    for c in cands:
        K = c.epochs.get(epochs)
        fixed = fixed_energy_j(instance, c)  # ε_(a,q) + serving (inf: cannot serve in time)
        if K is None or not c.options or not np.isfinite(fixed):
            continue
        arr = option_arrays(c)
        energy = fixed + K * arr.energy_j
        t = c.quantize_time_s + K * arr.time_s
        i = int(np.argmin(energy))
        if late is None or energy[i] < late[0]:
            late = (float(energy[i]), c, i, float(t[i]))
        ok = t <= limit
        if ok.any():
            masked = np.where(ok, energy, np.inf)
            i = int(np.argmin(masked))
            if best is None or masked[i] < best[0]:
                best = (float(masked[i]), c, i)
    ex = dict(extra or {})
    if best is None:
        if late is not None:
            _, c, i, _ = late
            o = c.options[i]
            K = c.epochs.get(epochs)
            ex["best_ignoring_deadline"] = {
                "model": c.model, "bits": c.bits, "edge": o.edge, "cut": o.cut, "epochs": K,
                "energy_j": fixed_energy_j(instance, c) + K * o.epoch_energy_j,
                "time_s": c.quantize_time_s + K * o.epoch_time_s}
        return infeasible_solution(instance, solver, epochs, candidates=cands, scope=scope,
                                   plan_time_ms=clock.ms, **ex)
    _, c, i = best
    ex["plan_time_ms"] = clock.ms
    return make_solution(solver, "feasible", c, [(i, c.epochs.get(epochs))], epochs, ex, instance)


def solve_static(instance: PlanningInstance, *, epochs: str = "robust") -> Solution:
    """The paper's *Optimum*: brute force over (model, bits, edge, cut), one option for all epochs."""
    check_epochs(epochs)
    return _static_search(instance, search_candidates(instance), epochs, "static", None)


def solve_full_model(instance: PlanningInstance, *, epochs: str = "robust") -> Solution:
    """*Full Model*: 32-bit (unquantized) candidates only."""
    check_epochs(epochs)
    cands = [c for c in instance.candidates if c.bits >= 32]
    return _static_search(instance, cands, epochs, "full-model", "32-bit candidates")


def solve_minimal_model(instance: PlanningInstance, *, epochs: str = "robust") -> Solution:
    """*Minimal Model*: 1-bit candidates (or the smallest bit-width the instance has)."""
    check_epochs(epochs)
    if not instance.candidates:
        return _static_search(instance, [], epochs, "minimal-model", "1-bit candidates")
    q = min(c.bits for c in instance.candidates)
    cands = [c for c in instance.candidates if c.bits == q]
    return _static_search(instance, cands, epochs, "minimal-model", f"{q}-bit candidates",
                          {"bits_used": q})


def solve_partition_only(instance: PlanningInstance, *, epochs: str = "robust",
                         model: str | None = None, bits: int | None = None) -> Solution:
    """Partition-only: the user fixes ``model`` and ``bits``; best (edge, cut) for all epochs."""
    check_epochs(epochs)
    if model is None or bits is None:
        raise PlanningError("partition-only needs the model and the bit-width "
                            "(solve(..., model=NAME, bits=Q); CLI: --model NAME --bits Q)")
    cand = find_candidate(instance, model, int(bits))
    return _static_search(instance, [cand], epochs, "partition-only", cand.key)
