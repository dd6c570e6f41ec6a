"""Observations 1-4 of the paper's Section II on the fitted paper testbed (the packaged device
files, examples/paper-data1.yaml, extended cost model with idle power) and on the alternative
testbed (src/jqodi/devices/obs4/, jqodi:paper-data1-obs4). Observation 4 is the paper's "first
decreasing and then increasing": it fails on the default testbed, and the tests pin down why; it
holds on the alternative, at idle ≥ 0.25 × the rated idle powers and a large cost in figure error
(docs/foundation.md, "Observation 4")."""
from pathlib import Path

import numpy as np
import pytest

from jqodi.core.costs import compile_instance, cost_table
from jqodi.core.scenario import load_scenario

from _scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
ORDER = [1, 2, 4, 6, 8, 32]


#: The alternative testbed's idle floor: every idle power ≥ this × Tables II-IV's rated idle.
OBS4_IDLE_FLOOR = 0.25


def _tables(ref):
    sc = load_scenario(ref)
    return sc, {m.name: cost_table(sc, m.name) for m in sc.models}


@pytest.fixture(scope="module", params=[str(ROOT / "examples" / "paper-data1.yaml"), "jqodi:paper-data1-obs4"],
                ids=["packaged", "obs4"])
def data1(request):
    """Observations 1-3 hold on both testbeds."""
    return _tables(request.param)


@pytest.fixture(scope="module")
def packaged1():
    return _tables(ROOT / "examples" / "paper-data1.yaml")


def _by_bits(ct, arr):
    return np.stack([arr[ct.bits.index(q)] for q in ORDER])


def test_observation_1_fewer_bits_and_a_smaller_model_cost_less_per_epoch(data1):
    sc, tables = data1
    lenet, vgg = tables["lenet"], tables["vgg"]
    for arr in (lenet.energy_j, lenet.time_s):  # every (cut, edge): non-decreasing in bit-width
        a = _by_bits(lenet, arr)
        assert np.all(np.diff(a, axis=0) >= -1e-9)
    # 8 bits cost visibly more than 6 (s(q) is data now: the paper's totals imply it)
    b6, b8 = lenet.bits.index(6), lenet.bits.index(8)
    assert np.all(lenet.energy_j[b8] > 1.05 * lenet.energy_j[b6])
    # the LeNet-like model at 1 bit is cheaper and faster than VGG at any bit-width, cut and edge
    b1 = lenet.bits.index(1)
    assert lenet.energy_j[b1].min() < vgg.energy_j[np.isfinite(vgg.energy_j)].min()
    assert lenet.time_s[b1].min() < vgg.time_s[np.isfinite(vgg.time_s)].min()


def test_observation_2_not_every_choice_is_feasible(data1):
    sc, _ = data1
    inst = compile_instance(sc)
    cand = {c.key: c for c in inst.candidates}
    # 1-bit LeNet never reaches the target (Table VI's ∞ / the Minimal Model's square)
    assert cand["lenet@1"].epochs.expected is None
    from jqodi.planner import solve

    for solver in ("jqodi", "static"):
        assert solve(inst, solver).bits != 1
    # and the full-precision models cannot finish within T_max = 180 s at all
    fastest = min(cand["vgg@32"].quantize_time_s + cand["vgg@32"].epochs.robust * o.epoch_time_s
                  for o in cand["vgg@32"].options)
    assert fastest > sc.deadline_s


def test_observation_3_the_sd_is_slower_but_cheaper_than_the_es(data1):
    """Per node in the paper's plans (cut 1; Fig. 8): the SD works longer for less energy. Not
    for ResNet20 at cut 1, whose first block is one small conv (the SD's 0.67 s < the ES's 0.76 s)."""
    _, tables = data1
    for model in ("lenet", "vgg"):
        ct = tables[model]
        for q in (2, 4, 6, 8):
            for edge in ct.edges:
                e = ct.epoch(q, 1, edge)  # the cut of every paper plan
                assert e.end_compute_s > e.edge_compute_s, (model, q, edge)
                assert e.end_compute_j + e.end_idle_j < e.edge_compute_j + e.edge_idle_j, (model, q, edge)


def _fit_script():
    return load_script("benchmarks/fit_paper_testbed.py", "fit_paper_testbed")


def test_observation_4_cannot_hold_with_the_idle_power_the_paper_rates():
    """The proof of docs/foundation.md ("Observation 4"), from the paper's own figures only: in
    Fig. 3's setting an interior cut puts LeNet's block 2 on the Pi, which needs ≥ 4.17 s more
    per epoch even with the paper's 18 s VGG inference fitted 25 % short, at the fit's lowest
    s(q) and under any Pi roofline (its share of the inference time is least compute-bound); the ES and CS idle meanwhile, and all that cut 1 can save is ≤ its own
    epoch energy (≤ 1.25 × 7651.3 J / 36). So Observation 4 needs ES + CS idle < 60 W, where
    Tables III-IV rate the RTX 3090 host and the A100 at 95 + 66 = 161 W idle."""
    fit = _fit_script()
    b = fit.obs4_idle_bound(fit.Predictor())
    assert b["pi_extra_time_min_s"] == pytest.approx(6500 * 37_937_152 * 0.5 / (500 * 797_747_210 / (0.75 * 18.0)))
    assert b["idle_es_plus_cs_max_w"] == pytest.approx(63.7, abs=0.1)
    assert b["block2_share_of_inference_used"] <= b["block2_share_of_inference_least"]  # any Pi roofline
    assert b["idle_es_plus_cs_rated_w"] == 161.0 > 2.5 * b["idle_es_plus_cs_max_w"]


def test_observation_4_with_an_idle_floor_needs_f_below_a_third():
    """The floor form of that proof (docs/foundation.md, "Observation 4 on the fitted testbed"):
    at any cut c ≥ 2 the Pi runs LeNet's blocks 1-2, ≥ 34.7 % of its VGG inference under any
    roofline at s(4) ≥ 0.5, so ≥ 4.68 s with the inference ≥ 13.5 s; the ES and CS idle and the Pi
    draws ≥ 3.75 W meanwhile, so E(c) ≥ (ES + CS idle + 3.75 W) × 4.68 s, and E(c) < E(1) ≤
    265.7 J needs ES + CS idle < 53.0 W: F < 0.329 of Tables III-IV's 161 W with the RTX 3090 as
    ES (F < 0.524 of 101 W with the RTX 4090, whose LeNet epoch the paper does not price)."""
    fit = _fit_script()
    b = fit.obs4_idle_floor_bound(fit.Predictor())
    assert b["epochs_6bit"] == 36 and b["epoch_energy_cut1_max_j"] == pytest.approx(1.25 * 7651.3 / 36)
    assert b["blocks12_share_of_inference_least"] == pytest.approx(b["blocks12_share_compute_bound"])
    assert b["blocks12_share_of_inference_least"] == pytest.approx(0.3470, abs=1e-4)
    assert b["pi_time_cut2_min_s"] == pytest.approx(0.3470 * 13.5, abs=2e-3)
    assert b["pi_time_cut2_min_s"] > fit.obs4_idle_bound(fit.Predictor())["pi_extra_time_min_s"]  # tighter
    es3090, es4090 = b["per_edge"]["rtx3090"], b["per_edge"]["rtx4090"]
    assert es3090["idle_floor_max"] == pytest.approx((265.67 / 4.6848 - 3.75) / 161, abs=1e-3)
    assert es3090["idle_floor_max"] == pytest.approx(0.329, abs=1e-3)
    assert es4090["idle_floor_max"] == pytest.approx(0.524, abs=1e-3)
    assert es3090["idle_es_plus_cs_max_w"] == pytest.approx(53.0, abs=0.05)


def test_the_idle_floor_proof_steps_hold_in_the_cost_model():
    """Each step of obs4_idle_floor_bound checked on the cost model itself, on a set where
    Observation 4 holds (the Observation-4 search's seed-17 result, idle energy counted): the
    Pi's compute at every cut c ≥ 2 is ≥ κ₁₂ × that set's own VGG inference time (any roofline),
    and E(c) ≥ (ES idle + CS idle + Pi busy) × the Pi's compute time (the epoch's phases add up;
    the ES and CS idle while the Pi computes). A cost model that overlapped the phases, or
    stopped charging idle power while a peer computes, would fail here."""
    import json

    fit = _fit_script()
    result = json.loads((ROOT / "benchmarks/results/fit_paper_testbed_minimax_link433_obs4_seed17.json").read_text())
    fit.FREE_BW = fit.FREE_S = True
    try:
        params = result["parameters"]
        p = np.array([params[n] if n.endswith("idle_share") else np.log(params[n]) for n in fit.NAMES])
        pred = fit.Predictor()
        files = fit.device_files(p)
        # an interior cut below cut 1 and the last (the weak form, what the proof bounds: E(c) < E(1)
        # for some c ≥ 2); not the paper's "first decreasing": cut 2 costs 0.55 % more than cut 1
        obs = fit.observations(pred, files, margin=0.0)
        assert obs["obs4_weak"] == 0.0 < obs["obs4"]
        b = fit.obs4_idle_floor_bound(pred)
        inference_s = pred.predict(files)[-1]
        ct = pred.tables(files, "data1", "lenet", [4])
        pi, es, cs = files["pi5"], files["rtx3090"], files["a100"]
        for cut in ct.cuts[1:]:
            e = ct.epoch(4, cut, "rtx3090")
            assert e.end_compute_s >= b["blocks12_share_of_inference_least"] * inference_s * (1 - 1e-9)
            assert e.time_s >= e.end_compute_s
            assert e.energy_j >= (es.idle_power_w + cs.idle_power_w + pi.busy_power_w) * e.end_compute_s
    finally:
        fit.FREE_BW = fit.FREE_S = False


def test_idle_energy_at_the_rated_idle_powers_contradicts_the_papers_energies():
    """The proof of docs/foundation.md ("Idle energy and the paper's figures"): with idle energy
    counted, the ES and CS draw at least their idle power all through every epoch, so a run
    costs ≥ (P_idle,ES + P_idle,CS) × its epoch time. Each of Fig. 7(c)'s runs averaged 52-58 W
    for the whole testbed; even with the ±25 % the fit allows (energy +25 %, time −25 %) the ES
    and CS may idle at ≤ 86-96 W together, where Tables III-IV rate them 101-161 W (the RTX 3090
    host alone 95 W). So the paper's energies exclude idle energy at its rated idle powers."""
    fit = _fit_script()
    rows = {r["run"]: r for r in fit.idle_power_bound(fit.Predictor())}
    jqodi = rows["Data 1 JQODI"]
    assert jqodi["paper_mean_power_w"] == pytest.approx(7651.3 / 142.335)
    assert jqodi["idle_es_plus_cs_max_w"] == pytest.approx(1.25 * 7651.3 / (0.75 * 142.335), rel=1e-6)
    assert jqodi["idle_es_plus_cs_max_w"] == pytest.approx(89.6, abs=0.1)
    assert jqodi["idle_es_plus_cs_max_w"] < jqodi["idle_es_rated_w"] == 95.0
    assert rows["Data 1 Optimum"]["idle_es_plus_cs_max_w"] == pytest.approx(85.9, abs=0.1)
    assert rows["Data 1 Full Model"]["idle_es_plus_cs_max_w"] == pytest.approx(96.2, abs=0.1)
    for r in rows.values():
        assert r["idle_es_plus_cs_max_w"] < r["idle_es_plus_cs_rated_w"] and r["quantize_time_s"] < 1e-3


def test_the_full_model_time_needs_a_faster_wifi_than_the_pi5_radio():
    """The proof of docs/foundation.md ("The Full Model's time and the Wi-Fi"): per epoch VGG's
    block-1 activations (131,072 per image, 8 bits, 2000 images both ways + 500 forward) are
    4.72 Gbit and the fp32 model crosses the 1 Gbit/s wire twice (1.14 s); the Pi's block 1
    takes ≥ κ = 12.6 % of its VGG inference (≥ 13.5 s within −25 %) under any roofline. 33
    epochs within +25 % of 330.86 s then need ≥ 487 Mbit/s; the Pi 5's one-stream 802.11ac
    radio peaks at 433.3 Mbit/s (PHY), where the run takes ≥ 453 s (+37 %)."""
    fit = _fit_script()
    b = fit.full_model_link_bound(fit.Predictor())
    assert b["activation_bits_per_epoch"] == 131072 * (2000 * 16 + 500 * 8)
    assert b["cloud_edge_s_per_epoch"] == pytest.approx(1.1412, abs=1e-4)
    assert b["kappa_least"] == pytest.approx(b["kappa_compute_bound"]) == pytest.approx(0.1260, abs=1e-4)
    assert b["pi_block1_min_s"] == pytest.approx(0.1260 * 13.5, abs=1e-3)
    rob = b["k_robust"]
    assert rob["epochs"] == 33 and rob["wifi_bps_needed"] == pytest.approx(
        b["activation_bits_per_epoch"] / (1.25 * 330.86 / 33 - b["cloud_edge_s_per_epoch"] - b["pi_block1_min_s"]))
    # the scenarios' link is the radio's peak PHY rate itself (80 MHz at 16.2016 dB; 665 Mbit/s until
    # 2026-12-01), so the bound applies to the shipped scenario as it stands
    assert rob["wifi_bps_needed"] > b["pi5_wifi_max_bps"] == 433.3e6
    assert b["scenario_wifi_bps"] == pytest.approx(433.3e6, rel=1e-5)
    assert rob["time_at_pi5_radio_s"] > 1.25 * 330.86
    assert b["k_expected"]["wifi_bps_needed"] == pytest.approx(431e6, rel=2e-3)


def test_fit_evaluator_prices_blocks_as_the_device_model_does():
    """The fit's vectorised, memoised block pricing (benchmarks/fit_paper_testbed.py) gives the
    same epoch times as DeviceModel.block_epoch_time_s, for random parameters of every device."""
    fit = _fit_script()
    fit.FREE_BW = fit.FREE_S = True
    try:
        pred = fit.Predictor()
        lo, hi, _ = fit._bounds_and_prior()
        rng = np.random.default_rng(0)
        for _ in range(3):
            files = fit.device_files(lo + (hi - lo) * rng.uniform(0, 1, lo.size))
            for name in fit.COMPUTE:
                dev = files[name].device()
                fast = fit._memo_device(dev)
                for key in ("data1", "data2"):
                    sc, _, profs = pred.sc[key]
                    n, v = sc.data.train_size, sc.data.val_size
                    for prof in profs.values():
                        for blk in prof.blocks:
                            for q in (1, 2, 4, 6, 8, 32):
                                want = dev.block_epoch_time_s(blk, n, v, 64, 500, q)
                                assert fast.block_epoch_time_s(blk, n, v, 64, 500, q) == pytest.approx(want, rel=1e-12)
    finally:
        fit.FREE_BW = fit.FREE_S = False


def test_observations_checker_agrees_with_these_tests_on_the_packaged_fit():
    """benchmarks/fit_paper_testbed.py's observations() (the constrained fit's hinges) reads the
    packaged testbed as these tests and tests/test_costs.py do: Observations 1-3 and Table VI's
    feasibility facts hold, Observation 4 does not."""
    fit = _fit_script()
    from jqodi.core.device_model import load_device_file, packaged_devices_dir

    files = {n: load_device_file(packaged_devices_dir() / f"{n}.yaml") for n in ("pi5", "rtx3090", "rtx4090", "a100")}
    obs = fit.observations(fit.Predictor(), files, margin=0.0)
    assert obs["obs1"] == obs["obs2"] == obs["obs3"] == obs["table6"] == 0.0
    assert obs["obs4"] > 0.5 and obs["obs4_weak"] > 0.5


def test_observation_4_does_not_hold_here_and_why(packaged1):
    """Energy grows with the cut for every (model, bits, edge) on the fitted testbed: moving a
    block to the Pi costs its busy energy *and* the idle power of the ES and CS while it runs,
    per FLOP far more than the ES spends. See docs/foundation.md, "Observation 4"."""
    sc, tables = packaged1
    for ct in tables.values():
        e = ct.energy_j
        assert np.all(np.diff(e, axis=1)[np.isfinite(np.diff(e, axis=1))] > 0)
    pi, es = sc.end_device.device(), sc.edges[0].device()
    cs = sc.cloud.device()
    pi_j_per_flop = (pi.busy_power_w + es.idle_power_w + cs.idle_power_w) / pi.flops
    es_j_per_flop = (es.busy_power_w + pi.idle_power_w + cs.idle_power_w) / es.flops
    assert pi_j_per_flop > 10 * es_j_per_flop


@pytest.mark.parametrize("name, pi_busy_min_w", [
    ("minimax_overhead600us", 0.0), ("minimax_overhead600us_pi375", 3.75), ("minimax_bounded", 3.75),
    ("minimax_link433", 3.75), ("minimax_link433_stage2", 3.75), ("minimax_link433_stage2_seed23", 3.75),
    ("noidle_rated", 3.7875), ("noidle_rated_seed35", 3.7875), ("noidle_rated_seed37", 3.7875),
    ("noidle_rated_seed39", 3.7875), ("noidle_rated_stage2", 3.7875),
    ("minimax_link433_obs4_floor025_seed42", 3.75), ("minimax_link433_obs4strict_floor025_seed49", 3.75),
    ("minimax_link433_obs4strict_floor025_seed50", 3.75)])
def test_minimax_search_result_keeps_its_hard_constraints(name, pi_busy_min_w):
    """The minimax search of docs/foundation.md ("Settling item 4", "The minimax search"): its
    committed results meet every hard constraint (both Optimum models, Observations 1-3 and
    Table VI's facts as the tests read them) with every per-call overhead within the bound it
    was searched under (0.6 ms: twice the most this host's `calibrate` measured) and the Pi 5's
    busy power at least the bound it was searched under (3.75 W, Table II's idle power, from the
    second on; 3.7875 W = 1.01 × that for the paper's-accounting results), and their figures are what the JSONs report; a second stage (``--second-stage``,
    docs/foundation.md "A second stage") keeps every figure's |log error| within its WORST. Each
    is checked in the accounting it was searched in (its JSON's ``options``: idle energy counted
    or not, rated idle powers in the files: docs/foundation.md "The paper's accounting")."""
    import json

    fit = _fit_script()
    result = json.loads((ROOT / f"benchmarks/results/fit_paper_testbed_{name}.json").read_text())
    assert result["global_search"]["minimax"] and result["global_search"]["overhead_max_s"] == 6e-4
    assert result["global_search"].get("pi_busy_min_w", 0.0) == pi_busy_min_w
    params = result["parameters"]
    assert params["pi5.busy_w"] >= pi_busy_min_w * (1 - 1e-9)
    assert all(params[f"{d}.overhead_s"] <= 6e-4 * (1 + 1e-9) for d in fit.COMPUTE)
    fit.FREE_BW = fit.FREE_S = True
    fit.RATED_IDLE = result["options"].get("rated_idle", False)
    fit.IDLE_FLOOR = result["options"].get("idle_floor", 0.0)  # the Observation-4 search at 0.25 × rated idle
    try:
        p = np.array([params[n] if n.endswith("idle_share") else np.log(params[n]) for n in fit.NAMES])
        # on the link it was searched on (665 Mbit/s until 2026-12-01, then 433.3 Mbit/s)
        pred = fit.Predictor(idle_energy=result["options"]["idle_energy"],
                             wifi_bps=result["full_model_link_bound"]["scenario_wifi_bps"])
        files = fit.device_files(p)
        v = fit.violations(pred, files, margin=0.0)
        groups = result["global_search"]["groups"]  # + obs4 for the Observation-4 searches
        if result["global_search"].get("obs4_form") != "strict":
            # searched before 2026-12-01, when the group obs4 was the weak form (an interior minimum);
            # the strict form (first falling, then rising) fails on them: tested below
            groups = ["obs4_weak" if g == "obs4" else g for g in groups]
        assert {"data1_choice", "data2_choice", "obs1", "obs2", "obs3", "table6"} <= set(groups)
        assert {g: v[g] for g in groups} == {g: 0.0 for g in groups}
        got = pred.predict(files)
        # rel 1e-6, not exact: the one-off quantization's energy (≈ 1 mJ of ≈ 10 kJ) is priced by
        # core's quantization_cost with the scenario's cloud file, the A100 packaged when it runs
        assert got == pytest.approx([r["fitted"] for r in result["residuals"]], rel=1e-6)
        worst = result["global_search"].get("second_stage_worst_log")
        if worst is not None:
            log_err = np.log(got) - np.log([f[-1] for f in fit.FIGURES])
            assert np.max(np.abs(log_err)) <= worst
            assert result["sum_sq_log_error"] == pytest.approx(float(np.sum(log_err ** 2)), rel=1e-6)
        if fit.RATED_IDLE:  # the files carry Tables II-IV's idle powers, below every busy power
            for d in ("pi5", "rtx3090", "rtx4090", "a100"):
                assert files[d].idle_power_w == fit.SPEC[d]["rated_idle_w"] < files[d].busy_power_w
    finally:
        fit.FREE_BW = fit.FREE_S = fit.RATED_IDLE = False
        fit.IDLE_FLOOR = 0.0


def _flat(d, prefix=""):
    """A nested dict as {dotted key: leaf}, for pytest.approx."""
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_packaged_testbed_is_the_bounded_minimax_result():
    """The packaged device files are the second stage of the bounded minimax search on the Wi-Fi
    the Pi 5 can have (docs/foundation.md, "A second stage": the smallest sum of squared log errors
    among the eligible results within 0.5 point of the smallest worst error), written by
    ``--package RESULT --write``, and that set keeps the bounds it was searched under: each GPU
    host at ≤ 50 % of its FP32 peak, the two within a factor 2 of each other, every busy power ≥
    the rated idle power of Tables II-IV; it was searched on the scenarios' 433.3 Mbit/s link."""
    import json

    from jqodi.core.device_model import load_device_file, packaged_devices_dir

    fit = _fit_script()
    result = json.loads((ROOT / "benchmarks/results/fit_paper_testbed_minimax_link433_stage2_seed23.json").read_text())
    packaged = json.loads((ROOT / "benchmarks/results/fit_paper_testbed_packaged.json").read_text())
    assert packaged["packaged_from"].endswith("fit_paper_testbed_minimax_link433_stage2_seed23.json")
    assert packaged["parameters"] == result["parameters"]
    assert result["full_model_link_bound"]["scenario_wifi_bps"] == pytest.approx(433.3e6, rel=1e-5)
    assert packaged["residuals"] == result["residuals"]
    g = result["global_search"]
    assert (g["gpu_u_max"], g["gpu_u_ratio_max"], g["gpu_busy_min_idle"], g["pi_busy_min_w"]) == (0.5, 2.0, 1.0, 3.75)
    assert g["violations"]["gpu_u_ratio"] == 0.0 and g["sum"] == 0.0
    p = result["parameters"]
    assert max(p["rtx3090.u"], p["rtx4090.u"]) <= 0.5 * (1 + 1e-9)
    assert max(p["rtx3090.u"], p["rtx4090.u"]) / min(p["rtx3090.u"], p["rtx4090.u"]) <= 2 * (1 + 1e-9)
    for name in ("pi5", "rtx3090", "rtx4090", "a100"):
        assert p[f"{name}.busy_w"] >= fit.SPEC[name]["rated_idle_w"] * (1 - 1e-6)
        on_disk = load_device_file(packaged_devices_dir() / f"{name}.yaml")
        assert _flat(on_disk.model_dump(mode="json", exclude_none=True)) == pytest.approx(_flat(packaged["devices"][name]))
    # 0.6596 for the first stage (packaged before), 0.3647 on the 665 Mbit/s link
    assert result["worst_abs_error"] == pytest.approx(0.6589, abs=1e-4)
    assert result["sum_sq_log_error"] == pytest.approx(0.2745, abs=1e-4)  # the first stage's: 0.7791
    assert result["global_search"]["second_stage_worst_log"] == 0.5092  # log 1.664: within 0.5 point of +66.0 %


def test_fit_script_records_repo_relative_paths_and_guards_rated_idle(tmp_path, capsys):
    """Result JSONs name their --init / --seeds / --package files relative to the repository (a
    /tmp checkpoint is recorded as it is, with a warning: nobody could reproduce the run), and
    ``--rated-idle`` refuses busy floors that would not keep the rated idle power below busy."""
    fit = _fit_script()
    inside = ROOT / "benchmarks" / "results" / "fit_paper_testbed_packaged.json"
    assert fit._repo_path(str(inside)) == "benchmarks/results/fit_paper_testbed_packaged.json"
    outside = tmp_path / "ckpt.json"
    assert fit._repo_path(str(outside)) == str(outside.resolve())
    assert "outside the repository" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        fit.main(["--rated-idle", "--pi-busy-min", "3.75", "--gpu-busy-min-idle", "1.01", "--prove"])
    # (argparse's usage line names --rated-idle too: the guard's own words)
    assert e.value.code == 2 and "--rated-idle: needs --pi-busy-min above" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # an alternative testbed's folder is only for writing one
        fit.main(["--devices-dir", str(tmp_path), "--prove"])
    assert e.value.code == 2 and "--devices-dir: needs --write" in capsys.readouterr().err


_A_RESULT = str(ROOT / "benchmarks/results/fit_paper_testbed_packaged_obs4.json")   # an existing --init


@pytest.mark.parametrize("argv, says", [
    (["--init", "no-such.json"], "--init: no such file: no-such.json"),
    (["--seeds", _A_RESULT, "missing.json"], "--seeds: no such file: missing.json"),
    (["--package", "missing.json"], "--package: no such file: missing.json"),
    (["--global", "obs4", "--feasibility", "--minimax"], "--feasibility: one objective at a time"),
    (["--feasibility", "--second-stage", "0.5"], "--feasibility: one objective at a time"),
    (["--set", "pi5.u=0.9"], "--set: needs --init"),
    (["--init", _A_RESULT, "--set", "pi5.speed=0.9"], "--set: unknown parameter 'pi5.speed'"),
    (["--init", _A_RESULT, "--set", "pi5.u"], "--set: 'pi5.u' is not NAME=NUMBER"),
    (["--init", _A_RESULT, "--set", "pi5.u=-1"], "--set: pi5.u must be a positive finite number"),
    (["--init", _A_RESULT, "--set", "pi5.u=nan"], "--set: pi5.u must be a positive finite number"),
    (["--hard-weight", "0"], "--hard-weight: must be a positive finite number"),
    (["--minimax", "--hard-weight", "inf"], "--hard-weight: must be a positive finite number"),
    (["--hard-weight", "1000"], "--hard-weight: only with --minimax"),
    (["--minimax", "--second-stage", "1.2", "--hard-weight", "1000"], "--hard-weight: only with --minimax, not"),
    (["--feasibility"], "--feasibility: only with --global"),
])
def test_fit_script_refuses_bad_search_options(argv, says, capsys):
    """--feasibility, --set and --hard-weight (docs/foundation.md, "Observation 4 on the fitted
    testbed"): a bad combination or value is one line and exit 2, before anything is priced; so is a
    missing --init, --seeds or --package file (a traceback before)."""
    fit = _fit_script()
    with pytest.raises(SystemExit) as e:
        fit.main(argv + ["--prove"])
    assert e.value.code == 2 and says in capsys.readouterr().err


@pytest.mark.parametrize("objective, weight", [
    (["--minimax", "--hard-weight", "1000"], 1000.0), (["--minimax"], 10.0),
    (["--minimax", "--second-stage", "1.2"], None), (["--feasibility"], None)])
def test_a_search_records_the_hard_weight_its_objective_read(objective, weight, capsys):
    """The JSON's global_search.hard_weight is the minimax's weight of the hard violations where the objective read
    one (--hard-weight, else HARD_WEIGHT) and None where it weighs otherwise (the second stage, --feasibility): a
    one-generation search of one member per parameter (≈ 2 s)."""
    import json

    fit = _fit_script()
    assert fit.main(["--free-bandwidth", "--free-s", "--global", "obs4", "--idle-floor", "0.25", "--maxiter", "1",
                     "--popsize", "1", "--seed", "3", *objective]) == 0
    g = json.loads(capsys.readouterr().out)["global_search"]
    assert g["hard_weight"] == weight and g["minimax"] == ("--minimax" in objective)


def test_feasibility_search_finds_the_papers_observation_4_at_the_floor():
    """``--feasibility`` (the hard groups' violations alone, the figures as a tie-break) from the
    seed-47 set with four parameters moved by hand (--set: the Pi 5's u 0.49 → 0.9, the RTX 3090
    host's per-call overhead 0.36 → 0.22 ms, s(2…8) spread apart for Observation 1's 0.5 % margin)
    finds a set at idle ≥ 0.25 × rated where every hard constraint holds, the paper's Observation 4
    included: LeNet 4-bit on the RTX 3090 falls 0.7 %, falls 9.6 %, rises 1.4 % (docs/foundation.md,
    "Observation 4 on the fitted testbed"). Its figures are far off (the objective ignored them)."""
    result, v, e = _result_violations("minimax_link433_obs4strict_floor025_seed48")
    g = result["global_search"]
    assert g["feasibility"] and not g["minimax"] and g["obs4_form"] == "strict"
    assert result["options"]["idle_floor"] == OBS4_IDLE_FLOOR and g["sum"] == 0.0
    assert g["init"] == "benchmarks/results/fit_paper_testbed_minimax_link433_obs4strict_floor025_seed47.json"
    assert set(g["set"]) == {"pi5.u", "rtx3090.overhead_s", "s2", "s4", "s6", "s8"}
    assert {k: v[k] for k in g["groups"]} == {k: 0.0 for k in g["groups"]}
    assert e == pytest.approx([419.7, 416.9, 376.8, 381.9], abs=0.05)
    assert e[1] < e[0] and e[2] < e[1] and e[3] > e[2]  # first decreasing, then increasing


def test_observation_4_holds_on_the_alternative_testbed():
    """jqodi:paper-data1-obs4 (src/jqodi/devices/obs4/: the second stage of the feasibility search
    for the paper's Observation 4 with every idle power ≥ 0.25 × Tables II-IV's, below the 0.329
    that obs4_idle_floor_bound allows with the figures within ±25 %, which these are not): in Fig.
    3's setting (LeNet 4-bit, the deep part on the RTX 3090, ES and CS idle energy counted) the
    epoch energy falls from cut 1 to cut 2 (0.5 %) and on to cut 3 (9.8 %), then rises to cut 4
    (0.65 %): "first decreasing and then increasing" (docs/foundation.md, "Observation 4 on the
    fitted testbed")."""
    fit = _fit_script()
    sc, tables = _tables("jqodi:paper-data1-obs4")
    assert sc.idle_energy and sc.cost_model == "extended"
    ct = tables["lenet"]
    e = np.array([ct.epoch(4, c, "rtx3090").energy_j for c in ct.cuts])
    assert e == pytest.approx([429.1, 427.0, 385.1, 387.6], abs=0.05)
    assert e[1] < e[0] and e[2] < e[1] and e[3] > e[2]
    # the steps the docs quote (README, docs/foundation.md, docs/devices.md): −0.5 %, −9.8 %, +0.65 %
    assert e[1:] / e[:-1] - 1 == pytest.approx([-0.005, -0.098, 0.0065], abs=5e-4)
    assert fit.obs4_violation(e) == 0.0  # with the searches' 0.5 % margin at every step
    nodes = {"pi5": sc.end_device.device(), "a100": sc.cloud.device(),
             **{x.name: x.device() for x in sc.edges}}
    for name, dev in nodes.items():
        rated = fit.SPEC[name]["rated_idle_w"]
        assert OBS4_IDLE_FLOOR * rated * (1 - 1e-9) <= dev.idle_power_w < dev.busy_power_w
        assert dev.busy_power_w >= rated * (1 - 1e-9)
    for name in ("rtx3090", "rtx4090", "a100"):  # the servers idle at the floor itself
        assert nodes[name].idle_power_w == pytest.approx(OBS4_IDLE_FLOOR * fit.SPEC[name]["rated_idle_w"])
    bound = fit.obs4_idle_floor_bound(fit.Predictor())
    assert OBS4_IDLE_FLOOR < bound["per_edge"]["rtx3090"]["idle_floor_max"]
    # the floor proof's premise fails here: E(1) lies above the +25 % bound it takes from Fig. 7(c)
    assert e[0] > bound["epoch_energy_cut1_max_j"]


@pytest.mark.parametrize("ref, model", [("jqodi:paper-data1-obs4", "lenet"), ("jqodi:paper-data2-obs4", "resnet20")])
def test_alternative_testbed_keeps_both_optimum_models(ref, model):
    """The paper's Optimum models (Data 1 LeNet, Data 2 ResNet20) on the alternative testbed, by the
    planner's exact solver; the default testbed's test is tests/test_costs.py's."""
    from jqodi.planner import solve

    sc = load_scenario(ref)
    assert solve(compile_instance(sc), "optimal").model == model


def test_alternative_testbed_is_the_floor_search_result():
    """src/jqodi/devices/obs4/ is the second stage of the Observation-4 feasibility search at idle
    ≥ 0.25 × rated idle (fit_paper_testbed_minimax_link433_obs4strict_floor025_seed50.json),
    written by ``--package RESULT --write --devices-dir src/jqodi/devices/obs4``; the default
    packaged files are another set."""
    import json

    from jqodi.core.device_model import load_device_file, packaged_devices_dir

    name = "benchmarks/results/fit_paper_testbed_minimax_link433_obs4strict_floor025_seed50.json"
    result = json.loads((ROOT / name).read_text())
    packaged = json.loads((ROOT / "benchmarks/results/fit_paper_testbed_packaged_obs4.json").read_text())
    assert packaged["packaged_from"] == name
    assert packaged["devices_dir"] == "src/jqodi/devices/obs4"
    assert packaged["parameters"] == result["parameters"] and packaged["residuals"] == result["residuals"]
    assert result["options"]["idle_floor"] == OBS4_IDLE_FLOOR and "obs4" in result["global_search"]["groups"]
    assert result["global_search"]["sum"] == 0.0 and result["global_search"]["obs4_form"] == "strict"
    assert result["global_search"]["init"] == name.replace("seed50", "seed49")  # its first stage
    assert packaged["observations_hold"]["obs4"] and result["worst_abs_error"] == pytest.approx(1.037, abs=5e-4)
    for name in ("pi5", "rtx3090", "rtx4090", "a100"):
        on_disk = load_device_file(packaged_devices_dir() / "obs4" / f"{name}.yaml")
        assert _flat(on_disk.model_dump(mode="json", exclude_none=True)) == pytest.approx(_flat(packaged["devices"][name]))
        default = load_device_file(packaged_devices_dir() / f"{name}.yaml")
        assert default.busy_power_w != on_disk.busy_power_w


@pytest.mark.parametrize("energy_j, strict, weak", [
    ([3.0, 2.0, 1.0, 2.0], True, True),            # falls, falls, rises: the paper's Fig. 3 shape
    ([3.0, 1.0, 2.0, 3.0], True, True),            # falls, then rises twice
    ([462.0, 491.9, 460.1, 461.9], False, True),   # the seed-42 set (the alternative until seed 50): rises first
    ([3.0, 2.0, 2.5, 2.2], False, True),           # falls, rises, falls again: not unimodal
    ([1.0, 2.0, 3.0, 4.0], False, False),          # always rising (the default testbed's shape)
    ([4.0, 3.0, 2.0, 1.0], False, False),          # always falling: the minimum at the last cut
])
def test_observation_4_check_reads_first_decreasing_then_increasing(energy_j, strict, weak):
    """obs4_violation is the paper's Observation 4 ("first decreasing and then increasing"): every
    step falls up to an interior minimum and rises after it; obs4_weak_violation (the form searched
    before 2026-12-01) asks only for an interior cut below both ends. With the fit's 0.5 % margin,
    a step of 0.4 % counts against either form."""
    fit = _fit_script()
    assert (fit.obs4_violation(energy_j, margin=0.0) == 0.0) is strict
    assert (fit.obs4_weak_violation(energy_j, margin=0.0) == 0.0) is weak
    assert fit.obs4_violation([3.0, 2.0, 1.0, 1.004]) > 0.0 and fit.obs4_violation([3.0, 2.0, 1.0, 1.006]) == 0.0


def _result_violations(name):
    """A committed search result's JSON and violations() of its parameters, in the accounting and on
    the link it was searched in (margin 0)."""
    import json

    fit = _fit_script()
    result = json.loads((ROOT / f"benchmarks/results/fit_paper_testbed_{name}.json").read_text())
    fit.FREE_BW, fit.FREE_S = result["free_bandwidth"], result["free_s"]
    fit.IDLE_FLOOR = result["options"].get("idle_floor", 0.0)
    try:
        params = result["parameters"]
        p = np.array([params[n] if n.endswith("idle_share") else np.log(params[n]) for n in fit.NAMES])
        pred = fit.Predictor(idle_energy=result["options"]["idle_energy"],
                             wifi_bps=result["full_model_link_bound"]["scenario_wifi_bps"])
        files = fit.device_files(p)
        ct = pred.tables(files, "data1", "lenet", [4])
        energy_j = [ct.epoch(4, c, "rtx3090").energy_j for c in ct.cuts]
        return result, fit.violations(pred, files, margin=0.0), energy_j
    finally:
        fit.FREE_BW = fit.FREE_S = False
        fit.IDLE_FLOOR = 0.0


@pytest.mark.parametrize("name, holds", [
    ("minimax_link433_obs4_seed14", True), ("minimax_link433_obs4_seed15", True),
    ("minimax_link433_obs4_seed16", True), ("minimax_link433_obs4_seed17", False),
    ("minimax_link433_obs4_stage2", False), ("minimax_link433_obs4_floor025", False),
    ("minimax_link433_obs4_floor025_seed42", False)])
def test_earlier_observation_4_searches_under_the_strict_form(name, holds):
    """The committed Observation-4 searches were run with the weak form; re-read with the paper's
    (docs/foundation.md, "Observation 4 on the fitted testbed"), the three idle-free ones of seeds
    14-16 fall then rise, the seed-17 set and its second stage rise 0.55 % / 0.07 % from cut 1 to
    cut 2, and both searches at idle ≥ 0.25 × rated (seeds 41 and 42, the weak-form alternative testbed
    packaged until the seed-50 set replaced it) rise 6.4-6.5 %."""
    result, v, _ = _result_violations(name)
    assert "obs4_form" not in result["global_search"]  # searched under the weak form
    assert v["obs4_weak"] == 0.0 and (v["obs4"] == 0.0) is holds


@pytest.mark.parametrize("name, worst, energy_j", [
    ("minimax_link433_obs4strict_floor025_seed43", 1.308, [488.8, 496.5, 449.3, 442.2]),
    ("minimax_link433_obs4strict_floor025_seed44", 1.299, [487.5, 495.7, 449.2, 441.7])])
def test_strict_observation_4_searches_at_the_floor_found_no_eligible_set(name, worst, energy_j):
    """The first two minimax searches for the paper's Observation 4 at idle ≥ 0.25 × rated
    (docs/foundation.md, "Observation 4 on the fitted testbed": the seed-42 neighbourhood,
    --init-spread 0.01) meet every other hard constraint but not it: cut 2 still costs more than
    cut 1 and the minimum sits at the last cut. (The feasibility search, seed 48, found a set that
    meets it: test_feasibility_search_finds_the_papers_observation_4_at_the_floor.)"""
    result, v, e = _result_violations(name)
    g = result["global_search"]
    assert g["obs4_form"] == "strict" and "obs4" in g["groups"] and result["options"]["idle_floor"] == OBS4_IDLE_FLOOR
    assert {k: v[k] for k in g["groups"] if k != "obs4"} == {k: 0.0 for k in g["groups"] if k != "obs4"}
    assert v["obs4"] == pytest.approx(g["violations"]["obs4"], rel=1e-9) and v["obs4"] > 0.015
    assert e == pytest.approx(energy_j, abs=0.05) and e[1] > e[0] and min(e) == e[-1]
    assert result["worst_abs_error"] == pytest.approx(worst, abs=5e-4)
