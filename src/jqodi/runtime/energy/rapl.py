"""The ``rapl`` meter: CPU package (+ DRAM) energy from Intel/AMD RAPL counters (powercap sysfs)."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from jqodi.runtime.energy.base import EnergyMeter, EnergyMeterError

__all__ = ["RaplMeter", "rapl_is_available", "DEFAULT_RAPL_ROOT"]

DEFAULT_RAPL_ROOT = Path("/sys/class/powercap")
"""Where the kernel exposes RAPL zones; tests point this at a fake tree."""


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
