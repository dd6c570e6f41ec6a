"""The closed loop: after every epoch, decide whether to stop and what to run for the rest.

The plan is made once from estimates; a run then sees what really happens. After each epoch the
runtime hands its observation (validation loss, measured time per phase, elapsed time) to a
*controller* that the app layer injects (the Strategy/Grid split of Flower: the runtime moves
tensors and never imports the planner), and the controller answers with a :class:`Decision`:
stop, or the schedule for the remaining epochs. It also answers at once on a resource event (an
edge server leaving or coming back). Everything here is plain data and numpy: no torch.

What the controller does with an observation (:meth:`ClosedLoopController.after_epoch`):

1. **Early stop.** When the validation loss is ≤ L_max (for ``confirm`` further epochs too, if
   asked) the run stops: the cloud keeps the best model, which inference serves.
2. **Online estimates.** K^exp / K^rob of the candidate being trained are refitted from its
   observed curve, seeded by the estimate the plan started from
   (:func:`jqodi.learning.online.refit_remaining`). Each resource's speed is updated from the
   measured phases (:class:`ResourceEstimates`: a robust, bounded update of a time factor per
   device and link).
3. **Re-planning** (policy ``replan``): the remaining work is a planning instance of its own
   (:func:`remaining_instance`): deadline = T_max − elapsed time, the current candidate with
   the refitted remaining epochs and no quantization cost (it is paid), every option's time and
   energy scaled by the updated factors, options on absent edges left out; other candidates
   (when the runtime can switch) from scratch with their quantization cost. The exact solver
   (:func:`jqodi.planner.solve`, ``optimal``) answers in milliseconds. Anti-churn: the current
   schedule is kept unless it can no longer meet the deadline, lacks epochs, uses an absent
   edge, or the new plan saves more than ``threshold`` (default 3 %) of the remaining energy.
   Policy ``static`` never re-plans (the plan made once is followed; early stop still applies).

Every change of schedule is a :class:`Replan` record (when, why, old → new, predicted time and
energy, solve time) that the app prints. Remaining epochs run cheapest first: every prefix of a
schedule that meets the deadline meets it too, and the epochs early stopping skips are then the
costly ones.

:class:`PhaseTable` is the planning instance with each option's time and energy split into the
terms of Eq. (7)–(10) (:data:`jqodi.core.costs.TERMS`), each term charged to the resource that
does it, so measured speeds can rescale it: compute terms to ``end``, ``edge:X``, ``cloud``;
transfers to ``cloud|edge:X`` and ``edge:X|end``. A slower resource is assumed to draw the same
power for longer, so a term's energy scales with its time (busy power × time for compute,
transmit power / rate per bit for links).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from jqodi.core.instance import Candidate, EpochEstimates, Option, PlanningInstance, ScheduleEntry, Solution
from jqodi.errors import JqodiError

__all__ = ["TERMS", "PhaseTable", "phase_table", "ResourceEstimates", "Observation", "Decision", "Replan",
           "ClosedLoopController", "controller_for", "control_lines", "remaining_instance", "schedule_cost",
           "order_cheapest_first", "POLICIES", "DEFAULT_THRESHOLD"]

#: The terms of one epoch (the same order as :data:`jqodi.core.costs.TERMS`).
TERMS = ("end_compute", "edge_compute", "cloud_update", "cloud_to_edge", "edge_to_end", "end_to_edge",
         "edge_to_cloud", "activations")
POLICIES = ("static", "replan")
#: A new plan must save more than this share of the remaining energy to replace a sound one.
DEFAULT_THRESHOLD = 0.03
#: A run that has not reached L_max after this many times its planned K^rob epochs gives up.
MAX_EPOCHS_FACTOR = 3


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
    candidate ``key`` (``model@bits``) at nominal speeds; each row sums to the option's
    ``epoch_time_s`` / ``epoch_energy_j``.
    """

    instance: PlanningInstance
    terms_s: dict[str, np.ndarray]
    terms_j: dict[str, np.ndarray]
    _res: dict[str, list[list[str]]] = field(default_factory=dict, repr=False)
    _res_ids: dict[str, tuple[list[str], np.ndarray]] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        for c in self.instance.candidates:
            if c.key not in self.terms_s or self.terms_s[c.key].shape != (len(c.options), len(TERMS)):
                raise JqodiError(f"phase table: candidate {c.key} needs {len(c.options)}×{len(TERMS)} terms")
            rows = [[term_resource(t, o.edge) for t in TERMS] for o in c.options]
            self._res[c.key] = rows
            names = sorted({r for row in rows for r in row})
            ids = np.array([[names.index(r) for r in row] for row in rows], dtype=np.int64).reshape(-1, len(TERMS))
            self._res_ids[c.key] = (names, ids)

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

    def terms(self, key: str, i: int) -> list[tuple[str, str, float, float]]:
        """(term, resource, seconds, joules) of option ``i`` of candidate ``key`` at nominal speeds."""
        return [(t, self._res[key][i][j], float(self.terms_s[key][i, j]), float(self.terms_j[key][i, j]))
                for j, t in enumerate(TERMS)]

    def scaled(self, key: str, factors: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """Every option's epoch (time_s, energy_j) with each term's time and energy × its resource's factor."""
        names, ids = self._res_ids[key]
        f = np.array([factors.get(r, 1.0) for r in names], dtype=float)[ids]
        return (self.terms_s[key] * f).sum(axis=1), (self.terms_j[key] * f).sum(axis=1)

    def to_dict(self) -> dict:
        return {"instance": self.instance.to_dict(), "terms": list(TERMS),
                "terms_s": {k: v.tolist() for k, v in self.terms_s.items()},
                "terms_j": {k: v.tolist() for k, v in self.terms_j.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PhaseTable":
        if list(d.get("terms", [])) != list(TERMS):
            raise JqodiError(f"phase table: terms must be {list(TERMS)}")
        inst = PlanningInstance.from_dict(d["instance"])
        return cls(inst, {k: np.asarray(v, dtype=float).reshape(-1, len(TERMS)) for k, v in d["terms_s"].items()},
                   {k: np.asarray(v, dtype=float).reshape(-1, len(TERMS)) for k, v in d["terms_j"].items()})


def phase_table(scenario, estimates=None, profiles=None, cost_model: str | None = None,
                instance: PlanningInstance | None = None) -> PhaseTable:
    """Compile ``scenario`` into a :class:`PhaseTable` (the instance of
    :func:`jqodi.core.costs.compile_instance` with the terms of its cost tables); ``instance``:
    one already compiled from it (with its estimates)."""
    from jqodi.core.costs import compile_instance, cost_table, scenario_profiles

    profiles = dict(profiles) if profiles else scenario_profiles(scenario)
    inst = instance if instance is not None else compile_instance(scenario, estimates, profiles, cost_model)
    tables = {m.name: cost_table(scenario, m.name, profiles[m.name], cost_model=cost_model) for m in scenario.models}
    ts, tj = {}, {}
    for c in inst.candidates:
        ct = tables[c.model]
        b = ct.bits.index(c.bits)
        rows_s, rows_j = [], []
        for o in c.options:
            j, x = ct.cuts.index(o.cut), ct.edges.index(o.edge)
            rows_s.append([float(ct.time[t][b, j, x]) for t in TERMS])
            rows_j.append([float(ct.energy[t][b, j, x]) for t in TERMS])
        ts[c.key] = np.asarray(rows_s, dtype=float).reshape(-1, len(TERMS))
        tj[c.key] = np.asarray(rows_j, dtype=float).reshape(-1, len(TERMS))
    return PhaseTable(inst, ts, tj)


# --------------------------------------------------------------------------- resource estimates
@dataclass
class ResourceEstimates:
    """A time factor per device and link: measured / predicted (1 = as planned, 2 = twice as slow).

    After each epoch every resource the epoch used gets the ratio of its measured to its nominal
    time (its terms summed); terms shorter than ``min_share`` of the epoch are skipped (a 1 µs
    prediction against a 1 ms measurement says nothing about the device). The update is

    * **robust**: the target is the median of the resource's last ``window`` (3) ratios, the
      current factor standing in for ratios not yet seen, so one outlier epoch does not move it
      and a lasting change does from its second epoch on;
    * **bounded**: the factor moves toward the target by ``gain`` in log space (1 = all the way)
      and at most by ×``max_step`` (2) per epoch, and stays within [1/``limit``, ``limit``].

    After a resource event (:meth:`forget`) the history of that resource restarts.
    """

    factors: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)
    window: int = 3
    gain: float = 1.0
    max_step: float = 2.0
    limit: float = 20.0
    min_share: float = 0.02

    def get(self, resource: str) -> float:
        return self.factors.get(resource, 1.0)

    def observe(self, terms: Iterable[tuple[str, str, float, float]], measured_s: Mapping[str, float]) -> dict:
        """Update from one epoch: ``terms`` = (term, resource, nominal s, nominal J) of the epoch's
        option, ``measured_s`` = measured seconds per term. Returns the new factors of the resources seen."""
        terms = list(terms)
        total = sum(s for _, _, s, _ in terms)
        nominal: dict[str, float] = {}
        measured: dict[str, float] = {}
        for term, res, s, _ in terms:
            m = measured_s.get(term)
            if m is None or not math.isfinite(m) or m < 0 or s <= 0 or s < self.min_share * total:
                continue
            nominal[res] = nominal.get(res, 0.0) + s
            measured[res] = measured.get(res, 0.0) + m
        out = {}
        for res, s in nominal.items():
            ratio = max(measured[res], 1e-12) / s
            h = self.history.setdefault(res, [])
            h.append(ratio)
            del h[:-self.window]
            old = self.get(res)
            target = float(np.median([old] * (self.window - len(h)) + h))
            step = math.exp(min(max(self.gain * math.log(target / old), -math.log(self.max_step)),
                                math.log(self.max_step)))
            self.factors[res] = min(max(old * step, 1.0 / self.limit), self.limit)
            out[res] = self.factors[res]
        return out

    def forget(self, prefix: str) -> None:
        """Drop the history (not the factor) of every resource whose key contains ``prefix``."""
        for k in list(self.history):
            if prefix in k:
                del self.history[k]

    def to_dict(self) -> dict:
        return {"factors": dict(self.factors), "history": {k: list(v) for k, v in self.history.items()}}


# --------------------------------------------------------------------------- observations, decisions
@dataclass(frozen=True)
class Observation:
    """What the runtime hands the controller after an epoch (times in testbed seconds).

    ``epoch``: epochs completed so far (1-based index of this one); ``elapsed_s``: testbed
    time since fine-tuning started, this epoch included; ``phases_s``: measured seconds per
    term of :data:`TERMS`; ``model``/``bits``: the candidate trained (a switch starts a new curve).
    """

    epoch: int
    edge: str
    cut: int
    val_loss: float
    time_s: float
    elapsed_s: float
    energy_j: float = 0.0
    phases_s: Mapping[str, float] = field(default_factory=dict)
    model: str | None = None
    bits: int | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Observation":
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["phases_s"] = dict(self.phases_s)
        return d


@dataclass(frozen=True)
class Replan:
    """One change of schedule: when (after which epoch, at which testbed time), why, old → new."""

    epoch: int
    elapsed_s: float
    reason: str
    trigger: str                 # "epoch" | "event"
    old: tuple[ScheduleEntry, ...]
    new: tuple[ScheduleEntry, ...]
    old_model: str | None = None
    old_bits: int | None = None
    new_model: str | None = None
    new_bits: int | None = None
    predicted_time_s: float | None = None
    predicted_energy_j: float | None = None
    old_predicted_energy_j: float | None = None
    deadline_left_s: float | None = None
    epochs_remaining_expected: int | None = None
    epochs_remaining_robust: int | None = None
    solve_ms: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["old"] = [asdict(e) for e in self.old]
        d["new"] = [asdict(e) for e in self.new]
        return d

    def text(self) -> str:
        """One line for the console."""
        def sched(entries, model, bits):
            body = " + ".join(f"{e.epochs}×({e.edge}, cut {e.cut})" for e in entries) or "nothing"
            switched = (self.new_model, self.new_bits) != (self.old_model, self.old_bits)
            return f"{model}@{bits} {body}" if switched else body
        pred = ""
        if self.predicted_energy_j is not None:
            pred = (f"; predicted {self.predicted_time_s:.3g} s of {self.deadline_left_s:.3g} s left, "
                    f"{self.predicted_energy_j:.4g} J")
        return (f"re-plan after epoch {self.epoch} (t = {self.elapsed_s:.3g} s, {self.trigger}): {self.reason}: "
                f"{sched(self.old, self.old_model, self.old_bits)} → "
                f"{sched(self.new, self.new_model, self.new_bits)}{pred} [{self.solve_ms:.1f} ms]")


@dataclass(frozen=True)
class Decision:
    """The controller's answer. ``action``: ``continue`` (run ``schedule``, the remaining epochs
    in order), ``stop`` (the run is over: ``reason`` says why) or ``pause`` (nothing can run now,
    e.g. the only usable edge left: end cleanly at this epoch boundary; resume when it is back)."""

    action: str
    schedule: tuple[ScheduleEntry, ...] = ()
    reason: str = ""
    model: str | None = None
    bits: int | None = None
    replan: Replan | None = None

    def to_dict(self) -> dict:
        return {"action": self.action, "schedule": [asdict(e) for e in self.schedule], "reason": self.reason,
                "model": self.model, "bits": self.bits,
                "replan": self.replan.to_dict() if self.replan is not None else None}


# --------------------------------------------------------------------------- pure helpers
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
    """The planning instance of the work left (see the module docstring, step 3).

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


# --------------------------------------------------------------------------- the controller
class ClosedLoopController:
    """Early stop, online estimates and re-planning for one run (see the module docstring).

    ``table``: the phase-resolved instance the plan was made from; ``solution``: that plan;
    ``policy``: ``replan`` (default) or ``static``; ``threshold``: the anti-churn share;
    ``confirm``: further epochs at or below L_max before stopping; ``allow_switch``: whether the
    runtime can change model/bits mid-run (the emulated runtime cannot: it trains one model).
    ``refit_boot``: bootstrap refits of the online K estimate (fewer = faster).
    """

    def __init__(self, table: PhaseTable, solution: Solution, *, policy: str = "replan",
                 threshold: float = DEFAULT_THRESHOLD, confirm: int = 0, allow_switch: bool = False,
                 early_stop: bool = True, solver: str = "optimal", refit_boot: int = 0,
                 edges_down: Iterable[str] = ()):
        if policy not in POLICIES:
            raise JqodiError(f"--policy: must be one of {', '.join(POLICIES)}, got {policy!r}")
        if not (0 <= threshold < 1):
            raise JqodiError(f"re-plan threshold must be in [0, 1), got {threshold!r}")
        if confirm < 0:
            raise JqodiError(f"confirmation epochs must be ≥ 0, got {confirm}")
        if solution.status == "infeasible" or not solution.schedule:
            raise JqodiError("the closed loop needs a feasible plan to start from")
        self.table = table
        self.policy = policy
        self.threshold = float(threshold)
        self.confirm = int(confirm)
        self.allow_switch = bool(allow_switch)
        self.early_stop = bool(early_stop)
        self.solver = solver
        self.refit_boot = int(refit_boot)
        self.deadline_s = table.instance.deadline_s
        self.target_loss = table.instance.target_loss
        self.model, self.bits = solution.model, int(solution.bits)
        self.resources = ResourceEstimates()
        self.edges_down: set[str] = set(edges_down)
        self.losses: dict[str, list[float]] = {}
        self.observations: list[Observation] = []
        self.replans: list[Replan] = []
        self.refits: list[dict] = []
        self.elapsed_s = 0.0
        self.epochs_done = 0
        self.stopped: str | None = None
        self.best: tuple[float, int] | None = None  # (val loss, epoch)
        self.plan_ms: list[float] = []      # wall-clock ms of each re-plan (instance, solve, decision)
        self.plan_cpu_ms: list[float] = []  # the same in this process's CPU time (the host is shared)
        cand = table.candidate(self.model, self.bits)
        self.offset_s = cand.quantize_time_s  # τ_(a,q) is paid before fine-tuning starts
        self.options = {"policy": policy, "threshold": self.threshold, "confirm": self.confirm,
                        "allow_switch": self.allow_switch, "early_stop": self.early_stop, "solver": solver,
                        "refit_boot": self.refit_boot}
        self.solution = solution
        self.priors = {c.key: (c.epochs.expected, c.epochs.robust) for c in table.instance.candidates}
        self.remaining_estimate: tuple[int | None, int | None] = (cand.epochs.expected, cand.epochs.robust)
        self.schedule = order_cheapest_first(table, self.key, solution.schedule, {}) \
            if policy == "replan" else tuple(solution.schedule)
        self.initial = tuple(self.schedule)
        self.initial_epochs = [s for s in self.initial for _ in range(s.epochs)]

    # -- state ----------------------------------------------------------------------------------
    @property
    def key(self) -> str:
        return f"{self.model}@{self.bits}"

    def to_spec(self) -> dict:
        """What rebuilds this controller in another process (:meth:`from_spec`): JSON."""
        return {"table": self.table.to_dict(), "solution": self.solution.to_dict(), "options": dict(self.options),
                "edges_down": sorted(self.edges_down)}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "ClosedLoopController":
        try:
            table = PhaseTable.from_dict(spec["table"])
            solution = Solution.from_dict(spec["solution"])
            opts = dict(spec.get("options") or {})
        except (KeyError, TypeError, ValueError, JqodiError) as e:
            raise JqodiError(f"controller spec is malformed: {e}") from e
        return cls(table, solution, edges_down=spec.get("edges_down") or (), **opts)

    def restore(self, observations: Iterable[Mapping[str, Any]]) -> None:
        """Replay the observations of a resumed run (the decisions are recomputed, not printed)."""
        for o in observations:
            self.after_epoch(o)

    # -- the two entry points ---------------------------------------------------------------------
    def after_epoch(self, obs: Observation | Mapping[str, Any]) -> Decision:
        """The runtime finished an epoch: stop, or the schedule for the remaining epochs."""
        if not isinstance(obs, Observation):
            obs = Observation.from_dict(obs)
        self.observations.append(obs)
        key = f"{obs.model}@{obs.bits}" if obs.model is not None else self.key
        self.losses.setdefault(key, []).append(float(obs.val_loss))
        self.epochs_done += 1
        self.elapsed_s = self.offset_s + float(obs.elapsed_s)
        if self.best is None or obs.val_loss < self.best[0]:
            self.best = (float(obs.val_loss), obs.epoch)
        # the epoch just run leaves the schedule
        self.schedule = _consume(self.schedule, obs.edge, obs.cut)
        i = self.table.option_index(key, obs.edge, obs.cut)
        if i is not None and obs.phases_s:
            self.resources.observe(self.table.terms(key, i), obs.phases_s)
        from jqodi.learning.online import refit_remaining, target_reached

        losses = self.losses[key]
        if self.early_stop:
            at = target_reached(losses, self.target_loss, self.confirm)
            if at is not None:
                why = (f"target reached: val loss {losses[at - 1]:.4f} ≤ L_max {self.target_loss:.4f} at epoch {at}"
                       + (f", confirmed by {self.confirm} more" if self.confirm else ""))
                return self._stop(why)
        if self.policy == "static":
            if not self.schedule:
                return self._stop("the plan's epochs are done" + ("" if not self.early_stop else
                                                                   "; the target was not reached"))
            return self._static_next()
        prior = self.priors[key]
        t0 = time.perf_counter()
        est = refit_remaining(losses, self.target_loss, prior[0], prior[1], confirm=self.confirm,
                              n_boot=self.refit_boot)
        self.refits.append({"epoch": obs.epoch, "remaining_expected": est.remaining_expected,
                            "remaining_robust": est.remaining_robust, "weight_observed": est.weight_observed,
                            "source": est.source, "ms": (time.perf_counter() - t0) * 1e3})
        self.remaining_estimate = (est.remaining_expected, est.remaining_robust)
        cap = MAX_EPOCHS_FACTOR * max(self.priors[key][1] or self.priors[key][0] or 0, len(self.initial_epochs))
        if len(losses) >= cap:
            return self._stop(f"gave up: {len(losses)} epochs, {MAX_EPOCHS_FACTOR}× what the plan budgeted, "
                              f"and the target is not reached")
        if est.remaining_expected is None and not self.schedule:
            return self._stop("the target looks out of reach (the refitted curve levels off above L_max) "
                              "and the plan's epochs are done")
        return self._replan("epoch")

    def on_event(self, kind: str, edge: str, at_s: float | None = None) -> Decision:
        """A resource event: ``kind`` = ``edge_leaves`` | ``edge_returns`` (testbed time ``at_s``)."""
        if kind not in ("edge_leaves", "edge_returns"):
            raise JqodiError(f"unknown resource event {kind!r}")
        if at_s is not None:
            self.elapsed_s = max(self.elapsed_s, self.offset_s + float(at_s))
        if kind == "edge_leaves":
            self.edges_down.add(edge)
        else:
            self.edges_down.discard(edge)
            self.resources.forget(f"edge:{edge}")
        if self.stopped:
            return Decision("stop", (), self.stopped, self.model, self.bits)
        if self.policy == "static":
            return self._static_next()
        return self._replan("event", f"edge {edge} {'left' if kind == 'edge_leaves' else 'is back'}")

    # -- internals -------------------------------------------------------------------------------
    def _stop(self, why: str) -> Decision:
        self.stopped = why
        return Decision("stop", (), why, self.model, self.bits)

    def _static_next(self) -> Decision:
        if not self.schedule:
            return self._stop("the plan's epochs are done")
        nxt = self.schedule[0]
        if nxt.edge in self.edges_down:
            return Decision("pause", self.schedule, f"edge {nxt.edge} is away and the static policy does not "
                                                    f"re-plan", self.model, self.bits)
        return Decision("continue", self.schedule, "", self.model, self.bits)

    def _replan(self, trigger: str, event: str | None = None) -> Decision:
        from jqodi.planner import solve

        t0, c0 = time.perf_counter(), time.process_time()
        rem_exp, rem_rob = self.remaining_estimate
        left = self.deadline_s - self.elapsed_s
        f = self.resources.factors
        old = self.schedule
        have = sum(s.epochs for s in old)
        # epochs to budget: K^rob of the rest; if the refit sees the target out of reach, the plan's own
        need = rem_rob if rem_rob is not None else (rem_exp if rem_exp is not None else have)
        kept = truncate(old, need)
        cur = schedule_cost(self.table, self.key, kept, f)
        reasons = [event] if event else []
        forced = None
        if any(s.edge in self.edges_down for s in kept):
            forced = "the plan uses an edge that is away"
        elif have < need:
            forced = f"the curve needs {need} more epoch(s) (K^rob), the plan has {have}"
        elif cur is None or cur[0] > left * (1 + 1e-9):
            forced = (f"the plan would miss the deadline ({cur[0]:.3g} s needed, {left:.3g} s left)"
                      if cur is not None else "the plan uses an option the candidate lacks")
        inst = remaining_instance(self.table, current=self.key, remaining=(min(rem_exp or need, need), need),
                                  deadline_left_s=left, factors=f, edges_down=self.edges_down,
                                  allow_switch=self.allow_switch, priors=self.priors)
        sol = solve(inst, self.solver, epochs="robust")
        if sol.status == "infeasible" and forced:  # nothing fits K^rob: plan for K^exp rather than give up
            sol = solve(inst, self.solver, epochs="expected")
            if sol.status != "infeasible":
                forced = f"{forced}; no plan fits K^rob in time: planning for K^exp"
        new_key, new_sched, pred = self.key, order_cheapest_first(self.table, self.key, kept, f), cur
        if sol.status != "infeasible":
            saving = (1 - sol.energy_j / cur[1]) if cur is not None and cur[1] > 0 else math.inf
            if forced or saving > self.threshold:
                if forced is None:
                    reasons.append(f"estimates changed: saves {saving:.1%} of the remaining energy "
                                   f"(threshold {self.threshold:.0%})")
                new_key = f"{sol.model}@{sol.bits}"
                new_sched = order_cheapest_first(self.table, new_key, sol.schedule, f)
                pred = (sol.time_s, sol.energy_j)
        elif forced:
            fast = self._fastest(need)
            if fast is None:
                self.plan_ms.append((time.perf_counter() - t0) * 1e3)
                why = "; ".join(reasons + [forced])
                return Decision("pause", old, f"{why}: no edge can serve the remaining epochs", self.model, self.bits)
            new_sched, pred = fast
            forced = f"{forced}; no plan meets the deadline: finishing as fast as possible"
        if forced:
            reasons.append(forced)
        ms = (time.perf_counter() - t0) * 1e3
        self.plan_ms.append(ms)
        self.plan_cpu_ms.append((time.process_time() - c0) * 1e3)
        rp = None
        new_model, new_bits = new_key.rsplit("@", 1)[0], int(new_key.rsplit("@", 1)[1])
        if new_key != self.key or _multiset(new_sched) != _multiset(kept):
            rp = Replan(self.epochs_done, self.elapsed_s, "; ".join(reasons) or "estimates changed", trigger, old,
                        tuple(new_sched), self.model, self.bits, new_model, new_bits,
                        pred[0] if pred else None, pred[1] if pred else None, cur[1] if cur else None, left,
                        rem_exp, rem_rob, ms)
            self.replans.append(rp)
        self.model, self.bits = new_model, new_bits
        self.schedule = tuple(new_sched)
        if not self.schedule:
            return self._stop("no epochs left in the plan")
        if self.schedule[0].edge in self.edges_down:
            return Decision("pause", self.schedule, f"edge {self.schedule[0].edge} is away", self.model, self.bits, rp)
        return Decision("continue", self.schedule, rp.reason if rp else "", self.model, self.bits, rp)

    def _fastest(self, epochs: int | None):
        if not epochs:
            return None
        t, e = self.table.scaled(self.key, self.resources.factors)
        ok = [i for i, o in enumerate(self.table.cand(self.key).options) if o.edge not in self.edges_down]
        if not ok:
            return None
        i = min(ok, key=lambda j: (t[j], e[j]))
        o = self.table.cand(self.key).options[i]
        return (ScheduleEntry(o.edge, o.cut, int(epochs)),), (epochs * float(t[i]), epochs * float(e[i]))

    def summary(self) -> dict:
        """What the record keeps: re-plans, refits, final factors, stop reason, plan times."""
        return {"policy": self.policy, "threshold": self.threshold, "confirm": self.confirm,
                "replans": [r.to_dict() for r in self.replans], "refits": list(self.refits),
                "resources": self.resources.to_dict(), "stopped": self.stopped,
                "best": {"val_loss": self.best[0], "epoch": self.best[1]} if self.best else None,
                "plan_ms": {"max": max(self.plan_ms, default=0.0),
                            "median": float(np.median(self.plan_ms)) if self.plan_ms else 0.0,
                            "cpu_max": max(self.plan_cpu_ms, default=0.0), "count": len(self.plan_ms)},
                "initial_schedule": [asdict(e) for e in self.initial],
                "final_schedule": [asdict(e) for e in self.schedule]}


def _consume(schedule: Sequence[ScheduleEntry], edge: str, cut: int) -> tuple[ScheduleEntry, ...]:
    """``schedule`` less one epoch of (edge, cut) (its first such entry; the head if none matches)."""
    out = list(schedule)
    idx = next((i for i, s in enumerate(out) if s.edge == edge and s.cut == cut and s.epochs > 0), None)
    if idx is None:
        idx = next((i for i, s in enumerate(out) if s.epochs > 0), None)
    if idx is None:
        return ()
    s = out[idx]
    out[idx] = ScheduleEntry(s.edge, s.cut, s.epochs - 1)
    return tuple(x for x in out if x.epochs > 0)


def _multiset(schedule: Sequence[ScheduleEntry]) -> dict[tuple[str, int], int]:
    m: dict[tuple[str, int], int] = {}
    for s in schedule:
        if s.epochs > 0:
            m[(s.edge, s.cut)] = m.get((s.edge, s.cut), 0) + s.epochs
    return m


def controller_for(scenario, solution: Solution, *, policy: str = "replan", threshold: float = DEFAULT_THRESHOLD,
                   confirm: int = 0, estimates=None, profiles=None,
                   instance: PlanningInstance | None = None) -> ClosedLoopController:
    """The controller of a run of ``solution`` on ``scenario`` (planned from the same ``estimates``,
    or from ``instance``): the runtime trains one model per run, so model and bits stay fixed."""
    table = phase_table(scenario, estimates, profiles, instance=instance)
    return ClosedLoopController(table, solution, policy=policy, threshold=threshold, confirm=confirm)


def control_lines(record) -> list[str]:
    """How a run's epochs ended, for the console: policy, re-plans, why it stopped, the model
    served, and the energy the stop saved against the plan (predicted energy of the planned
    epochs not run)."""
    ctl = record.control or {}
    if not ctl:
        return []
    summ = ctl.get("controller") or {}
    lines = []
    if summ:
        n = len(summ.get("replans", []))
        pm = summ.get("plan_ms", {})
        lines.append(f"closed loop: policy {summ.get('policy')}, {n} re-plan(s)"
                     + (f" (re-plan time max {pm.get('max', 0):.1f} ms wall, {pm.get('cpu_max', 0):.1f} ms CPU)"
                        if pm.get("count") else ""))
    status = ctl.get("status", "completed")
    lines.append(f"epochs ended ({status}) after {len(record.epochs)}: {ctl.get('reason') or 'the plan is done'}")
    best = ctl.get("best")
    if best:
        lines.append(f"best model: epoch {best['epoch']} (val loss {best['val_loss']:.4f}), kept by the cloud"
                     + (" and served" if record.inference else ""))
    sol = record.solution or {}
    run_pred = [e.get("predicted", {}).get("energy_j") for e in record.epochs]
    if sol.get("energy_j") is not None and record.epochs and all(x is not None for x in run_pred):
        planned = sum(int(e["epochs"]) for e in sol.get("schedule", []))
        line = (f"energy: {sum(e['energy_j'] for e in record.epochs):.4g} J measured over {len(record.epochs)} "
                f"epoch(s), {sum(run_pred):.4g} J predicted for them; the plan predicted {sol['energy_j']:.4g} J "
                f"for {planned}")
        if "target reached" in (ctl.get("reason") or ""):
            line += (f": stopping at the target saved ≈ {max(sol['energy_j'] - sum(run_pred), 0.0):.4g} J "
                     f"(predicted, the one-off quantization included)")
        lines.append(line)
    return lines
