"""Energy meters: how much energy (in joules) a node spent during a window of time.

Each runtime node (SD, ES, CS) measures its own phases with one meter and reports which one it
used. The shape follows Zeus: one abstract device (:class:`EnergyMeter`), a few concrete ones,
and a null object for "no such hardware here" that never fails.

    ======  ==========================================================================
    nvml    NVIDIA GPU through nvidia-ml-py (``pip install 'jqodi[nvml]'``): the
            total-energy counter (mJ, Volta and newer), else power samples (mW) taken
            by a background thread and integrated over time (trapezoids).
    rapl    Intel/AMD RAPL through the powercap sysfs tree
            (``/sys/class/powercap/intel-rapl:*/energy_uj``): CPU packages (+ DRAM
            zones), with the counter's wraparound at ``max_energy_range_uj`` undone.
    model   busy power × busy time, the paper's accounting (Section V-A: "the energy
            consumption of idle nodes is not taken into account"). Busy time is what
            the caller passes to :meth:`EnergyMeter.end_window` (e.g. the emulated
            compute time of a device profile), else the process CPU time of the window.
    replay  replays a recorded power trace (e.g. an external USB power monitor's CSV,
            as the paper used for the Raspberry Pi) over the windows' timestamps.
    null    0 J, never fails; still reports the window's wall-clock time.
    ======  ==========================================================================

Usage::

    meter = make_meter("auto", busy_power_w=15.0)   # nvml → rapl → model → null
    meter.begin_window("epoch-3/train")
    ...
    m = meter.end_window("epoch-3/train", busy_s=emulated_compute_s)
    m.energy_j, m.time_s, m.meter                    # joules, seconds, "model"

Windows are named by a key; any number may be open at once, nested or overlapping. Meters are
thread-safe. Hardware meters measure the whole device (every process on the GPU or CPU package),
not only this process: on a shared machine prefer ``model``.

Vendor errors (NVML, sysfs I/O) are translated where they enter, with ``raise … from e``, into
:class:`EnergyMeterError`, a :class:`jqodi.errors.JqodiError`.

Modules: ``base`` (the abstract meter, :class:`Measurement`), ``basic`` (null, model, replay),
``rapl``, ``nvml``, ``select`` (the :data:`METERS` registry, ``auto``, :func:`available_meters`).
A new kind is one factory registered in :data:`METERS` (docs/extending.md); ``jqodi run --meter``
and ``jqodi meters --kind`` accept it at once.
"""
from jqodi.runtime.energy.base import EnergyMeter, EnergyMeterError, Measurement
from jqodi.runtime.energy.basic import ModelMeter, NullMeter, ReplayMeter
from jqodi.runtime.energy.nvml import DEFAULT_SAMPLE_INTERVAL_S, NvmlMeter, nvml_is_available
from jqodi.runtime.energy.rapl import DEFAULT_RAPL_ROOT, RaplMeter, rapl_is_available
from jqodi.runtime.energy.select import (AUTO_ORDER, METERS, MeterInfo, available_meters, make_meter,
                                         meter_kinds)

__all__ = [
    "EnergyMeter", "EnergyMeterError", "Measurement", "MeterInfo", "METERS", "AUTO_ORDER",
    "NvmlMeter", "RaplMeter", "ModelMeter", "ReplayMeter", "NullMeter",
    "make_meter", "meter_kinds", "available_meters", "nvml_is_available", "rapl_is_available",
    "DEFAULT_RAPL_ROOT", "DEFAULT_SAMPLE_INTERVAL_S",
]
