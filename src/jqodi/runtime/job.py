"""The job: everything the roles need to run one plan, as one validated config object.

The cloud builds a :class:`Job` from a scenario and a solution (:func:`jqodi.runtime.plan.job_from_plan`)
and publishes it through the rendezvous store; every role gets the same object (the Flower
``Context``). ``Job.from_dict`` validates with pydantic (:func:`jqodi.core.validation.validate`,
the style of every external input): it rejects unknown keys and names the offending one, so a
typo in a hand-written job file fails loudly instead of being ignored.

The schedule is the contract's :class:`~jqodi.core.instance.ScheduleEntry`; the emulated
devices are :class:`~jqodi.core.devices.Device` (the same type the planner's system view uses).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator

from jqodi.core.devices import Device, link_key
from jqodi.core.instance import ScheduleEntry
from jqodi.core.train_config import TrainConfig
from jqodi.core.validation import FORBID_EXTRA, validate
from jqodi.errors import JqodiError

__all__ = ["Job", "DataConfig", "TrainingConfig", "EmulationConfig", "LinkProfile", "AutoDilation", "dilation_words",
           "DEFAULT_TIMEOUT_S", "DEFAULT_STARTUP_TIMEOUT_S", "DEFAULT_HOST", "DEFAULT_PORT", "JobError"]

#: Every store, process group and wait gets an explicit timeout; torch's default is 30 minutes,
#: far too long to notice a dead peer. Heartbeats keep long epochs from tripping it.
#: ``timeout_s`` (failure detection): seconds of silence after which a peer counts as failed.
DEFAULT_TIMEOUT_S = 120.0
#: ``startup_timeout_s``: how long a role waits for the rendezvous and for the process group to
#: form. Separate from the silence timeout: start-up includes importing torch and loading the
#: model in every process (tens of seconds on a loaded machine) and, across machines, a person
#: starting the roles one after another, while a short silence timeout is what makes a failure
#: show quickly.
DEFAULT_STARTUP_TIMEOUT_S = 300.0
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 29517


class JobError(JqodiError):
    """A job/config is malformed (names the key)."""


def _to_dict(obj) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: _to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_dict(v) for v in obj]
    return obj


@dataclass(frozen=True)
class DataConfig:
    """The end device's private data (only the end process loads it).

    ``name`` and ``dataset`` are paper names or absolute paths on the machine that wrote the job;
    ``name_written`` and ``dataset_written``, the same paths as the scenario file wrote them
    (``./my-images``), so that an end device whose copy lies elsewhere is told what it is looking
    for (``jqodi end --data PATH`` / ``--dataset PATH`` name its own copies: :mod:`jqodi.runtime.end_data`)."""

    __pydantic_config__ = FORBID_EXTRA

    name: str = "data1"
    dataset: str = "fashion-mnist"
    train_size: int | None = None
    val_size: int | None = None
    seed: int = 0
    data_dir: str | None = None
    name_written: str | None = None
    dataset_written: str | None = None


@dataclass(frozen=True)
class TrainingConfig(TrainConfig):
    """Fine-tuning hyper-parameters: a :class:`jqodi.core.train_config.TrainConfig` (its defaults,
    the learning part's measured choice) plus the precision of the cut-layer traffic on the wire
    (32 = fp32) and the seed of the batch order."""

    wire_act_bits: int = 32
    wire_grad_bits: int = 32
    seed: int = 0

    def train_config(self) -> TrainConfig:
        """The hyper-parameters alone (what the reference loop and the optimizer take)."""
        return TrainConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)})


def _none_is_default(v: Any) -> Any:
    """In a job file, ``null`` for a hyper-parameter means "the default" (TrainConfig's)."""
    return {k: x for k, x in v.items() if x is not None} if isinstance(v, dict) else v


@dataclass(frozen=True)
class LinkProfile:
    """An emulated link: rate (bit/s) and energy per bit (J)."""

    __pydantic_config__ = FORBID_EXTRA

    rate_bps: float
    energy_per_bit_j: float = 0.0


@dataclass(frozen=True)
class AutoDilation:
    """How an automatic dilation came out (:func:`jqodi.runtime.plan.dilation_choice`): the
    dilation of each of its two rules, and ``rule``, the one that set it (the larger; ``epoch`` on a tie)."""

    __pydantic_config__ = FORBID_EXTRA

    rule: Literal["epoch", "overrun"]
    epoch_rule: float
    overrun_rule: float

    @classmethod
    def of(cls, epoch_rule: float, overrun_rule: float) -> "AutoDilation":
        return cls("overrun" if overrun_rule > epoch_rule else "epoch", float(epoch_rule), float(overrun_rule))


def dilation_words(dilation: float, auto: "AutoDilation | dict | None" = None) -> str:
    """A dilation as one line states it: ``×7.29``, and for an automatic one which rule set it,
    ``×7.29, set by the overrun rule over the epoch rule's ×5.1`` (``auto``: an :class:`AutoDilation`
    or its dict, as a job's or a record's JSON holds it). A dilation that is not the larger rule's (a
    job file whose ``emulation.dilation`` was edited by hand) is stated alone: no rule set it."""
    if auto is not None and not isinstance(auto, AutoDilation):
        auto = AutoDilation(**auto)
    if auto is None or not math.isclose(dilation, max(auto.epoch_rule, auto.overrun_rule), rel_tol=1e-9):
        return f"×{dilation:.3g}"
    other = "overrun" if auto.rule == "epoch" else "epoch"
    return (f"×{dilation:.3g}, set by the {auto.rule} rule over the {other} rule's "
            f"×{getattr(auto, other + '_rule'):.3g}")


@dataclass(frozen=True)
class EmulationConfig:
    """Dilated-time emulation of a testbed on one machine (docs/interfaces.md).

    ``devices``/``links`` also serve the energy accounting when ``enabled`` is False (no padding,
    no rate limiting). Every device speed and link rate is divided by ``dilation``; each compute step is padded to
    its FLOPs / speed × dilation (or, for a device in ``rooflines``, its device model's time for
    that step × dilation) and each send occupies its link for bytes·8 / rate × dilation.
    ``devices`` keys: ``cloud``, ``end``, ``edge:NAME``; ``links`` keys: ``cloud|edge:NAME`` and
    ``edge:NAME|end`` (both directions).
    """

    __pydantic_config__ = FORBID_EXTRA

    enabled: bool = True
    dilation: float = 1.0
    dilation_auto: AutoDilation | None = None  # how an automatic dilation came out (None: a given one)
    devices: dict[str, Device] = field(default_factory=dict)
    links: dict[str, LinkProfile] = field(default_factory=dict)
    timeline: dict | None = None  # jqodi.core.timeline.Timeline.to_dict(): what the emulation applies
    # per role, a device model's rooflines (jqodi.core.device_model.DeviceModel.to_dict) when the cost
    # model is `extended` and the node is a device file: each compute step is padded to that model's
    # time for the step's layers, batch and bit-width instead of FLOPs / speed
    rooflines: dict[str, dict] = field(default_factory=dict)

    def link(self, a: str, b: str) -> LinkProfile | None:
        return self.links.get(link_key(a, b)) or self.links.get(link_key(b, a))

    def notice(self) -> str | None:
        """The one loud line a job that emulates prints wherever a person starts it by hand (the
        cloud, edge and end verbs, ``jqodi run --write-job``): what it emulates and how to turn it
        off. ``None`` when emulation is off."""
        if not self.enabled:
            return None
        devices = ", ".join(f"{r}={d.name}" for r, d in sorted(self.devices.items()))
        return (f"EMULATION ON: every role pads its compute and links to the scenario's devices ({devices}; "
                f"dilation {dilation_words(self.dilation, self.dilation_auto)}) and charges their power, not this machine's. On real hardware "
                f"write the job with 'jqodi run SCENARIO --write-job FILE --no-emulate'")


@dataclass(frozen=True)
class Job:
    """One run of a plan. See the module docstring; ``schedule`` is the solution's."""

    __pydantic_config__ = FORBID_EXTRA

    model: str
    bits: int
    schedule: list[ScheduleEntry]
    width: float = 0.25
    input_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10
    data: DataConfig = DataConfig()
    training: Annotated[TrainingConfig, BeforeValidator(_none_is_default)] = TrainingConfig()
    emulation: EmulationConfig | None = None
    pretrained: dict = field(default_factory=dict)  # kwargs of jqodi.core.pretrained.load_pretrained (cloud only)
    run_id: str = "run"
    start_epoch: int = 0        # epochs already completed (resume)
    timeout_s: float = DEFAULT_TIMEOUT_S  # failure detection: a peer silent this long has failed
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S  # rendezvous + process group formation
    meter: str = "auto"
    progress_every_s: float = 0.5
    max_epochs: int | None = None  # run only the first N epochs of the schedule (demo)
    cloud_update_flops: float | None = None  # F_a: the CS's work per epoch (default 10 FLOP/param)
    inference_requests: int = 0  # after fine-tuning, serve this many requests per device combination
    inference_edges: list[str] = field(default_factory=list)  # edges that serve inference too (processes)
    trace_store: str | None = None  # SQLite trace store the cloud records each epoch in (None: not recorded)
    message_mac: bool = True  # HMAC-SHA256 tag on every message between processes (runtime/auth.py)
    target_loss: float | None = None  # L_max the plan is for: the record says whether (and when) it was reached
    # the cost model's epoch for each schedule entry (jqodi.runtime.plan.predict_epoch): a cloud started
    # by hand reports predicted vs measured from the job alone
    predicted_epochs: list[dict] = field(default_factory=list)
    standby_edges: list[str] = field(default_factory=list)  # edges a re-plan may use (they get a process)
    # the closed-loop controller a cloud started by hand attaches ('jqodi run --write-job' writes it:
    # policy, the phase table and plan it re-plans with, by content; docs/closed-loop.md). The runtime
    # only carries it: the app rebuilds the controller from it and injects that (jqodi.app.run)
    closed_loop: dict | None = None

    def __post_init__(self):
        if not self.schedule:
            raise JobError("schedule: empty (nothing to run)")
        for i, s in enumerate(self.schedule):
            if s.cut < 1 or s.epochs < 0:
                raise JobError(f"schedule[{i}]: cut must be ≥ 1 and epochs ≥ 0, got cut={s.cut}, epochs={s.epochs}")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise JobError(f"timeout_s: must be > 0, got {self.timeout_s}")
        if not (math.isfinite(self.startup_timeout_s) and self.startup_timeout_s > 0):
            raise JobError(f"startup_timeout_s: must be > 0, got {self.startup_timeout_s}")
        object.__setattr__(self, "input_shape", tuple(int(x) for x in self.input_shape))

    @property
    def edges(self) -> list[str]:
        """Edge servers with a process: the schedule's, in first-use order, then ``standby_edges``
        and ``inference_edges``."""
        out: list[str] = []
        for s in self.schedule:
            if s.epochs > 0 and s.edge not in out:
                out.append(s.edge)
        out += [e for e in self.standby_edges if e not in out]
        if self.inference_requests > 0:
            out += [e for e in self.inference_edges if e not in out]
        return out

    def epoch_plan(self) -> list[tuple[str, int]]:
        """(edge, cut) of every epoch, in order (capped at ``max_epochs``)."""
        plan = [(s.edge, s.cut) for s in self.schedule for _ in range(s.epochs)]
        return plan[: self.max_epochs] if self.max_epochs is not None else plan

    def predicted_per_epoch(self) -> list[dict] | None:
        """The cost model's figures for every epoch of :meth:`epoch_plan` (``None`` if the job has none)."""
        if len(self.predicted_epochs) != len(self.schedule):
            return None
        per = [p for s, p in zip(self.schedule, self.predicted_epochs) for _ in range(s.epochs)]
        return per[: self.max_epochs] if self.max_epochs is not None else per

    @property
    def total_epochs(self) -> int:
        return len(self.epoch_plan())

    @classmethod
    def from_dict(cls, d: Any) -> "Job":
        if isinstance(d, dict) and "edges" in d:  # derived (written by to_dict for the rendezvous)
            d = {k: v for k, v in d.items() if k != "edges"}
        if isinstance(d, cls):
            return d
        return validate(cls, d, JobError, prefix="job.", top="job", unknown="unknown key")

    def to_dict(self) -> dict:
        d = _to_dict(self)
        d["edges"] = self.edges  # for the rendezvous (ranks); ignored by from_dict
        return d

    def replace(self, **changes) -> "Job":
        return dataclasses.replace(self, **changes)

