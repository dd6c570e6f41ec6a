"""Energy meters without hardware: a fake powercap tree, a fake pynvml, a replayed trace."""
from __future__ import annotations

import sys
import threading
from pathlib import Path
from unittest import mock

import pytest

from jqodi.errors import JqodiError
from jqodi.runtime import energy
from jqodi.runtime.energy import (
    EnergyMeterError,
    Measurement,
    ModelMeter,
    NullMeter,
    NvmlMeter,
    RaplMeter,
    ReplayMeter,
    make_meter,
    nvml_is_available,
    rapl_is_available,
)


class FakeClock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


# ---------------------------------------------------------------------------------------- RAPL


def make_rapl_tree(root: Path, zones: dict[str, tuple[str, int, int]]) -> Path:
    """zones: dir name → (name, energy_uj, max_energy_range_uj)."""
    for d, (name, uj, max_uj) in zones.items():
        z = root / d
        z.mkdir(parents=True)
        (z / "name").write_text(name + "\n")
        (z / "energy_uj").write_text(f"{uj}\n")
        (z / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return root


def set_uj(root: Path, zone: str, uj: int) -> None:
    (root / zone / "energy_uj").write_text(f"{uj}\n")


@pytest.fixture
def rapl_root(tmp_path, monkeypatch):
    root = make_rapl_tree(tmp_path / "powercap", {
        "intel-rapl:0": ("package-0", 1_000_000, 262_143_328_850),
        "intel-rapl:0:0": ("core", 500_000, 262_143_328_850),
        "intel-rapl:0:1": ("dram", 10_000, 65_712_999_613),
        "intel-rapl:1": ("package-1", 2_000_000, 262_143_328_850),
        "intel-rapl:2": ("psys", 9_000_000, 262_143_328_850),
    })
    monkeypatch.setattr(energy.rapl, "DEFAULT_RAPL_ROOT", root)
    return root


def test_rapl_sums_packages_and_dram_not_core_or_psys(rapl_root):
    meter = RaplMeter(rapl_root)
    assert "package-0" in meter.description and "dram" in meter.description
    assert "core" not in meter.description and "psys" not in meter.description
    meter.begin_window("w")
    set_uj(rapl_root, "intel-rapl:0", 1_000_000 + 3_000_000)  # +3 J
    set_uj(rapl_root, "intel-rapl:0:0", 500_000 + 2_000_000)  # inside the package: ignored
    set_uj(rapl_root, "intel-rapl:0:1", 10_000 + 500_000)  # +0.5 J DRAM
    set_uj(rapl_root, "intel-rapl:1", 2_000_000 + 1_000_000)  # +1 J
    set_uj(rapl_root, "intel-rapl:2", 9_000_000 + 99_000_000)  # psys: ignored
    m = meter.end_window("w")
    assert m.meter == "rapl"
    assert m.energy_j == pytest.approx(4.5)


def test_rapl_wraparound(tmp_path):
    root = make_rapl_tree(tmp_path, {"intel-rapl:0": ("package-0", 9_900_000, 10_000_000)})
    meter = RaplMeter(root)
    meter.begin_window("w")
    set_uj(root, "intel-rapl:0", 300_000)  # wrapped: 0.1 J to the top + 0.3 J after
    m = meter.end_window("w")
    assert m.energy_j == pytest.approx(0.4)


def test_rapl_wraps_seen_between_reads_of_a_long_window(tmp_path):
    root = make_rapl_tree(tmp_path, {"intel-rapl:0": ("package-0", 0, 10_000_000)})
    meter = RaplMeter(root)
    meter.begin_window("long")
    for uj in (6_000_000, 2_000_000, 8_000_000, 4_000_000):  # 3 wraps seen by inner windows
        set_uj(root, "intel-rapl:0", uj)
        meter.begin_window("inner")
        meter.end_window("inner")
    assert meter.end_window("long").energy_j == pytest.approx(6 + 6 + 6 + 6)


def test_rapl_unreadable_is_unavailable_and_explicit_request_says_why(rapl_root, monkeypatch):
    assert rapl_is_available()
    real_read_text = Path.read_text

    def deny(self, *a, **kw):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return real_read_text(self, *a, **kw)

    monkeypatch.setattr(Path, "read_text", deny)
    assert not rapl_is_available()
    with pytest.raises(EnergyMeterError, match="not readable"):
        make_meter("rapl")


def test_rapl_missing_tree(tmp_path, monkeypatch):
    monkeypatch.setattr(energy.rapl, "DEFAULT_RAPL_ROOT", tmp_path / "nope")
    assert not rapl_is_available()
    with pytest.raises(EnergyMeterError, match="no RAPL zones"):
        make_meter("rapl")


# ---------------------------------------------------------------------------------------- NVML


class NVMLError(Exception):
    def __init__(self, value: int):
        super().__init__(f"NVML error {value}")
        self.value = value


class NVMLError_NotSupported(NVMLError):
    def __init__(self):
        super().__init__(3)


class PynvmlSpec:
    """The subset of nvidia-ml-py that the meter calls, with the real signatures."""

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVML_ERROR_NOT_SUPPORTED = 3

    def nvmlInit(self): ...
    def nvmlShutdown(self): ...
    def nvmlDeviceGetCount(self): ...
    def nvmlDeviceGetHandleByIndex(self, index): ...
    def nvmlDeviceGetName(self, handle): ...
    def nvmlDeviceGetTotalEnergyConsumption(self, handle): ...
    def nvmlDeviceGetPowerUsage(self, handle): ...


@pytest.fixture
def fake_nvml(monkeypatch):
    fake = mock.create_autospec(PynvmlSpec, instance=True)
    fake.NVMLError = NVMLError
    fake.NVMLError_NotSupported = NVMLError_NotSupported
    fake.NVML_ERROR_NOT_SUPPORTED = 3
    fake.nvmlDeviceGetCount.return_value = 1
    fake.nvmlDeviceGetHandleByIndex.return_value = "handle-0"
    fake.nvmlDeviceGetName.return_value = "NVIDIA Fake A100"
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    nvml_is_available.cache_clear()
    yield fake
    nvml_is_available.cache_clear()


def test_nvml_energy_counter(fake_nvml):
    fake_nvml.nvmlDeviceGetTotalEnergyConsumption.side_effect = [1_000_000, 1_000_000, 1_250_500]
    meter = make_meter("nvml")
    assert meter.name == "nvml" and meter.uses_energy_counter
    meter.begin_window("w")
    m = meter.end_window("w")
    assert m == Measurement(pytest.approx(250.5), m.time_s, "nvml")
    fake_nvml.nvmlDeviceGetHandleByIndex.assert_called_with(0)
    fake_nvml.nvmlDeviceGetPowerUsage.assert_not_called()
    meter.close()
    meter.close()
    assert fake_nvml.nvmlShutdown.call_count == 2  # availability probe + close, once each


def test_nvml_power_sampling_when_counter_unsupported(fake_nvml):
    fake_nvml.nvmlDeviceGetTotalEnergyConsumption.side_effect = NVMLError_NotSupported()
    fake_nvml.nvmlDeviceGetPowerUsage.return_value = 200_000  # mW
    clock = FakeClock(100.0)
    meter = NvmlMeter(0, clock=clock, sample_interval_s=3600)  # the thread never fires here
    assert not meter.uses_energy_counter and "sampled" in meter.description
    meter.begin_window("w")
    clock.advance(0.5)
    fake_nvml.nvmlDeviceGetPowerUsage.return_value = 100_000
    meter.begin_window("inner")
    clock.advance(1.0)
    inner = meter.end_window("inner")
    m = meter.end_window("w")
    assert inner.energy_j == pytest.approx(100.0)  # 100 W for 1 s
    assert m.energy_j == pytest.approx(0.5 * (200 + 100) * 0.5 + 100.0)
    assert m.time_s == pytest.approx(1.5)
    meter.close()


def test_nvml_sampler_thread_integrates_between_reads(fake_nvml):
    fake_nvml.nvmlDeviceGetTotalEnergyConsumption.side_effect = NVMLError_NotSupported()
    calls = threading.Event()
    count = {"n": 0}

    def power(handle):
        count["n"] += 1
        if count["n"] >= 4:
            calls.set()
        return 50_000

    fake_nvml.nvmlDeviceGetPowerUsage.side_effect = power
    meter = NvmlMeter(0, sample_interval_s=0.005)
    assert calls.wait(5.0), "the sampling thread did not run"
    meter.close()
    assert not meter._sampler.is_alive()


def test_nvml_errors_are_translated(fake_nvml):
    fake_nvml.nvmlDeviceGetTotalEnergyConsumption.side_effect = [5_000, 5_000, NVMLError(15)]
    meter = make_meter("nvml")
    meter.begin_window("w")
    with pytest.raises(EnergyMeterError, match="energy read failed") as info:
        meter.end_window("w")
    assert isinstance(info.value, JqodiError) and isinstance(info.value.__cause__, NVMLError)


def test_nvml_init_failure_and_bad_index(fake_nvml):
    fake_nvml.nvmlDeviceGetTotalEnergyConsumption.return_value = 0
    with pytest.raises(EnergyMeterError, match="gpu_index 3 out of range"):
        NvmlMeter(3)
    fake_nvml.nvmlInit.side_effect = NVMLError(9)
    with pytest.raises(EnergyMeterError, match="cannot initialise NVML"):
        NvmlMeter(0)
    assert not nvml_is_available()
    with pytest.raises(EnergyMeterError, match="unavailable"):
        make_meter("nvml")


def test_nvml_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    nvml_is_available.cache_clear()
    try:
        assert not nvml_is_available()
        with pytest.raises(EnergyMeterError, match="jqodi\\[nvml\\]"):
            NvmlMeter(0)
    finally:
        nvml_is_available.cache_clear()


def test_nvml_availability_is_cached(fake_nvml):
    assert nvml_is_available() and nvml_is_available()
    assert fake_nvml.nvmlInit.call_count == 1


# ------------------------------------------------------------------------- model, null, replay


def test_model_meter_uses_busy_seconds_else_cpu_time():
    clock, cpu = FakeClock(), FakeClock()
    meter = ModelMeter(12.5, clock=clock, cpu_clock=cpu)
    meter.begin_window("a")
    meter.begin_window("b")
    clock.advance(10.0)  # wall time includes idle, which costs nothing
    cpu.advance(2.0)
    a = meter.end_window("a", busy_s=4.0)
    b = meter.end_window("b")
    assert a == Measurement(50.0, 10.0, "model")
    assert b == Measurement(25.0, 10.0, "model")


def test_model_meter_validates():
    with pytest.raises(EnergyMeterError, match="busy_power_w"):
        make_meter("model")
    with pytest.raises(EnergyMeterError, match="busy_power_w"):
        ModelMeter(float("nan"))
    meter = ModelMeter(1.0)
    meter.begin_window("w")
    with pytest.raises(ValueError, match="busy_s"):
        meter.end_window("w", busy_s=-1)


def test_window_keys():
    meter = ModelMeter(1.0)
    meter.begin_window("x")
    with pytest.raises(ValueError, match="already open"):
        meter.begin_window("x")
    assert meter.open_windows == ("x",)
    meter.end_window("x", busy_s=0)
    with pytest.raises(ValueError, match="no open window"):
        meter.end_window("x")


def test_null_meter_never_fails():
    clock = FakeClock()
    meter = NullMeter(clock=clock)
    assert meter.name == "null"
    assert meter.end_window("never-begun") == Measurement(0.0, 0.0, "null")
    meter.begin_window("w")
    meter.begin_window("w")  # re-begin is fine too
    clock.advance(2.0)
    assert meter.end_window("w", busy_s=5) == Measurement(0.0, 2.0, "null")
    meter.close()


def test_replay_meter_overlapping_windows():
    # a recorded trace: 10 W for 0..2 s, ramp to 30 W at 3 s, 30 W until 5 s
    clock = FakeClock(0.0)
    meter = ReplayMeter([(0, 10), (2, 10), (3, 30), (5, 30)], clock=clock)
    meter.begin_window("all")
    clock.t = 1.0
    meter.begin_window("overlap")
    clock.t = 2.5
    part = meter.end_window("all")
    clock.t = 6.0  # past the recording: nothing more is counted
    over = meter.end_window("overlap")
    assert part.energy_j == pytest.approx(20 + 0.5 * (10 + 20) * 0.5)
    assert over.energy_j == pytest.approx(10 + 20 + 60)
    assert over.time_s == pytest.approx(5.0)


def test_replay_from_csv(tmp_path):
    p = tmp_path / "pi.csv"
    p.write_text("time_s,power_w\n0,4\n1,6\n")
    clock = FakeClock(0.0)
    meter = ReplayMeter.from_csv(p, clock=clock)
    meter.begin_window("w")
    clock.t = 1.0
    assert meter.end_window("w").energy_j == pytest.approx(5.0)
    (tmp_path / "bad.csv").write_text("t,p\n0,1\n")
    with pytest.raises(EnergyMeterError, match="time_s"):
        ReplayMeter.from_csv(tmp_path / "bad.csv")
    with pytest.raises(EnergyMeterError, match="cannot read"):
        ReplayMeter.from_csv(tmp_path / "missing.csv")


def test_measurement_sum_and_power():
    m = Measurement(10.0, 2.0, "model") + Measurement(5.0, 3.0, "model")
    assert m == Measurement(15.0, 5.0, "model") and m.avg_power_w == 3.0
    assert (Measurement(1, 1, "rapl") + Measurement(1, 1, "nvml")).meter == "rapl+nvml"
    assert Measurement(0, 0, "null").avg_power_w == 0.0


# ---------------------------------------------------------------------------------------- auto


def test_auto_prefers_nvml(fake_nvml, rapl_root):
    fake_nvml.nvmlDeviceGetTotalEnergyConsumption.return_value = 0
    assert make_meter("auto", busy_power_w=5).name == "nvml"


def test_auto_falls_back_to_rapl_then_model_then_null(monkeypatch, rapl_root, tmp_path, caplog):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    nvml_is_available.cache_clear()
    try:
        with caplog.at_level("INFO", logger="jqodi.runtime.energy"):
            assert make_meter("auto").name == "rapl"
        assert "skipped: nvml meter: unavailable" in caplog.text
        monkeypatch.setattr(energy.rapl, "DEFAULT_RAPL_ROOT", tmp_path / "none")
        assert make_meter("auto", busy_power_w=7.0).name == "model"
        null = make_meter("auto")
        assert null.name == "null" and "no busy_power_w" in null.description
    finally:
        nvml_is_available.cache_clear()


def test_unknown_kind():
    with pytest.raises(EnergyMeterError, match="unknown energy meter 'gpu'"):
        make_meter("gpu")


def test_available_meters_lists_every_kind(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(energy.rapl, "DEFAULT_RAPL_ROOT", tmp_path)
    nvml_is_available.cache_clear()
    try:
        info = {i.kind: i for i in energy.available_meters(busy_power_w=3.0)}
    finally:
        nvml_is_available.cache_clear()
    assert list(info) == ["nvml", "rapl", "model", "null"]
    assert not info["nvml"].available and not info["rapl"].available
    assert info["model"].available and info["null"].available


def test_meters_cli(capsys, monkeypatch, tmp_path):
    from jqodi.cli import main

    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(energy.rapl, "DEFAULT_RAPL_ROOT", tmp_path)
    nvml_is_available.cache_clear()
    try:
        out_json = tmp_path / "m.json"
        assert main(["meters", "--busy-power-w", "10", "--window-ms", "50",
                     "--json", str(out_json)]) == 0
        out = capsys.readouterr().out
        assert "model" in out and "nvml" in out and "picked: model" in out
        import json

        data = json.loads(out_json.read_text())
        assert data["window"]["meter"] == "model" and data["window"]["time_s"] >= 0.04
        assert main(["meters", "--kind", "rapl"]) == 2
        assert "rapl meter" in capsys.readouterr().err
    finally:
        nvml_is_available.cache_clear()


# ------------------------------------------------------------------------------- properties

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.integers(min_value=0, max_value=9_999_999), min_size=1, max_size=20))
def test_rapl_counter_equals_sum_of_steps_below_one_wrap(tmp_path_factory, steps):
    """Any sequence of increments smaller than the range, read after each, is counted exactly."""
    root = make_rapl_tree(tmp_path_factory.mktemp("rapl"), {"intel-rapl:0": ("package-0", 0, 10_000_000)})
    meter = RaplMeter(root)
    meter.begin_window("all")
    uj = 0
    for step in steps:
        uj = (uj + step) % 10_000_000
        set_uj(root, "intel-rapl:0", uj)
        meter.begin_window("tick")
        meter.end_window("tick")
    assert meter.end_window("all").energy_j == pytest.approx(sum(steps) / 1e6)


def test_windows_from_many_threads():
    meter = ModelMeter(2.0)
    errors = []

    def work(i):
        try:
            for j in range(200):
                meter.begin_window(f"{i}/{j}")
                assert meter.end_window(f"{i}/{j}", busy_s=1.0).energy_j == 2.0
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors and meter.open_windows == ()
