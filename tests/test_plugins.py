"""Registries and plugins: one Registry type behind models, solvers, meters and transports; a
plugin module (tests/plugins/jqodi_example_plugin.py) registers a new model, solver and meter,
and a tiny plan + a 1-epoch split run uses all three in the cloud, edge and end *processes*.

The plugin is only ever imported in subprocesses, so the names it registers never leak into the
other tests. Every subprocess is bounded by a timeout; the role processes of the run are ended by
PID by the launcher (``launch_processes``' finally block), and each must have written its log.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jqodi.core.registry import Registry
from jqodi.errors import JqodiError, PlanningError

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).resolve().parent / "plugins"
PLUGIN = "jqodi_example_plugin"
HAVE_FMNIST = Path("/usr/share/datasets/fashion-mnist").is_dir() or bool(os.environ.get("JQODI_DATA_DIR"))


# --- the Registry type ----------------------------------------------------------------------------

def test_registry_registers_lists_and_names_unknowns_in_one_line():
    reg: Registry = Registry("gadget", PlanningError)
    reg.register("a", len, "the first")

    @reg.register("b", description="the second")
    def b():
        return 2

    assert reg.names() == ["a", "b"] and list(reg) == ["a", "b"] and len(reg) == 2 and "b" in reg
    assert reg.get("a") is len and reg.get("b") is b and reg.describe() == [("a", "the first"), ("b", "the second")]
    with pytest.raises(PlanningError) as e:
        reg.get("c")
    assert str(e.value) == "unknown gadget 'c'; known: a, b"
    with pytest.raises(PlanningError, match="'a' is already registered"):
        reg.register("a", max)
    reg.register("a", max, replace=True)
    assert reg.get("a") is max
    reg.unregister("a")
    assert reg.names() == ["b"]
    for bad in ("", " x", "a,b"):
        with pytest.raises(PlanningError, match="name"):
            reg.register(bad, len)


def test_lazy_entries_import_on_first_get_only():
    reg: Registry = Registry("thing")
    reg.register("dumps", "json:dumps", "JSON text")
    assert reg.entry("dumps").lazy and reg.names() == ["dumps"]
    assert reg.get("dumps") is json.dumps
    with pytest.raises(JqodiError, match="module:attribute"):
        reg.register("bad", "json.dumps")
    reg.register("gone", "json:no_such_function")
    with pytest.raises(JqodiError, match="thing 'gone': cannot import json:no_such_function: AttributeError"):
        reg.get("gone")


def test_the_four_registries_hold_the_builtins():
    from jqodi.core.zoo import MODELS
    from jqodi.planner.registry import SOLVERS
    from jqodi.runtime.energy import METERS, make_meter
    from jqodi.runtime.launch import TRANSPORTS

    assert {"lenet", "vgg", "resnet20"} <= set(MODELS)
    assert SOLVERS.names()[:6] == ["jqodi", "optimal", "static", "full-model", "minimal-model", "partition-only"]
    assert METERS.names()[:4] == ["nvml", "rapl", "model", "null"]
    assert TRANSPORTS.names()[:2] == ["gloo", "inprocess"]
    # every built-in has a description (other tests may register undocumented models of their own)
    builtins = [(MODELS, ["lenet", "vgg", "resnet20"]), (SOLVERS, SOLVERS.names()[:6]),
                (METERS, METERS.names()[:4]), (TRANSPORTS, TRANSPORTS.names()[:2])]
    assert all(dict(reg.describe())[name] for reg, names in builtins for name in names)
    with pytest.raises(JqodiError, match=r"unknown energy meter 'gpu'; known: auto, nvml, rapl, model, null"):
        make_meter("gpu")


def test_listing_the_cli_choices_imports_neither_torch_nor_numpy():
    code = ("import sys\nfrom jqodi.cli import build_parser\nbuild_parser()\n"
            "from jqodi.cli._choices import RegistryChoices\n"
            "assert 'wall-power' not in RegistryChoices('jqodi.runtime.energy:METERS')\n"
            "print(list(RegistryChoices('jqodi.runtime.launch:TRANSPORTS')))\n"
            "print(','.join(m for m in ('torch', 'numpy') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["['gloo', 'inprocess']", ""]


# --- plugins through the CLI ------------------------------------------------------------------------

def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "JQODI_PLUGINS"}
    paths = [str(Path(p).resolve()) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if paths:  # absolute, so that a subprocess in another folder imports the same jqodi
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return {**env, "JQODI_THREADS": "1", **extra}


def _jqodi(args: list[str], *, env: dict, timeout: float, sys_path: Path | None = None, cwd=None):
    """``python -m jqodi ARGS``; with ``sys_path`` the folder is put on this process's sys.path
    only (not PYTHONPATH), so role processes can find the plugin only if the launcher passes it on."""
    pre = f"import sys; sys.path.insert(0, {str(sys_path)!r}); " if sys_path else "import sys; "
    code = pre + f"from jqodi.cli import main; sys.exit(main({args!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd)


def test_unknown_or_broken_plugin_is_one_line_and_exit_2(tmp_path):
    out = _jqodi(["--plugin", "no_such_plugin_module", "plan", "--help"], env=_env(), timeout=60)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip() == ("jqodi: error: plugin 'no_such_plugin_module' failed to import: "
                                  "ModuleNotFoundError: No module named 'no_such_plugin_module'")
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('registration failed\\nsecond line')\n")
    out = _jqodi(["plan", "--help"], env=_env(JQODI_PLUGINS="broken_plugin"), timeout=60, sys_path=tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "plugin 'broken_plugin' failed to import: RuntimeError: registration failed" in out.stderr


def test_an_installed_entry_point_plugin_is_loaded_by_every_jqodi_command(tmp_path):
    """A distribution declaring ``[jqodi.plugins]`` (a fake dist-info on sys.path): its module is
    imported before the arguments are read, so the solver it registers is a valid --solver."""
    dist = tmp_path / "jqodi_fake_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: jqodi-fake-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[jqodi.plugins]\nfake = jqodi_fake_plugin\n")
    (tmp_path / "jqodi_fake_plugin.py").write_text(
        "from jqodi.planner.registry import SOLVERS\n"
        "SOLVERS.register('entrypoint_static', 'jqodi.planner.baselines:solve_static', 'static, renamed')\n")
    out = _jqodi(["plan", "--help"], env=_env(), timeout=60, sys_path=tmp_path)
    assert out.returncode == 0 and "entrypoint_static" in " ".join(out.stdout.split()), out.stderr
    (tmp_path / "jqodi_fake_plugin.py").write_text("import no_such_dependency\n")
    out = _jqodi(["plan", "--help"], env=_env(), timeout=60, sys_path=tmp_path)
    assert out.returncode == 2 and out.stderr.strip() == (
        "jqodi: error: plugin 'jqodi_fake_plugin' (entry point 'fake' of group jqodi.plugins) failed to load: "
        "ModuleNotFoundError: No module named 'no_such_dependency'")


def test_unknown_registry_names_are_one_line_listing_the_known_ones():
    for args, listed in ((["plan", "x.yaml", "--solver", "nope"], "'jqodi', 'optimal'"),
                         (["run", "--meter", "gpu"], "'auto', 'nvml', 'rapl', 'model', 'null'"),
                         (["run", "--transport", "carrier-pigeon"], "'gloo', 'inprocess'")):
        out = _jqodi(args, env=_env(), timeout=60)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "invalid choice" in out.stderr and listed in out.stderr


def _scenario(path: Path) -> Path:
    """The packaged cpu-demo testbed with the plugin's model only, on a small data slice."""
    d = yaml.safe_load((ROOT / "src/jqodi/scenarios/cpu-demo.yaml").read_text())
    d["name"] = "plugin-test"
    d["models"] = [{"name": "tiny-mlp", "width": 1.0}]
    d["bits"], d["baseline_bits"] = [4, 8], []
    d["data"].update(train_size=192, val_size=64)
    d["training"]["batch_size"] = 64
    d["runtime"]["timeout_s"] = 30
    d["learning"] = [{"model": "tiny-mlp", "bits": b, "base_loss": 2.3, "gamma": 0, "epochs_expected": 1,
                      "epochs_robust": 2, "target_loss": 1.0, "source": "test"} for b in (4, 8)]
    d["target_loss"] = 1.0
    path.write_text(yaml.safe_dump(d))
    return path


def test_plugin_solver_plans_the_plugin_model_from_the_environment(tmp_path):
    scen = _scenario(tmp_path / "scenario.yaml")
    env = _env(JQODI_PLUGINS=PLUGIN)
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGINS)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    out = _jqodi(["plan", str(scen), "--solver", "fastest-static", "--json"], env=env, timeout=180)
    assert out.returncode == 0, out.stderr
    sol = json.loads(out.stdout)
    assert sol["solver"] == "fastest-static" and sol["status"] == "feasible"
    assert sol["model"] == "tiny-mlp" and sol["bits"] in (4, 8) and sum(e["epochs"] for e in sol["schedule"]) == 2
    # without the plugin the names are unknown: one line, exit 2
    out = _jqodi(["plan", str(scen), "--solver", "fastest-static"], env=_env(), timeout=60)
    assert out.returncode == 2 and "invalid choice: 'fastest-static'" in out.stderr


@pytest.mark.skipif(not HAVE_FMNIST, reason="Fashion-MNIST not installed")
def test_plugin_model_solver_and_meter_run_in_the_role_processes(tmp_path):
    """``jqodi --plugin M run``: M is on the launcher's sys.path only, yet the cloud, edge and end
    processes build M's model and measure with M's meter (the launcher passes the plugin on)."""
    scen = _scenario(tmp_path / "scenario.yaml")
    wd = tmp_path / "run"
    out = _jqodi(["--plugin", PLUGIN, "run", str(scen), "--solver", "fastest-static", "--meter", "wall-power",
                  "--no-emulate", "--random-init", "--max-epochs", "1", "--timeout", "30", "--workdir", str(wd)],
                 env=_env(), timeout=300, sys_path=PLUGINS, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "plan: tiny-mlp at" in out.stdout
    rec = json.loads((wd / "record.json").read_text())
    assert rec["status"] == "completed"
    assert rec["job"]["model"] == "tiny-mlp" and rec["job"]["meter"] == "wall-power"
    assert rec["solution"]["solver"] == "fastest-static"
    assert len(rec["epochs"]) == 1
    ep = rec["epochs"][0]
    assert set(ep["meters"].values()) == {"wall-power"} and {"cloud", "end"} <= set(ep["meters"])
    assert any(k.startswith("edge:") for k in ep["meters"])
    logs = {p.name for p in wd.glob("messages-*.json")}  # one per role process, each wrote its log
    # every edge with a process (the plan's, and with the closed loop every usable one: a
    # re-plan may move epochs there) wrote one
    assert {"messages-cloud.json", "messages-end.json"} <= logs and len(logs) == 2 + len(rec["job"]["edges"])


def test_run_job_runs_a_registered_transport_and_names_unknown_ones(tmp_path):
    """``run_job(transport=NAME)`` looks NAME up in TRANSPORTS: a transport registered here (one that
    wraps the threads transport) runs the job; an unknown name fails in one line, record saved."""
    import torch

    from jqodi.errors import RuntimeFailure
    from jqodi.runtime.launch import TRANSPORTS, Launch, run_job
    from test_runtime import _Data, _job

    seen: list[Launch] = []

    def counted(launch: Launch) -> None:
        seen.append(launch)
        TRANSPORTS.get("inprocess")(launch)

    TRANSPORTS.register("counted-threads", counted, "threads, counted (test)")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        job = _job(schedule=[{"edge": "a", "cut": 2, "epochs": 1}], pretrained={"source": "random", "seed": 3})
        rec = run_job(job, transport="counted-threads", workdir=tmp_path, data=_Data(n_train=64, n_val=20),
                      say=lambda s: None)
    finally:
        TRANSPORTS.unregister("counted-threads")
        torch.set_num_threads(n)
    assert len(seen) == 1 and seen[0].workdir == tmp_path and seen[0].job == job
    assert rec.status == "completed" and [e["epoch"] for e in rec.epochs] == [1]
    with pytest.raises(RuntimeFailure) as e:
        run_job(job, transport="counted-threads", workdir=tmp_path / "x", say=lambda s: None)
    assert str(e.value) == "unknown transport 'counted-threads'; known: gloo, inprocess"
    assert json.loads((tmp_path / "x" / "record.json").read_text())["status"] == "failed"
