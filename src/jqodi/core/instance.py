"""The planning instance and the solution: the contract between compilers and solvers.

This is the JSON form documented in DESIGN.md ("The planning instance (contract)"). It is
plain data: no torch, no numpy needed. ``PlanningInstance.from_dict`` validates and names the
offending field path in a :class:`~jqodi.errors.PlanningError`; ``to_dict`` gives back the
contract's JSON (infeasible options are never in ``options``: JSON has no infinity).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Literal

from jqodi.errors import PlanningError

Status = Literal["optimal", "feasible", "infeasible"]


def _fail(path: str, problem: str):
    raise PlanningError(f"{path}: {problem}")


def _obj(d: Any, path: str, required: Iterable[str], optional: Iterable[str] = ()) -> dict:
    if not isinstance(d, dict):
        _fail(path or "instance", f"expected an object, got {type(d).__name__}")
    allowed = set(required) | set(optional)
    for k in d:
        if k not in allowed:
            _fail(f"{path}.{k}" if path else k, f"unknown field (allowed: {', '.join(sorted(allowed))})")
    for k in required:
        if k not in d:
            _fail(f"{path}.{k}" if path else k, "missing field")
    return d


def _num(v: Any, path: str, *, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        _fail(path, f"expected a finite number, got {v!r}")
    if positive and not v > 0:
        _fail(path, f"must be > 0, got {v!r}")
    if nonneg and v < 0:
        _fail(path, f"must be ≥ 0, got {v!r}")
    return float(v)


def _int(v: Any, path: str, *, minimum: int | None = None, nullable: bool = False) -> int | None:
    if v is None and nullable:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        _fail(path, f"expected an integer{' or null' if nullable else ''}, got {v!r}")
    if minimum is not None and v < minimum:
        _fail(path, f"must be ≥ {minimum}, got {v}")
    return v


def _str(v: Any, path: str) -> str:
    if not isinstance(v, str) or not v:
        _fail(path, f"expected a non-empty string, got {v!r}")
    return v


@dataclass(frozen=True)
class Option:
    """One way to run an epoch: deep layers on ``edge``, partition after block ``cut``.

    ``epoch_time_s`` / ``epoch_energy_j`` are t(k) and e(k) of Eq. (5)–(6).
    """

    edge: str
    cut: int
    epoch_time_s: float
    epoch_energy_j: float

    @classmethod
    def from_dict(cls, d: Any, path: str) -> "Option":
        _obj(d, path, ("edge", "cut", "epoch_time_s", "epoch_energy_j"))
        return cls(_str(d["edge"], f"{path}.edge"), _int(d["cut"], f"{path}.cut", minimum=1),
                   _num(d["epoch_time_s"], f"{path}.epoch_time_s", positive=True),
                   _num(d["epoch_energy_j"], f"{path}.epoch_energy_j", nonneg=True))


@dataclass(frozen=True)
class EpochEstimates:
    """K^exp and K^rob: epochs to reach the target loss; ``None`` = never (the paper's ∞)."""

    expected: int | None
    robust: int | None

    def get(self, which: str) -> int | None:
        if which not in ("expected", "robust"):
            raise PlanningError(f"epochs estimate must be 'expected' or 'robust', got {which!r}")
        return self.expected if which == "expected" else self.robust


@dataclass(frozen=True)
class LossEstimates:
    """L_a + γ_(a,q) at the start, and the predicted final losses (Algorithm 4's risk factor)."""

    start: float
    final_expected: float
    final_robust: float


@dataclass(frozen=True)
class Candidate:
    """A (model, bit-width) pair with its one-off quantization cost τ_(a,q), ε_(a,q)."""

    model: str
    bits: int
    quantize_time_s: float
    quantize_energy_j: float
    epochs: EpochEstimates
    options: tuple[Option, ...]
    loss: LossEstimates | None = None
    infeasible: tuple[dict, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.model}@{self.bits}"

    @classmethod
    def from_dict(cls, d: Any, path: str) -> "Candidate":
        _obj(d, path, ("model", "bits", "quantize_time_s", "quantize_energy_j", "epochs", "options"),
             ("loss", "infeasible"))
        ep = _obj(d["epochs"], f"{path}.epochs", ("expected", "robust"))
        epochs = EpochEstimates(_int(ep["expected"], f"{path}.epochs.expected", minimum=1, nullable=True),
                                _int(ep["robust"], f"{path}.epochs.robust", minimum=1, nullable=True))
        loss = None
        if d.get("loss") is not None:
            ls = _obj(d["loss"], f"{path}.loss", ("start", "final_expected", "final_robust"))
            loss = LossEstimates(*(_num(ls[k], f"{path}.loss.{k}", nonneg=True)
                                   for k in ("start", "final_expected", "final_robust")))
        if not isinstance(d["options"], list):
            _fail(f"{path}.options", "expected a list")
        options = tuple(Option.from_dict(o, f"{path}.options[{i}]") for i, o in enumerate(d["options"]))
        seen = set()
        for i, o in enumerate(options):
            if (o.edge, o.cut) in seen:
                _fail(f"{path}.options[{i}]", f"duplicate option (edge={o.edge!r}, cut={o.cut})")
            seen.add((o.edge, o.cut))
        infeasible = d.get("infeasible") or []
        if not isinstance(infeasible, list) or not all(isinstance(x, dict) for x in infeasible):
            _fail(f"{path}.infeasible", "expected a list of objects")
        return cls(_str(d["model"], f"{path}.model"), _int(d["bits"], f"{path}.bits", minimum=1),
                   _num(d["quantize_time_s"], f"{path}.quantize_time_s", nonneg=True),
                   _num(d["quantize_energy_j"], f"{path}.quantize_energy_j", nonneg=True),
                   epochs, options, loss, tuple(infeasible))

    def to_dict(self) -> dict:
        d = {"model": self.model, "bits": self.bits, "quantize_time_s": self.quantize_time_s,
             "quantize_energy_j": self.quantize_energy_j, "epochs": asdict(self.epochs)}
        if self.loss is not None:
            d["loss"] = asdict(self.loss)
        d["options"] = [asdict(o) for o in self.options]
        if self.infeasible:
            d["infeasible"] = list(self.infeasible)
        return d


@dataclass(frozen=True)
class PlanningInstance:
    """Static resources: every epoch may use any option of the chosen candidate."""

    deadline_s: float
    target_loss: float
    candidates: tuple[Candidate, ...]
    meta: dict = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, d: Any) -> "PlanningInstance":
        _obj(d, "", ("deadline_s", "target_loss", "candidates"), ("meta",))
        if not isinstance(d["candidates"], list):
            _fail("candidates", "expected a list")
        cands = tuple(Candidate.from_dict(c, f"candidates[{i}]") for i, c in enumerate(d["candidates"]))
        seen = set()
        for i, c in enumerate(cands):
            if c.key in seen:
                _fail(f"candidates[{i}]", f"duplicate candidate (model={c.model!r}, bits={c.bits})")
            seen.add(c.key)
        meta = d.get("meta") or {}
        if not isinstance(meta, dict):
            _fail("meta", "expected an object")
        return cls(_num(d["deadline_s"], "deadline_s", positive=True),
                   _num(d["target_loss"], "target_loss", positive=True), cands, meta)

    @classmethod
    def from_json(cls, text: str) -> "PlanningInstance":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise PlanningError(f"instance is not valid JSON: {e}") from e
        return cls.from_dict(data)

    def to_dict(self) -> dict:
        d: dict = {"deadline_s": self.deadline_s, "target_loss": self.target_loss,
                   "candidates": [c.to_dict() for c in self.candidates]}
        if self.meta:
            d["meta"] = self.meta
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


@dataclass(frozen=True)
class ScheduleEntry:
    """Run ``epochs`` epochs with the deep part on ``edge`` and the partition after ``cut``
    (a solution's schedule, and the runtime job's)."""

    __pydantic_config__ = {"extra": "forbid"}

    edge: str
    cut: int
    epochs: int


@dataclass(frozen=True)
class Solution:
    """A solver's answer (DESIGN.md). Energy and time include the one-off quantization cost.

    ``extra`` holds solver-specific detail (the estimate planned for, gap, plan time,
    the infeasibility explanation); it is emitted under its own keys in ``to_dict``.
    """

    status: Status
    solver: str
    model: str | None = None
    bits: int | None = None
    schedule: tuple[ScheduleEntry, ...] = ()
    energy_j: float | None = None
    time_s: float | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def epochs(self) -> int:
        return sum(e.epochs for e in self.schedule)

    def to_dict(self) -> dict:
        d = {"status": self.status, "solver": self.solver, "model": self.model, "bits": self.bits,
             "schedule": [asdict(e) for e in self.schedule], "energy_j": self.energy_j,
             "time_s": self.time_s}
        for k, v in self.extra.items():
            d.setdefault(k, v)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> "Solution":
        core = ("status", "solver", "model", "bits", "schedule", "energy_j", "time_s")
        if not isinstance(d, dict) or any(k not in d for k in core):
            raise PlanningError(f"a solution needs the fields {', '.join(core)}")
        if d["status"] not in ("optimal", "feasible", "infeasible"):
            raise PlanningError(f"status: must be optimal, feasible or infeasible, got {d['status']!r}")
        sched = tuple(ScheduleEntry(str(e["edge"]), int(e["cut"]), int(e["epochs"])) for e in d["schedule"])
        return cls(d["status"], d["solver"], d["model"], d["bits"], sched, d["energy_j"], d["time_s"],
                   {k: v for k, v in d.items() if k not in core})
