"""Device files (per-layer rooflines, s(q), busy/idle power): the library, scenarios naming them,
the cost model using them, bad input, the roofline fit and `jqodi calibrate`."""
import copy
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from jqodi.cli import main
from jqodi.core.costs import cost_table
from jqodi.core.device_model import DeviceFile, DeviceModel, fit_roofline, library_devices, load_device_file
from jqodi.core.profile import LayerWork, profile_named_model
from jqodi.core.scenario import parse_scenario
from jqodi.errors import ScenarioError

ROOT = Path(__file__).resolve().parents[1]

LINKS = {"cloud_link": {"rate_bps": 1e9, "power_w": 1.0},
         "end_link": {"bandwidth_hz": 80e6, "snr_db": 25, "tx_power_w": 1.0}}


def scenario_dict(end=None, edge=None, **top):
    d = {"name": "t", "deadline_s": 1e5, "target_loss": 1.0, "cost_model": "extended",
         "data": {"train_size": 256, "val_size": 64, "input_shape": [3, 32, 32], "num_classes": 10},
         "models": [{"name": "lenet", "width": 0.25}], "bits": [4, 8], "baseline_bits": [32],
         "cloud": {"name": "cs", "flops": 1e12, "busy_power_w": 100, "idle_power_w": 20},
         "edges": [{"name": "es", **(edge or {"device": "rtx3090"}), **LINKS}],
         "end_device": {"name": "sd", **(end or {"device": "pi5"})}}
    d.update(top)
    return d


DEVICE = {"name": "box", "flops": 1e10, "busy_power_w": 20.0, "idle_power_w": 5.0, "memory_gib": 4,
          "bit_time_factor": {4: 1.5, 8: 1.2},
          "layers": {k: {"forward": {"flops_per_s": 2e10, "bytes_per_s": 5e9, "overhead_s": 1e-5},
                         "backward": {"flops_per_s": 1e10, "bytes_per_s": 2.5e9, "overhead_s": 2e-5}}
                     for k in ("conv", "linear", "norm", "eltwise", "quantizer")}}


def write(tmp_path, data, name="box.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def test_library_has_the_paper_testbed_and_every_file_is_valid():
    lib = library_devices()
    assert {"pi5", "rtx3090", "rtx4090", "a100"} <= set(lib)
    for name in ("pi5", "rtx3090", "rtx4090", "a100"):
        f = load_device_file(name)
        assert f.name == name and f.busy_power_w > 0
        assert f.idle_power_w is None or f.idle_power_w < f.busy_power_w


def test_scenario_names_a_device_by_library_name_or_relative_path(tmp_path):
    write(tmp_path, DEVICE)
    sc_path = tmp_path / "sc.yaml"
    sc_path.write_text(yaml.safe_dump(scenario_dict(end={"device": "box.yaml"})))
    from jqodi.core.scenario import load_scenario

    sc = load_scenario(sc_path)
    dev = sc.end_device.device()
    assert isinstance(dev, DeviceModel) and dev.name == "sd" and dev.flops == 1e10
    assert dev.busy_power_w == pytest.approx(20.0) and dev.idle_power_w == 5.0
    assert sc.end_device.memory_bytes == 4 * 2**30
    assert isinstance(sc.edges[0].device(), DeviceModel)
    # the spec-sheet form stays the simplest device
    plain = parse_scenario(scenario_dict(end={"flops": 1e9, "busy_power_w": 5}))
    assert type(plain.end_device.device()).__name__ == "Device"


@pytest.mark.parametrize("change, field", [
    (lambda d: d.pop("flops"), "flops: missing field"),
    (lambda d: d.update(busy_power_w=-3), "busy_power_w"),
    (lambda d: d.update(busy_power_w=float("inf")), "busy_power_w"),
    (lambda d: d["layers"]["conv"]["forward"].update(flops_per_s=float("nan")), "layers.conv.forward.flops_per_s"),
    (lambda d: d["layers"]["conv"]["backward"].update(bytes_per_s=0), "layers.conv.backward.bytes_per_s"),
    (lambda d: d.update(idle_power_w=30), "idle_power_w: must be below busy_power_w"),
    (lambda d: d["layers"].update(attention=d["layers"]["conv"]), "unknown layer type 'attention'"),
    (lambda d: d.update(bit_time_factor={12: 1.0}), "bit_time_factor"),
    (lambda d: d.update(calibration={"model_scale": {"lenet@1": -0.5}}), "calibration.model_scale.lenet@1"),
    (lambda d: d.update(calibration={"model_scale": {"lenet@1": "fast"}}), "calibration.model_scale.lenet@1"),
    (lambda d: d.update(calibration={"model_scale": {"lenet": 1.1}}), "calibration.model_scale.lenet: expected a key"),
    (lambda d: d.update(calibration={"model_scale": [1.1]}), "calibration.model_scale: expected a mapping"),
    (lambda d: d.update(calibration={"model_scale": {"lenet@1": {"train": 0.9, "eval": 0}}}),
     "calibration.model_scale.lenet@1.eval"),
    (lambda d: d.update(calibration={"model_scale": {"lenet@1": {"backward": 0.9}}}),
     "calibration.model_scale.lenet@1: expected phases train and/or eval"),
])
def test_bad_device_file_is_one_line_naming_file_and_field(tmp_path, change, field, capsys):
    data = copy.deepcopy(DEVICE)
    change(data)
    p = write(tmp_path, data)
    with pytest.raises(ScenarioError) as e:
        load_device_file(p)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(p)) and field in msg, msg
    # through a scenario and the CLI: exit 2, one line naming the scenario field and the file
    sc = tmp_path / "sc.yaml"
    sc.write_text(yaml.safe_dump(scenario_dict(end={"device": str(p)})))
    assert main(["instance", str(sc)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "end_device.device" in err and str(p) in err and field in err, err


def test_device_with_spec_fields_and_unknown_device_are_errors():
    with pytest.raises(ScenarioError, match=r"end_device: give 'device' or 'flops', not both"):
        parse_scenario(scenario_dict(end={"device": "pi5", "flops": 3e9}))
    with pytest.raises(ScenarioError, match=r"end_device.device: unknown device 'nope'"):
        parse_scenario(scenario_dict(end={"device": "nope"}))
    with pytest.raises(ScenarioError, match=r"idle_energy: only the extended cost model"):
        parse_scenario(scenario_dict(cost_model="paper", idle_energy=True))


def test_paper_model_with_a_device_file_is_exactly_eq_7(tmp_path):
    p = write(tmp_path, DEVICE)
    sc = parse_scenario(scenario_dict(end={"device": str(p)}, edge={"device": str(p)}, cost_model="paper"))
    ct = cost_table(sc, "lenet")
    prof = ct.profile
    d = (3 * 256 + 64) * np.array([b.flops for b in prof.blocks], dtype=float)
    for q in (4, 8, 32):
        b = ct.bits.index(q)
        s = {4: 1.5, 8: 1.2, 32: 1.0}[q]
        for jj, j in enumerate(ct.cuts):
            assert ct.time["end_compute"][b, jj, 0] == pytest.approx(d[:j].sum() / (1e10 / s))
            assert ct.energy["end_compute"][b, jj, 0] == pytest.approx(d[:j].sum() * 20 / 1e10 * s)


def test_extended_model_uses_rooflines_and_bits_change_the_epoch(tmp_path):
    p = write(tmp_path, DEVICE)
    sc = parse_scenario(scenario_dict(end={"device": str(p)}, edge={"device": str(p)}))
    ct = cost_table(sc, "lenet")
    dev = load_device_file(p).device()
    prof = ct.profile
    for q in (4, 8, 32):
        b = ct.bits.index(q)
        want = dev.part_time_s(prof.blocks[:1], 256, 64, sc.training.batch_size, 500, q)
        assert ct.time["end_compute"][b, 0, 0] == pytest.approx(want)
        assert ct.energy["end_compute"][b, 0, 0] == pytest.approx(want * 20.0)
    e4, e8, e32 = (ct.epoch(q, 1, "es").end_compute_s + ct.epoch(q, 1, "es").edge_compute_s for q in (4, 8, 32))
    assert e4 > e8 > e32  # s(4) = 1.5 > s(8) = 1.2 > 1, and quantizers cost time below 32 bits


def test_roofline_time_by_hand():
    dev = DeviceFile.model_validate(DEVICE).device()
    w = LayerWork("conv", 1000, 100, 200, 50)
    # forward, batch 10: max(1e4 / 2e10, 4·(10·300 + 50) / 5e9) + 1e-5
    assert dev.layer_time_s(w, 10, 32, "forward") == pytest.approx(max(1e4 / 2e10, 4 * 3050 / 5e9) + 1e-5)
    assert dev.layer_time_s(w, 10, 8, "forward") == pytest.approx(1.2 * (max(1e4 / 2e10, 4 * 3050 / 5e9) + 1e-5))
    assert dev.layer_time_s(LayerWork("quantizer", 40, 10, 10, 0), 10, 32, "forward") == 0.0
    wq = LayerWork("quantizer", 40, 10, 10, 0, batched=False)
    assert dev.layer_time_s(wq, 10, 8, "backward") == pytest.approx(max(40 / 1e10, 80 / 2.5e9) + 2e-5)


def test_idle_energy_charges_waiting_nodes_and_keeps_time(tmp_path):
    on = parse_scenario(scenario_dict(idle_energy=True))
    off = parse_scenario(scenario_dict())
    a, b = cost_table(off, "lenet").epoch(8, 2, "es"), cost_table(on, "lenet").epoch(8, 2, "es")
    assert a.time_s == b.time_s and a.end_idle_j == 0
    pi5, gpu = load_device_file("pi5"), load_device_file("rtx3090")
    assert b.end_idle_j == pytest.approx(pi5.idle_power_w * (b.time_s - b.end_compute_s))
    assert b.edge_idle_j == pytest.approx(gpu.idle_power_w * (b.time_s - b.edge_compute_s))
    assert b.cloud_idle_j == pytest.approx(20 * (b.time_s - b.cloud_update_s))
    assert b.energy_j == pytest.approx(a.energy_j + b.end_idle_j + b.edge_idle_j + b.cloud_idle_j)


def test_fit_roofline_recovers_a_known_device():
    rng = np.random.default_rng(0)
    f = rng.uniform(1e5, 1e9, 60)
    by = rng.uniform(1e4, 1e8, 60)
    t = np.maximum(f / 2e10, by / 5e9) + 3e-5
    roof, res = fit_roofline(f, by, t)
    assert roof.flops_per_s == pytest.approx(2e10, rel=0.02)
    assert roof.bytes_per_s == pytest.approx(5e9, rel=0.02)
    assert roof.overhead_s == pytest.approx(3e-5, rel=0.05)
    assert np.max(np.abs(res)) < 0.01


def test_profile_lists_every_layers_work():
    prof = profile_named_model("resnet20", (3, 32, 32), 10, 0.25)
    kinds = {w.kind for b in prof.blocks for w in b.layers}
    assert kinds == {"conv", "linear", "norm", "eltwise", "quantizer"}
    for b in prof.blocks:  # the per-layer FLOPs add up to the block's
        assert sum(w.flops for w in b.layers if w.kind != "quantizer") == b.flops


@pytest.mark.timeout(600)
def test_calibrate_writes_updates_in_place_and_falls_back_when_the_meter_fails(tmp_path, monkeypatch):
    from jqodi.app.calibrate import calibrate_host
    from jqodi.runtime import calibration as cal
    from jqodi.runtime.energy import EnergyMeterError

    out = tmp_path / "host.yaml"
    said = []
    tiny = [("lenet", 0.25)]
    r1 = calibrate_host(out, quick=True, name="mybox", power="declared", tdp_w=30, idle_w=4, models=tiny,
                        say=said.append, progress=lambda s: None)
    f1 = load_device_file(out)
    assert f1.name == "mybox" and f1.source == "measured" and f1.power == "declared"
    assert (f1.busy_power_w, f1.idle_power_w) == (30, 4)
    assert {"conv", "linear", "norm", "eltwise", "quantizer"} <= set(f1.layers)
    assert any("power: declared" in s for s in said)
    assert {r["kind"] for r in r1.residuals} >= {"conv", "training step"}
    # the file works in a scenario at once
    sc = parse_scenario(scenario_dict(end={"device": str(out)}, edge={"device": str(out)}))
    assert math.isfinite(cost_table(sc, "lenet").epoch(8, 1, "es").time_s)

    # a meter that fails mid-run: fall back to the declared power (kept from the file), say why
    def failing(kind, work, seconds):
        raise EnergyMeterError("rapl meter failed during the run: counter vanished")

    monkeypatch.setattr(cal, "measure_power", failing)
    said.clear()
    calibrate_host(out, quick=True, power="auto", models=tiny, say=said.append, progress=lambda s: None)
    f2 = load_device_file(out)
    assert f2.name == "mybox" and f2.power == "declared" and f2.busy_power_w == 30  # updated in place
    assert any("counter vanished" in s and "falling back to declared power" in s for s in said), said

    # a failure during the measurements writes nothing half-done
    before = out.read_bytes()

    def broken(*a, **k):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(cal, "layer_samples", broken)
    with pytest.raises(RuntimeError):
        calibrate_host(out, quick=True, models=tiny, say=lambda s: None, progress=lambda s: None)
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["host.yaml"]


def test_calibrate_says_how_a_scenario_names_the_file_it_wrote(tmp_path, monkeypatch, capsys):
    """The default file is in the library: ``device: host``, as ``--help`` says; any other path by its path."""
    import types

    import jqodi.app.calibrate as app_cal
    from jqodi.core.device_model import user_devices_dir

    monkeypatch.setenv("JQODI_HOME", str(tmp_path / "home"))

    def fake(out, **kw):   # what calibrate_host returns, without measuring anything
        path = Path(out) if out else user_devices_dir() / "host.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("name: host\n")
        dev = types.SimpleNamespace(bit_time_factor={8: 1.0}, flops=1e9, busy_power_w=10.0, idle_power_w=1.0,
                                    power="declared")
        return types.SimpleNamespace(residuals=[], device=dev, path=path, seconds=1.0)

    monkeypatch.setattr(app_cal, "calibrate_host", fake)
    assert main(["calibrate", "--quick"]) == 0
    assert "(use it in a scenario as 'device: host')" in capsys.readouterr().out
    assert main(["calibrate", "--quick", "--out", str(tmp_path / "box.yaml")]) == 0
    assert f"(use it in a scenario as 'device: {tmp_path / 'box.yaml'}')" in capsys.readouterr().out


@pytest.mark.parametrize("argv, msg", [
    (["--tdp-w", "-3"], "--tdp-w: must be a finite number > 0"),   # the CLI's shared argument types
    (["--idle-w", "nan"], "--idle-w: expected a finite number"),
    (["--tdp-w", "20", "--idle-w", "30"], "--idle-w: must be below --tdp-w (20 W)"),
])
def test_calibrate_bad_flags_are_one_line_exit_2(argv, msg, capsys):
    assert main(["calibrate", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and msg in err, err


def test_emulated_epoch_takes_the_time_the_device_model_predicts(tmp_path):
    """The runtime's emulation pads each compute step to the device file's rooflines (the cost
    model's own function), not to one FLOP/s: an emulated epoch's end and edge compute times
    agree with the extended model's prediction. The file's single `flops` is set 100× faster
    than its rooflines, so padding to FLOPs / v would be ~100× too short."""
    import torch
    from torch.utils.data import TensorDataset

    from jqodi.core.costs import epoch_costs
    from jqodi.core.quant import prepare_qat
    from jqodi.core.zoo import build_model
    from jqodi.runtime.job import Job
    from jqodi.runtime.local import run_inprocess
    from jqodi.runtime.plan import emulation_from_scenario
    from jqodi.runtime.record import measure_epoch

    slow = copy.deepcopy(DEVICE)
    slow.update(flops=1e11, bit_time_factor={4: 1.3})
    for k, lm in slow["layers"].items():  # ~0.2 GFLOP/s forward, 0.1 backward, 1 ms per call
        lm["forward"] = {"flops_per_s": 2e8, "bytes_per_s": 1e9, "overhead_s": 1e-3}
        lm["backward"] = {"flops_per_s": 1e8, "bytes_per_s": 5e8, "overhead_s": 1.5e-3}
    dev = write(tmp_path, slow)
    n_train, n_val, batch = 128, 40, 64  # few, long steps: a loaded host's late wake-ups stay small
    sc = parse_scenario({**scenario_dict(end={"device": str(dev)}, edge={"device": str(dev)}),
                         "data": {"train_size": n_train, "val_size": n_val, "input_shape": [1, 28, 28],
                                  "num_classes": 10},
                         "models": [{"name": "lenet", "width": 0.125}], "training": {"batch_size": batch}})
    cut, bits = 2, 4
    emu = emulation_from_scenario(sc, bits, ["es"], enabled=True, dilation=1.0)
    assert set(emu.rooflines) >= {"end", "edge:es"}
    job = Job.from_dict({"model": "lenet", "bits": bits, "width": 0.125, "input_shape": [1, 28, 28],
                         "schedule": [{"edge": "es", "cut": cut, "epochs": 1}],
                         "training": {"batch_size": batch, "eval_batch_size": 500},
                         "timeout_s": 30, "meter": "null", "emulation": emu})
    job = Job.from_dict(job.to_dict())  # what a role process receives
    assert job.emulation.rooflines == emu.rooflines

    class Data:
        g = torch.Generator().manual_seed(0)
        train = TensorDataset(torch.randn(n_train, 1, 28, 28, generator=g), torch.randint(0, 10, (n_train,), generator=g))
        val = TensorDataset(torch.randn(n_val, 1, 28, 28, generator=g), torch.randint(0, 10, (n_val,), generator=g))

    master = prepare_qat(build_model("lenet", (1, 28, 28), 10, 0.125, seed=1), bits, None,
                         calibration=Data.train.tensors[0][:batch])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = run_inprocess(job, master, Data())
    finally:
        torch.set_num_threads(threads)
    m = measure_epoch(run.state.epochs[0], 1.0)
    pred = epoch_costs(sc, "lenet", bits, cut, "es")
    assert pred.end_compute_s > 0.5 and pred.edge_compute_s > 0.5  # the padding dominates the host's work
    for part in ("end_compute", "edge_compute"):  # wall time incl. padding; a loaded host wakes late
        assert m["phases_s"][part] == pytest.approx(getattr(pred, f"{part}_s"), rel=0.15), (part, m)


def test_calibration_repeats_stop_once_the_median_is_stable(monkeypatch):
    from jqodi.runtime import calibration as cal

    def timed(durations):
        calls, it = [], iter(durations)
        clock = iter(t for d in durations for t in (0.0, d))  # each timed call: t0 = 0, t1 = d
        monkeypatch.setattr(cal, "_clock", lambda: next(clock))
        return lambda: calls.append(next(it, None)), calls

    fn, calls = timed([1.0] * 10)   # steady: the warm-up + MIN_REPEATS calls
    assert cal._median_s(fn, 9) == 1.0 and len(calls) == 1 + cal.MIN_REPEATS
    noisy = [1.0, 2.0, 1.0, 3.0, 1.0, 2.5, 1.0, 2.0, 2.1, 2.1]
    fn, calls = timed(noisy)          # unstable: more calls, capped at `repeats`
    cal._median_s(fn, 6)
    assert len(calls) == 1 + 6


def _steps(k: float, s8: float, drift: dict | None = None, quant: float = 1.0) -> list[dict]:
    """Whole steps of three models as a device k × slower than DEVICE's rooflines with s(8) = s8
    would take; ``drift`` slows a model's steps (fp32 and QAT alike) further, as a load change would;
    ``quant`` makes its fake quantizers that many times slower still."""
    true = DeviceFile.model_validate({**DEVICE, "bit_time_factor": {}}).device()
    steps = []
    for name, width in (("lenet", 0.25), ("resnet20", 0.25), ("vgg", 0.125)):
        blocks = profile_named_model(name, (3, 32, 32), 10, width).blocks
        for q in (32, 8):
            conv = sum(true.step_time_s([b], 32, q, ("forward", "backward")) for b in blocks)
            other = 0.0
            for b in blocks:
                other += true.optimizer_step_s(b)
                for w in b.layers:
                    if w.kind not in ("conv", "linear"):
                        t = sum(true.layer_time_s(w, 32, q, p) for p in ("forward", "backward"))
                        conv -= t
                        other += t * (quant if w.kind == "quantizer" else 1.0)
            steps.append({"model": name, "width": width, "bits": q, "batch": 32, "blocks": blocks,
                          "seconds": (drift or {}).get(name, 1.0) * k * ((s8 if q < 32 else 1.0) * conv + other)})
    return steps


def test_fit_composition_recovers_the_scale_and_s_q_from_whole_steps():
    from jqodi.app.calibrate import fit_composition
    from jqodi.core.device_model import LayerModel

    layers = DeviceFile.model_validate(DEVICE).layers
    k, s8 = 1.3, 1.2
    out, factors, rows = fit_composition(dict(layers), _steps(k, s8))
    assert factors == {8: pytest.approx(s8, rel=1e-3)}
    assert rows[0]["scale"] == pytest.approx(k, rel=1e-6)
    assert all(r["max_abs_error"] < 1e-3 for r in rows)
    assert out["conv"].forward.overhead_s == pytest.approx(k * layers["conv"].forward.overhead_s)
    assert isinstance(out["conv"], LayerModel)


def test_fit_composition_s_q_is_paired_with_each_models_own_fp32_step():
    """Two of three models measured 25 % and 40 % slow (the machine's load changed between
    models, but not between a model's fp32 and QAT steps, which run back to back): s(q) still
    comes out exact, because each model's QAT step is compared with its own fp32 step."""
    from jqodi.app.calibrate import fit_composition

    layers = DeviceFile.model_validate(DEVICE).layers
    _, factors, _ = fit_composition(dict(layers), _steps(1.3, 1.2, {"resnet20": 1.25, "vgg": 1.4}))
    assert factors == {8: pytest.approx(1.2, rel=1e-3)}


def test_fit_composition_fits_the_quantizers_time_beside_s_q():
    """Fake quantizers 2.5× slower in whole steps than their rooflines say: one conv/linear factor
    cannot fit three models with different quantizer shares; fitted together, s(8) and the
    quantizers' factor come out exact and every QAT step matches. A fit that would need s(q) < 1
    (a conv made faster by fake quantization) is held at 1."""
    from jqodi.app.calibrate import fit_composition

    layers = DeviceFile.model_validate(DEVICE).layers
    out, factors, rows = fit_composition(dict(layers), _steps(1.3, 1.2, quant=2.5))
    qat = next(r for r in rows if r["phase"].startswith("QAT"))
    assert qat["quantizer_scale"] == pytest.approx(2.5, rel=1e-3) and factors == {8: pytest.approx(1.2, rel=1e-3)}
    assert qat["max_abs_error"] < 1e-3
    assert out["quantizer"].forward.overhead_s == pytest.approx(1.3 * 2.5 * layers["quantizer"].forward.overhead_s,
                                                               rel=1e-3)
    _, factors, _ = fit_composition(dict(layers), _steps(1.3, 0.6))
    assert factors[8] == 1.0
    _, _, rows = fit_composition(dict(layers), _steps(1.3, 1.2, quant=0.5))  # quantizers cheaper in a step:
    assert next(r for r in rows if r["phase"].startswith("QAT"))["quantizer_scale"] == 1.0  # held at 1


def test_emulated_inference_follows_the_rooflines_as_serving_prices_a_request(tmp_path):
    """Serving after fine-tuning pads each request's forward to the device file's rooflines, as
    :func:`jqodi.core.serving.request_costs` prices a request in the extended model: the runtime's
    prediction equals the planner's per-request time and energy, and the measured energy (model
    meter) matches it. The file's single `flops` is 100× faster than its rooflines, so padding to
    FLOPs / v would measure ~100× less."""
    import torch

    torch.set_num_threads(1)
    measured, pred = serve_on_slow_devices(tmp_path)
    for edge, key in (("es", ("split", 2)), (None, ("end-only", None))):
        m, p = measured[edge], pred[key]
        assert p.request_time_s > 0.01  # the rooflines, not FLOPs / v (≈ 0.1 ms)
        assert m.predicted_latency_s == pytest.approx(p.request_time_s, rel=1e-6), key
        assert m.predicted_energy_j == pytest.approx(p.request_energy_j, rel=1e-6), key
        assert m.energy_j == pytest.approx(p.request_energy_j, rel=0.02), key
        assert m.latency_p50_s >= p.request_time_s * 0.98, key


def serve_on_slow_devices(tmp_path, *, end_idle_w: float = 0.0, edge_idle_w: float = 0.0, idle_energy: bool = False):
    """8 emulated requests of LeNet ×0.125 at 4 bits (split at cut 2 on edge ``es``, and end-only)
    on device files whose every layer costs ~2 ms per call (a request takes tens of ms on the
    device); returns (measured per edge, ``request_costs`` per (mode, cut))."""
    from jqodi.core.profile import profile_named_model
    from jqodi.core.serving import request_costs
    from jqodi.runtime.inference import run_inference
    from jqodi.runtime.job import Job
    from jqodi.runtime.plan import emulation_from_scenario
    from test_runtime import _Data, _master

    slow = copy.deepcopy(DEVICE)
    slow.update(flops=1e11, idle_power_w=end_idle_w, bit_time_factor={4: 1.3})
    for lm in slow["layers"].values():
        lm["forward"] = {"flops_per_s": 2e8, "bytes_per_s": 1e9, "overhead_s": 2e-3}
    shape = (1, 28, 28)
    sc = parse_scenario({**scenario_dict(end={"device": str(write(tmp_path, slow))},
                                         edge={"device": str(write(tmp_path, {**slow, "idle_power_w": edge_idle_w},
                                                                   "e.yaml"))},
                                         idle_energy=idle_energy),
                         "data": {"train_size": 32, "val_size": 8, "input_shape": list(shape), "num_classes": 10},
                         "models": [{"name": "lenet", "width": 0.125}], "bits": [4], "training": {"act_bits": 32}})
    emu = emulation_from_scenario(sc, 4, ["es"], enabled=True, dilation=1.0)
    job = Job.from_dict({"model": "lenet", "bits": 4, "width": 0.125, "input_shape": list(shape),
                         "schedule": [{"edge": "es", "cut": 2, "epochs": 1}],
                         "training": {"batch_size": 32, "eval_batch_size": 8}, "timeout_s": 30,
                         "meter": "null", "emulation": emu})
    data = _Data(n_train=32, n_val=8)
    measured = {r.edge: r for r in run_inference(job, _master(data), data, requests=8, dilation=1.0)}
    pred = {(c.mode, c.cut): c for c in request_costs(sc, profile_named_model("lenet", shape, 10, 0.125), 4,
                                                      cost_model="extended")}
    return measured, pred
