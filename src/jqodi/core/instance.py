"""The planning instance and the solution: the contract between compilers and solvers.

This is the JSON form documented in docs/interfaces.md ("The planning instance (contract)"). It is
plain data: no torch, no numpy needed. ``PlanningInstance.from_dict`` validates and names the
offending field path in a :class:`~jqodi.errors.PlanningError`; ``to_dict`` gives back the
contract's JSON (infeasible options are never in ``options``: JSON has no infinity).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator

from jqodi.core.validation import FORBID_EXTRA, FieldProblem, validate
from jqodi.errors import PlanningError

Status = Literal["optimal", "feasible", "infeasible"]


# The contract's field types. They keep the contract's strictness (a JSON string or a boolean is
# not a number) and its wording ("must be > 0, got -1") inside pydantic's validation.

def _number(*, minimum: float | None = None, strict: bool = False):
    """A finite JSON number (not a boolean or a string), > ``minimum`` if ``strict`` else ≥ it."""
    def check(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"expected a finite number, got {v!r}")
        if minimum is not None and (v <= minimum if strict else v < minimum):
            raise ValueError(f"must be {'>' if strict else '≥'} {minimum:g}, got {v!r}")
        return v
    return BeforeValidator(check)


def _integer(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"expected an integer, got {v!r}")
    if v < 1:
        raise ValueError(f"must be ≥ 1, got {v}")
    return v


def _nonempty(v: Any) -> Any:
    if not isinstance(v, str) or not v:
        raise ValueError(f"expected a non-empty string, got {v!r}")
    return v


def _list(v: Any) -> Any:
    if not isinstance(v, (list, tuple)):
        raise ValueError(f"expected a list, got {type(v).__name__}")
    return v


PositiveNumber = Annotated[float, _number(minimum=0, strict=True)]
NonNegNumber = Annotated[float, _number(minimum=0)]
Count = Annotated[int, BeforeValidator(_integer)]
Text = Annotated[str, BeforeValidator(_nonempty)]
ListOf = BeforeValidator(_list)
Meta = Annotated[dict, BeforeValidator(lambda v: {} if v is None else v)]


@dataclass(frozen=True)
class Option:
    """One way to run an epoch: deep layers on ``edge``, partition after block ``cut``.

    ``epoch_time_s`` / ``epoch_energy_j`` are t(k) and e(k) of Eq. (5)–(6).
    """

    __pydantic_config__ = FORBID_EXTRA

    edge: Text
    cut: Count
    epoch_time_s: PositiveNumber
    epoch_energy_j: NonNegNumber


@dataclass(frozen=True)
class EpochEstimates:
    """K^exp and K^rob: epochs to reach the target loss; ``None`` = never (the paper's ∞)."""

    __pydantic_config__ = FORBID_EXTRA

    expected: Count | None
    robust: Count | None

    def get(self, which: str) -> int | None:
        if which not in ("expected", "robust"):
            raise PlanningError(f"epochs estimate must be 'expected' or 'robust', got {which!r}")
        return self.expected if which == "expected" else self.robust


@dataclass(frozen=True)
class LossEstimates:
    """L_a + γ_(a,q) at the start, and the predicted final losses (Algorithm 4's risk factor)."""

    __pydantic_config__ = FORBID_EXTRA

    start: NonNegNumber
    final_expected: NonNegNumber
    final_robust: NonNegNumber


@dataclass(frozen=True)
class CandidateServing:
    """How a candidate serves one request (the contract's optional per-candidate ``serving``).

    ``mode`` is ``end-only`` or ``split`` (with ``edge`` and ``cut``), the configuration with the
    least ``request_energy_j`` whose ``request_time_s`` meets the instance's latency bound; or
    ``null`` when no configuration meets it (then ``reason`` says why, and
    ``fastest_request_time_s`` is the fastest feasible request, if any).
    """

    __pydantic_config__ = FORBID_EXTRA

    mode: Literal["end-only", "split"] | None
    request_time_s: NonNegNumber | None = None
    request_energy_j: NonNegNumber | None = None
    edge: Text | None = None
    cut: Count | None = None
    fastest_request_time_s: NonNegNumber | None = None
    reason: str | None = None

    def __post_init__(self):
        if self.mode is not None and (self.request_time_s is None or self.request_energy_j is None):
            raise FieldProblem("request_energy_j", "a serving mode needs request_time_s and request_energy_j")
        if self.mode == "split" and (self.edge is None or self.cut is None):
            raise FieldProblem("edge", "split serving needs edge and cut")

    @property
    def feasible(self) -> bool:
        return self.mode is not None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k == "mode"}


@dataclass(frozen=True)
class ServingDemand:
    """The instance's optional ``serving``: requests to serve after fine-tuning and the p95
    latency bound of one request."""

    __pydantic_config__ = FORBID_EXTRA

    requests: NonNegNumber
    latency_slo_s: PositiveNumber


@dataclass(frozen=True)
class Candidate:
    """A (model, bit-width) pair with its one-off quantization cost τ_(a,q), ε_(a,q)."""

    __pydantic_config__ = FORBID_EXTRA

    model: Text
    bits: Count
    quantize_time_s: NonNegNumber
    quantize_energy_j: NonNegNumber
    epochs: EpochEstimates
    options: Annotated[tuple[Option, ...], ListOf]
    loss: LossEstimates | None = None
    infeasible: Annotated[tuple[dict, ...], ListOf] = ()
    serving: CandidateServing | None = None

    def __post_init__(self):
        seen = set()
        for i, o in enumerate(self.options):
            if (o.edge, o.cut) in seen:
                raise FieldProblem(f"options[{i}]", f"duplicate option (edge={o.edge!r}, cut={o.cut})")
            seen.add((o.edge, o.cut))

    @property
    def key(self) -> str:
        return f"{self.model}@{self.bits}"

    def to_dict(self) -> dict:
        d = {"model": self.model, "bits": self.bits, "quantize_time_s": self.quantize_time_s,
             "quantize_energy_j": self.quantize_energy_j, "epochs": asdict(self.epochs)}
        if self.loss is not None:
            d["loss"] = asdict(self.loss)
        d["options"] = [asdict(o) for o in self.options]
        if self.infeasible:
            d["infeasible"] = list(self.infeasible)
        if self.serving is not None:
            d["serving"] = self.serving.to_dict()
        return d


@dataclass(frozen=True)
class PlanningInstance:
    """Static resources: every epoch may use any option of the chosen candidate."""

    __pydantic_config__ = FORBID_EXTRA

    deadline_s: PositiveNumber
    target_loss: PositiveNumber
    candidates: Annotated[tuple[Candidate, ...], ListOf]
    meta: Meta = field(default_factory=dict, compare=False)
    serving: ServingDemand | None = None

    def __post_init__(self):
        seen = set()
        for i, c in enumerate(self.candidates):
            if c.key in seen:
                raise FieldProblem(f"candidates[{i}]", f"duplicate candidate (model={c.model!r}, bits={c.bits})")
            seen.add(c.key)
            if self.serving is not None and c.serving is None:
                raise FieldProblem(f"candidates[{i}].serving", "missing: the instance has a 'serving' "
                                                               "demand, so every candidate needs its serving entry")

    @classmethod
    def from_dict(cls, d: Any) -> "PlanningInstance":
        """Validate the contract's JSON (pydantic); a problem is one line naming the field path."""
        return validate(cls, d, PlanningError, top="instance")

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
        if self.serving is not None:
            d["serving"] = asdict(self.serving)
        if self.meta:
            d["meta"] = self.meta
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


@dataclass(frozen=True)
class ScheduleEntry:
    """Run ``epochs`` epochs with the deep part on ``edge`` and the partition after ``cut``
    (a solution's schedule, and the runtime job's)."""

    __pydantic_config__ = FORBID_EXTRA

    edge: str
    cut: int
    epochs: int


@dataclass(frozen=True)
class Solution:
    """A solver's answer (docs/interfaces.md). Energy and time include the one-off quantization cost.

    ``extra`` holds solver-specific detail (the estimate planned for, gap, plan time,
    the infeasibility explanation); it is emitted under its own keys in ``to_dict``.
    """

    __pydantic_config__ = FORBID_EXTRA

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
        """Validate a solution's JSON (pydantic); keys beyond the core fields go to ``extra``."""
        core = ("status", "solver", "model", "bits", "schedule", "energy_j", "time_s")
        if isinstance(d, dict):
            missing = [k for k in core if k not in d]
            if missing:
                raise PlanningError(f"{missing[0]}: missing field (a solution needs {', '.join(core)})")
            d = {**{k: d[k] for k in core}, "extra": {k: v for k, v in d.items() if k not in core}}
        return validate(cls, d, PlanningError, top="solution")
