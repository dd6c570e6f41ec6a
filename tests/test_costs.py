"""Eq. (1)-(10) against numbers worked out by hand for a tiny scenario, in both cost modes."""
import copy
import json
import math
from pathlib import Path

import pytest

from jqodi.core.costs import TERMS, compile_instance, cost_table, epoch_costs
from jqodi.errors import ScenarioError
from jqodi.core.estimates import LearningEstimate
from jqodi.planner import PlanningInstance
from jqodi.core.profile import BlockProfile, ModelProfile
from jqodi.core.scenario import load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parents[1]

# A three-block model with round numbers (no torch): forward FLOPs per sample f = 100, 200, 300.
# Block sizes at 8 bits:  80 + 4*(4+2) = 104,  160 + 4*(8+4) = 208,  40 + 4*(2+1) = 52  -> 364 B
#              at 32 bits: 4*84 = 336,         4*168 = 672,           4*42 = 168        -> 1176 B
TINY = ModelProfile("lenet", (1, 2, 2), 2, 1.0, (
    BlockProfile(1, "a", 100, 84, (80,), 4, 2, (10,), 20),
    BlockProfile(2, "b", 200, 168, (160,), 8, 4, (5,), 10),
    BlockProfile(3, "c", 300, 42, (40,), 2, 1, (2,), 4),
))

SCENARIO = {
    "name": "tiny", "deadline_s": 100, "target_loss": 0.5, "cost_model": "paper",
    "data": {"train_size": 10, "val_size": 5, "input_shape": [1, 2, 2], "num_classes": 2},
    "models": [{"name": "lenet"}],
    "bits": [8], "baseline_bits": [32],
    "cloud": {"name": "cs", "flops": 1e6, "busy_power_w": 100, "memory_gib": 1,
              "update_flops_per_param": 10, "quantize_flops_per_param": 5},
    "edges": [
        {"name": "A", "flops": 10000, "busy_power_w": 50, "memory_gib": 1,
         "cloud_link": {"rate_bps": 1000, "energy_per_bit_j": 0.001},
         "end_link": {"bandwidth_hz": 100, "snr": 3, "tx_power_w": 2}},
        {"name": "B", "flops": 5000, "energy_per_flop_j": 0.002, "memory_gib": 1, "bit_speedup": {8: 2.0},
         "cloud_link": {"rate_bps": 2000, "power_w": 4},
         "end_link": {"bandwidth_hz": 100, "snr_db": 0, "energy_per_bit_j": 0.005}},
    ],
    "end_device": {"name": "sd", "flops": 1000, "busy_power_w": 10, "memory_gib": 1},
    "training": {"batch_size": 2, "act_bits": "same", "grad_bits": 32},
    "learning": [{"model": "lenet", "bits": 8, "base_loss": 0.3, "gamma": 0.1, "epochs_expected": 4,
                  "epochs_robust": 5, "final_loss_expected": 0.45, "final_loss_robust": 0.48}],
}

# Worked by hand.  d^i = (3*10 + 5) * f_i = 3500, 7000, 10500 FLOPs per epoch.
# v_(x,y): A = 100*log2(1+3) = 200 bit/s, eps = 2 W / 200 = 0.01 J/bit;  B = 100*log2(1+1) = 100 bit/s.
# F_a = 10 FLOP/param * 294 params = 2940 FLOPs on the CS: 0.00294 s, 2940 * (100/1e6) = 0.294 J.
HAND = {
    # (bits, cut, edge): {term: (seconds, joules)}
    (8, 1, "A"): {
        "end_compute": (3500 / 1000, 3500 * 0.01),              # Eq. (3), (7), (8)
        "edge_compute": (17500 / 10000, 17500 * 0.005),         # Eq. (4); eps_A = 50/10000
        "cloud_update": (0.00294, 0.294),
        "cloud_to_edge": (8 * 364 / 1000, 8 * 364 * 0.001),     # Eq. (1), (9), (10)
        "edge_to_end": (8 * 104 / 200, 8 * 104 * 0.01),         # Eq. (2)
        "end_to_edge": (8 * 104 / 200, 8 * 104 * 0.01),
        "edge_to_cloud": (8 * 364 / 1000, 8 * 364 * 0.001),
        # extended: 10 elements at cut 1; (10 train * (8 act + 32 grad) + 5 val * 8) bits each
        "activations": (10 * 440 / 200, 10 * 440 * 0.01),
    },
    (8, 2, "B"): {
        "end_compute": (10500 / 1000, 10500 * 0.01),
        "edge_compute": (10500 / (5000 * 2), 10500 * 0.002 / 2),  # 2x speed-up at 8 bits on B
        "cloud_update": (0.00294, 0.294),
        "cloud_to_edge": (8 * 364 / 2000, 8 * 364 * (4 / 2000)),
        "edge_to_end": (8 * 312 / 100, 8 * 312 * 0.005),
        "end_to_edge": (8 * 312 / 100, 8 * 312 * 0.005),
        "edge_to_cloud": (8 * 364 / 2000, 8 * 364 * (4 / 2000)),
        "activations": (5 * 440 / 100, 5 * 440 * 0.005),
    },
    (32, 2, "A"): {
        "end_compute": (10.5, 105.0),
        "edge_compute": (1.05, 52.5),
        "cloud_update": (0.00294, 0.294),
        "cloud_to_edge": (8 * 1176 / 1000, 8 * 1176 * 0.001),
        "edge_to_end": (8 * 1008 / 200, 8 * 1008 * 0.01),
        "end_to_edge": (8 * 1008 / 200, 8 * 1008 * 0.01),
        "edge_to_cloud": (8 * 1176 / 1000, 8 * 1176 * 0.001),
        # "same" act bits at 32 bits: (10 * (32 + 32) + 5 * 32) = 800 bits per element, 5 elements
        "activations": (5 * 800 / 200, 5 * 800 * 0.01),
    },
}


def tiny(**changes):
    d = copy.deepcopy(SCENARIO)
    d.update(changes)
    return parse_scenario(d, "tiny")


@pytest.mark.parametrize("mode", ["paper", "extended"])
@pytest.mark.parametrize("key", sorted(HAND))
def test_every_term_matches_the_hand_computation(mode, key):
    bits, cut, edge = key
    ec = epoch_costs(tiny(cost_model=mode), "lenet", bits, cut, edge, profile=TINY)
    assert ec.feasible and ec.reason is None and ec.cost_model == mode
    for term in TERMS:
        t, e = HAND[key][term]
        if term == "activations" and mode == "paper":
            t = e = 0.0
        assert getattr(ec, f"{term}_s") == pytest.approx(t, rel=1e-12, abs=1e-15), term
        assert getattr(ec, f"{term}_j") == pytest.approx(e, rel=1e-12, abs=1e-15), term
    # Eq. (5)-(6): t = tau_run + tau_tran, e = eps_run + eps_tran
    assert ec.time_s == pytest.approx(ec.run_s + ec.tran_s)
    assert ec.energy_j == pytest.approx(ec.run_j + ec.tran_j)
    # Eq. (9)-(10) as printed: tau_tran = 2 (D^{c->e}/v_cx + D^{e->d}/v_xy) (+ activations)
    assert ec.tran_s - ec.activations_s == pytest.approx(2 * (ec.cloud_to_edge_s + ec.edge_to_end_s))
    assert ec.tran_j - ec.activations_j == pytest.approx(2 * (ec.cloud_to_edge_j + ec.edge_to_end_j))


def test_totals_for_one_option_by_hand():
    ec = epoch_costs(tiny(), "lenet", 8, 1, "A", profile=TINY)
    assert ec.time_s == pytest.approx(3.5 + 1.75 + 0.00294 + 2 * 2.912 + 2 * 4.16)      # 19.39694 s
    assert ec.energy_j == pytest.approx(35 + 87.5 + 0.294 + 2 * 2.912 + 2 * 8.32)       # 145.258 J
    ext = epoch_costs(tiny(cost_model="extended"), "lenet", 8, 1, "A", profile=TINY)
    assert ext.time_s == pytest.approx(ec.time_s + 22.0) and ext.energy_j == pytest.approx(ec.energy_j + 44.0)


def test_one_off_quantization_cost():
    ct = cost_table(tiny(), "lenet", TINY)
    # 5 FLOP/param * 294 params = 1470 FLOPs on the CS at 8 bits; nothing to do at 32 bits
    assert list(ct.quantize_time_s) == pytest.approx([1470 / 1e6, 0.0])
    assert list(ct.quantize_energy_j) == pytest.approx([1470 * 1e-4, 0.0])


def test_cost_table_shapes_and_mode_override():
    ct = cost_table(tiny(), "lenet", TINY)
    assert (ct.bits, ct.cuts, ct.edges) == ([8, 32], [1, 2], ["A", "B"])
    assert ct.time_s.shape == ct.energy_j.shape == ct.reasons.shape == (2, 2, 2)
    ext = cost_table(tiny(), "lenet", TINY, cost_model="extended")
    assert (ext.time_s > ct.time_s).all()
    with pytest.raises(ScenarioError, match="cost_model"):
        cost_table(tiny(), "lenet", TINY, cost_model="fancy")


def test_infeasible_options_cost_inf_with_a_reason():
    d = copy.deepcopy(SCENARIO)
    d["edges"][1]["available"] = False
    ct = cost_table(parse_scenario(d), "lenet", TINY)
    assert math.isinf(ct.time_s[0, 0, 1]) and ct.reasons[0, 0, 1] == "edge server B is unavailable"
    assert math.isfinite(ct.time_s[0, 0, 0]) and ct.reasons[0, 0, 0] is None
    d = copy.deepcopy(SCENARIO)
    d["edges"][0]["cloud_link"]["up"] = False
    d["edges"][1]["end_link"]["up"] = False
    ct = cost_table(parse_scenario(d), "lenet", TINY)
    assert ct.reasons[0, 1, 0] == "cloud link to A is down"
    assert ct.reasons[1, 0, 1] == "wireless link B↔sd is down"
    # memory: blocks 1..1 need 16*84 + 2*2*4*20 = 1664 B for training; give the SD 1500 B
    d = copy.deepcopy(SCENARIO)
    d["end_device"]["memory_gib"] = 1500 / 2**30
    ec = epoch_costs(parse_scenario(d), "lenet", 8, 1, "A", profile=TINY)
    assert not ec.feasible and math.isinf(ec.time_s) and math.isinf(ec.energy_j)
    assert ec.reason.startswith("end device memory: blocks 1..1 need")
    assert ec.end_compute_s == pytest.approx(3.5)  # the terms are still shown
    # blocks 3..3 need 16*42 + 16*4 = 736 B on the edge; blocks 2..3 need 16*210 + 16*14 = 3584 B
    d = copy.deepcopy(SCENARIO)
    d["edges"][0]["memory_gib"] = 1000 / 2**30
    ct = cost_table(parse_scenario(d), "lenet", TINY)
    assert ct.reasons[0, 0, 0].startswith("edge memory: blocks 2..3") and ct.reasons[0, 1, 0] is None
    # a cut out of range is infeasible, an unknown edge or bit-width is a user error
    ec = epoch_costs(tiny(), "lenet", 8, 7, "A", profile=TINY)
    assert math.isinf(ec.time_s) and "cut 7 is out of range" in ec.reason
    with pytest.raises(ScenarioError, match="no edge server named 'Z'"):
        epoch_costs(tiny(), "lenet", 8, 1, "Z", profile=TINY)
    with pytest.raises(ScenarioError, match="bits: 4"):
        epoch_costs(tiny(), "lenet", 4, 1, "A", profile=TINY)


def test_compile_instance_follows_the_contract():
    inst = compile_instance(tiny(), profiles={"lenet": TINY})
    assert (inst.deadline_s, inst.target_loss) == (100.0, 0.5)
    assert [c.key for c in inst.candidates] == ["lenet@8"]  # no estimate for 32 bits
    assert inst.meta["missing_estimates"] == ["lenet@32"]
    assert inst.meta["search_bits"] == [8] and inst.meta["baseline_bits"] == [32]
    c = inst.candidates[0]
    assert (c.epochs.expected, c.epochs.robust) == (4, 5)
    assert c.quantize_time_s == pytest.approx(0.00147)
    assert c.loss.start == pytest.approx(0.4) and c.loss.final_robust == 0.48
    assert {(o.edge, o.cut) for o in c.options} == {("A", 1), ("A", 2), ("B", 1), ("B", 2)}
    a1 = next(o for o in c.options if (o.edge, o.cut) == ("A", 1))
    assert a1.epoch_time_s == pytest.approx(19.39694) and a1.epoch_energy_j == pytest.approx(145.258)
    again = PlanningInstance.from_json(inst.to_json())
    assert again.to_dict() == inst.to_dict()


def test_compile_instance_with_estimates_and_infeasible_options():
    d = copy.deepcopy(SCENARIO)
    d["edges"][1]["available"] = False
    measured = [LearningEstimate("lenet", 32, 0.3, 0.0, None, None, source="measured"),
                LearningEstimate("lenet", 8, 0.3, 0.05, 2, 3, source="measured"),
                LearningEstimate("vgg", 8, 0.3, 0.05, 2, 3)]
    inst = compile_instance(parse_scenario(d), measured, profiles={"lenet": TINY})
    by = {c.bits: c for c in inst.candidates}
    assert (by[8].epochs.expected, by[8].epochs.robust) == (2, 3) and by[8].loss is None
    assert by[32].epochs.expected is None and by[32].quantize_time_s == 0.0
    assert {o.edge for o in by[8].options} == {"A"}
    assert {(i["edge"], i["cut"], i["reason"]) for i in by[8].infeasible} == {
        ("B", 1, "edge server B is unavailable"), ("B", 2, "edge server B is unavailable")}
    assert inst.meta["unused_estimates"] == ["vgg@8"] and "missing_estimates" not in inst.meta
    PlanningInstance.from_dict(json.loads(inst.to_json()))


@pytest.mark.parametrize("example, deadline", [("paper-data1.yaml", 180), ("paper-data2.yaml", 2000)])
def test_paper_examples_compile_and_validate(example, deadline):
    s = load_scenario(ROOT / "examples" / example)
    for mode in ("paper", "extended"):
        inst = compile_instance(s, cost_model=mode)
        inst = PlanningInstance.from_json(inst.to_json())  # the DESIGN.md contract
        assert inst.deadline_s == deadline and len(inst.candidates) == 18

        def best_time(c):
            k = c.epochs.robust
            return math.inf if k is None or not c.options else c.quantize_time_s + k * min(
                o.epoch_time_s for o in c.options)

        t = {c.key: best_time(c) for c in inst.candidates}
        if mode == "paper":
            # the paper model has no cut-layer traffic, and the testbed's device files are fitted
            # in the extended model (docs/devices.md): the deadline facts below are extended-only
            continue
        if deadline == 180:
            # Fig. 7 / Table VI: LeNet at 6-8 bits meets 180 s, 2-bit LeNet does not, the
            # Minimal Model (1 bit) cannot reach the target, the Full Model (32 bit) misses 180 s.
            # (4-bit LeNet: K^rob = 48 epochs at the paper's own JQODI epoch, 142.3 s / 36 ≈ 3.95 s,
            # is ≈ 190 s: over 180 s on the fitted testbed too, 199 s.)
            assert all(t[f"lenet@{q}"] <= 180 for q in (6, 8))
            assert t["lenet@2"] > 180 and t["lenet@4"] > 180
            assert all(math.isinf(t[f"{m}@1"]) for m in ("lenet", "vgg", "resnet20"))
            assert all(t[f"{m}@32"] > 180 for m in ("lenet", "vgg", "resnet20"))
            assert math.isfinite(t["vgg@32"])
        else:
            # Fig. 11: on Data 2 every strategy, Full and Minimal Model included, meets 2000 s
            assert min(t[f"{m}@1"] for m in ("lenet", "vgg", "resnet20")) <= 2000
            assert min(t[f"{m}@32"] for m in ("lenet", "vgg", "resnet20")) <= 2000
        # Observations 3-4's trade-off over the cut (the cheapest epoch at a deeper cut than the
        # fastest) does not hold on the fitted testbed: moving work to the Pi costs the ES's and
        # CS's idle power too (tests/test_observations.py, docs/foundation.md "Observation 4").
        # Both are at cut 1 on the RTX 4090 host (the first-stage 433.3 Mbit/s refit had a
        # trade-off over the edge, the RTX 3090 host cheaper; its second stage has none).
        c = next(c for c in inst.candidates if c.key == "lenet@8")
        fastest = min(c.options, key=lambda o: o.epoch_time_s)
        cheapest = min(c.options, key=lambda o: o.epoch_energy_j)
        assert (cheapest.edge, cheapest.cut) == (fastest.edge, fastest.cut) == ("rtx4090", 1)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_POS = st.floats(min_value=1e-300, max_value=1e300, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(end_flops=_POS, edge_flops=_POS, bandwidth=_POS, rate=_POS, power=_POS, memory=_POS,
       train=st.integers(1, 10**9), snr_db=st.floats(-30, 90))
def test_any_valid_numbers_compile_to_finite_options_or_reasons(end_flops, edge_flops, bandwidth, rate, power,
                                                                memory, train, snr_db):
    import warnings

    d = copy.deepcopy(SCENARIO)
    d["end_device"].update(flops=end_flops, busy_power_w=power)
    d["edges"][0].update(flops=edge_flops, memory_gib=memory)
    d["edges"][0]["cloud_link"]["rate_bps"] = rate
    d["edges"][0]["end_link"].update(bandwidth_hz=bandwidth, snr=None, snr_db=snr_db)
    del d["edges"][0]["end_link"]["snr"]
    d["data"]["train_size"] = train
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inst = compile_instance(parse_scenario(d), profiles={"lenet": TINY})
    for c in inst.candidates:
        assert all(math.isfinite(o.epoch_time_s) and o.epoch_time_s > 0 and math.isfinite(o.epoch_energy_j)
                   for o in c.options)
        assert all(i["reason"] for i in c.infeasible)
        assert len(c.options) + len(c.infeasible) == 4
    PlanningInstance.from_json(inst.to_json())
