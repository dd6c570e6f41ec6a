"""Shared pieces of every solver: the deadline test, per-candidate arrays, bounds, solutions.

Deadline semantics
------------------
Eq. (13) writes the deadline as a strict ``T < T_max``. On real-valued times a strict bound has
no minimum (a plan can always get a little closer), and instances built by hand often hit the
deadline exactly (``10 epochs × 10 s == 100 s``). jqodi therefore uses the closed form
``T ≤ T_max`` with one relative tolerance, :data:`TIME_RTOL` (1e-9), used by *every* solver and
by :func:`check_solution`: a plan is on time when ``time_s <= deadline_s * (1 + TIME_RTOL)``.
The same tolerance gives the time budget of a candidate, :func:`time_budget_s`.
"""
from __future__ import annotations

import math
import operator
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from jqodi.errors import PlanningError
from jqodi.core.instance import Candidate, PlanningInstance, ScheduleEntry, Solution

#: Relative tolerance of every deadline comparison (see the module docstring).
TIME_RTOL = 1e-9

EPOCH_ESTIMATES = ("robust", "expected")


def deadline_limit_s(deadline_s: float) -> float:
    """The largest total time that still counts as on time."""
    return deadline_s * (1.0 + TIME_RTOL)


def on_time(time_s: float, deadline_s: float) -> bool:
    return time_s <= deadline_limit_s(deadline_s)


def time_budget_s(instance: PlanningInstance, cand: Candidate) -> float:
    """Time left for the fine-tuning epochs once the one-off quantization τ_(a,q) is paid."""
    return deadline_limit_s(instance.deadline_s) - cand.quantize_time_s


def check_epochs(epochs: str) -> str:
    if epochs not in EPOCH_ESTIMATES:
        raise PlanningError(f"epochs: must be 'robust' or 'expected', got {epochs!r}")
    return epochs


@dataclass(frozen=True)
class OptionArrays:
    """A candidate's options as arrays (index ``i`` ↔ ``cand.options[i]``)."""

    time_s: np.ndarray
    energy_j: np.ndarray

    def __len__(self) -> int:
        return len(self.time_s)


_TIME, _ENERGY = operator.attrgetter("epoch_time_s"), operator.attrgetter("epoch_energy_j")


def option_arrays(cand: Candidate) -> OptionArrays:
    """Per-option epoch time and energy as float arrays, cached on the candidate object itself
    (outside its dataclass fields, so equality and JSON are unaffected; dies with the candidate)."""
    arr = cand.__dict__.get("_option_arrays")
    if arr is not None:
        return arr
    n = len(cand.options)
    t = np.fromiter(map(_TIME, cand.options), float, n)  # map + attrgetter: no generator frame per option
    e = np.fromiter(map(_ENERGY, cand.options), float, n)
    arr = OptionArrays(t, e)
    object.__setattr__(cand, "_option_arrays", arr)
    return arr


def pareto_front(time_s: np.ndarray, energy_j: np.ndarray) -> np.ndarray:
    """Indices of the options not dominated in (time, energy), sorted by time ascending.

    Option ``o`` is dominated when another option is no slower and no costlier (and differs);
    any epoch run with ``o`` could use the other instead, saving energy and time. Along the
    returned front time strictly increases and energy strictly decreases.
    """
    if len(time_s) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((energy_j, time_s))  # by time, then energy
    e_sorted = energy_j[order]
    # keep an option when its energy is strictly below every faster (or equally fast) option's
    prev_min = np.minimum.accumulate(np.concatenate(([np.inf], e_sorted[:-1])))
    keep = e_sorted < prev_min
    return order[keep]


@dataclass(frozen=True)
class LPBound:
    """The LP relaxation of one candidate's epoch problem (lower convex hull of the front).

    min Σ e_o n_o  s.t.  Σ n_o = K,  Σ t_o n_o ≤ B,  n_o ≥ 0 (real).
    Its optimum mixes at most two options (``low``, ``high`` = front indices into the original
    option list; ``share_high`` of the K epochs on ``high``). ``lam``/``mu`` are dual prices of the
    epoch-count and time rows; reduced cost of option o is ``e_o - lam + mu·t_o`` (≥ 0).
    """

    value_j: float
    low: int
    high: int
    share_high: float
    lam: float
    mu: float


def lp_bound(t: np.ndarray, e: np.ndarray, front: np.ndarray, K: int, budget_s: float) -> LPBound | None:
    """Solve the LP relaxation analytically; ``None`` when even the fastest option is too slow."""
    if len(front) == 0:
        return None
    ft, fe = t[front], e[front]
    avg = budget_s / K
    if ft[0] > avg * (1 + 1e-12):
        return None
    if ft[-1] <= avg:  # the cheapest option fits every epoch
        i = int(front[-1])
        return LPBound(K * float(fe[-1]), i, i, 0.0, float(fe[-1]), 0.0)
    # lower convex hull of the front (time increasing, energy decreasing)
    hull: list[int] = []
    for k in range(len(ft)):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b is above the segment a→k: drop it
            cross = (ft[b] - ft[a]) * (fe[k] - fe[a]) - (fe[b] - fe[a]) * (ft[k] - ft[a])
            if cross <= 0:
                hull.pop()
            else:
                break
        hull.append(k)
    hx = ft[hull]
    j = int(np.searchsorted(hx, avg, side="right"))  # hx[j-1] <= avg < hx[j]
    j = max(1, min(j, len(hull) - 1))
    a, b = hull[j - 1], hull[j]
    slope = (fe[b] - fe[a]) / (ft[b] - ft[a])  # ≤ 0
    share = (avg - ft[a]) / (ft[b] - ft[a])
    share = min(max(share, 0.0), 1.0)
    value = K * (fe[a] + slope * (avg - ft[a])) if share > 0 else K * fe[a]
    lam = float(fe[a] - slope * ft[a])
    return LPBound(float(value), int(front[a]), int(front[b]), float(share), lam, float(-slope))


def search_candidates(instance: PlanningInstance) -> tuple[Candidate, ...]:
    """The candidates JQODI, ``optimal`` and ``static`` search: those whose bit-width is in Ω.

    A compiled scenario lists Ω in ``meta.search_bits`` and adds extra bit-widths
    (``meta.baseline_bits``: 1 and 32 in the paper) only for the Full/Minimal-Model baselines;
    without ``meta.search_bits`` every candidate is searched.
    """
    allowed = search_bits(instance)
    if allowed is None:
        return instance.candidates
    return tuple(c for c in instance.candidates if c.bits in allowed)


def search_bits(instance: PlanningInstance) -> tuple[int, ...] | None:
    """Ω as sorted bit-widths (``meta.search_bits``); ``None`` when the instance does not say."""
    bits = instance.meta.get("search_bits") if isinstance(instance.meta, dict) else None
    return tuple(sorted({int(b) for b in bits})) if bits else None


def serving_energy_j(instance: PlanningInstance, cand: Candidate) -> float:
    """Energy of the inference after fine-tuning: requests × the candidate's per-request energy
    (0 when the instance has no ``serving`` demand; ``inf`` when the candidate cannot serve
    within the latency bound, so every solver excludes it). Every solver minimises fine-tuning
    energy (ε_(a,q) + Σ e(k)) + this."""
    if instance.serving is None:
        return 0.0
    s = cand.serving
    if s is None or not s.feasible or s.request_energy_j is None:
        return math.inf
    return instance.serving.requests * s.request_energy_j


def fixed_energy_j(instance: PlanningInstance, cand: Candidate) -> float:
    """The part of a candidate's total energy that no schedule changes: ε_(a,q) + serving."""
    return cand.quantize_energy_j + serving_energy_j(instance, cand)


def epochs_of(cand: Candidate, epochs: str) -> int | None:
    return cand.epochs.get(epochs)


def predicted_final_loss(cand: Candidate, epochs: str) -> float | None:
    if cand.loss is None:
        return None
    return cand.loss.final_robust if epochs == "robust" else cand.loss.final_expected


def schedule_from_counts(cand: Candidate, counts: Iterable[tuple[int, int]]) -> tuple[ScheduleEntry, ...]:
    """(option index, epochs) pairs → schedule entries, zero counts dropped, order kept."""
    out = []
    for i, n in counts:
        if n > 0:
            o = cand.options[i]
            out.append(ScheduleEntry(o.edge, o.cut, int(n)))
    return tuple(out)


def schedule_cost(cand: Candidate, counts: Sequence[tuple[int, int]]) -> tuple[float, float]:
    """Total (energy_j, time_s) of a schedule, quantization included (Eq. 13)."""
    e = cand.quantize_energy_j + math.fsum(cand.options[i].epoch_energy_j * n for i, n in counts)
    t = cand.quantize_time_s + math.fsum(cand.options[i].epoch_time_s * n for i, n in counts)
    return e, t


def serving_section(instance: PlanningInstance, cand: Candidate) -> dict | None:
    """The solution's optional ``serving`` section, None without a serving demand."""
    if instance.serving is None or cand.serving is None or not cand.serving.feasible:
        return None
    s = cand.serving
    return {"mode": s.mode, "edge": s.edge, "cut": s.cut, "request_time_s": s.request_time_s,
            "request_energy_j": s.request_energy_j, "requests": instance.serving.requests,
            "energy_j": serving_energy_j(instance, cand), "latency_slo_s": instance.serving.latency_slo_s}


def make_solution(solver: str, status: str, cand: Candidate, counts: Sequence[tuple[int, int]],
                  epochs: str, extra: dict | None = None, instance: PlanningInstance | None = None) -> Solution:
    """A solution for ``cand`` run with ``counts``; with an ``instance`` that has a serving demand,
    ``energy_j`` is fine-tuning + serving, with ``finetune_energy_j`` and ``serving`` beside it."""
    energy, t = schedule_cost(cand, counts)
    ex = {"epochs_estimate": epochs}
    serving = serving_section(instance, cand) if instance is not None else None
    if serving is not None:
        ex["finetune_energy_j"] = energy
        ex["serving"] = serving
        energy = energy + serving["energy_j"]
    loss = predicted_final_loss(cand, epochs)
    if loss is not None:
        ex["predicted_final_loss"] = loss
    if extra:
        ex.update(extra)
    return Solution(status, solver, cand.model, cand.bits, schedule_from_counts(cand, counts),
                    energy, t, ex)


def find_candidate(instance: PlanningInstance, model: str, bits: int) -> Candidate:
    for c in instance.candidates:
        if c.model == model and c.bits == bits:
            return c
    have = ", ".join(c.key for c in instance.candidates) or "none"
    raise PlanningError(f"no candidate model={model!r} bits={bits} in the instance (have: {have})")


def check_solution(instance: PlanningInstance, sol: Solution, epochs: str | None = None) -> list[str]:
    """Problems with a solution under the estimate it planned for; ``[]`` when it is sound.

    Checks: the candidate exists and can reach the target, the schedule uses only its options,
    the epoch count equals K of the estimate, energy and time match the schedule, time ≤ deadline.
    """
    if sol.status == "infeasible":
        return []
    epochs = epochs or sol.extra.get("epochs_estimate", "robust")
    try:
        cand = find_candidate(instance, sol.model, sol.bits)
    except PlanningError as e:
        return [str(e)]
    problems = []
    K = epochs_of(cand, epochs)
    if K is None:
        problems.append(f"{cand.key} cannot reach the target loss ({epochs} estimate)")
    elif sol.epochs != K:
        problems.append(f"schedule has {sol.epochs} epochs, the {epochs} estimate needs {K}")
    index = {(o.edge, o.cut): i for i, o in enumerate(cand.options)}
    counts = []
    for s in sol.schedule:
        if (s.edge, s.cut) not in index:
            problems.append(f"option (edge={s.edge}, cut={s.cut}) is not feasible for {cand.key}")
            continue
        if s.epochs < 0:
            problems.append("negative epoch count")
        counts.append((index[(s.edge, s.cut)], s.epochs))
    energy, t = schedule_cost(cand, counts)
    if instance.serving is not None:
        serve = serving_energy_j(instance, cand)
        if not math.isfinite(serve):
            problems.append(f"{cand.key} cannot serve a request within latency_slo_s "
                            f"{instance.serving.latency_slo_s:g} s")
        else:
            energy += serve
    if not math.isclose(energy, sol.energy_j, rel_tol=1e-9, abs_tol=1e-9):
        problems.append(f"energy_j {sol.energy_j} != schedule's {energy}")
    if not math.isclose(t, sol.time_s, rel_tol=1e-9, abs_tol=1e-9):
        problems.append(f"time_s {sol.time_s} != schedule's {t}")
    if not on_time(t, instance.deadline_s):
        problems.append(f"time {t:.6g} s exceeds the deadline {instance.deadline_s:.6g} s")
    return problems


class Stopwatch:
    def __init__(self):
        self.t0 = time.perf_counter()

    @property
    def ms(self) -> float:
        return (time.perf_counter() - self.t0) * 1e3
