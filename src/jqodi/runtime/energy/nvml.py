"""The ``nvml`` meter: energy of one NVIDIA GPU through nvidia-ml-py (imported lazily)."""
from __future__ import annotations

import functools
import importlib
import logging
import threading

from jqodi.runtime.energy.base import EnergyMeter, EnergyMeterError, _PowerIntegrator

__all__ = ["NvmlMeter", "nvml_is_available", "DEFAULT_SAMPLE_INTERVAL_S"]

logger = logging.getLogger(__name__)

DEFAULT_SAMPLE_INTERVAL_S = 0.05
"""Power-sampling period of the NVML fallback (NVML refreshes power about every 20–100 ms)."""


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
