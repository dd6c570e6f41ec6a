"""`jqodi calibrate` times QAT's fake quantizers the way training runs them (the compiled kernel of
jqodi.core.quant.kernel when it is available, the PyTorch path otherwise), records which in the
device file (``calibration.quant_kernel``), and `jqodi plan`/`jqodi run`/`jqodi demo` say in one line when a
file measured on this host timed the other path (issue 10 item 2)."""
import platform

import pytest
import torch
import yaml

from jqodi.cli import main
from jqodi.core.device_model import load_device_file
from jqodi.core.quant import kernel, lsq, prepare_qat
from jqodi.core.scenario import parse_scenario
from jqodi.runtime import calibration as cal

LINKS = {"cloud_link": {"rate_bps": 1e9, "power_w": 1.0},
         "end_link": {"bandwidth_hz": 80e6, "snr_db": 25, "tx_power_w": 1.0}}
ROOFLINE = {"forward": {"flops_per_s": 2e10, "bytes_per_s": 5e9, "overhead_s": 1e-5},
            "backward": {"flops_per_s": 1e10, "bytes_per_s": 2.5e9, "overhead_s": 2e-5}}


def _spy(monkeypatch) -> list[str]:
    """Record which quantizer implementation runs: the kernel's loops or PyTorch's lsq_forward."""
    calls: list[str] = []
    for name in ("quantize", "backward", "step_factor"):
        fn = getattr(kernel, name)
        monkeypatch.setattr(kernel, name,
                            lambda *a, _fn=fn, _n=name, **k: (calls.append(f"kernel.{_n}"), _fn(*a, **k))[1])
    fwd = lsq.lsq_forward
    monkeypatch.setattr(lsq, "lsq_forward", lambda *a, **k: (calls.append("lsq_forward"), fwd(*a, **k))[1])
    import jqodi.core.quant.layers as layers

    monkeypatch.setattr(layers, "lsq_forward", lsq.lsq_forward)
    return calls


def _training_step_calls(calls: list[str]) -> set[str]:
    """The quantizer calls of one QAT training step of a conv + linear (the runtime's path)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 5))
    x = torch.randn(2, 3, 8, 8)
    prepare_qat(model, 4, calibration=x)
    model.train()
    calls.clear()
    model(x.requires_grad_(True)).sum().backward()
    return set(calls)


def _calibration_calls(calls: list[str]) -> set[str]:
    calls.clear()
    cal._quantizer_times((4, 3, 3, 3), torch.randn(2, 3, 8, 8), repeats=1)
    cal._quantizer_times((5, 144), torch.randn(2, 144), repeats=1)
    return set(calls)


@pytest.mark.parametrize("compiled", [True, False])
def test_calibration_times_the_quantizers_training_runs(compiled, monkeypatch):
    if compiled and not kernel.available():
        pytest.skip(f"no compiled quantizer here: {kernel.status()}")
    if not compiled:  # as without a compiler or with JQODI_QUANT_KERNEL=0
        monkeypatch.setattr(kernel, "usable", lambda *a: False)
        monkeypatch.setattr(kernel, "available", lambda: False)
    calls = _spy(monkeypatch)
    trained = _training_step_calls(calls)
    timed = _calibration_calls(calls)
    expected = {"kernel.quantize", "kernel.backward"} if compiled else {"lsq_forward"}
    assert expected <= trained and expected <= timed, (trained, timed)
    assert ("lsq_forward" in timed) == ("lsq_forward" in trained) == (not compiled)
    assert cal.quantizer_path() == ("compiled" if compiled else "torch")


def test_quantizer_times_are_positive_and_shaped():
    rows = cal._quantizer_times((4, 3, 3, 3), torch.randn(2, 3, 8, 8), repeats=1)
    (act, af, ab), (wt, wf, wb) = rows
    assert act.kind == wt.kind == "quantizer" and act.batched and not wt.batched
    assert act.flops == 4 * 3 * 8 * 8 and wt.flops == 4 * 4 * 3 * 3 * 3
    assert min(af, ab, wf, wb) > 0


@pytest.mark.timeout(600)
def test_calibrate_records_and_says_the_quantizer_path(tmp_path):
    from jqodi.app.calibrate import calibrate_host

    out = tmp_path / "host.yaml"
    said: list[str] = []
    calibrate_host(out, quick=True, power="declared", models=[("lenet", 0.25)], say=said.append,
                   progress=lambda s: None)
    f = load_device_file(out)
    assert f.calibration["quant_kernel"] == cal.quantizer_path()
    assert any("fake quantizers timed as training runs them here: " + cal.quantizer_path() in s for s in said), said


def _device_file(path, *, quant_kernel=None, host=None, source="measured"):
    calibration = {"host": host or platform.node(), "quick": True}
    if quant_kernel is not None:
        calibration["quant_kernel"] = quant_kernel
    path.write_text(yaml.safe_dump({
        "name": "box", "source": source, "flops": 1e10, "busy_power_w": 20.0, "idle_power_w": 5.0,
        "bit_time_factor": {4: 1.1, 8: 1.0}, "calibration": calibration,
        "layers": {k: ROOFLINE for k in ("conv", "linear", "norm", "eltwise", "quantizer")}}))
    return path


def _here(monkeypatch, path: str) -> None:
    """QAT in this process quantizes with ``path`` (compiled or torch), as kernel.status() says."""
    monkeypatch.setattr(kernel, "available", lambda: path == "compiled")
    monkeypatch.setattr(kernel, "status", lambda: "compiled (/x/jqodi_lsq.so)" if path == "compiled"
                        else "off (JQODI_QUANT_KERNEL=0)")


def _scenario(tmp_path, ref):
    d = {"name": "t", "deadline_s": 1e5, "target_loss": 1.0, "cost_model": "extended",
         "data": {"train_size": 256, "val_size": 64, "input_shape": [3, 32, 32], "num_classes": 10},
         "models": [{"name": "lenet", "width": 0.25}], "bits": [4, 8], "baseline_bits": [32],
         "cloud": {"name": "cs", "flops": 1e12, "busy_power_w": 100, "idle_power_w": 20},
         "edges": [{"name": "es", "device": str(ref), **LINKS}], "end_device": {"name": "sd", "device": str(ref)},
         "learning": [{"model": "lenet", "bits": q, "base_loss": 0.3, "gamma": 0.1, "epochs_expected": 4,
                       "epochs_robust": 5, "final_loss_expected": 0.45, "final_loss_robust": 0.48} for q in (4, 8, 32)]}
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(d))
    return path, parse_scenario(d)


@pytest.mark.parametrize("recorded, here, noted", [
    ("compiled", "compiled", False), ("torch", "torch", False),
    ("compiled", "torch", True), ("torch", "compiled", True),
    (None, "compiled", True),   # calibrated before the field existed, when it timed PyTorch's quantizers
    (None, "torch", False),
])
def test_a_file_timed_another_way_is_said_in_one_line(recorded, here, noted, tmp_path, monkeypatch):
    from jqodi.app.calibrate import quant_kernel_notes

    _here(monkeypatch, here)
    ref = _device_file(tmp_path / "host.yaml", quant_kernel=recorded)
    _, sc = _scenario(tmp_path, ref)
    notes = quant_kernel_notes(sc)
    assert len(notes) == int(noted), notes
    if noted:
        assert str(ref) in notes[0] and "es, sd" in notes[0] and "\n" not in notes[0]
        assert (recorded or "does not record") in notes[0] and "re-run `jqodi calibrate`" in notes[0]


def test_files_of_other_hosts_and_unmeasured_files_are_not_checked(tmp_path, monkeypatch):
    from jqodi.app.calibrate import quant_kernel_notes

    _here(monkeypatch, "torch")
    for i, kw in enumerate(({"host": platform.node() + "-elsewhere"}, {"source": "fitted"})):
        ref = _device_file(tmp_path / f"f{i}.yaml", quant_kernel="compiled", **kw)
        assert quant_kernel_notes(_scenario(tmp_path, ref)[1]) == []


@pytest.mark.timeout(300)
def test_plan_says_the_mismatch_and_still_plans(tmp_path, monkeypatch, capsys):
    _here(monkeypatch, "torch")
    ref = _device_file(tmp_path / "host.yaml", quant_kernel="compiled")
    path, _ = _scenario(tmp_path, ref)
    assert main(["plan", str(path)]) == 0
    out, err = capsys.readouterr()
    notes = [ln for ln in err.splitlines() if ln.startswith("note: device file")]
    assert len(notes) == 1
    assert "timed the compiled fake quantizers, QAT here runs torch [off (JQODI_QUANT_KERNEL=0)]" in notes[0]
    assert "model" in out and "note:" not in out   # the plan itself is printed as before, on stdout


def test_run_says_the_mismatch_before_planning(tmp_path, monkeypatch):
    from jqodi.app.run import RunOptions, plan_for_run

    _here(monkeypatch, "torch")
    ref = _device_file(tmp_path / "host.yaml", quant_kernel="compiled")
    _, sc = _scenario(tmp_path, ref)
    said: list[str] = []
    plan_for_run(sc, RunOptions(policy=None), say=said.append)
    assert said[0].startswith(f"note: device file {ref}") and said[1].startswith("planning t")


def test_demo_says_the_mismatch_once_before_the_main_job_and_its_description(tmp_path, monkeypatch):
    """``jqodi demo``: the main job (here stubbed: it would pretrain and train) is preceded by the
    note once; ``jqodi demo SCENARIO``'s description of such a scenario says it once too."""
    import io

    import jqodi.app.main_job as main_job
    from jqodi.app.demo import run_demo, run_main_demo, section_scenario

    _here(monkeypatch, "torch")
    ref = _device_file(tmp_path / "host.yaml", quant_kernel="compiled")
    path, _ = _scenario(tmp_path, ref)
    monkeypatch.setattr(main_job, "main_job", lambda cfg, say: (say(f"main job on {cfg.scenario_path}"), {})[1])
    buf = io.StringIO()
    run_main_demo(main_job.MainJobConfig(scenario_path=path, plan_only=True), describe=False, out=buf)
    lines = buf.getvalue().splitlines()
    notes = [i for i, ln in enumerate(lines) if ln.startswith(f"note: device file {ref} (used by es, sd)")]
    assert len(notes) == 1 and "timed the compiled fake quantizers, QAT here runs torch" in lines[notes[0]]
    assert notes[0] < lines.index(f"main job on {path}")
    buf = io.StringIO()
    run_demo(path, sections=[section_scenario], out=buf)
    assert sum(ln.startswith(f"note: device file {ref}") for ln in buf.getvalue().splitlines()) == 1
