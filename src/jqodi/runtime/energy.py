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
"""
from __future__ import annotations

import csv
import functools
import importlib
import logging
import math
import os
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Iterable, Sequence

from jqodi.errors import JqodiError

__all__ = [
    "EnergyMeter", "EnergyMeterError", "Measurement", "MeterInfo", "METER_KINDS",
    "NvmlMeter", "RaplMeter", "ModelMeter", "ReplayMeter", "NullMeter",
    "make_meter", "available_meters", "nvml_is_available", "rapl_is_available",
]

logger = logging.getLogger(__name__)

METER_KINDS = ("auto", "nvml", "rapl", "model", "null")
"""The kinds :func:`make_meter` accepts (``replay`` is built from a recording, not by kind)."""

DEFAULT_RAPL_ROOT = Path("/sys/class/powercap")
"""Where the kernel exposes RAPL zones; tests point this at a fake tree."""

DEFAULT_SAMPLE_INTERVAL_S = 0.05
"""Power-sampling period of the NVML fallback (NVML refreshes power about every 20–100 ms)."""


class EnergyMeterError(JqodiError):
    """A meter cannot be created or read (names the meter and the reason)."""


@dataclass(frozen=True)
class Measurement:
    """What one window cost.

    Attributes:
        energy_j: energy spent during the window (in joules).
        time_s: wall-clock length of the window (in seconds).
        meter: name of the meter that measured it (``nvml``, ``rapl``, ``model``, ``replay``,
            ``null``), so every figure says where it came from.
    """

    energy_j: float
    time_s: float
    meter: str

    @property
    def avg_power_w(self) -> float:
        """Mean power over the window (in watts); 0 for an empty window."""
        return self.energy_j / self.time_s if self.time_s > 0 else 0.0

    def __add__(self, other: "Measurement") -> "Measurement":
        """Sum of two windows (per-phase totals); the meter name is kept when both agree."""
        if not isinstance(other, Measurement):
            return NotImplemented
        meter = self.meter if self.meter == other.meter else f"{self.meter}+{other.meter}"
        return Measurement(self.energy_j + other.energy_j, self.time_s + other.time_s, meter)


@dataclass(frozen=True)
class _Mark:
    """The state of the world when a window began."""

    time_s: float
    energy_j: float
    cpu_s: float


class EnergyMeter(ABC):
    """One energy meter. Subclasses give a cumulative energy counter; windows are differences.

    Attributes:
        name: the meter's kind (``nvml``, ``rapl``, ``model``, ``replay``, ``null``).
        description: one human line saying what exactly is measured (device, zones, power).
    """

    name: ClassVar[str]

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 cpu_clock: Callable[[], float] = time.process_time) -> None:
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._windows: dict[str, _Mark] = {}
        self._lock = threading.Lock()
        self.description = self.name

    # -- what a subclass provides ---------------------------------------------------------
    @abstractmethod
    def _energy_counter_j(self) -> float:
        """Energy (in joules) spent since an arbitrary origin; never decreases."""

    def _window_energy_j(self, begin: _Mark, end: _Mark, busy_s: float | None) -> float:
        return max(0.0, end.energy_j - begin.energy_j)

    # -- the public surface -----------------------------------------------------------------
    def _mark(self) -> _Mark:
        return _Mark(self._clock(), self._energy_counter_j(), self._cpu_clock())

    def begin_window(self, key: str) -> None:
        """Start the window ``key``. Keys are unique among open windows."""
        with self._lock:
            if key in self._windows:
                raise ValueError(f"{self.name} meter: window {key!r} is already open")
            self._windows[key] = self._mark()

    def end_window(self, key: str, busy_s: float | None = None) -> Measurement:
        """Close the window ``key`` and return its energy and time.

        Args:
            key: the key given to :meth:`begin_window`.
            busy_s: seconds the node was busy during the window (in seconds). Only the
                ``model`` meter uses it (busy power × busy_s); hardware meters measure.
        """
        if busy_s is not None and not (math.isfinite(busy_s) and busy_s >= 0):
            raise ValueError(f"{self.name} meter: busy_s must be a finite number ≥ 0, got {busy_s!r}")
        with self._lock:
            if key not in self._windows:
                raise ValueError(f"{self.name} meter: no open window {key!r}")
            begin = self._windows.pop(key)
            end = self._mark()
        return Measurement(self._window_energy_j(begin, end, busy_s),
                           max(0.0, end.time_s - begin.time_s), self.name)

    @property
    def open_windows(self) -> tuple[str, ...]:
        """Keys of the windows begun and not yet ended."""
        with self._lock:
            return tuple(self._windows)

    def close(self) -> None:
        """Release the hardware handle (and stop any sampling thread). Idempotent."""

    def __enter__(self) -> "EnergyMeter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description!r}>"


# ---------------------------------------------------------------------------------------------
# null


class NullMeter(EnergyMeter):
    """No meter here: every window costs 0 J. Never fails, not even on an unknown key."""

    name = "null"

    def __init__(self, reason: str = "no energy meter", **kw) -> None:
        super().__init__(**kw)
        self.description = f"null ({reason})"

    def _energy_counter_j(self) -> float:
        return 0.0

    def begin_window(self, key: str) -> None:
        with self._lock:
            self._windows[key] = _Mark(self._clock(), 0.0, 0.0)

    def end_window(self, key: str, busy_s: float | None = None) -> Measurement:
        with self._lock:
            begin = self._windows.pop(key, None)
        elapsed = max(0.0, self._clock() - begin.time_s) if begin is not None else 0.0
        return Measurement(0.0, elapsed, self.name)


# ---------------------------------------------------------------------------------------------
# model-based


class ModelMeter(EnergyMeter):
    """Busy power × busy time, the paper's accounting: idle time costs nothing.

    ``busy_power_w`` (in watts) is the device's power while computing (the scenario's
    ``busy_power_w``, or ε·v). A window's busy time is the ``busy_s`` passed to
    :meth:`end_window` (in emulation: the compute time the device profile predicts), else the
    CPU time this process used during the window (all its threads).
    """

    name = "model"

    def __init__(self, busy_power_w: float, **kw) -> None:
        if isinstance(busy_power_w, bool) or not isinstance(busy_power_w, (int, float)) \
                or not math.isfinite(busy_power_w) or busy_power_w < 0:
            raise EnergyMeterError(f"model meter: busy_power_w must be a finite number ≥ 0 (W), "
                                   f"got {busy_power_w!r}")
        super().__init__(**kw)
        self.busy_power_w = float(busy_power_w)
        self.description = f"model ({self.busy_power_w:g} W × busy time)"

    def _energy_counter_j(self) -> float:
        return 0.0  # energy is computed per window from busy time

    def _window_energy_j(self, begin: _Mark, end: _Mark, busy_s: float | None) -> float:
        busy = busy_s if busy_s is not None else max(0.0, end.cpu_s - begin.cpu_s)
        return self.busy_power_w * busy


# ---------------------------------------------------------------------------------------------
# power traces (shared by the NVML sampler and the replay meter)


def _trapezoid_j(t0: float, p0_w: float, t1: float, p1_w: float) -> float:
    return 0.5 * (p0_w + p1_w) * max(0.0, t1 - t0)


class _PowerIntegrator:
    """A running integral of power samples: energy (J) = Σ trapezoids of (time s, power W)."""

    def __init__(self) -> None:
        self.energy_j = 0.0
        self.last: tuple[float, float] | None = None

    def add(self, t_s: float, power_w: float) -> float:
        if self.last is not None and t_s > self.last[0]:
            self.energy_j += _trapezoid_j(*self.last, t_s, power_w)
        if self.last is None or t_s >= self.last[0]:
            self.last = (t_s, power_w)
        return self.energy_j


class ReplayMeter(EnergyMeter):
    """Replays a recorded power trace: a window's energy is the trace's integral over it.

    ``samples`` are ``(time_s, power_w)`` pairs on the same time axis as ``clock`` (by default
    wall-clock epoch seconds, as an external power monitor logs them). Between samples power is
    linear; before the first and after the last sample it is 0 (nothing was recorded).
    """

    name = "replay"

    def __init__(self, samples: Iterable[tuple[float, float]], *,
                 clock: Callable[[], float] = time.time, **kw) -> None:
        pts = sorted((float(t), float(p)) for t, p in samples)
        if not pts:
            raise EnergyMeterError("replay meter: the recording has no samples")
        if any(not (math.isfinite(t) and math.isfinite(p) and p >= 0) for t, p in pts):
            raise EnergyMeterError("replay meter: samples must be finite with power ≥ 0 W")
        super().__init__(clock=clock, **kw)
        self._t = [t for t, _ in pts]
        self._p = [p for _, p in pts]
        self._cum = [0.0]
        for i in range(1, len(pts)):
            self._cum.append(self._cum[-1] + _trapezoid_j(self._t[i - 1], self._p[i - 1],
                                                          self._t[i], self._p[i]))
        self.description = f"replay ({len(pts)} samples, {self._t[0]:.3f}–{self._t[-1]:.3f} s)"

    @classmethod
    def from_csv(cls, path: str | os.PathLike, *, time_column: str = "time_s",
                 power_column: str = "power_w", **kw) -> "ReplayMeter":
        """Load a CSV with a header naming ``time_s`` and ``power_w`` columns."""
        try:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            samples = [(float(r[time_column]), float(r[power_column])) for r in rows]
        except OSError as e:
            raise EnergyMeterError(f"replay meter: cannot read {path}: {e.strerror or e}") from e
        except (KeyError, TypeError, ValueError) as e:
            raise EnergyMeterError(f"replay meter: {path} needs numeric columns "
                                   f"{time_column!r} and {power_column!r}") from e
        return cls(samples, **kw)

    def energy_at(self, t_s: float) -> float:
        """Energy (J) recorded from the start of the trace up to time ``t_s``."""
        import bisect

        t, p, cum = self._t, self._p, self._cum
        if t_s <= t[0]:
            return 0.0
        if t_s >= t[-1]:
            return cum[-1]
        i = bisect.bisect_right(t, t_s) - 1
        frac = (t_s - t[i]) / (t[i + 1] - t[i]) if t[i + 1] > t[i] else 0.0
        p_at = p[i] + frac * (p[i + 1] - p[i])
        return cum[i] + _trapezoid_j(t[i], p[i], t_s, p_at)

    def _energy_counter_j(self) -> float:
        return self.energy_at(self._clock())

    def _mark(self) -> _Mark:
        now = self._clock()  # one clock reading for both the time and the energy
        return _Mark(now, self.energy_at(now), self._cpu_clock())


# ---------------------------------------------------------------------------------------------
# RAPL (powercap sysfs)


@dataclass(frozen=True)
class _RaplZone:
    path: Path
    name: str
    max_energy_uj: int


def _rapl_root(root: str | os.PathLike | None) -> Path:
    return Path(root) if root is not None else DEFAULT_RAPL_ROOT


def _rapl_zones(root: Path) -> list[_RaplZone]:
    """CPU package zones (``intel-rapl:N``, name ``package-*``) and their ``dram`` subzones.

    Package and DRAM do not overlap, so their sum is the socket's energy; ``core``/``uncore``
    subzones are inside the package and ``psys`` covers everything, so both are left out.
    When no zone is called ``package-*`` every top-level zone but ``psys`` is used.
    """
    if not root.is_dir():
        return []
    top, subs = [], []
    for d in sorted(root.glob("intel-rapl:*")):
        if not (d / "energy_uj").exists():
            continue
        try:
            name = (d / "name").read_text().strip()
        except OSError:
            name = d.name
        try:
            max_uj = int((d / "max_energy_range_uj").read_text().strip())
        except (OSError, ValueError):
            max_uj = 0
        (subs if d.name.count(":") == 2 else top).append(_RaplZone(d, name, max_uj))
    packages = [z for z in top if z.name.startswith("package")]
    if not packages:
        packages = [z for z in top if z.name != "psys"]
    return packages + [z for z in subs if z.name == "dram"]


def _read_uj(zone: _RaplZone) -> int:
    try:
        return int((zone.path / "energy_uj").read_text().strip())
    except PermissionError as e:
        raise EnergyMeterError(
            f"rapl meter: {zone.path / 'energy_uj'} is not readable by this user (since Linux "
            f"5.10 it is root-only; 'sudo chmod o+r' it, or use the model meter)") from e
    except (OSError, ValueError) as e:
        raise EnergyMeterError(f"rapl meter: cannot read {zone.path / 'energy_uj'}: {e}") from e


def rapl_is_available(root: str | os.PathLike | None = None) -> bool:
    """True when at least one RAPL package zone exists under ``root`` and is readable."""
    zones = _rapl_zones(_rapl_root(root))
    if not zones:
        return False
    try:
        for z in zones:
            _read_uj(z)
    except EnergyMeterError:
        return False
    return True


class RaplMeter(EnergyMeter):
    """CPU package (+ DRAM) energy from RAPL counters, summed over sockets.

    Each counter wraps at ``max_energy_range_uj``; every read adds the difference since the
    previous read and adds the range back once when the counter went down. A wrap is seen as
    long as reads are less than one wrap period apart (minutes to hours at package power);
    windows are read at both ends, so only a window longer than a full period without any
    other read in between could lose a wrap.
    """

    name = "rapl"

    def __init__(self, root: str | os.PathLike | None = None, **kw) -> None:
        super().__init__(**kw)
        base = _rapl_root(root)
        self._zones = _rapl_zones(base)
        if not self._zones:
            raise EnergyMeterError(f"rapl meter: no RAPL zones under {base} "
                                   f"(no Intel/AMD RAPL, or not Linux)")
        self._last_uj = [_read_uj(z) for z in self._zones]
        self._total_uj = 0
        self._read_lock = threading.Lock()
        self.description = "rapl (" + ", ".join(f"{z.path.name}={z.name}" for z in self._zones) + ")"

    def _energy_counter_j(self) -> float:
        with self._read_lock:
            for i, zone in enumerate(self._zones):
                now = _read_uj(zone)
                delta = now - self._last_uj[i]
                if delta < 0:  # the counter wrapped around
                    delta += zone.max_energy_uj
                self._total_uj += max(0, delta)
                self._last_uj[i] = now
            return self._total_uj / 1e6


# ---------------------------------------------------------------------------------------------
# NVML (nvidia-ml-py, imported lazily)


def _import_pynvml():
    return importlib.import_module("pynvml")


@functools.cache
def nvml_is_available() -> bool:
    """True when nvidia-ml-py imports, NVML initialises and sees at least one GPU. Cached;
    ``nvml_is_available.cache_clear()`` forgets the answer."""
    try:
        pynvml = _import_pynvml()
    except ImportError:
        logger.debug("nvml: nvidia-ml-py is not installed")
        return False
    try:
        pynvml.nvmlInit()
    except Exception as e:  # NVMLError (no driver, no library) or anything the binding raises
        logger.debug("nvml: nvmlInit failed: %s", e)
        return False
    try:
        return int(pynvml.nvmlDeviceGetCount()) > 0
    except Exception as e:
        logger.debug("nvml: nvmlDeviceGetCount failed: %s", e)
        return False
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _nvml_not_supported(pynvml, err: Exception) -> bool:
    cls = getattr(pynvml, "NVMLError_NotSupported", None)
    if isinstance(cls, type) and isinstance(err, cls):
        return True
    return getattr(err, "value", None) == getattr(pynvml, "NVML_ERROR_NOT_SUPPORTED", 3)


class NvmlMeter(EnergyMeter):
    """Energy of one NVIDIA GPU (board energy as NVML reports it).

    Volta and newer: ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver loaded).
    Older GPUs: a daemon thread samples ``nvmlDeviceGetPowerUsage`` (mW) every
    ``sample_interval_s`` and integrates it; every window boundary takes a fresh sample too.
    """

    name = "nvml"

    def __init__(self, gpu_index: int = 0, *, sample_interval_s: float = DEFAULT_SAMPLE_INTERVAL_S,
                 **kw) -> None:
        super().__init__(**kw)
        try:
            pynvml = _import_pynvml()
        except ImportError as e:
            raise EnergyMeterError("nvml meter: nvidia-ml-py is not installed "
                                   "(pip install 'jqodi[nvml]')") from e
        self._nvml = pynvml
        self._err = getattr(pynvml, "NVMLError", Exception)
        self._closed = False
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()
        self._integrator = _PowerIntegrator()
        self._sample_lock = threading.Lock()
        self.sample_interval_s = float(sample_interval_s)
        self.gpu_index = gpu_index
        try:
            pynvml.nvmlInit()
        except self._err as e:
            raise EnergyMeterError(f"nvml meter: cannot initialise NVML: {e}") from e
        try:
            count = int(pynvml.nvmlDeviceGetCount())
            if not 0 <= gpu_index < count:
                raise EnergyMeterError(f"nvml meter: gpu_index {gpu_index} out of range "
                                       f"(this machine has {count} GPU(s))")
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(gpu_index)
            gpu_name = pynvml.nvmlDeviceGetName(self._handle)
            if isinstance(gpu_name, bytes):
                gpu_name = gpu_name.decode(errors="replace")
            try:
                self._counter_origin_mj = int(pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
                self.uses_energy_counter = True
            except self._err as e:
                if not _nvml_not_supported(pynvml, e):
                    raise
                self.uses_energy_counter = False
        except self._err as e:
            self._shutdown()
            raise EnergyMeterError(f"nvml meter: GPU {gpu_index}: {e}") from e
        except BaseException:
            self._shutdown()
            raise
        how = "total-energy counter" if self.uses_energy_counter else \
            f"power sampled every {self.sample_interval_s * 1e3:g} ms"
        self.description = f"nvml (GPU {gpu_index} {gpu_name}, {how})"
        if not self.uses_energy_counter:
            self._sample()  # first point of the integral
            self._sampler = threading.Thread(target=self._sample_loop, daemon=True,
                                             name=f"jqodi-nvml-sampler-{gpu_index}")
            self._sampler.start()

    def _sample(self) -> float:
        try:
            power_mw = self._nvml.nvmlDeviceGetPowerUsage(self._handle)
        except self._err as e:
            raise EnergyMeterError(f"nvml meter: GPU {self.gpu_index}: power read failed: {e}") from e
        with self._sample_lock:
            return self._integrator.add(self._clock(), power_mw / 1e3)

    def _sample_loop(self) -> None:
        while not self._stop.wait(self.sample_interval_s):
            try:
                self._sample()
            except EnergyMeterError as e:  # keep the last integral; window reads will raise
                logger.warning("%s", e)

    def _energy_counter_j(self) -> float:
        if self._closed:
            raise EnergyMeterError(f"nvml meter: GPU {self.gpu_index}: the meter is closed")
        if self.uses_energy_counter:
            try:
                mj = int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
            except self._err as e:
                raise EnergyMeterError(f"nvml meter: GPU {self.gpu_index}: energy read failed: "
                                       f"{e}") from e
            return (mj - self._counter_origin_mj) / 1e3
        return self._sample()

    def _shutdown(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception:  # shutting down must not hide the error that got us here
            pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(timeout=max(1.0, 5 * self.sample_interval_s))
        self._shutdown()


# ---------------------------------------------------------------------------------------------
# choosing a meter


@dataclass(frozen=True)
class MeterInfo:
    """Whether a meter kind can be used here, and why (for ``jqodi meters``)."""

    kind: str
    available: bool
    detail: str


def available_meters(*, busy_power_w: float | None = None, gpu_index: int = 0) -> list[MeterInfo]:
    """Probe every meter kind on this machine (creates and closes each one)."""
    out = []
    for kind in ("nvml", "rapl", "model", "null"):
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
        kind: ``nvml``, ``rapl``, ``model``, ``null``, or ``auto``: the first that works of
            nvml → rapl → model (only when ``busy_power_w`` is given) → null. The meter's
            ``name`` says which was picked (logged at INFO with the reason for skipping others).
        busy_power_w: busy power of the node (in watts), required by ``model``.
        gpu_index: which GPU the ``nvml`` meter reads.

    Raises:
        EnergyMeterError: an explicitly requested kind cannot work here (the message says why),
            or the kind is unknown. ``auto`` never raises: at worst it returns the null meter.
    """
    if kind == "nvml":
        if not nvml_is_available():
            raise EnergyMeterError("nvml meter: unavailable (nvidia-ml-py not installed, no NVIDIA "
                                   "driver, or no GPU; pip install 'jqodi[nvml]')")
        return NvmlMeter(gpu_index)
    if kind == "rapl":
        return RaplMeter()
    if kind == "model":
        if busy_power_w is None:
            raise EnergyMeterError("model meter: needs busy_power_w (the node's busy power in W)")
        return ModelMeter(busy_power_w)
    if kind == "null":
        return NullMeter("0 J; always available")
    if kind != "auto":
        raise EnergyMeterError(f"unknown energy meter {kind!r} (choose from {', '.join(METER_KINDS)})")

    skipped = []
    for candidate in ("nvml", "rapl", "model"):
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

