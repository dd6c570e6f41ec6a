"""Choosing a meter: the registry of meter kinds, ``auto``, and the probe behind ``jqodi meters``.

A kind is a factory ``factory(*, busy_power_w: float | None, gpu_index: int) -> EnergyMeter``
registered in :data:`METERS`; it raises :class:`EnergyMeterError` (saying why) when it cannot work
on this machine. ``replay`` is not a kind: it is built from a recording
(:meth:`ReplayMeter.from_csv`). Add your own (docs/extending.md)::

    METERS.register("smartplug", lambda *, busy_power_w=None, gpu_index=0: PlugMeter("10.0.0.7"),
                    "a networked power plug's energy counter")
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from jqodi.core.registry import Registry
from jqodi.runtime.energy.base import EnergyMeter, EnergyMeterError
from jqodi.runtime.energy.basic import ModelMeter, NullMeter
from jqodi.runtime.energy.nvml import NvmlMeter, nvml_is_available
from jqodi.runtime.energy.rapl import RaplMeter

__all__ = ["METERS", "AUTO_ORDER", "MeterInfo", "available_meters", "make_meter", "meter_kinds"]

logger = logging.getLogger(__name__)

MeterFactory = Callable[..., EnergyMeter]

METERS: Registry[MeterFactory] = Registry("energy meter", EnergyMeterError)
"""Every meter kind by name; :func:`make_meter` builds one (``auto`` picks among :data:`AUTO_ORDER`)."""

AUTO_ORDER = ("nvml", "rapl", "model")
"""What ``auto`` tries, in order, before falling back to the null meter."""


@METERS.register("nvml", description="NVIDIA GPU energy through nvidia-ml-py (counter, else power samples)")
def _nvml(*, gpu_index: int = 0, **_) -> EnergyMeter:
    if not nvml_is_available():
        raise EnergyMeterError("nvml meter: unavailable (nvidia-ml-py not installed, no NVIDIA "
                               "driver, or no GPU; pip install 'jqodi[nvml]')")
    return NvmlMeter(gpu_index)


@METERS.register("rapl", description="CPU package (+ DRAM) energy from Intel/AMD RAPL counters")
def _rapl(**_) -> EnergyMeter:
    return RaplMeter()


@METERS.register("model", description="busy power × busy time, the paper's accounting (needs busy_power_w)")
def _model(*, busy_power_w: float | None = None, **_) -> EnergyMeter:
    if busy_power_w is None:
        raise EnergyMeterError("model meter: needs busy_power_w (the node's busy power in W)")
    return ModelMeter(busy_power_w)


@METERS.register("null", description="0 J, never fails; still reports the window's wall-clock time")
def _null(**_) -> EnergyMeter:
    return NullMeter("0 J; always available")


def meter_kinds() -> list[str]:
    """What :func:`make_meter` and the CLI's ``--meter`` accept: ``auto`` and every registered kind."""
    return ["auto", *METERS.names()]


@dataclass(frozen=True)
class MeterInfo:
    """Whether a meter kind can be used here, and why (for ``jqodi meters``)."""

    kind: str
    available: bool
    detail: str


def available_meters(*, busy_power_w: float | None = None, gpu_index: int = 0) -> list[MeterInfo]:
    """Probe every registered meter kind on this machine (creates and closes each one)."""
    out = []
    for kind in METERS.names():
        try:
            meter = make_meter(kind, busy_power_w=busy_power_w, gpu_index=gpu_index)
        except EnergyMeterError as e:
            out.append(MeterInfo(kind, False, str(e)))
        else:
            out.append(MeterInfo(kind, True, meter.description))
            meter.close()
    return out


def make_meter(kind: str = "auto", *, busy_power_w: float | None = None,
               gpu_index: int = 0) -> EnergyMeter:
    """Create an energy meter.

    Args:
        kind: a registered kind (:data:`METERS`: ``nvml``, ``rapl``, ``model``, ``null``, and any
            a plugin added), or ``auto``: the first that works of :data:`AUTO_ORDER` (nvml → rapl
            → model, the latter only when ``busy_power_w`` is given) → null. The meter's
            ``name`` says which was picked (logged at INFO with the reason for skipping others).
        busy_power_w: busy power of the node (in watts), required by ``model``.
        gpu_index: which GPU the ``nvml`` meter reads.

    Raises:
        EnergyMeterError: an explicitly requested kind cannot work here (the message says why),
            or the kind is unknown. ``auto`` never raises: at worst it returns the null meter.
    """
    if kind != "auto":
        if kind not in METERS:
            raise EnergyMeterError(f"unknown energy meter {kind!r}; known: {', '.join(meter_kinds())}")
        meter = METERS.get(kind)(busy_power_w=busy_power_w, gpu_index=gpu_index)
        if not isinstance(meter, EnergyMeter):
            raise EnergyMeterError(f"energy meter {kind!r}: its factory returned {type(meter).__name__}, "
                                   f"not an EnergyMeter")
        return meter

    skipped = []
    for candidate in AUTO_ORDER:
        if candidate == "model" and busy_power_w is None:
            skipped.append("model: no busy_power_w")
            continue
        try:
            meter = make_meter(candidate, busy_power_w=busy_power_w, gpu_index=gpu_index)
        except EnergyMeterError as e:
            skipped.append(str(e))
            continue
        logger.info("energy meter: %s%s", meter.description,
                    f" (skipped: {'; '.join(skipped)})" if skipped else "")
        return meter
    meter = NullMeter("no meter available: " + "; ".join(skipped))
    logger.info("energy meter: %s", meter.description)
    return meter

