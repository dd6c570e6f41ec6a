"""Idle power measured, not only predicted: the emulated meter charges a device's idle power for
the time it is up and not busy, when the plan charges it (``extended`` + ``idle_energy``), and the
run record keeps busy and idle energy apart, per node, beside the cost model's prediction."""
import copy

import pytest

from jqodi.core.costs import epoch_costs
from jqodi.core.profile import profile_named_model
from jqodi.core.scenario import parse_scenario
from jqodi.runtime.emulation import charge_idle_outside_windows
from jqodi.runtime.energy import EnergyMeterError, Measurement, ModelMeter
from jqodi.runtime.job import Job
from jqodi.runtime.plan import emulation_from_scenario, predict_epoch
from test_device_model import DEVICE, scenario_dict, serve_on_slow_devices, write
from test_runtime import _Data, _master


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_model_meter_charges_idle_power_for_up_time_not_busy():
    clock = FakeClock()
    paper = ModelMeter(20.0, clock=clock, cpu_clock=lambda: 0.0)
    idle = ModelMeter(20.0, 5.0, time_scale=0.5, clock=clock, cpu_clock=lambda: 0.0)
    for m in (paper, idle):
        m.begin_window("w")
    clock.t += 8.0  # 8 s of wall time at dilation 2: the device was up 4 s, busy 1.5 s of them
    assert paper.end_window("w", busy_s=1.5) == Measurement(30.0, 8.0, "model")  # Eq. (8): busy only
    m = idle.end_window("w", busy_s=1.5)
    assert m.idle_j == pytest.approx(5.0 * (4.0 - 1.5)) and m.busy_j == pytest.approx(30.0)
    assert m.energy_j == pytest.approx(30.0 + 12.5)
    idle.begin_window("v")
    clock.t += 8.0
    assert idle.end_window("v", busy_s=1.0, up_s=3.0).idle_j == pytest.approx(10.0)  # up time given
    idle.begin_window("u")
    assert idle.end_window("u", busy_s=2.0).idle_j == 0.0  # busy longer than the window: no negative idle
    assert (m + m).idle_j == pytest.approx(25.0)
    assert "5 W × idle time" in idle.description and "idle" not in paper.description
    for bad in ({"idle_power_w": -1.0}, {"idle_power_w": float("nan")}, {"time_scale": 0.0}):
        with pytest.raises(EnergyMeterError, match=next(iter(bad))):
            ModelMeter(20.0, **bad)


def test_idle_outside_a_nodes_window_is_charged_for_the_rest_of_the_epoch():
    nodes = [{"node": "end", "energy_j": 10.0, "idle_j": 2.0, "idle_power_w": 4.0, "window_s": 6.0},
             {"node": "cloud", "energy_j": 1.0}]  # a meter without idle power: untouched
    charge_idle_outside_windows(nodes, 10.0, 2.0)  # 4 s of wall outside the window = 2 s of device
    assert nodes[0]["idle_j"] == pytest.approx(2.0 + 8.0) and nodes[0]["energy_j"] == pytest.approx(18.0)
    assert nodes[1] == {"node": "cloud", "energy_j": 1.0}


@pytest.mark.parametrize("top, carried", [({"idle_energy": True}, True), ({}, False),
                                          ({"cost_model": "paper"}, False)])
def test_emulated_devices_carry_idle_power_only_when_the_plan_charges_it(top, carried):
    emu = emulation_from_scenario(parse_scenario(scenario_dict(**top)), 8, ["es"], enabled=True, dilation=1.0)
    idle = {r: d.idle_power_w for r, d in emu.devices.items()}
    if carried:
        assert idle == {"cloud": 20.0, "end": pytest.approx(2.99, abs=0.05), "edge:es": pytest.approx(23.2, abs=0.5)}
    else:
        assert set(idle.values()) == {None}


def test_emulated_run_measures_each_nodes_busy_and_idle_energy_as_predicted(tmp_path):
    """Two emulated epochs (in-process, device files padded to their rooflines) of a plan with
    ``idle_energy: true``: per node, the busy energy is the predicted compute energy and the idle
    energy P^idle × (t(k) − busy) is the predicted ``*_idle_j``, but for the seconds the measured
    epoch runs over the predicted one (on a loaded host the host's own work comes on top)."""
    from jqodi.render.runs import run_report
    from jqodi.runtime.local import run_inprocess
    from jqodi.runtime.record import RunRecord, measure_epoch

    slow = copy.deepcopy(DEVICE)
    slow.update(flops=1e11, bit_time_factor={4: 1.3}, idle_power_w=5.0)
    for lm in slow["layers"].values():  # ~0.2 GFLOP/s forward, 0.1 backward, 1 ms per call
        lm["forward"] = {"flops_per_s": 2e8, "bytes_per_s": 1e9, "overhead_s": 1e-3}
        lm["backward"] = {"flops_per_s": 1e8, "bytes_per_s": 5e8, "overhead_s": 1.5e-3}
    fast_edge = {**copy.deepcopy(slow), "name": "edgebox", "busy_power_w": 60.0, "idle_power_w": 12.0}
    for lm in fast_edge["layers"].values():  # the edge 2× faster: the SD waits for it, and it for the SD
        lm["forward"] = {"flops_per_s": 4e8, "bytes_per_s": 2e9, "overhead_s": 5e-4}
        lm["backward"] = {"flops_per_s": 2e8, "bytes_per_s": 1e9, "overhead_s": 7.5e-4}
    n_train, n_val, batch, cut, bits = 128, 40, 64, 2, 4
    sc = parse_scenario({**scenario_dict(end={"device": str(write(tmp_path, slow))},
                                         edge={"device": str(write(tmp_path, fast_edge, "edge.yaml"))},
                                         idle_energy=True),
                         "data": {"train_size": n_train, "val_size": n_val, "input_shape": [1, 28, 28],
                                  "num_classes": 10},
                         "models": [{"name": "lenet", "width": 0.125}], "training": {"batch_size": batch}})
    pred = epoch_costs(sc, "lenet", bits, cut, "es")
    assert pred.end_idle_j > 0.5 and pred.edge_idle_j > 2.0 and pred.cloud_idle_j > 10.0
    emu = emulation_from_scenario(sc, bits, ["es"], enabled=True, dilation=1.0)
    job = Job.from_dict(Job.from_dict({
        "model": "lenet", "bits": bits, "width": 0.125, "input_shape": [1, 28, 28],
        "schedule": [{"edge": "es", "cut": cut, "epochs": 2}], "training": {"batch_size": batch, "eval_batch_size": 500},
        "timeout_s": 30, "meter": "null", "emulation": emu,
        "cloud_update_flops": float(sc.cloud.update_flops_per_param
                                    * profile_named_model("lenet", (1, 28, 28), 10, 0.125).params),
        "predicted_epochs": [predict_epoch(sc, "lenet", bits, cut, "es")]}).to_dict())  # as a role process gets it
    data = _Data(n_train=n_train, n_val=n_val)
    run = run_inprocess(job, _master(data), data)
    record = RunRecord(job=job.to_dict())
    busy_w = {"end": slow["busy_power_w"], "edge:es": fast_edge["busy_power_w"], "cloud": 100.0}
    idle_w = {"end": 5.0, "edge:es": 12.0, "cloud": 20.0}
    for rec in run.state.epochs:
        m = measure_epoch(rec, 1.0)
        m["predicted"] = predict_epoch(sc, "lenet", bits, cut, "es")
        record.epochs.append(m)
        busy = {n["node"]: sum(n["busy_s"].values()) for n in rec["nodes"]}  # padded wall time per node
        predicted = {"end": (pred.end_compute_j, pred.end_idle_j), "edge:es": (pred.edge_compute_j, pred.edge_idle_j),
                     "cloud": (pred.cloud_update_j, pred.cloud_idle_j)}
        for node, (busy_j, idle_j) in predicted.items():
            # busy: the device's padded time × busy power, exactly what the cost model charges
            assert m["compute_energy_j"][node] == pytest.approx(busy_j, rel=0.02), (node, m)
            # idle: P^idle × (this epoch's measured time − the node's busy time) ...
            assert m["idle_energy_j"][node] == pytest.approx(
                idle_w[node] * (m["time_s"] - m["compute_energy_j"][node] / busy_w[node]), rel=0.02, abs=1e-3), node
            assert busy[node] <= m["time_s"] * 1.01, node
            # ... which meets the prediction: the node is charged for the whole epoch (inside its meter
            # window and outside it), so every second the epoch runs over the prediction (the host's
            # own work) is one idle second more, and nothing else differs
            assert m["idle_energy_j"][node] - idle_j == pytest.approx(idle_w[node] * (m["time_s"] - pred.time_s),
                                                                      abs=0.01 * idle_j), node
            assert m["idle_energy_j"][node] == pytest.approx(idle_j, abs=idle_w[node] * 0.25 * pred.time_s), node
        assert m["energy_j"] == pytest.approx(sum(m["compute_energy_j"].values()) + sum(m["idle_energy_j"].values())
                                              + sum(m["transfer_energy_j"].values()))
    assert record.totals["idle_energy_j"]["end"] == pytest.approx(sum(e["idle_energy_j"]["end"] for e in record.epochs))
    text = run_report(record)
    for node in ("end", "edge:es", "cloud"):  # busy and idle apart, each beside its prediction
        line = next(x for x in text.splitlines() if x.strip().startswith(f"{node} idle"))
        measured, predicted = (float(x.split()[0]) for x in line.split(" idle", 1)[1].split("predicted"))
        assert measured == pytest.approx(record.totals["idle_energy_j"][node], rel=0.01), line
        assert predicted == pytest.approx(2 * getattr(pred, f"{node.split(':')[0]}_idle_j"), rel=0.01), line
    assert pred.time_s > 1.0 and m["time_s"] == pytest.approx(pred.time_s, rel=0.25)


def test_emulated_serving_charges_the_idle_power_the_plan_prices_a_request_with(tmp_path):
    """With ``idle_energy: true`` a split request's price includes the SD's idle power while it
    waits for the link and the ES, and the ES's while it waits for the SD and the link
    (:func:`jqodi.core.serving.request_costs`); the emulation charges both (each node's request
    window spans its wait), and the runtime's own prediction is the planner's."""
    measured, pred = serve_on_slow_devices(tmp_path, end_idle_w=5.0, edge_idle_w=8.0, idle_energy=True)
    split, alone = pred[("split", 2)], pred[("end-only", None)]
    assert split.end_idle_j > 0 and split.edge_idle_j > 0 and alone.end_idle_j == 0
    for edge, p in (("es", split), (None, alone)):
        m = measured[edge]
        assert m.predicted_latency_s == pytest.approx(p.request_time_s, rel=1e-6), edge
        assert m.predicted_energy_j == pytest.approx(p.request_energy_j, rel=1e-6), edge
        # measured: the prediction, and idle power for the host's own time on top of the padded steps
        over_s = max(0.0, m.latency_mean_s - p.request_time_s)
        assert p.request_energy_j * 0.98 <= m.energy_j <= p.request_energy_j * 1.02 + (5.0 + 8.0) * 2 * over_s, \
            (edge, m.energy_j, p.request_energy_j, over_s)
    assert measured["es"].energy_j - split.request_energy_j < split.end_idle_j + split.edge_idle_j  # not twice
