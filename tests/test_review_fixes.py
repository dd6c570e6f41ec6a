"""User-facing fixes from the last review, each pinned by a test that failed before it."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from jqodi.app.controller import ClosedLoopController
from jqodi.errors import JqodiError
from jqodi.planner import solve
from test_controller import make_table  # tests/ is on sys.path (no __init__.py)


def _a_spec() -> dict:
    """A controller spec as its JSON holds it (the replan controller of make_table's optimal plan)."""
    tab = make_table()
    return json.loads(json.dumps(ClosedLoopController(tab, solve(tab.instance, "optimal")).to_spec()))


# -- 1. a controller spec's options name only options --------------------------------------------------
@pytest.mark.parametrize("key,value,message", [
    ("table", {}, r"^controller spec: options\.table is not an option"),
    ("solution", {}, r"^controller spec: options\.solution is not an option"),
    ("edges_down", ["fast"], r"^controller spec: options\.edges_down is not an option"),
    ("threshold", "high", r"^controller spec: options\.threshold must be a number, got 'high'$"),
    ("hedge", 1, r"^controller spec: options\.hedge must be true or false, got 1$"),
    ("confirm", 1.5, r"^controller spec: options\.confirm must be a whole number, got 1\.5$"),
    ("refit_boot", "2", r"^controller spec: options\.refit_boot must be a whole number, got '2'$"),
    ("prior_epochs", "9", r"^controller spec: options\.prior_epochs must be a number or null"),
    ("spread_condition", 3, r"^controller spec: options\.spread_condition must be a string, got 3$"),
])
def test_a_controller_spec_with_a_bad_option_is_one_line_naming_it(key, value, message):
    spec = _a_spec()
    spec["options"][key] = value
    with pytest.raises(JqodiError, match=message):
        ClosedLoopController.from_spec(spec)
    spec["options"].pop(key)
    spec["options"]["prior_epochs"] = None  # null is the default: still read
    assert ClosedLoopController.from_spec(spec).prior_epochs is None
    spec["edges_down"] = "fast"
    with pytest.raises(JqodiError, match=r"^controller spec: edges_down must be a list of edge names"):
        ClosedLoopController.from_spec(spec)


def test_a_whole_count_written_as_a_float_is_read():
    spec = _a_spec()
    spec["options"].update(confirm=2.0, refit_boot=3.0)
    ctl = ClosedLoopController.from_spec(spec)
    assert (ctl.confirm, ctl.refit_boot) == (2, 3)


@pytest.mark.parametrize("change,message", [
    (lambda s: s.update(table=None), r"^controller spec is malformed: "),
    (lambda s: s.update(solution=None), r"^controller spec is malformed: "),
    (lambda s: s.update(options=[["policy", "static"]]), r"^controller spec: options must be a mapping"),
    (lambda s: s["options"].update(solver="bogus"), r"^unknown solver 'bogus'; known: .*optimal"),
])
def test_a_controller_spec_with_a_null_part_or_an_unknown_solver_is_one_line(change, message):
    spec = _a_spec()
    change(spec)
    with pytest.raises(JqodiError, match=message):
        ClosedLoopController.from_spec(spec)


def test_jqodi_cloud_policy_over_a_job_whose_options_are_no_mapping_is_one_line():
    from jqodi.app.run import controller_from_job
    from jqodi.runtime.job import Job

    spec = _a_spec()
    spec["options"] = [["policy", "replan"]]
    job = Job.from_dict({**_a_job_dict(), "closed_loop": {"version": 1, "controller": spec}})
    with pytest.raises(JqodiError, match=r"^job\.json: closed_loop: controller spec: options must be a mapping"):
        controller_from_job(job, "job.json", policy="static")


def test_jqodi_cloud_with_a_bad_controller_file_exits_2_in_one_line(tmp_path, capsys):
    from jqodi.cli import main

    spec = _a_spec()
    spec["options"]["table"] = spec["table"]
    (tmp_path / "ctl.json").write_text(json.dumps(spec))
    job = tmp_path / "job.json"
    job.write_text(json.dumps(_a_job_dict()))
    rc = main(["cloud", "--job", str(job), "--controller", str(tmp_path / "ctl.json"),
               "--workdir", str(tmp_path / "wd"), "--timeout", "5"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "options.table is not an option" in err, err


def _a_job_dict() -> dict:
    """The smallest job the cloud reads: LeNet at 8 bits, one epoch on the edge ``fast``."""
    return {"model": "lenet", "bits": 8, "schedule": [{"edge": "fast", "cut": 1, "epochs": 1}]}


# -- 2. a scenario, trace or device file from a pipe ---------------------------------------------------
def _cpu_demo_text(timeline: list | None = None) -> str:
    import yaml
    from importlib import resources

    d = yaml.safe_load((resources.files("jqodi") / "scenarios" / "cpu-demo.yaml").read_text())
    if timeline is not None:
        d["timeline"] = timeline
    return yaml.safe_dump(d)


def _pipe_with(data: bytes) -> tuple[str, int]:
    """An anonymous pipe holding ``data`` (its writer closed): the path that reads it and its fd."""
    r, w = os.pipe()
    os.write(w, data)  # well under the pipe's 64 KiB buffer
    os.close(w)
    return f"/dev/fd/{r}", r


def test_a_scenario_from_a_pipe_reads_relative_paths_from_the_working_dir_and_says_so_once(tmp_path, monkeypatch,
                                                                                           capsys):
    from jqodi.core import scenario as scenario_mod
    from jqodi.core.scenario import load_scenario

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(scenario_mod, "_WARNED", set())
    (tmp_path / "slow.tsv").write_text("0\t83.1\n1\t83.1\n")  # relative: the working directory's
    text = _cpu_demo_text([{"at_s": 0, "event": "link_trace", "edge": "rtx3090", "link": "end",
                            "trace": "slow.tsv"}])
    path, fd = _pipe_with(text.encode())
    try:
        a = load_scenario(path)
        b = load_scenario(path)  # a command that loads its scenario twice reads the same text again
    finally:
        os.close(fd)
    assert a.model_dump() == b.model_dump() and a._source_dir == tmp_path
    assert a.resolved_timeline("s").traces  # slow.tsv was found in the working directory
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "read from a pipe" in err[0] and str(tmp_path) in err[0], err


def test_a_trace_and_a_device_file_from_a_pipe_are_read(tmp_path):
    from jqodi.core.device_model import load_device_file
    from jqodi.core.linktrace import load_rate_trace

    path, fd = _pipe_with(b"0 100\n1 50\n")
    try:
        assert load_rate_trace(path).bits_per_loop > 0
    finally:
        os.close(fd)
    from importlib import resources

    device = (resources.files("jqodi") / "devices" / "pi5.yaml").read_bytes()
    path, fd = _pipe_with(device)
    try:
        assert load_device_file(path).model_dump() == load_device_file(
            str(resources.files("jqodi") / "devices" / "pi5.yaml")).model_dump()
    finally:
        os.close(fd)


@pytest.mark.parametrize("what,expected", [("dir", "is a directory, not a trace file"),
                                           ("missing", "trace file not found"),
                                           ("/dev/zero", "not a regular file")])
def test_a_trace_that_is_no_file_stays_one_line(tmp_path, what, expected):
    from jqodi.core.linktrace import load_rate_trace

    path = {"dir": str(tmp_path), "missing": str(tmp_path / "no.tsv"), "/dev/zero": "/dev/zero"}[what]
    with pytest.raises(JqodiError, match=expected):
        load_rate_trace(path)


def test_jqodi_plan_reads_its_scenario_from_stdin(tmp_path):
    import subprocess

    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "JQODI_HOME": str(tmp_path / "home"), "JQODI_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    p = subprocess.run([sys.executable, "-m", "jqodi", "plan", "/dev/stdin", "--json"], input=_cpu_demo_text(),
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["status"] != "infeasible"
    assert p.stderr.count("read from a pipe") == 1, p.stderr
    for bad, expected in ((str(tmp_path), "is a directory, not a scenario file"),
                          (str(tmp_path / "no.yaml"), "file not found")):
        p = subprocess.run([sys.executable, "-m", "jqodi", "plan", bad], capture_output=True, text=True,
                           cwd=tmp_path, env=env, timeout=120)
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and expected in p.stderr, p.stderr


def test_jqodi_plan_reads_an_instance_from_a_pipe(capsys):
    from jqodi.cli import main

    path, fd = _pipe_with(make_table().instance.to_json().encode())
    try:
        assert main(["plan", "--instance", path, "--solver", "optimal"]) == 0
    finally:
        os.close(fd)
    assert "net, 8-bit" in capsys.readouterr().out


def test_jqodi_plan_with_an_instance_that_is_not_text_is_one_line(tmp_path, capsys):
    from jqodi.cli import main

    bad = tmp_path / "bin.json"
    bad.write_bytes(b"{\"a\": \"\xd0\x00\xff\"}")
    assert main(["plan", "--instance", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--instance: {bad}: not UTF-8 text (byte 7)" in err, err


# -- 3. jqodi plan --solver all lists the excluded candidates once ---------------------------------------
def test_plan_solver_all_shows_the_excluded_candidates_once(capsys):
    from jqodi.cli import main

    example = Path(__file__).resolve().parents[1] / "examples" / "paper-data1.yaml"
    assert main(["plan", str(example), "--solver", "all"]) == 0
    out = capsys.readouterr().out
    assert out.count("excluded      lenet@2     misses T_max 180 s") == 1, out
    assert out.count("not searched  lenet@1, lenet@32") == 1
    assert "candidates jqodi, optimal, static can put in no plan" in out
    assert out.index("optimal saves") < out.index("excluded") < out.index("full-model: No plan")


# -- 4. which rule set the automatic dilation ------------------------------------------------------------
def test_the_automatic_dilation_line_says_which_rule_set_it(monkeypatch):
    from jqodi.core.scenario import default_scenario_path, load_scenario
    from jqodi.planner import ScheduleEntry, Solution
    from jqodi.render.runs import run_outcome
    from jqodi.runtime import plan as plan_mod
    from jqodi.runtime.job import Job, dilation_words
    from jqodi.runtime.record import RunRecord

    sc = plan_mod.cpu_scale(load_scenario(default_scenario_path()), train_size=64, val_size=32)
    sol = Solution("feasible", "test", "lenet", 8, (ScheduleEntry(sc.edges[0].name, 1, 2),))
    for epoch_rule, overrun_rule, words in ((5.1, 7.29, "×7.29, set by the overrun rule over the epoch rule's ×5.1"),
                                            (31.0, 2.0, "×31, set by the epoch rule over the overrun rule's ×2")):
        monkeypatch.setattr(plan_mod, "dilation_choice", lambda *a, e=epoch_rule, o=overrun_rule, **k: {
            "dilation": max(e, o), "epoch_rule": e, "overrun_rule": o})
        job = plan_mod.job_from_plan(sc, sol, emulate=True, dilation="auto")
        job = Job.from_dict(json.loads(json.dumps(job.to_dict())))  # as a job file / record holds it
        assert f"dilation {words})" in job.emulation.notice()
        rec = RunRecord(job=job.to_dict(), dilation=job.emulation.dilation, emulated=True, status="completed")
        line = next(ln for ln in run_outcome(rec).splitlines() if ln.startswith("emulation ON"))
        assert line.startswith(f"emulation ON (dilation {words}): devices, links"), line
        edited = job.to_dict()
        edited["emulation"]["dilation"] = 3.0  # a job file edited by hand: no rule set ×3
        assert "; dilation ×3) and charges" in Job.from_dict(edited).emulation.notice()
    given = plan_mod.job_from_plan(sc, sol, emulate=True, dilation=2.0)
    assert given.emulation.dilation_auto is None and dilation_words(2.0, None) == "×2"
    assert "(dilation ×2):" in run_outcome(RunRecord(job=given.to_dict(), dilation=2.0, emulated=True,
                                                     status="completed"))


# -- 5. the workdir lock on a folder that cannot be written ----------------------------------------------
def test_a_workdir_that_cannot_be_written_is_named_not_the_locks_temporary_file(tmp_path, monkeypatch):
    from jqodi.app.run import LOCK_NAME, WorkdirLock

    wd = tmp_path / "wd"
    wd.mkdir()
    real_write = Path.write_text

    def read_only(self, *a, **k):  # what a read-only folder does (root writes anyway: chmod cannot show it)
        if self.parent == wd:
            raise PermissionError(13, "Permission denied", str(self))
        return real_write(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", read_only)
    with pytest.raises(JqodiError) as e:
        WorkdirLock(wd, "run").acquire()
    msg = str(e.value)
    assert msg.startswith(f"{wd}: cannot write in this workdir (Permission denied)") and "--workdir" in msg, msg
    assert f"{LOCK_NAME}.{os.getpid()}" not in msg and "\n" not in msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_workdir_is_named(tmp_path):
    from jqodi.app.run import WorkdirLock

    wd = tmp_path / "ro"
    wd.mkdir()
    wd.chmod(0o500)
    try:
        with pytest.raises(JqodiError, match=f"^{wd}: cannot write in this workdir"):
            WorkdirLock(wd, "cloud").acquire()
    finally:
        wd.chmod(0o700)


def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
    from jqodi.app.run import WorkdirLock

    wd = tmp_path / "afile"
    wd.write_text("x")
    with pytest.raises(JqodiError, match=f"^{wd}: not a folder: .*give a --workdir that is a folder$"):
        WorkdirLock(wd, "run").acquire()
    with pytest.raises(JqodiError, match=f"^{wd / 'sub'}: cannot write in this workdir"):
        WorkdirLock(wd / "sub", "run").acquire()
