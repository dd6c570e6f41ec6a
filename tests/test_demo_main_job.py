"""The main job end to end at a tiny size (in-process transport, random-free: real pretraining
on a small cloud subset, probes, planning, the whole plan run, comparison saved as JSON)."""
from __future__ import annotations

import json
import shutil

import pytest

from jqodi.core.data import FASHION_MNIST_DIR

pytestmark = pytest.mark.skipif(not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists()
                                and not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte").exists(),
                                reason="Fashion-MNIST not installed")


def test_target_rule():
    from jqodi.errors import JqodiError
    from jqodi.app.main_job import target_from_probes

    assert target_from_probes({("a", 2): [3.0, 1.0, 2.0], ("a", 4): [1.5, 0.8]}, 0.25) == pytest.approx(1.0)
    with pytest.raises(JqodiError):
        target_from_probes({("a", 2): [float("nan")]}, 0.1)


def test_packaged_scenario_matches_example():
    from pathlib import Path

    from jqodi.app.main_job import cpu_demo_path

    example = Path(__file__).resolve().parents[1] / "examples" / "cpu-demo.yaml"
    assert cpu_demo_path().read_text() == example.read_text()


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    """The cloud models the main-job tests below pretrain (600 images × 1 epoch, step 1), pretrained
    once for the module instead of once per test: each test copies them into its own fresh
    $JQODI_HOME (no stored run there), where step 1 finds them in the cache."""
    import torch

    from jqodi.app.main_job import MainJobConfig, load, pretrain

    home = tmp_path_factory.mktemp("main-job-home")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JQODI_HOME", str(home))
        torch.set_num_threads(1)
        try:
            cfg = MainJobConfig(pretrain_cloud_size=600, pretrain_epochs=1)
            pretrain(load(cfg, say=lambda s: None), cfg, say=lambda s: None)
        finally:
            torch.set_num_threads(threads)
    assert sorted(p.name for p in (home / "pretrained").iterdir()) == [
        "fashion-mnist_lenet_w0.25_e1n600_s0.pt", "fashion-mnist_resnet20_w0.25_e1n600_s0.pt"]
    return home / "pretrained"


def _fresh_home(tmp_path, monkeypatch, pretrained_dir):
    """``tmp_path/home`` as $JQODI_HOME: the module's pretrained cloud models, nothing else."""
    home = tmp_path / "home"
    shutil.copytree(pretrained_dir, home / "pretrained")
    monkeypatch.setenv("JQODI_HOME", str(home))
    return home


# a safety bound, not a speed check: ~90 s alone, 200+ s at load 20 on 2 cores
@pytest.mark.timeout(600)
def test_main_job_tiny(tmp_path, monkeypatch, pretrained_dir):
    import torch

    from jqodi.app.main_job import MainJobConfig, main_job

    torch.set_num_threads(1)
    _fresh_home(tmp_path, monkeypatch, pretrained_dir)
    lines: list[str] = []
    s = main_job(MainJobConfig(pretrain_cloud_size=600, pretrain_epochs=1, probe_epochs=2, train_size=128,
                               val_size=64, max_epochs=2, requests=3, transport="inprocess",
                               workdir=tmp_path / "wd"), say=lines.append)
    text = "\n".join(lines)
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"):
        assert step in text
    # a fresh $JQODI_HOME: no stored run, so the probe alone with a widened K^rob, said on screen
    assert "cold start — the trace store has no runs: the probe alone, K^rob widened" in text
    # so the online K refit weighs the pre-run K as a probe's 5 epochs, said once and kept in the spec
    assert text.count("online K refit: the pre-run K counts as 5 epochs of evidence") == 1
    spec = json.loads((tmp_path / "wd" / "controller.json").read_text())
    assert spec["options"]["prior_epochs"] == 5.0
    saved = json.loads((tmp_path / "wd" / "summary.json").read_text())
    assert saved["status"] == "completed"
    assert saved["target_rule"]["target_loss"] == pytest.approx(
        1.15 * min(min(p["val_losses"]) for p in saved["probes"] if p["bits"] in (2, 4, 6, 8)))
    assert {p["solver"] for p in saved["plans"]} == {"jqodi", "optimal", "static"}
    cmp = saved["learning_vs_prediction"]
    assert 1 <= cmp["epochs_run"] <= 2 and cmp["final_loss_measured"] > 0
    assert saved["totals"] and saved["inference"]
    assert (tmp_path / "wd" / "record.json").is_file()
    assert s["wall_s"] > 0
    # the candidate by expected energy, its first schedule within T_max less the controller's reserve:
    # printed, in the summary and in the run record
    choice = saved["choice"]
    assert choice["rule"] == "expected" and choice["candidates"]
    assert choice["reserve_s"] > 0 and choice["deadline_s"] == 3.0
    planned = next(p["solution"] for p in saved["plans"] if p["solver"] == "jqodi")
    assert "choice (expected energy)" in text and "time reserve:" in text
    record = json.loads((tmp_path / "wd" / "record.json").read_text())
    assert record["solution"]["choice"]["rule"] == "expected"
    if choice["reserve_kept"]:
        assert record["solution"]["time_s"] <= choice["planned_deadline_s"] + 1e-9 < 3.0
    else:  # no plan fits T_max − reserve: planned for the whole T_max, and said so
        assert choice["planned_deadline_s"] == 3.0 and record["solution"]["time_s"] <= 3.0 + 1e-9
        assert "no plan fits T_max − reserve" in text
    assert planned["time_s"] <= 3.0
    deadline = saved["learning_vs_prediction"]["deadline"]   # the run's time against T_max, said and saved
    assert deadline["deadline_s"] == 3.0 and deadline["met"] == (deadline["time_s"] <= 3.0)
    assert deadline["time_s"] == pytest.approx(saved["totals"]["time_s"]) and deadline["host_overrun_s"] >= 0
    assert "deadline: " in text and "of T_max 3 s (testbed time)" in text
    from jqodi.core.traces import TraceStore  # the runtime recorded its epochs under the job id

    with TraceStore(tmp_path / "home" / "traces.db") as store:
        (run,) = store.runs(job_id=saved["job_id"])
        probes = store.runs(source="probe")   # the probes too: the next job's prior learns from them
    assert run.source == "runtime" and run.val_losses == pytest.approx([e["val_loss"] for e in
                                                                       json.loads((tmp_path / "wd" / "record.json").read_text())["epochs"]])
    assert len(probes) == len(saved["probes"]) and all(len(p.epochs) == 2 for p in probes)


@pytest.mark.timeout(600)   # a safety bound (see above)
def test_main_job_estimates_with_the_learned_prior_when_the_store_has_runs(tmp_path, monkeypatch, pretrained_dir):
    """With stored runs, the main job's K^exp/K^rob come from the learned prior + the probe and a
    conformal K^rob (what `jqodi estimate` and the held-out benchmark use), and it says so."""
    import math

    import numpy as np

    from jqodi.app.main_job import MainJobConfig, load, measure, pretrain
    from jqodi.core.traces import TraceStore

    _fresh_home(tmp_path, monkeypatch, pretrained_dir)
    with TraceStore(tmp_path / "home" / "traces.db") as store:   # earlier LeNet fine-tunes at other sizes and bits
        for i, (size, bits) in enumerate((s, b) for s in (64, 128, 256) for b in (2, 4, 8)):
            for seed, n in ((0, 2), (1, 12)):
                k = np.arange(1, n + 1)
                curve = (0.6 + 3.0 * np.exp(-0.5 * k) + 1.0 * k ** -0.3) * (1 + 0.02 * math.sin(i + seed))
                store.record({"model": "lenet", "bits": bits, "dataset": "fashion-mnist", "data_name": "data2",
                              "train_size": size, "val_size": 64, "seed": seed, "width": 0.25, "base_loss": 4.0,
                              "start_loss": 4.2, "gamma": 0.0, "gamma_robust": 0.0,
                              "source": "probe" if n == 2 else "finetune", "config": {"pretrain_epochs": 1}},
                             [{"epoch": j + 1, "val_loss": float(v)} for j, v in enumerate(curve)])
    cfg = MainJobConfig(pretrain_cloud_size=600, pretrain_epochs=1, probe_epochs=2, train_size=128, val_size=64)
    lines: list[str] = []
    scenario = load(cfg, say=lines.append)
    m = measure(scenario, pretrain(scenario, cfg, say=lines.append), cfg, say=lines.append)
    text = "\n".join(lines)
    assert "learned prior over 18 stored runs (9 configurations) + each probe" in text and "cold start —" not in text
    lenet = [e for e in m.estimates if e.model == "lenet"]
    assert any(e.source.startswith("measured:prior+probe(2 epochs") and "conformal 90% margin" in e.source
               for e in lenet)
    # ResNet20 has no stored run: calibrated on the LeNet runs with a doubled margin (or the probe alone)
    assert all("cold start: no stored runs of resnet20" in e.source for e in m.estimates if e.model == "resnet20")
    # the choice reads the spread of K the learned prior states (its conformal margin, before rounding)
    from jqodi.app.pre_run import k_spread

    assert all(e.epochs_robust_level == 0.9 and e.epochs_robust_margin >= 0
               for e in lenet if "conformal 90% margin" in e.source)
    spreads = [k_spread(e) for e in lenet if "conformal 90% margin" in e.source]
    assert spreads and all(s is not None and s >= 0 and "conformal 90% margin" in how for s, how in spreads)


def test_main_demo_plan_only(tmp_path, monkeypatch, pretrained_dir):
    import io

    from jqodi.app.demo import run_main_demo
    from jqodi.app.main_job import MainJobConfig

    _fresh_home(tmp_path, monkeypatch, pretrained_dir)
    buf = io.StringIO()
    s = run_main_demo(MainJobConfig(plan_only=True, pretrain_cloud_size=600, pretrain_epochs=1, probe_epochs=1,
                                    train_size=64, val_size=32, workdir=tmp_path / "wd"), describe=False, out=buf)
    assert "--plan-only: not running" in buf.getvalue() and "[4/5]" not in buf.getvalue()
    assert "record" not in s and len(s["estimates"]) == 12  # 2 models × (Ω + baseline bits)


def test_cpu_demo_scenario_plans_with_its_stored_table():
    from jqodi.core.costs import compile_instance
    from jqodi.planner import solve
    from jqodi.app.main_job import cpu_demo_path
    from jqodi.core.scenario import load_scenario

    scenario = load_scenario(cpu_demo_path())
    sol = solve(compile_instance(scenario), "jqodi")
    assert sol.status == "feasible" and sol.time_s <= scenario.deadline_s and sol.epochs >= 2


def test_demo_cli_with_a_scenario_notes_ignored_main_job_options(capsys):
    from jqodi.cli import main
    from jqodi.core.scenario import default_scenario_path

    assert main(["demo", "--plan-only", str(default_scenario_path())]) == 0
    captured = capsys.readouterr()
    assert "main-job options apply" in captured.err and "== Plans" in captured.out


def test_the_node_table_shows_a_device_files_busy_power():
    """Nodes described by a device file (``device: a100``) show the file's busy power, not '-'."""
    import io

    from jqodi.app.demo import DemoContext, section_scenario
    from jqodi.core.device_model import load_device_file
    from jqodi.core.scenario import default_scenario_path, load_scenario

    path = default_scenario_path()
    scenario = load_scenario(path)
    buf = io.StringIO()
    section_scenario(DemoContext(scenario, path, out=buf))
    rows = {line.split()[1]: line.split() for line in buf.getvalue().splitlines()
            if line.split()[:1] in (["cloud"], ["edge"], ["end"])}
    nodes = [scenario.cloud, *scenario.edges, scenario.end_device]
    assert all(n.device_ref for n in nodes)
    for n in nodes:
        assert float(rows[n.name][-2]) == pytest.approx(load_device_file(n.device_ref).busy_power_w, rel=1e-3)
