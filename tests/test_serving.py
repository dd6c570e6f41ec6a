"""Serving (issue 17): the per-request cost model by hand, the scenario block, the instance
contract's optional serving fields, and every solver's whole-life objective
(fine-tuning energy + requests × per-request energy) against an exhaustive check."""
import copy
import dataclasses
import itertools
import json
import math
import random

import pytest

from jqodi.core.costs import compile_instance
from jqodi.core.instance import CandidateServing, PlanningInstance, ServingDemand
from jqodi.core.scenario import parse_scenario
from jqodi.core.serving import choose_serving, request_costs
from jqodi.errors import PlanningError, ScenarioError
from jqodi.planner import check_solution, solve
from jqodi.planner.common import search_candidates, time_budget_s
from jqodi.planner.generate import random_instance
from jqodi.planner.optimal import exact_pareto_dp

from test_costs import SCENARIO, TINY

# Hand-worked per-request costs for TINY (f = 100, 200, 300 FLOPs; F = 600) at 8 bits in the
# tiny scenario: SD 1000 FLOP/s, 0.01 J/FLOP; A 1e4 FLOP/s, 0.005 J/FLOP, link 200 bit/s,
# 0.01 J/bit; B 5000 FLOP/s (×2 at 8 bits), 0.002 J/FLOP, link 100 bit/s, 0.005 J/bit.
# Uplink: a_j elements × 8 bits ("same" act bits) + the answer, 2 classes × 32 bits = 64 bits.
HAND_8 = {
    ("end-only", None, None): (600 / 1000, 600 * 0.01),                               # 0.6 s, 6 J
    ("split", "A", 1): (0.1 + (80 + 64) / 200 + 500 / 1e4, 1 + 144 * 0.01 + 500 * 0.005),  # 0.87, 4.94
    ("split", "A", 2): (0.3 + (40 + 64) / 200 + 300 / 1e4, 3 + 104 * 0.01 + 300 * 0.005),  # 0.85, 5.54
    ("split", "B", 1): (0.1 + 144 / 100 + 500 / 1e4, 1 + 144 * 0.005 + 500 * 0.002 / 2),   # 1.59, 2.22
    ("split", "B", 2): (0.3 + 104 / 100 + 300 / 1e4, 3 + 104 * 0.005 + 300 * 0.002 / 2),  # 1.37, 3.82
}


def scenario(serving=None, **end):
    d = copy.deepcopy(SCENARIO)
    if serving is not None:
        d["serving"] = serving
    d["end_device"].update(end)
    return parse_scenario(d, "tiny")


def by_key(costs):
    return {(c.mode, c.edge, c.cut): c for c in costs}


def test_request_costs_match_the_hand_computation():
    got = by_key(request_costs(scenario(), TINY, 8))
    assert set(got) == set(HAND_8)
    for key, (t, e) in HAND_8.items():
        assert got[key].request_time_s == pytest.approx(t), key
        assert got[key].request_energy_j == pytest.approx(e), key
    # 32 bits: the activation travels at 32 bits ("same"): 10 × 32 + 64 bits over A at cut 1
    c = by_key(request_costs(scenario(), TINY, 32))[("split", "A", 1)]
    assert c.link_s == pytest.approx(384 / 200) and c.link_j == pytest.approx(3.84)


def test_end_idle_power_is_charged_while_the_end_device_waits():
    c = by_key(request_costs(scenario(idle_power_w=2.0), TINY, 8))[("split", "A", 1)]
    assert c.end_idle_j == pytest.approx(2.0 * (0.72 + 0.05))
    assert c.request_energy_j == pytest.approx(4.94 + 1.54)
    assert by_key(request_costs(scenario(idle_power_w=2.0), TINY, 8))[("end-only", None, None)].end_idle_j == 0


@pytest.mark.parametrize("slo, expected, energy", [
    (2.0, ("split", "B", 1), 2.22),    # the cheapest configuration fits
    (1.0, ("split", "A", 1), 4.94),    # B is too slow: the cheapest of A cut 1/2 and end-only
    (0.7, ("end-only", None, None), 6.0),
])
def test_the_serving_configuration_is_the_least_energy_within_the_bound(slo, expected, energy):
    best = choose_serving(request_costs(scenario(), TINY, 8), slo)
    assert (best.mode, best.edge, best.cut) == expected and best.request_energy_j == pytest.approx(energy)
    assert choose_serving(request_costs(scenario(), TINY, 8), 0.5) is None


def test_allowed_modes_restrict_the_choice():
    s = scenario({"requests": 10, "latency_slo_s": 2.0, "devices": ["end-only"]})
    assert {c.mode for c in request_costs(s, TINY, 8)} == {"end-only"}
    inst = compile_instance(s, profiles={"lenet": TINY})
    assert inst.candidates[0].serving.mode == "end-only"


def test_memory_makes_a_configuration_infeasible():
    costs = by_key(request_costs(scenario(memory_gib=1e-9), TINY, 8))
    assert not costs[("end-only", None, None)].feasible
    assert "end device memory" in costs[("end-only", None, None)].reason
    assert math.isinf(costs[("split", "A", 1)].request_energy_j)


def test_compile_adds_the_serving_fields_and_absent_means_none():
    plain = compile_instance(scenario(), profiles={"lenet": TINY})
    assert "serving" not in plain.to_json()  # absent block: the instance JSON is today's
    s = scenario({"rate_per_s": 2, "duration_s": 50, "latency_slo_s": 1.0})
    inst = compile_instance(s, profiles={"lenet": TINY})
    d = json.loads(inst.to_json())
    assert d["serving"] == {"requests": 100.0, "latency_slo_s": 1.0}
    sv = d["candidates"][0]["serving"]
    assert (sv["mode"], sv["edge"], sv["cut"]) == ("split", "A", 1)
    assert sv["request_energy_j"] == pytest.approx(4.94) and sv["fastest_request_time_s"] == pytest.approx(0.6)
    assert PlanningInstance.from_json(inst.to_json()).to_dict() == inst.to_dict()
    from jqodi.render.instance import render_instance

    text = render_instance(inst)
    assert "serving: 100 requests, p95 bound 1 s" in text and "A/cut1" in text
    assert "serving:" not in render_instance(plain)
    # the rest of the instance is unchanged by the block
    for a, b in zip(plain.to_dict()["candidates"], d["candidates"]):
        assert {k: v for k, v in b.items() if k != "serving"} == a


def test_solution_splits_finetuning_and_serving_energy():
    s = scenario({"requests": 100, "latency_slo_s": 1.0})
    inst = compile_instance(s, profiles={"lenet": TINY})
    base = solve(compile_instance(scenario(), profiles={"lenet": TINY}), "optimal")
    sol = solve(inst, "optimal")
    assert sol.extra["finetune_energy_j"] == pytest.approx(base.energy_j)
    assert sol.extra["serving"] == {"mode": "split", "edge": "A", "cut": 1, "request_time_s": pytest.approx(0.87),
                                    "request_energy_j": pytest.approx(4.94), "requests": 100.0,
                                    "energy_j": pytest.approx(494.0), "latency_slo_s": 1.0}
    assert sol.energy_j == pytest.approx(base.energy_j + 494.0)
    assert check_solution(inst, sol) == []
    assert "serving" not in base.to_dict() and "finetune_energy_j" not in base.to_dict()


@pytest.mark.parametrize("serving, field", [
    ({"requests": -1, "latency_slo_s": 1}, "serving.requests"),
    ({"requests": float("inf"), "latency_slo_s": 1}, "serving.requests"),
    ({"requests": float("nan"), "latency_slo_s": 1}, "serving.requests"),
    ({"requests": 10, "latency_slo_s": 0}, "serving.latency_slo_s"),
    ({"requests": 10, "latency_slo_s": -2}, "serving.latency_slo_s"),
    ({"requests": 10, "latency_slo_s": 1, "devices": ["cloud"]}, "serving.devices[0]"),
    ({"requests": 10, "latency_slo_s": 1, "devices": []}, "serving.devices"),
    ({"latency_slo_s": 1}, "serving"),
    ({"requests": 10, "rate_per_s": 1, "duration_s": 5, "latency_slo_s": 1}, "serving"),
    ({"requests": 10, "latency_slo_s": 1, "bogus": 1}, "serving.bogus"),
])
def test_bad_serving_blocks_name_the_field(serving, field):
    with pytest.raises(ScenarioError) as e:
        scenario(serving)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"tiny: {field}"), msg


def test_a_bound_no_candidate_meets_names_the_smallest_feasible_bound():
    with pytest.raises(ScenarioError, match=r"serving\.latency_slo_s: .* smallest bound .* 0\.6 s"):
        compile_instance(scenario({"requests": 10, "latency_slo_s": 0.5}), profiles={"lenet": TINY})


def test_instance_contract_checks_the_serving_fields():
    inst = compile_instance(scenario({"requests": 10, "latency_slo_s": 1.0}), profiles={"lenet": TINY})
    d = json.loads(inst.to_json())
    del d["candidates"][0]["serving"]
    with pytest.raises(PlanningError, match=r"candidates\[0\]\.serving: missing"):
        PlanningInstance.from_dict(d)
    d = json.loads(inst.to_json())
    d["serving"]["requests"] = -5
    with pytest.raises(PlanningError, match=r"serving\.requests"):
        PlanningInstance.from_dict(d)
    d = json.loads(inst.to_json())
    d["candidates"][0]["serving"]["mode"] = "cloud"
    with pytest.raises(PlanningError, match=r"candidates\[0\]\.serving\.mode"):
        PlanningInstance.from_dict(d)


# --------------------------------------------------------------------------- extended: the device files' rooflines
def device_scenario(val_size=500, cost_model="extended", idle_energy=False, end="pi5", serving=None):
    """LeNet ×0.25 on 1×28×28 with device files: SD ``end``, ES A a Pi 5 too (so A's share plus the
    SD's is the whole model on a Pi), ES B an RTX 4090. Links of the tiny scenario."""
    d = copy.deepcopy(SCENARIO)
    d.update(cost_model=cost_model, idle_energy=idle_energy, models=[{"name": "lenet", "width": 0.25}],
             bits=[4, 8])
    d["data"].update(train_size=10, val_size=val_size, input_shape=[1, 28, 28], num_classes=10)
    d["end_device"] = {"name": "sd", "device": end}
    for e, dev in zip(d["edges"], ("pi5", "rtx4090")):
        for k in ("flops", "busy_power_w", "energy_per_flop_j", "bit_speedup", "memory_gib"):
            e.pop(k, None)
        e["device"] = dev
    if serving is not None:
        d["serving"] = serving
    return parse_scenario(d, "devices")


@pytest.fixture(scope="module")
def lenet_28():
    from jqodi.core.profile import profile_named_model

    return profile_named_model("lenet", (1, 28, 28), 10, 0.25)


def training_forward(scenario_kw, prof, term):
    """Training's forward time and energy of one sample, per (bits, cut, edge), read off the epoch
    cost tables: validation 501 samples minus 500 (eval batch 500) is one more batch of one."""
    from jqodi.core.costs import cost_table
    from jqodi.core.train_config import TRAIN_DEFAULTS

    n = TRAIN_DEFAULTS.eval_batch_size
    a = cost_table(device_scenario(val_size=n, **scenario_kw), "lenet", prof)
    b = cost_table(device_scenario(val_size=n + 1, **scenario_kw), "lenet", prof)
    return a, b.time[term] - a.time[term], b.energy[term] - a.energy[term]


@pytest.mark.parametrize("bits", [4, 8, 32])
def test_extended_request_time_is_trainings_forward_time_less_the_weight_quantizers(lenet_28, bits):
    """A request costs what training's validation forward of one sample costs, less the weights'
    fake quantizers: the served model is frozen at load (weights quantized once, not per request)."""
    from jqodi.core.device_model import library_devices, load_device_file

    ct, end_s, end_j = training_forward({}, lenet_28, "end_compute")
    _, edge_s, edge_j = training_forward({}, lenet_28, "edge_compute")
    b = ct.bits.index(bits)
    devs = {n: load_device_file(library_devices()[n]).device() for n in ("pi5", "rtx4090")}

    def weight_quantizers_s(dev, blocks) -> float:
        return sum(dev.layer_time_s(w, 1, bits, "forward") for blk in blocks for w in blk.layers
                   if w.kind == "quantizer" and not w.batched)

    costs = by_key(request_costs(device_scenario(), lenet_28, bits))
    blocks = lenet_28.blocks
    for jj, j in enumerate(ct.cuts):
        for x, (edge, es) in enumerate(zip(ct.edges, ("pi5", "rtx4090"))):
            c = costs[("split", edge, j)]
            wq_end, wq_edge = weight_quantizers_s(devs["pi5"], blocks[:j]), weight_quantizers_s(devs[es], blocks[j:])
            assert (wq_end > 0) == (bits < 32) and (wq_edge > 0) == (bits < 32)
            assert c.end_compute_s == pytest.approx(end_s[b, jj, x] - wq_end, rel=1e-9) and c.end_compute_s > 0
            assert c.end_compute_j == pytest.approx(end_j[b, jj, x] - wq_end * devs["pi5"].busy_power_w, rel=1e-9)
            assert c.edge_compute_s == pytest.approx(edge_s[b, jj, x] - wq_edge, rel=1e-9) and c.edge_compute_s > 0
            assert c.edge_compute_j == pytest.approx(edge_j[b, jj, x] - wq_edge * devs[es].busy_power_w, rel=1e-9)
            assert c.end_idle_j == c.edge_idle_j == 0  # idle_energy off
    # end-only: the whole model on the Pi = the SD's share + ES A's (a Pi 5 too) at any cut
    whole = costs[("end-only", None, None)]
    wq = weight_quantizers_s(devs["pi5"], blocks)
    assert whole.request_time_s == pytest.approx(end_s[b, 0, 0] + edge_s[b, 0, 0] - wq, rel=1e-9)
    assert whole.request_energy_j == pytest.approx(end_j[b, 0, 0] + edge_j[b, 0, 0] - wq * devs["pi5"].busy_power_w,
                                                   rel=1e-9)
    # and it is not the paper's F_a / (v·s(q)): the rooflines count bytes, overheads, quantizers
    paper = by_key(request_costs(device_scenario(cost_model="paper"), lenet_28, bits))[("end-only", None, None)]
    assert not whole.request_time_s == pytest.approx(paper.request_time_s, rel=0.05)


def test_extended_idle_power_is_charged_as_in_training(lenet_28):
    from jqodi.core.device_model import library_devices, load_device_file

    pi5, rtx = (load_device_file(library_devices()[n]) for n in ("pi5", "rtx4090"))
    plain = by_key(request_costs(device_scenario(), lenet_28, 8))
    idle = by_key(request_costs(device_scenario(idle_energy=True), lenet_28, 8))
    c0, c = plain[("split", "B", 2)], idle[("split", "B", 2)]
    assert c.request_time_s == c0.request_time_s  # time is unchanged
    assert c.end_idle_j == pytest.approx(pi5.idle_power_w * (c.link_s + c.edge_compute_s))
    assert c.edge_idle_j == pytest.approx(rtx.idle_power_w * (c.end_compute_s + c.link_s))
    assert c.request_energy_j == pytest.approx(c0.request_energy_j + c.end_idle_j + c.edge_idle_j)
    assert idle[("end-only", None, None)].request_energy_j == plain[("end-only", None, None)].request_energy_j


def test_a_calibrated_device_file_changes_serving_costs_consistently(tmp_path, lenet_28):
    """A device file with slower conv kernels (as ``jqodi calibrate`` might write it): every
    extended request moves by exactly training's forward delta; the paper mode does not move."""
    import yaml

    from jqodi.core.device_model import library_devices

    d = yaml.safe_load(library_devices()["pi5"].read_text())
    d["name"] = "pi5-cal"
    d["layers"]["conv"]["forward"]["flops_per_s"] /= 4
    d["layers"]["conv"]["forward"]["overhead_s"] *= 10
    cal = tmp_path / "pi5-cal.yaml"
    cal.write_text(yaml.safe_dump(d))
    ct, fwd_s, fwd_j = training_forward({}, lenet_28, "end_compute")
    _, fwd_cal_s, fwd_cal_j = training_forward({"end": str(cal)}, lenet_28, "end_compute")
    b = ct.bits.index(8)
    base = by_key(request_costs(device_scenario(), lenet_28, 8))
    new = by_key(request_costs(device_scenario(end=str(cal)), lenet_28, 8))
    for jj, j in enumerate(ct.cuts):
        for x, edge in enumerate(ct.edges):
            a, c = base[("split", edge, j)], new[("split", edge, j)]
            delta = fwd_cal_s[b, jj, x] - fwd_s[b, jj, x]
            assert delta > 0
            assert c.request_time_s - a.request_time_s == pytest.approx(delta, rel=1e-6)
            assert c.request_energy_j - a.request_energy_j == pytest.approx(fwd_cal_j[b, jj, x] - fwd_j[b, jj, x],
                                                                            rel=1e-6)
            assert (c.link_s, c.edge_compute_s) == (a.link_s, a.edge_compute_s)  # only the SD's share moves
    assert new[("end-only", None, None)].request_time_s > base[("end-only", None, None)].request_time_s
    # the paper mode reads only flops, busy power and s(q), which the calibration left alone
    p0 = request_costs(device_scenario(cost_model="paper"), lenet_28, 8)
    p1 = request_costs(device_scenario(cost_model="paper", end=str(cal)), lenet_28, 8)
    figures = [[(c.request_time_s, c.request_energy_j) for c in p] for p in (p0, p1)]
    assert figures[0] == figures[1]


def test_paper_mode_keeps_eq_7_8_for_device_files(lenet_28):
    """``paper`` on device files is F/(v·s(q)) and F·ε/s(q) for one sample, by hand."""
    from jqodi.core.device_model import library_devices, load_device_file

    pi5, rtx = (load_device_file(library_devices()[n]) for n in ("pi5", "rtx4090"))
    f = [float(b.flops) for b in lenet_28.blocks]
    costs = by_key(request_costs(device_scenario(cost_model="paper"), lenet_28, 4))
    s_pi, s_rtx = pi5.bit_time_factor.get(4, 1.0), rtx.bit_time_factor.get(4, 1.0)
    whole = costs[("end-only", None, None)]
    assert whole.request_time_s == pytest.approx(sum(f) * s_pi / pi5.flops, rel=1e-12)
    assert whole.request_energy_j == pytest.approx(sum(f) * s_pi * pi5.busy_power_w / pi5.flops, rel=1e-12)
    c = costs[("split", "B", 2)]
    assert c.edge_compute_s == pytest.approx(sum(f[2:]) * s_rtx / rtx.flops, rel=1e-12)
    assert c.edge_compute_j == pytest.approx(sum(f[2:]) * s_rtx * rtx.busy_power_w / rtx.flops, rel=1e-12)


def test_compile_prices_serving_in_the_epochs_cost_model(lenet_28):
    sc = device_scenario(serving={"requests": 10, "latency_slo_s": 1.0, "devices": ["end-only"]})
    for mode in ("paper", "extended"):
        inst = compile_instance(sc, profiles={"lenet": lenet_28}, cost_model=mode)
        want = by_key(request_costs(sc, lenet_28, 8, cost_model=mode))[("end-only", None, None)]
        got = next(c for c in inst.candidates if c.bits == 8).serving
        assert got.request_energy_j == want.request_energy_j and got.request_time_s == want.request_time_s


# --------------------------------------------------------------------------- planner, exhaustive
SOLVERS = ("jqodi", "optimal", "static", "full-model", "minimal-model")


def with_serving(inst: PlanningInstance, requests: float, slo: float, seed: int = 0) -> PlanningInstance:
    """Give every candidate a serving entry: per-request energy grows with the bits (and with a
    per-model factor), latency too; candidates slower than ``slo`` cannot serve."""
    rng = random.Random(seed)
    factor = {m: rng.uniform(0.5, 2.0) for m in sorted({c.model for c in inst.candidates})}
    cands = []
    for c in inst.candidates:
        e = factor[c.model] * (0.2 + c.bits / 8) * 1e-3
        t = factor[c.model] * (0.05 + c.bits / 16)
        sv = (CandidateServing("end-only", t, e, fastest_request_time_s=t) if t <= slo else
              CandidateServing(None, fastest_request_time_s=t, reason=f"the fastest request takes {t:.4g} s"))
        cands.append(dataclasses.replace(c, serving=sv))
    return PlanningInstance(inst.deadline_s, inst.target_loss, tuple(cands), inst.meta,
                            ServingDemand(float(requests), slo))


def brute_force(inst: PlanningInstance, epochs="robust"):
    """Least whole-life energy over every candidate and every multiset of options."""
    best = math.inf
    for c in search_candidates(inst):
        K = c.epochs.get(epochs)
        sv = c.serving
        if K is None or not c.options or (inst.serving is not None and not sv.feasible):
            continue
        serve = 0.0 if inst.serving is None else inst.serving.requests * sv.request_energy_j
        budget = time_budget_s(inst, c)
        for combo in itertools.combinations_with_replacement(range(len(c.options)), K):
            t = math.fsum(c.options[i].epoch_time_s for i in combo)
            if t <= budget:
                e = c.quantize_energy_j + serve + math.fsum(c.options[i].epoch_energy_j for i in combo)
                best = min(best, e)
    return best


def small(seed):
    return random_instance(seed, models=2, bits=(2, 4, 8, 32), edges=2, cuts=2, epochs=(2, 5), p_unreachable=0.0)


@pytest.mark.parametrize("seed", range(6))
def test_requests_zero_plans_equal_todays(seed):
    inst = small(seed)
    served = with_serving(inst, 0, slo=1e9, seed=seed)
    for name in SOLVERS:
        a, b = solve(inst, name), solve(served, name)
        assert (a.status, a.model, a.bits, a.schedule) == (b.status, b.model, b.bits, b.schedule), name
        if a.status != "infeasible":
            assert b.energy_j == pytest.approx(a.energy_j) and b.extra["serving"]["energy_j"] == 0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("requests", [0, 1e4, 1e6, 1e8])
def test_optimal_minimises_whole_life_energy_exhaustively(seed, requests):
    inst = with_serving(small(seed), requests, slo=1e9, seed=seed)
    best = brute_force(inst)
    sol = solve(inst, "optimal")
    if math.isinf(best):
        assert sol.status == "infeasible"
        return
    assert sol.energy_j == pytest.approx(best, rel=1e-9)
    assert check_solution(inst, sol) == []
    dp = exact_pareto_dp(inst)
    assert dp[0] == pytest.approx(best, rel=1e-9)
    for name in ("jqodi", "static"):
        s = solve(inst, name)
        assert s.status != "infeasible" and check_solution(inst, s) == [] and s.energy_j >= best * (1 - 1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_more_requests_never_choose_more_bits(seed):
    inst = random_instance(seed, models=1, bits=(2, 4, 6, 8), edges=2, cuts=2, epochs=(2, 5), p_unreachable=0.0)
    for name in ("optimal", "static", "jqodi"):
        chosen = []
        for r in (0, 1e2, 1e4, 1e6, 1e8, 1e10):
            sol = solve(with_serving(inst, r, slo=1e9, seed=seed), name)
            if sol.status != "infeasible":
                chosen.append((sol.bits, sol.extra["serving"]["request_energy_j"]))
        assert chosen, name
        assert all(b2 <= b1 for (b1, _), (b2, _) in zip(chosen, chosen[1:])), (name, chosen)
        if name == "optimal":  # per-request energy never grows with requests
            assert all(e2 <= e1 for (_, e1), (_, e2) in zip(chosen, chosen[1:]))


def test_the_latency_bound_excludes_what_it_must():
    inst = small(3)
    # 32-bit candidates take ≥ 0.5·(0.05 + 2) s per request: a 0.9 s bound excludes them all
    served = with_serving(inst, 1e4, slo=0.9, seed=3)
    full = solve(served, "full-model")
    assert full.status == "infeasible"
    expl = full.extra["explanation"]
    assert {u["candidate"] for u in expl["cannot_serve"]} == {c.key for c in served.candidates if c.bits == 32}
    assert "Cannot serve a request within latency_slo_s 0.9 s" in expl["message"]
    for name in ("jqodi", "optimal", "static", "minimal-model"):
        sol = solve(served, name)
        if sol.status != "infeasible":
            c = next(c for c in served.candidates if c.key == f"{sol.model}@{sol.bits}")
            assert c.serving.feasible and c.serving.request_time_s <= 0.9


# --------------------------------------------------------------------------- CLI
def test_plan_cli_shows_the_energy_split_and_the_json_sections(tmp_path, capsys):
    from jqodi.cli import main

    inst = with_serving(small(1), 1e6, slo=1e9, seed=1)
    path = tmp_path / "served.json"
    path.write_text(inst.to_json())
    assert main(["plan", "--instance", str(path), "--solver", "optimal"]) == 0
    out = capsys.readouterr().out
    assert "(fine-tuning + serving)" in out and "fine-tuning " in out
    assert "1e+06 requests ×" in out and "on the end device alone" in out
    assert main(["plan", "--instance", str(path), "--solver", "optimal", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["energy_j"] == pytest.approx(d["finetune_energy_j"] + d["serving"]["energy_j"])
    assert set(d["serving"]) == {"mode", "edge", "cut", "request_time_s", "request_energy_j", "requests", "energy_j",
                                "latency_slo_s"}
    assert main(["plan", "--instance", str(path), "--solver", "all"]) == 0
    out = capsys.readouterr().out
    assert "serving (J)" in out and "fine-tune (J)" in out


def test_plan_cli_a_bound_nobody_meets_exits_2_with_one_line(tmp_path, capsys):
    from jqodi.cli import main
    from jqodi.core.scenario import default_scenario_path

    text = default_scenario_path().read_text() + "\nserving:\n  requests: 1000\n  latency_slo_s: 1.0e-6\n"
    path = tmp_path / "s.yaml"
    path.write_text(text)
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "serving.latency_slo_s" in err and "smallest bound" in err
    path.write_text(default_scenario_path().read_text() + "\nserving:\n  requests: -3\n  latency_slo_s: 1\n")
    assert main(["plan", str(path)]) == 2
    assert "serving.requests" in capsys.readouterr().err


# --------------------------------------------------------------------------- sweep (evaluation)
def test_lower_envelope_and_crossovers_by_hand():
    from jqodi.app.serving import ServingLine, lower_envelope

    def line(key, ft, req):
        m, b = key.split("@")
        return ServingLine(m, int(b), ft, req, 0.01, "end-only", None, None)

    a, b, c, d = line("m@8", 100.0, 1.0), line("m@4", 200.0, 0.5), line("m@2", 1000.0, 0.1), line("n@8", 150.0, 2.0)
    env = lower_envelope([a, b, c, d])
    # a→b where 100 + R = 200 + 0.5R → R = 200; b→c where 200 + 0.5R = 1000 + 0.1R → R = 2000
    assert [(r, ln.key) for r, ln in env] == [(0.0, "m@8"), (200.0, "m@4"), (2000.0, "m@2")]


def test_serving_sweep_finds_the_crossover_and_the_solvers_follow_it(tmp_path):
    from jqodi.app.serving import serving_sweep
    from jqodi.render.serving import plot_serving_crossover, serving_tables

    inst = with_serving(random_instance(2, models=1, bits=(2, 4, 8), edges=2, cuts=2, epochs=(2, 5),
                                        p_unreachable=0.0), 0, slo=1e9, seed=2)
    sweep = serving_sweep(inst, solve=solve, requests=(0, 1e8), solvers=("optimal",))
    assert [(c["from"], c["to"]) for c in sweep.crossovers] == [("m0@4", "m0@2")]  # fewer bits pay from ~1.3e5
    ft = {ln.key: ln.finetune_energy_j for ln in sweep.lines}
    for ln in sweep.lines:  # each line's fine-tuning energy is the candidate's own optimum
        alone = PlanningInstance(inst.deadline_s, inst.target_loss,
                                 tuple(c for c in inst.candidates if c.key == ln.key), {})
        assert ft[ln.key] == pytest.approx(solve(alone, "optimal").energy_j)
    at = {r["requests"]: r for r in sweep.chosen}
    for r, row in at.items():  # the plan chosen at R is the envelope's line at R
        best = min(sweep.lines, key=lambda ln: ln.energy_j(r))
        assert (row["model"], row["bits"]) == (best.model, best.bits)
        assert row["energy_j"] == pytest.approx(best.energy_j(r))
    for c in sweep.crossovers:
        f, t = (next(ln for ln in sweep.lines if ln.key == k) for k in (c["from"], c["to"]))
        assert f.energy_j(c["requests"]) == pytest.approx(t.energy_j(c["requests"]))
    text = serving_tables(sweep)
    assert "chosen plan per number of requests" in text and "crossovers:" in text
    assert plot_serving_crossover(sweep, tmp_path / "x.png").stat().st_size > 0


# --------------------------------------------------------------------------- runtime: jqodi infer --plan
def _emulation():
    """SD 2 GFLOP/s at 10 W, ES 'a' 50 GFLOP/s at 200 W, a 50 Mbit/s link at 1 nJ/bit."""
    from jqodi.core.devices import Device
    from jqodi.runtime.job import EmulationConfig, LinkProfile

    return EmulationConfig(enabled=True, dilation=1.0,
                           devices={"end": Device.from_power("sd", 2e9, 10.0),
                                    "edge:a": Device.from_power("es", 5e10, 200.0),
                                    "cloud": Device.from_power("cs", 1e11, 300.0)},
                           links={"edge:a|end": LinkProfile(5e7, 1e-9), "cloud|edge:a": LinkProfile(1e9, 1e-9)})


def _infer_workdir(tmp_path):
    from jqodi.runtime.job import Job

    if not __import__("pathlib").Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST not installed")
    emu = _emulation()
    # random initial weights: what is served and timed does not depend on them, and nothing is
    # pretrained into $JQODI_HOME (≈ 50 s on a fresh one, the first time)
    job = Job.from_dict({"model": "lenet", "bits": 4, "width": 0.125,
                         "schedule": [{"edge": "a", "cut": 2, "epochs": 1}],
                         "data": {"train_size": 32, "val_size": 16}, "pretrained": {"source": "random", "seed": 0},
                         "training": {"batch_size": 32, "eval_batch_size": 16}, "timeout_s": 10, "meter": "null"})
    job = job.replace(emulation=emu)
    (tmp_path / "job.json").write_text(json.dumps(job.to_dict()))
    return job


@pytest.mark.parametrize("mode", ["end-only", "split"])
def test_infer_serves_with_the_planned_configuration_and_checks_the_bound(tmp_path, capsys, mode):
    from jqodi.cli import main

    _infer_workdir(tmp_path)
    sv = {"mode": mode, "edge": "a" if mode == "split" else None, "cut": 2 if mode == "split" else None,
          "request_time_s": 0.01, "request_energy_j": 0.05, "requests": 1000.0, "energy_j": 50.0,
          "latency_slo_s": 10.0}
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"status": "optimal", "solver": "optimal", "model": "lenet", "bits": 4,
                                "schedule": [], "energy_j": 1.0, "time_s": 1.0, "serving": sv}))
    assert main(["infer", "--workdir", str(tmp_path), "--requests", "4", "--plan", str(plan),
                 "--json", str(tmp_path / "i.json")]) == 0
    out = capsys.readouterr().out
    assert "planned serving: " in out and "p95 ≤ 10 s: held" in out
    res = json.loads((tmp_path / "i.json").read_text())
    assert len(res) == 1 and res[0]["edge"] == sv["edge"] and res[0]["requests"] == 4
    got = res[0]["planned_serving"]
    assert got["bound_held"] is True and got["latency_p95_s"] == res[0]["latency_p95_s"]
    assert got["predicted_request_energy_j"] == 0.05
    # a plan for another model, or without a serving section: one line, exit 2
    plan.write_text(json.dumps({"model": "vgg", "bits": 4, "serving": sv}))
    assert main(["infer", "--workdir", str(tmp_path), "--plan", str(plan)]) == 2
    assert "--plan: the plan serves vgg@4 but the run fine-tuned lenet@4" in capsys.readouterr().err
    plan.write_text(json.dumps({"model": "lenet", "bits": 4}))
    assert main(["infer", "--workdir", str(tmp_path), "--plan", str(plan)]) == 2
    assert "has no serving section" in capsys.readouterr().err


def test_core_serving_predictions_match_what_infer_measures():
    """The planner's per-request cost (jqodi.core.serving) against run_inference on the same
    emulated devices: energy (model meter) within 2 %; latency never below the prediction (the
    emulation pads every step to the device's time, the host only adds)."""
    import torch

    from jqodi.core.profile import profile_named_model
    from jqodi.runtime.inference import run_inference
    from jqodi.runtime.job import Job
    from test_runtime import SHAPE, _Data, _master

    torch.set_num_threads(1)
    emu = _emulation()
    job = Job.from_dict({"model": "lenet", "bits": 4, "width": 0.125, "schedule": [{"edge": "a", "cut": 2, "epochs": 1}],
                         "training": {"batch_size": 32, "eval_batch_size": 20}, "timeout_s": 10,
                         "meter": "null"}).replace(emulation=emu)
    data = _Data(n_train=32, n_val=20)
    measured = {r.edge: r for r in run_inference(job, _master(data), data, requests=20)}
    sc = parse_scenario({
        "deadline_s": 10, "target_loss": 1, "models": [{"name": "lenet", "width": 0.125}], "bits": [4],
        "data": {"train_size": 32, "val_size": 20, "input_shape": list(SHAPE), "num_classes": 10},
        "cloud": {"name": "cs", "flops": 1e11, "busy_power_w": 300},
        "edges": [{"name": "a", "flops": 5e10, "busy_power_w": 200,
                   "cloud_link": {"rate_bps": 1e9, "energy_per_bit_j": 1e-9},
                   "end_link": {"bandwidth_hz": 5e7, "snr": 1, "energy_per_bit_j": 1e-9}}],  # 5e7 bit/s
        "end_device": {"name": "sd", "flops": 2e9, "busy_power_w": 10},
        "training": {"act_bits": 32}})  # the job sends fp32 cut activations (wire_act_bits 32)
    pred = by_key(request_costs(sc, profile_named_model("lenet", SHAPE, 10, 0.125), 4))
    for edge, key in (("a", ("split", "a", 2)), (None, ("end-only", None, None))):
        m, p = measured[edge], pred[key]
        assert m.energy_j == pytest.approx(p.request_energy_j, rel=0.02), key
        assert m.latency_p50_s >= p.request_time_s * 0.98, key
