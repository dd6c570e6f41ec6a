"""Per-model composition in a calibrated device file (``calibration.model_scale``): calibrate
fits it from its own whole steps, the extended cost model and the emulator apply it to that model
on that device only, and files without it (spec-sheet, fitted, older calibrations) price as before."""
import copy

import pytest
import yaml

from jqodi.core.costs import cost_table
from jqodi.core.device_model import DeviceFile, device_from_dict, library_devices, load_device_file, model_scale_key
from jqodi.core.profile import profile_named_model
from jqodi.core.scenario import parse_scenario

from test_device_model import DEVICE, _steps, scenario_dict, write


def scaled(scales: dict) -> dict:
    d = copy.deepcopy(DEVICE)
    d["calibration"] = {"host": "h", "model_scale": scales}
    return d


def test_scale_applies_to_that_model_only():
    blocks = profile_named_model("lenet", (3, 32, 32), 10, 0.25).blocks
    plain = DeviceFile.model_validate(DEVICE).device()
    dev = DeviceFile.model_validate(scaled({"lenet@0.25": 1.25, "vgg@0.125": 0.8})).device()
    base = plain.step_time_s(blocks, 32, 8)
    assert dev.step_time_s(blocks, 32, 8) == base  # not bound to a model: unscaled
    assert dev.for_model("lenet", 0.25).step_time_s(blocks, 32, 8) == pytest.approx(1.25 * base)
    assert dev.for_model("lenet", 0.25).block_epoch_time_s(blocks[0], 100, 50, 32, 500, 4) == pytest.approx(
        1.25 * plain.block_epoch_time_s(blocks[0], 100, 50, 32, 500, 4))
    # another width of the same model, or a model without an entry: no scale
    assert dev.for_model("lenet", 1.0).step_time_s(blocks, 32, 8) == base
    assert dev.for_model("resnet20", 0.25).composition_scale == {}
    assert model_scale_key("resnet20", 0.25) == "resnet20@0.25" and model_scale_key("lenet", 1) == "lenet@1"


def test_train_and_eval_factors_price_their_own_passes():
    blocks = profile_named_model("lenet", (3, 32, 32), 10, 0.25).blocks
    plain = DeviceFile.model_validate(DEVICE).device()
    dev = DeviceFile.model_validate(scaled({"lenet@0.25": {"train": 0.9, "eval": 1.6}})).device().for_model("lenet", 0.25)
    assert dev.step_time_s(blocks, 32, 8) == pytest.approx(0.9 * plain.step_time_s(blocks, 32, 8))
    # a training forward (the emulator's end part) is training; only a validation forward is eval
    fwd = plain.step_time_s(blocks, 32, 8, ("forward",))
    assert dev.step_time_s(blocks, 32, 8, ("forward",)) == pytest.approx(0.9 * fwd)
    assert dev.step_time_s(blocks, 32, 8, ("forward",), validation=True) == pytest.approx(1.6 * fwd)
    # an epoch: training batches at 0.9, validation at 1.6
    b = blocks[0]
    train = plain.block_epoch_time_s(b, 96, 0, 32, 500, 8)
    val = plain.block_epoch_time_s(b, 0, 50, 32, 500, 8)
    assert dev.block_epoch_time_s(b, 96, 50, 32, 500, 8) == pytest.approx(0.9 * train + 1.6 * val)
    only_eval = DeviceFile.model_validate(scaled({"lenet@0.25": {"eval": 2.0}})).device().for_model("lenet", 0.25)
    assert only_eval.step_time_s(blocks, 32, 8) == pytest.approx(plain.step_time_s(blocks, 32, 8))


def test_cost_table_prices_the_scaled_model_and_files_without_scale_are_unchanged(tmp_path):
    plain = write(tmp_path, DEVICE, "plain.yaml")
    k = write(tmp_path, scaled({"lenet@0.25": 1.3}), "k.yaml")
    other = write(tmp_path, scaled({"resnet20@0.25": 1.3}), "other.yaml")
    prof = profile_named_model("lenet", (3, 32, 32), 10, 0.25)

    def epoch(path):
        sc = parse_scenario(scenario_dict(end={"device": str(path)}, edge={"device": str(path)}))
        ec = cost_table(sc, "lenet", prof).epoch(8, 2, "es")
        return ec.end_compute_s, ec.edge_compute_s

    p_end, p_edge = epoch(plain)
    k_end, k_edge = epoch(k)
    assert k_end == pytest.approx(1.3 * p_end) and k_edge == pytest.approx(1.3 * p_edge)
    assert epoch(other) == (p_end, p_edge)  # an entry for another model changes nothing here
    # the paper testbed (spec-sheet and fitted files) carries no scale
    for name in library_devices():
        f = load_device_file(name)
        if f.source != "measured":
            assert not (f.calibration or {}).get("model_scale"), name


def test_the_scale_travels_to_the_emulator_with_the_rooflines():
    dev = DeviceFile.model_validate(scaled({"lenet@0.25": 1.3})).device()
    back = device_from_dict(dev.to_dict())
    assert back.model_scale == {"lenet@0.25": {"train": 1.3, "eval": 1.3}}
    assert back.for_model("lenet", 0.25).composition_scale == {"train": 1.3, "eval": 1.3}
    assert "calibration" not in DeviceFile.model_validate(DEVICE).device().to_dict()


def test_calibrate_fits_each_models_step_against_its_layers_sum():
    from jqodi.app.calibrate import fit_composition, model_scales

    layers = DeviceFile.model_validate(DEVICE).layers
    drift = {"resnet20": 1.25, "vgg": 1.4}
    steps = _steps(1.3, 1.2, drift)
    out, _, rows = fit_composition(dict(layers), steps)
    # validation forwards, timed apart: LeNet's 1.5× its (scaled) layers' forward sum
    scaled_dev = DeviceFile(name="x", flops=1e9, busy_power_w=1.0, layers=out).device()
    evals = [{"model": "lenet", "width": 0.25, "bits": 32, "batch": 500, "blocks": steps[0]["blocks"],
              "seconds": 1.5 * scaled_dev.step_time_s(steps[0]["blocks"], 500, 32, ("forward",))}]
    scales = {k: v["train"] for k, v in model_scales(out, steps, evals).items()}
    assert model_scales(out, steps, evals)["lenet@0.25"]["eval"] == pytest.approx(1.5)
    assert "eval" not in model_scales(out, steps, evals)["vgg@0.125"]  # not timed: no factor
    assert set(scales) == {"lenet@0.25", "resnet20@0.25", "vgg@0.125"}
    # the shared k is their geometric mean: what is left per model is each drift relative to it
    g = (1.25 * 1.4) ** (1 / 3)
    assert scales["lenet@0.25"] == pytest.approx(1 / g, rel=1e-3)
    assert scales["resnet20@0.25"] == pytest.approx(1.25 / g, rel=1e-3)
    assert scales["vgg@0.125"] == pytest.approx(1.4 / g, rel=1e-3)
    # with the scale, every fp32 step is priced as measured
    dev = DeviceFile(name="x", flops=1e9, busy_power_w=1.0, layers=out,
                     calibration={"model_scale": model_scales(out, steps, evals)}).device()
    for st in steps:
        if st["bits"] == 32:
            pred = dev.for_model(st["model"], st["width"]).step_time_s(st["blocks"], st["batch"], 32)
            assert pred == pytest.approx(st["seconds"], rel=1e-3)
    # no drift: every model at 1
    even = _steps(1.3, 1.2)
    assert all(v["train"] == pytest.approx(1.0, rel=1e-3)
               for v in model_scales(fit_composition(dict(layers), even)[0], even).values())


def test_scale_survives_a_yaml_round_trip(tmp_path):
    from jqodi.core.device_model import dump_device_file

    p = dump_device_file(DeviceFile.model_validate(scaled({"resnet20@0.25": 1.1276})), tmp_path / "h.yaml")
    assert yaml.safe_load(p.read_text())["calibration"]["model_scale"] == {"resnet20@0.25": 1.1276}
    assert load_device_file(p).device().model_scale == {"resnet20@0.25": {"train": 1.1276, "eval": 1.1276}}


def test_the_emulator_prices_validation_by_eval_and_serving_as_the_planner_does(tmp_path):
    """A training clock bound to the model (``clock_for``) pads validation forwards by the eval
    factor and training steps by the train factor; its serving clock pads a request (an eval-mode
    forward of the frozen model) by the eval factor too, and so do the planner's price of a request
    (:func:`jqodi.core.serving.request_costs`) and the runtime's prediction of it (``predict_inference``)."""
    from jqodi.core.costs.extended import forward_time_s
    from jqodi.core.devices import Device
    from jqodi.core.serving import request_costs, served_blocks
    from jqodi.runtime.emulation import ComputeClock, Step
    from jqodi.runtime.inference import predict_inference
    from jqodi.runtime.job import EmulationConfig, Job

    prof = profile_named_model("lenet", (3, 32, 32), 10, 0.25)
    blocks = list(prof.blocks)
    plain = DeviceFile.model_validate(DEVICE).device()
    spec = scaled({"lenet@0.25": {"train": 0.9, "eval": 1.6}})
    dev = DeviceFile.model_validate(spec).device()
    clock = ComputeClock(Device("d", 1e9, 1.0), 1.0, model=dev.for_model("lenet", 0.25), blocks=blocks, bits=8)
    fwd = Step(0, None, 32, ("forward",))
    assert clock.device_time_s(step=fwd, phase="train") == pytest.approx(
        0.9 * plain.step_time_s(blocks, 32, 8, fwd.passes))
    assert clock.device_time_s(step=fwd, phase="validation") == pytest.approx(
        1.6 * plain.step_time_s(blocks, 32, 8, fwd.passes))
    one = Step(0, None, 1, ("forward",))
    served = clock.for_serving(1.0).device_time_s(step=one, phase="infer")
    unscaled = plain.step_time_s(served_blocks(blocks), 1, 8, one.passes)
    assert served == pytest.approx(1.6 * unscaled)
    assert served == pytest.approx(forward_time_s(dev.for_model("lenet", 0.25), served_blocks(blocks), 8))
    # the planner: one request served on the end device alone, in the extended model
    serving = {"requests": 100, "latency_slo_s": 1e3, "devices": ["end-only"]}
    for file, factor in ((spec, 1.6), (DEVICE, 1.0)):  # a file without model_scale: unscaled, as before
        sc = parse_scenario(scenario_dict(end={"device": str(write(tmp_path, file, "sd.yaml"))}, serving=serving))
        (priced,) = request_costs(sc, prof, 8)
        assert priced.request_time_s == pytest.approx(factor * unscaled), factor
    assert priced.request_time_s == pytest.approx(forward_time_s(plain, served_blocks(blocks), 8))
    # the runtime's prediction of the same request (what jqodi infer reports beside the measured one)
    job = Job.from_dict({"model": "lenet", "bits": 8, "width": 0.25, "input_shape": [3, 32, 32],
                         "schedule": [{"edge": "es", "cut": 1, "epochs": 1}]})
    job = job.replace(emulation=EmulationConfig(enabled=True, dilation=1.0, devices={"end": dev},
                                                rooflines={"end": dev.to_dict()}))
    t_s, _ = predict_inference(job, [float(b.flops) for b in blocks], None, None, None, blocks)
    assert t_s == pytest.approx(served)
