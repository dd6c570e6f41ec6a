"""The job: everything the roles need to run one plan, as one validated config object.

The cloud builds a :class:`Job` from a scenario and a solution (:func:`jqodi.runtime.plan.job_from_plan`)
and publishes it through the rendezvous store; every role gets the same object (the Flower
``Context``). ``Job.from_dict`` rejects unknown keys and names the offending one, so a typo in a
hand-written job file fails loudly instead of being ignored.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from jqodi.errors import JqodiError

__all__ = ["Job", "DataConfig", "TrainingConfig", "EmulationConfig", "DeviceProfile", "LinkProfile",
           "DEFAULT_TIMEOUT_S", "DEFAULT_HOST", "DEFAULT_PORT", "JobError"]

#: Every store, process group and wait gets an explicit timeout; torch's default is 30 minutes,
#: far too long to notice a dead peer. Heartbeats keep long epochs from tripping it.
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 29517


class JobError(JqodiError):
    """A job/config is malformed (names the key)."""


def _from_dict(cls, d: Any, path: str):
    if isinstance(d, cls):
        return d
    if not isinstance(d, dict):
        raise JobError(f"{path}: expected an object, got {type(d).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    for k in d:
        if k not in names:
            raise JobError(f"{path}.{k}: unknown key (allowed: {', '.join(sorted(names))})")
    kwargs = {}
    for k, v in d.items():
        sub = _NESTED.get((cls.__name__, k))
        if sub is not None and v is not None:
            if k in ("devices", "links"):
                v = {name: _from_dict(sub, x, f"{path}.{k}.{name}") for name, x in v.items()}
            elif k == "schedule":
                v = [_from_dict(sub, x, f"{path}.{k}[{i}]") for i, x in enumerate(v)]
            else:
                v = _from_dict(sub, v, f"{path}.{k}")
        kwargs[k] = v
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise JobError(f"{path}: {e}") from e


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
    """The end device's private data (only the end process loads it)."""

    name: str = "data1"
    dataset: str = "fashion-mnist"
    train_size: int | None = None
    val_size: int | None = None
    seed: int = 0
    data_dir: str | None = None


@dataclass(frozen=True)
class TrainingConfig:
    """Fine-tuning hyper-parameters: the fields of :class:`jqodi.core.training.TrainConfig` (``None`` =
    the reference's default, so the runtime follows the learning part's measured choice), plus
    the precision of the cut-layer traffic on the wire (32 = fp32) and the seed of the batch order."""

    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    act_bits: int | None = None
    return_mode: str | None = None
    eval_batch_size: int | None = None
    wire_act_bits: int = 32
    wire_grad_bits: int = 32
    seed: int = 0

    def train_config(self):
        from jqodi.core.training import TrainConfig

        given = {k: getattr(self, k) for k in ("lr", "momentum", "weight_decay", "batch_size", "optimizer",
                                               "act_bits", "return_mode", "eval_batch_size")
                 if getattr(self, k) is not None}
        try:
            return TrainConfig(**given)
        except JqodiError as e:
            raise JobError(f"job.training: {e}") from e


@dataclass(frozen=True)
class DeviceProfile:
    """An emulated device: speed v (FLOP/s, the paper's v) and busy power (W)."""

    flops: float
    busy_power_w: float
    name: str = ""


@dataclass(frozen=True)
class LinkProfile:
    """An emulated link: rate (bit/s) and energy per bit (J)."""

    rate_bps: float
    energy_per_bit_j: float = 0.0


@dataclass(frozen=True)
class EmulationConfig:
    """Dilated-time emulation of a testbed on one machine (DESIGN.md).

    ``devices``/``links`` also serve the energy accounting when ``enabled`` is False (no padding,
    no rate limiting). Every device speed and link rate is divided by ``dilation``; each compute step is padded to
    its FLOPs / speed × dilation and each send occupies its link for bytes·8 / rate × dilation.
    ``devices`` keys: ``cloud``, ``end``, ``edge:NAME``; ``links`` keys: ``cloud|edge:NAME`` and
    ``edge:NAME|end`` (both directions).
    """

    enabled: bool = True
    dilation: float = 1.0
    devices: dict[str, DeviceProfile] = field(default_factory=dict)
    links: dict[str, LinkProfile] = field(default_factory=dict)

    def link(self, a: str, b: str) -> LinkProfile | None:
        return self.links.get(f"{a}|{b}") or self.links.get(f"{b}|{a}")


@dataclass(frozen=True)
class ScheduleItem:
    edge: str
    cut: int
    epochs: int


@dataclass(frozen=True)
class Job:
    """One run of a plan. See the module docstring; ``schedule`` is the solution's."""

    model: str
    bits: int
    schedule: list[ScheduleItem]
    width: float = 0.25
    input_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10
    data: DataConfig = DataConfig()
    training: TrainingConfig = TrainingConfig()
    emulation: EmulationConfig | None = None
    pretrained: dict = field(default_factory=dict)  # kwargs of jqodi.core.pretrained.load_pretrained (cloud only)
    run_id: str = "run"
    start_epoch: int = 0        # epochs already completed (resume)
    timeout_s: float = DEFAULT_TIMEOUT_S
    meter: str = "auto"
    progress_every_s: float = 0.5
    max_epochs: int | None = None  # run only the first N epochs of the schedule (demo)
    cloud_update_flops: float | None = None  # F_a: the CS's work per epoch (default 10 FLOP/param)
    inference_requests: int = 0  # after fine-tuning, serve this many requests per device combination
    inference_edges: list[str] = field(default_factory=list)  # edges that serve inference too (processes)
    message_mac: bool = True  # HMAC-SHA256 tag on every message between processes (runtime/auth.py)

    def __post_init__(self):
        if not self.schedule:
            raise JobError("schedule: empty (nothing to run)")
        for i, s in enumerate(self.schedule):
            if s.cut < 1 or s.epochs < 0:
                raise JobError(f"schedule[{i}]: cut must be ≥ 1 and epochs ≥ 0, got cut={s.cut}, epochs={s.epochs}")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise JobError(f"timeout_s: must be > 0, got {self.timeout_s}")
        object.__setattr__(self, "input_shape", tuple(int(x) for x in self.input_shape))

    @property
    def edges(self) -> list[str]:
        """Edge servers with a process: the schedule's, in first-use order, then ``inference_edges``."""
        out: list[str] = []
        for s in self.schedule:
            if s.epochs > 0 and s.edge not in out:
                out.append(s.edge)
        if self.inference_requests > 0:
            out += [e for e in self.inference_edges if e not in out]
        return out

    def epoch_plan(self) -> list[tuple[str, int]]:
        """(edge, cut) of every epoch, in order (capped at ``max_epochs``)."""
        plan = [(s.edge, s.cut) for s in self.schedule for _ in range(s.epochs)]
        return plan[: self.max_epochs] if self.max_epochs is not None else plan

    @property
    def total_epochs(self) -> int:
        return len(self.epoch_plan())

    @classmethod
    def from_dict(cls, d: Any) -> "Job":
        if isinstance(d, dict) and "edges" in d:  # derived (written by to_dict for the rendezvous)
            d = {k: v for k, v in d.items() if k != "edges"}
        return _from_dict(cls, d, "job")

    def to_dict(self) -> dict:
        d = _to_dict(self)
        d["edges"] = self.edges  # for the rendezvous (ranks); ignored by from_dict
        return d

    def replace(self, **changes) -> "Job":
        return dataclasses.replace(self, **changes)


_NESTED = {
    ("Job", "data"): DataConfig,
    ("Job", "training"): TrainingConfig,
    ("Job", "emulation"): EmulationConfig,
    ("Job", "schedule"): ScheduleItem,
    ("EmulationConfig", "devices"): DeviceProfile,
    ("EmulationConfig", "links"): LinkProfile,
}
