"""Devices and links: one compact device type, and the scenario's ways of describing them.

:class:`Device` is what everything downstream uses — the system view the planner compiles
(:class:`jqodi.core.system.System`) and the runtime's dilated-time emulation
(:class:`jqodi.runtime.job.EmulationConfig`): a name, the paper's v (FLOP/s) and ε (J/FLOP),
memory, per-bit-width speed-ups and an optional idle power. It is a plain dataclass, so a
calibrated device model can extend it (a subclass adding per-layer rooflines, say) without
touching its users. :class:`DeviceSpec` and its subclasses are the scenario file's validated
input (several ways to give v and ε); ``spec.device()`` resolves one into a :class:`Device`.

The links (Table I): CS ↔ ES wired (v_(c,x), ε_(c,x)) and ES ↔ SD wireless (Shannon rate
v_(x,y) from bandwidth and SNR, ε_(x,y) from the transmit power).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from jqodi.core.validation import (FORBID_EXTRA, VALID_BITS, FiniteFloat, Int, Name, NoBool, NonNegFloat,
                                   PosFloat, Strict, exactly_one)

__all__ = ["Device", "DeviceSpec", "CloudServer", "EdgeServer", "EndDevice", "CloudLink", "WirelessLink",
           "CLOUD_ROLE", "END_ROLE", "edge_role", "edge_of_role", "edges_of_roles", "link_key"]


@dataclass(frozen=True)
class Device:
    """A compute node: speed v (FLOP/s), energy per FLOP ε (J/FLOP), memory (bytes), and the
    compute speed-up of each bit-width (integer kernels; 1.0 when absent). ``idle_power_w`` is
    the power drawn while waiting (None = not modelled: the paper counts busy energy only)."""

    __pydantic_config__ = FORBID_EXTRA

    name: str
    flops: Annotated[float, NoBool, Field(gt=0, allow_inf_nan=False)]
    joules_per_flop: Annotated[float, NoBool, Field(ge=0, allow_inf_nan=False)]
    memory_bytes: float = math.inf
    bit_speedup: dict[int, float] = field(default_factory=dict)
    idle_power_w: float | None = None

    @classmethod
    def from_power(cls, name: str, flops: float, busy_power_w: float, **kw) -> "Device":
        """A device given by its busy power P (ε = P / v)."""
        return cls(name, flops, busy_power_w / flops, **kw)

    @property
    def busy_power_w(self) -> float:
        """P = ε · v: the power drawn while computing at speed v."""
        return self.joules_per_flop * self.flops

    def speedup(self, bits: int) -> float:
        return float(self.bit_speedup.get(bits, 1.0))


def check_bit_keys(v: dict[int, float]) -> dict[int, float]:
    """A per-bit-width table (speed-ups, time factors): every key one of 1..8, 32."""
    bad = sorted(b for b in v if b not in VALID_BITS)
    if bad:
        raise ValueError(f"bit-width {bad[0]} is not one of 1..8, 32")
    return v


def _per_unit(direct: float | None, power_w: float | None, rate: float) -> float:
    """Energy per unit of work: given directly, or power / rate (J/FLOP = W / (FLOP/s))."""
    return direct if direct is not None else power_w / rate  # type: ignore[operator]



class DeviceSpec(Strict):
    """A compute node: speed v (FLOP/s) and energy per FLOP ε (J/FLOP), plus memory.

    Give the speed either as ``flops`` (effective FLOP/s) or as ``peak_flops`` × ``utilization``
    (the fraction of the spec-sheet peak that training actually reaches). Give the energy either
    as ``energy_per_flop_j`` or as ``busy_power_w`` (then ε = P / v). ``bit_speedup`` maps a
    bit-width to a compute speed-up on this device (integer kernels); default 1.0 for every
    bit-width, because fake-quantized training is not faster than fp32.

    Or name a device file instead (``device: pi5`` from the library, or a path; see
    :mod:`jqodi.core.device_model`): per-layer rooflines, s(q), busy and idle power. Then only
    ``memory_gib`` and ``idle_power_w`` may be given beside it (they override the file's).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, populate_by_name=True)

    name: Name
    device_ref: str | None = Field(default=None, alias="device")
    flops: PosFloat | None = None
    peak_flops: PosFloat | None = None
    utilization: Annotated[float, NoBool, Field(gt=0, le=1)] | None = None
    energy_per_flop_j: PosFloat | None = None
    busy_power_w: PosFloat | None = None
    idle_power_w: NonNegFloat | None = None
    memory_gib: PosFloat | None = None   # default: the device file's, else 8 GiB
    bit_speedup: dict[Int, PosFloat] = Field(default_factory=dict)

    _file: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _speed_and_energy(self, info: ValidationInfo):
        if self.device_ref is not None:
            from jqodi.core.device_model import is_library_name, load_device_file, resolve_device_ref
            from jqodi.core.validation import FieldProblem
            from jqodi.errors import ScenarioError

            given = [k for k in ("flops", "peak_flops", "utilization", "energy_per_flop_j", "busy_power_w",
                                 "bit_speedup") if getattr(self, k)]
            if given:
                raise ValueError(f"give 'device' or '{given[0]}', not both (the device file holds it)")
            base_dir = (info.context or {}).get("base_dir")
            try:
                self._file = load_device_file(self.device_ref, base_dir)
                if not is_library_name(self.device_ref):  # a path: absolute, so a copy of the spec finds it
                    self.__dict__["device_ref"] = str(resolve_device_ref(self.device_ref, base_dir).resolve())
            except ScenarioError as e:
                raise FieldProblem("device", str(e)) from None
            return self
        if self.flops is None and (self.peak_flops is None or self.utilization is None):
            raise ValueError("give the speed as 'flops', or as 'peak_flops' with 'utilization'")
        if self.flops is not None and self.peak_flops is not None and self.utilization is not None:
            raise ValueError("give 'flops' or 'peak_flops' × 'utilization', not both")
        exactly_one(self, "energy_per_flop_j", "busy_power_w")
        return self

    @field_validator("bit_speedup")
    @classmethod
    def _speedup_bits(cls, v: dict[int, float]) -> dict[int, float]:
        return check_bit_keys(v)

    @property
    def speed_flops(self) -> float:
        """v: effective FLOP/s."""
        if self._file is not None:
            return self._file.flops
        if self.flops is not None:
            return self.flops
        return self.peak_flops * self.utilization  # type: ignore[operator]

    @property
    def joules_per_flop(self) -> float:
        """ε: J/FLOP (``busy_power_w / speed`` when the power is given)."""
        if self._file is not None:
            return self._file.busy_power_w / self._file.flops
        return _per_unit(self.energy_per_flop_j, self.busy_power_w, self.speed_flops)

    @property
    def memory_bytes(self) -> float:
        if self.memory_gib is not None:
            return self.memory_gib * 2**30
        return (self._file.memory_gib if self._file is not None else 8.0) * 2**30

    def speedup(self, bits: int) -> float:
        if self._file is not None:
            return 1.0 / self._file.bit_time_factor.get(bits, 1.0) if bits < 32 else 1.0
        return self.bit_speedup.get(bits, 1.0)

    def device(self) -> Device:
        """The resolved :class:`Device` (v, ε, memory, speed-ups) the planner and the runtime use;
        a :class:`jqodi.core.device_model.DeviceModel` when a device file is named."""
        if self._file is not None:
            return self._file.device(self.name, self.memory_bytes / 2**30, self.idle_power_w)
        return Device(self.name, self.speed_flops, self.joules_per_flop, self.memory_bytes,
                      dict(self.bit_speedup), self.idle_power_w)


class CloudServer(DeviceSpec):
    """The CS. Its per-epoch work (the paper's F_a in Eq. (7)–(8)) is folding the returned
    model into the fp32 master and re-quantizing it: ``update_flops_per_param`` × parameters.
    The one-off quantization τ_(a,q), ε_(a,q) is ``quantize_flops_per_param`` × parameters of
    CS work (zero for 32 bits: nothing to quantize)."""

    update_flops_per_param: NonNegFloat = 10.0
    quantize_flops_per_param: NonNegFloat = 10.0


class CloudLink(Strict):
    """CS ↔ ES wired link: rate v_(c,x) in bit/s and energy ε_(c,x) per bit
    (or ``power_w``, then ε = P / rate). ``up: false`` marks the link down (every option via
    this edge is infeasible)."""

    rate_bps: PosFloat
    energy_per_bit_j: NonNegFloat | None = None
    power_w: NonNegFloat | None = None
    up: bool = True

    @model_validator(mode="after")
    def _energy(self):
        exactly_one(self, "energy_per_bit_j", "power_w")
        return self

    @property
    def joules_per_bit(self) -> float:
        """ε_(c,x) = ``energy_per_bit_j``, or ``power_w`` / rate."""
        return _per_unit(self.energy_per_bit_j, self.power_w, self.rate_bps)


class WirelessLink(Strict):
    """ES ↔ SD wireless link. Rate v_(x,y) = b · log2(1 + σ) (Shannon), b in Hz and σ the
    linear SNR (give ``snr_db`` or ``snr``). Energy per bit ε_(x,y) = ``tx_power_w`` / rate,
    or ``energy_per_bit_j`` directly."""

    bandwidth_hz: PosFloat
    snr_db: FiniteFloat | None = None
    snr: PosFloat | None = None
    tx_power_w: PosFloat | None = None
    energy_per_bit_j: NonNegFloat | None = None
    up: bool = True

    @model_validator(mode="after")
    def _one_of_each(self):
        exactly_one(self, "snr_db", "snr")
        exactly_one(self, "tx_power_w", "energy_per_bit_j")
        if self.snr_db is not None and not -30 <= self.snr_db <= 90:
            raise ValueError(f"snr_db must be within -30..90 dB, got {self.snr_db}")
        return self

    @property
    def snr_linear(self) -> float:
        return self.snr if self.snr is not None else 10 ** (self.snr_db / 10)  # type: ignore[operator]

    @property
    def rate_bps(self) -> float:
        """v_(x,y) = b · log2(1 + σ)."""
        return self.bandwidth_hz * math.log2(1 + self.snr_linear)

    @property
    def joules_per_bit(self) -> float:
        """ε_(x,y) = ``energy_per_bit_j``, or ``tx_power_w`` / rate."""
        return _per_unit(self.energy_per_bit_j, self.tx_power_w, self.rate_bps)


class EdgeServer(DeviceSpec):
    """An ES with its link to the cloud and its wireless link to the end device."""

    cloud_link: CloudLink
    end_link: WirelessLink
    available: bool = True


class EndDevice(DeviceSpec):
    """The SD that owns the private data and runs the shallow layers."""


# --- role names ------------------------------------------------------------------------------
# The runtime's processes, the emulation's devices and the run records name a node by its role:
# "cloud", "end", or "edge:NAME" for the edge server NAME. These helpers are the one place that
# builds and splits that string.

CLOUD_ROLE = "cloud"
END_ROLE = "end"
_EDGE_PREFIX = "edge:"


def edge_role(name: str) -> str:
    """The role of edge server ``name``: ``"edge:NAME"``."""
    return f"{_EDGE_PREFIX}{name}"


def edge_of_role(role: str) -> str | None:
    """The edge server's name in an ``"edge:NAME"`` role; None for any other role."""
    return role[len(_EDGE_PREFIX):] if role.startswith(_EDGE_PREFIX) else None


def edges_of_roles(roles) -> list[str]:
    """The edge servers among ``roles`` (e.g. the keys of an emulation's devices), in order."""
    return [n for n in (edge_of_role(r) for r in roles) if n is not None]


def link_key(a: str, b: str) -> str:
    """The key of the link between roles ``a`` and ``b`` (``"cloud|edge:NAME"``, ``"edge:NAME|end"``)."""
    return f"{a}|{b}"
