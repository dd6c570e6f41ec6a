"""``jqodi report DIR``: the self-contained HTML page from a small synthetic evaluation (a hand-made
instance through the real evaluation code) and a synthetic run directory (epochs through the
runtime's own ``measure_epoch``); bad input ends in one line naming the file, exit 2."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from jqodi.app.evaluation import evaluate_instance, write_outputs
from jqodi.app.trajectories import NODE_TERMS
from jqodi.app.report import build_report, find_sources
from jqodi.cli import main
from jqodi.errors import JqodiError
from jqodi.runtime.record import RunRecord, measure_epoch
from test_evaluation import INSTANCE, fake_epoch_cost, fake_solve

PHASE_SEND = {"cloud": "cloud_to_edge", "end": "end_to_edge", "edge:rtx3090": "edge_to_end"}


def _raw_epoch(epoch: int, edge: str, cut: int, val_loss: float) -> dict:
    """What the cloud records for one epoch (the input of ``measure_epoch``)."""
    nodes = []
    for node, busy, joules in (("cloud", 0.01, 0.5), ("end", 2.0, 9.0), (f"edge:{edge}", 0.3, 4.0)):
        nodes.append({"node": node, "busy_s": {"train": busy}, "send_s": {PHASE_SEND.get(node, "edge_to_end"): 0.02},
                      "energy_j": joules, "meter": "model", "bytes": {f"{node}->x": 1000 + epoch},
                      "cut": {"elements": 100, "bytes": 100}})
    return {"epoch": epoch, "edge": edge, "cut": cut, "train_loss": val_loss * 1.1, "val_loss": val_loss,
            "val_accuracy": 0.5 + 0.1 * epoch, "wall_s": 4.0 + epoch, "nodes": nodes}


def make_run_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    phases = ("end_compute", "edge_compute", "cloud_update", "cloud_to_edge", "edge_to_end", "end_to_edge",
              "edge_to_cloud", "activations")
    predicted = {"time_s": 2.2, "energy_j": 13.0, "phases_s": {p: 0.1 for p in phases},
                 "phases_j": {p: 1.0 for p in phases}}
    epochs = []
    for i, (edge, loss) in enumerate((("rtx3090", 1.2), ("rtx3090", 0.8), ("rtx4090", 0.55))):
        m = measure_epoch(_raw_epoch(i, edge, 1, loss), 2.0, {"cloud-edge:rtx3090": 1e-9})
        m["predicted"] = predicted
        epochs.append(m)
    replan = {"epoch": 2, "trigger": "event", "reason": "edge rtx3090 left; the plan uses an edge that is away",
              "old": [{"edge": "rtx3090", "cut": 1, "epochs": 3}], "new": [{"edge": "rtx4090", "cut": 1, "epochs": 2}],
              "old_model": "lenet", "old_bits": 6, "new_model": "lenet", "new_bits": 6,
              "predicted_energy_j": 30.0, "old_predicted_energy_j": 28.0, "solve_ms": 0.4}
    rec = RunRecord(job={"scenario": "synthetic"}, epochs=epochs, dilation=2.0, emulated=True,
                    solution={"solver": "jqodi", "model": "lenet", "bits": 6, "energy_j": 40.0, "time_s": 7.0,
                              "schedule": [{"edge": "rtx3090", "cut": 1, "epochs": 4}], "epochs_expected": 3,
                              "epochs_estimate": "robust"},
                    control={"status": "completed", "reason": "target reached: val loss 0.55 ≤ L_max 0.6 at epoch 3",
                             "replans": [replan], "controller": {"policy": "replan", "replans": [replan]}},
                    inference=[{"combo": "pi5+rtx3090", "cut": 1, "requests": 10, "latency_p50_s": 0.001,
                                "latency_p95_s": 0.002, "predicted_latency_s": 0.001, "energy_j": 0.003,
                                "predicted_energy_j": 0.003, "accuracy": 0.7}],
                    target_loss=0.6)
    rec.save(path / "record.json")
    summary = {"scenario_name": "synthetic", "target_rule": {"target_loss": 0.6},
               "probes": [{"model": "lenet", "bits": 6, "start_loss": 2.0, "val_losses": [1.2, 0.9, 0.7]}],
               "estimates": [{"model": "lenet", "bits": 6, "base_loss": 2.0, "gamma": 0.01, "epochs_expected": 4,
                              "epochs_robust": 6, "source": "measured:probe(3 epochs)"}],
               "learning_vs_prediction": {"epochs_expected": 3, "epochs_robust": 4}}
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def make_eval_dir(path: Path, paper_key: str | None = "data1") -> Path:
    ev = evaluate_instance(INSTANCE, solve=fake_solve, epoch_cost=fake_epoch_cost, paper_key=paper_key, name="tiny")
    write_outputs(ev, path)
    return path


@pytest.fixture(scope="module")
def both(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    make_eval_dir(root / "eval")
    make_run_dir(root / "runs" / "one")
    return root


def _sections(html: str) -> list[str]:
    return re.findall(r"<h3>(.*?)</h3>", html)


def assert_self_contained(html: str) -> None:
    """Every plot inline; nothing fetched: every src/href is an anchor or a data: URL."""
    assert "<svg" in html
    for attr, value in re.findall(r'\b(src|href)\s*=\s*"([^"]*)"', html, flags=re.I):
        assert value.startswith(("#", "data:")), (attr, value)
    assert not re.search(r"url\((?!#)", html), "a CSS url() that is not a page anchor"
    assert "<script" not in html.lower() and "@import" not in html
    for img in re.findall(r"<img\b[^>]*>", html, flags=re.I):
        assert 'src="data:' in img, img


def test_the_page_has_every_section_whose_data_exists(both):
    out = build_report(both)
    assert out == both / "report.html"
    html = out.read_text()
    assert_self_contained(html)
    heads = _sections(html)
    for expected in ("Time vs energy of every strategy (Fig. 7(c) / 11(c))",
                     "Loss curves (Fig. 7(a)/(b)) with K^exp and K^rob",
                     "Time and energy per node and link (Figs. 8, 12)",
                     "Time and energy per phase (cost terms of Eq. (1)–(10))",
                     "Cut-point sweep (Fig. 3, Observation 4)",
                     "Table V: system energy and JQODI&#x27;s own overhead",
                     "Epoch estimates (Table VI): ours beside the paper&#x27;s",
                     "Outcome", "Predicted vs measured per epoch", "Loss curve (measured), L_max and K^exp / K^rob",
                     "Per phase: predicted vs measured", "Per node: energy predicted vs measured, bytes per link",
                     "Closed loop and re-plans", "Collaborative inference after fine-tuning",
                     "Measured learning estimates (probes)"):
        assert expected in heads, expected
    # the paper's values beside ours: Table V, the paper's choice, Table VI's K
    assert "28.35" in html and "7,651.3" in html and "lenet 6-bit cut 1 @ rtx3090" in html and "26±3" in html
    # the marks and reference lines of the loss curves
    assert "K^exp" in html and "K^rob" in html and "L_max = 0.0186" in html and "T_max = 180 s" in html
    # the re-plan and the run's per-epoch figures
    assert "edge rtx3090 left" in html and "rtx4090" in html
    assert html.count("<svg") >= 12
    # one <title> per chart and no empty chart
    assert html.count("<svg") == len(re.findall(r"<svg[^>]*><title>", html))
    assert not re.search(r'<svg[^>]*width="0"', html)


def test_sections_appear_only_when_their_data_does(tmp_path):
    d = make_eval_dir(tmp_path / "eval", paper_key=None)
    ev = json.loads((d / "evaluation.json").read_text())
    ev["cut_sweep"] = []
    for s in ev["strategies"]:
        s["phases"] = None
        s["breakdown"] = None
    (d / "evaluation.json").write_text(json.dumps(ev))
    html = build_report(d, tmp_path / "x" / "page.html").read_text()
    heads = _sections(html)
    assert "Cut-point sweep (Fig. 3, Observation 4)" not in heads
    assert not any("per phase" in h or "per node" in h for h in heads)
    assert "Time vs energy of every strategy (Fig. 7(c) / 11(c))" in heads
    assert "paper K" not in html and "28.35" not in html  # not one of the paper's scenarios
    assert "Outcome" not in heads  # no run here


def test_a_record_without_totals_is_still_reported(tmp_path):
    d = make_run_dir(tmp_path / "run")
    rec = json.loads((d / "record.json").read_text())
    rec.pop("totals")
    (d / "record.json").write_text(json.dumps(rec))
    (d / "summary.json").unlink()
    html = build_report(d).read_text()
    assert "Per node: energy predicted vs measured, bytes per link" in _sections(html)
    assert "Measured learning estimates (probes)" not in _sections(html)


def test_cli_prints_the_path_and_writes_the_page(both, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(both), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_text().startswith("<!DOCTYPE html>")


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in captured.err, captured.err
    return err


def test_bad_input_is_one_line_naming_the_file(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.json").write_text("{}")
    assert "nothing to report" in _one_line_error(capsys, ["report", str(empty)])
    assert "not a directory" in _one_line_error(capsys, ["report", str(tmp_path / "missing")])

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "evaluation.json").write_text('{"scenario": "x", "strategies": [')
    err = _one_line_error(capsys, ["report", str(bad)])
    assert str(bad / "evaluation.json") in err and "not valid JSON" in err

    wrong = tmp_path / "wrong" / "run"
    wrong.mkdir(parents=True)
    (wrong / "record.json").write_text("[1, 2]")
    err = _one_line_error(capsys, ["report", str(tmp_path / "wrong")])
    assert str(wrong / "record.json") in err and "not a run record" in err

    odd = make_run_dir(tmp_path / "odd")
    rec = json.loads((odd / "record.json").read_text())
    rec["epochs"][0] = {"epoch": "one"}
    (odd / "record.json").write_text(json.dumps(rec))
    err = _one_line_error(capsys, ["report", str(odd)])
    assert str(odd / "record.json") in err

    summ = make_run_dir(tmp_path / "summ")
    (summ / "summary.json").write_bytes(b"\xff\xfe not json")
    err = _one_line_error(capsys, ["report", str(summ)])
    assert str(summ / "summary.json") in err


def test_a_fleet_run_is_reported_device_by_device_beside_single_runs(tmp_path):
    """``make demo`` leaves runs/demo-cpu-demo (a run) and runs/demo-fleet (a fleet record holding
    each device's run record): ``jqodi report runs`` shows both, the fleet one device by device."""
    one = json.loads((make_run_dir(tmp_path / "runs" / "single") / "record.json").read_text())
    fleet = tmp_path / "runs" / "fleet"
    fleet.mkdir()
    (fleet / "record.json").write_text(json.dumps({"run_id": "f1", "edges": ["rtx3090"], "devices": ["cam-1", "cam-2"],
                                                   "records": {"cam-2": one, "cam-1": one}, "status": "completed"}))
    html = build_report(tmp_path / "runs").read_text()
    heads = re.findall(r"<h2[^>]*>(.*?)</h2>", html)
    assert [h for h in heads if h.startswith("Run: ")] == ["Run: fleet, device cam-1", "Run: fleet, device cam-2",
                                                          "Run: single (synthetic)"], heads
    assert "2 run(s)" in html   # record.json files counted, not groups
    bad = dict(json.loads((fleet / "record.json").read_text()), records={"cam-1": [1]})
    (fleet / "record.json").write_text(json.dumps(bad))
    with pytest.raises(JqodiError, match="not a run record of device 'cam-1'"):
        build_report(tmp_path / "runs")


def test_sources_are_found_below_the_directory_and_sorted(both, tmp_path):
    src = find_sources(both)
    assert [p.relative_to(both).as_posix() for p in src.evaluations] == ["eval/evaluation.json"]
    assert [p.relative_to(both).as_posix() for p in src.runs] == ["runs/one/record.json"]
    deep = tmp_path / "a" / "b" / "c" / "d"  # below MAX_DEPTH: not searched
    deep.mkdir(parents=True)
    (deep / "record.json").write_text("{}")
    with pytest.raises(JqodiError, match="nothing to report"):
        find_sources(tmp_path)


def test_the_evaluation_saves_the_cut_sweep_and_the_phases_the_page_draws(tmp_path):
    ev = json.loads((make_eval_dir(tmp_path) / "evaluation.json").read_text())
    options = [(c.model, c.bits, o.edge, o.cut, o.epoch_time_s, o.epoch_energy_j)
               for c in INSTANCE.candidates for o in c.options]
    assert sorted((r["model"], r["bits"], r["edge"], r["cut"], r["epoch_time_s"], r["epoch_energy_j"])
                  for r in ev["cut_sweep"]) == sorted(options)
    cands = {c.key: c for c in INSTANCE.candidates}
    for s in ev["strategies"]:
        if s["model"] is None:
            continue
        q = cands[f"{s['model']}@{s['bits']}"]
        # the phases add up to the per-node breakdown without the one-off quantization (on the CS)
        for node, terms in NODE_TERMS.items():
            for unit, quant in (("time_s", q.quantize_time_s), ("energy_j", q.quantize_energy_j)):
                phases = sum(s["phases"].get(t, {}).get(unit, 0.0) for t in terms)
                assert phases + (quant if node == "CS" else 0.0) == pytest.approx(s["breakdown"][node][unit])
        assert sum(p["energy_j"] for p in s["phases"].values()) == pytest.approx(s["energy_j"] - q.quantize_energy_j)


def test_a_measured_evaluation_gets_table_vi_observation_2_and_its_curves(tmp_path):
    """``summary.json`` of benchmarks/paper_cifar.py with its runs/: Table VI measured beside the
    paper's, the estimators, Observation 2 and one training-loss chart per model."""
    (tmp_path / "runs").mkdir()
    runs = [{"model": "lenet", "bits": b, "seed": s, "target_loss": 0.1,
             "train_losses": [1.0 / (e + 1) ** (b / 8) for e in range(12)]} for b in (2, 8) for s in (0, 1)]
    for r in runs:
        (tmp_path / "runs" / f"lenet_{r['bits']}_{r['seed']}.json").write_text(json.dumps(r))
    row = {"model": "lenet", "width": 0.25, "target_loss": 0.1, "reached": "2/2", "gamma": 0.01}
    summary = {"config": {"data": "data1", "train_size": 2000, "max_epochs": 12, "seeds": [0, 1], "probe_epochs": 3},
               "table_vi": [dict(row, bits=2, K_mean=None, reached="0/2", paper_K="126±6", paper_K_exp=126,
                                 paper_K_rob=132),
                            dict(row, bits=8, K_mean=10.0, K_std=0.0, store_K_exp=9.5, store_K_rob=11)],
               "estimators": {"probe": {"predictions": 4, "median_rel_error_K_exp": 0.25, "coverage_K_rob_ge_K": 0.5}},
               "observation_2": [{"model": "lenet", "K_by_bits": {"2": None, "8": 10.0}, "fewer_bits_more_epochs": True,
                                  "violations": [], "one_bit_reached": None}]}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert find_sources(tmp_path).measured == [tmp_path / "summary.json"]
    html = build_report(tmp_path).read_text()
    for heading in ("Table VI measured on CIFAR-10", "Estimators, held out", "Observation 2 on real runs",
                    "Fine-tuning curves"):
        assert heading in html
    assert "126±6" in html and "10 ± 0" in html and "25%" in html
    assert html.count("<svg") == 1 and "L_max = 0.1" in html
    (tmp_path / "runs" / "lenet_2_0.json").write_text(json.dumps({"model": "lenet"}))
    with pytest.raises(JqodiError, match="lenet_2_0.json"):
        build_report(tmp_path)
