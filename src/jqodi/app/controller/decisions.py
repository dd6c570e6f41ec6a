"""What the runtime and the controller exchange: an :class:`Observation` after each epoch, a
:class:`Decision` back (continue with a schedule, stop, pause), and a :class:`Replan` record for
each change of schedule."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from jqodi.core.instance import ScheduleEntry


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
