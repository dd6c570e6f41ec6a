"""``run_plan``: start every role of a plan on this machine, watch them, collect a RunRecord.

How the roles run and talk is a *transport*, registered by name in :data:`TRANSPORTS`:

* ``gloo`` — the roles are subprocesses (``python -m jqodi cloud|edge|end``); the launcher keeps
  their PIDs, relays the cloud's progress, and when one fails it names it in a one-line
  :class:`RuntimeFailure` and ends the others by PID. The plugins loaded here are passed on
  (:func:`jqodi.core.plugins.child_env`).
* ``inprocess`` — the roles are threads of this process.

A transport is ``run(launch: Launch) -> None``: run every role of ``launch.job`` to its end,
leave ``epochs.json`` in ``launch.workdir`` and raise :class:`RuntimeFailure` naming the peer
that failed (docs/extending.md).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from jqodi.core.plugins import child_env
from jqodi.core.registry import Registry
from jqodi.errors import RuntimeFailure
from jqodi.core.devices import edge_role, edges_of_roles
from jqodi.runtime.job import Job
from jqodi.runtime.record import RunRecord, record_from_epochs

__all__ = ["run_plan", "run_job", "launch_processes", "free_port", "RoleProcess", "Launch", "TRANSPORTS"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class RoleProcess:
    """One role's subprocess: its PID, and the last lines it wrote."""

    def __init__(self, role: str, argv: list[str], env: dict, on_line: Callable[[str, str], None]):
        self.role = role
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                     text=True, bufsize=1, start_new_session=True)
        self.pid = self.proc.pid
        self.stderr: list[str] = []
        self.exited_at: float | None = None
        self._threads = [threading.Thread(target=self._pump, args=(self.proc.stdout, False, on_line), daemon=True),
                         threading.Thread(target=self._pump, args=(self.proc.stderr, True, on_line), daemon=True)]
        for t in self._threads:
            t.start()

    def _pump(self, stream, is_err: bool, on_line) -> None:
        for line in stream:
            line = line.rstrip("\n")
            if is_err:
                self.stderr.append(line)
                del self.stderr[:-50]
            on_line(self.role, line if not is_err else f"[stderr] {line}")

    def poll(self) -> int | None:
        rc = self.proc.poll()
        if rc is not None and self.exited_at is None:
            self.exited_at = time.monotonic()
        return rc

    def kill(self) -> None:
        """End this role's process (by its PID): SIGTERM, then SIGKILL."""
        if self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
            try:
                os.kill(self.pid, sig)
                os.kill(self.pid, signal.SIGCONT)  # a stopped process must run to act on it
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def join_output(self) -> None:
        for t in self._threads:
            t.join(timeout=2.0)

    def error_line(self) -> str | None:
        for line in reversed(self.stderr):
            if line.startswith("jqodi ") and ": error: " in line:
                return line.split(": error: ", 1)[1]
        return None


def _describe(rc: int) -> str:
    if rc < 0:
        try:
            return f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with code {rc}"


def launch_processes(job: Job, workdir: Path, *, host: str = "127.0.0.1", port: int | None = None,
                     resume: bool = False, on_line: Callable[[str, str], None] | None = None,
                     wall_limit_s: float | None = None, on_start: Callable[[dict], None] | None = None,
                     controller_file: Path | None = None) -> None:
    """Run the cloud, the job's edges and the end as subprocesses until they all finish.

    Raises :class:`RuntimeFailure` naming the first role that failed (a role killed by a signal
    is named before the roles that noticed it). ``on_start`` gets ``{role: RoleProcess}``.
    ``controller_file``: the controller the cloud rebuilds and asks after each epoch (``--controller``).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    job_path = workdir / "job.json"
    job_path.write_text(json.dumps(job.to_dict(), indent=2))
    port = port or free_port(host)
    # one secret per launch: every role proves it before the process group forms (runtime/auth.py);
    # it travels as a 0600 file, never on a command line
    from jqodi.runtime.auth import TOKEN_FILE_NAME, new_secret, write_token_file

    token_path = write_token_file(workdir / TOKEN_FILE_NAME, new_secret())
    conn = ["--host", host, "--port", str(port), "--timeout", str(job.timeout_s),
            "--startup-timeout", str(job.startup_timeout_s), "--token-file", str(token_path)]
    py = [sys.executable, "-m", "jqodi"]
    from jqodi.core.threads import thread_budget

    # the cloud, the edges and the end share this machine's cores: together no more threads than cores
    threads = thread_budget(processes=2 + len(job.edges))
    env = {**child_env(), "JQODI_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    lines = on_line or (lambda role, line: None)
    procs: dict[str, RoleProcess] = {}
    cloud_argv = (py + ["cloud", "--job", str(job_path), "--workdir", str(workdir), "--no-report"] + conn
                  + (["--resume"] if resume else []))
    if controller_file is not None:
        cloud_argv += ["--controller", str(controller_file)]
    def log(role: str) -> list[str]:  # every role writes its message log (kind + shapes) to the workdir
        return ["--message-log", str(workdir / f"messages-{role.replace(':', '-')}.json")]

    procs["cloud"] = RoleProcess("cloud", cloud_argv + log("cloud"), env, lines)
    for e in job.edges:
        procs[edge_role(e)] = RoleProcess(edge_role(e), py + ["edge", "--name", e] + conn + log(edge_role(e)), env, lines)
    procs["end"] = RoleProcess("end", py + ["end"] + conn + log("end"), env, lines)
    if on_start:
        on_start(procs)
    failure = supervise(procs, grace_s=min(1.5, job.timeout_s), wall_limit_s=wall_limit_s)
    if failure is not None:
        raise failure


def supervise(procs: dict[str, RoleProcess], *, grace_s: float, wall_limit_s: float | None,
              fatal: tuple[str, ...] | None = None, what: str = "run") -> RuntimeFailure | None:
    """Poll the processes until all have ended, one of the ``fatal`` roles (default: any) has
    failed, or ``wall_limit_s`` has passed; then end every process by its PID. Returns the failure
    (the root cause among the fatal roles, after ``grace_s`` for the others to report what they
    saw), or None."""
    watched = {r: p for r, p in procs.items() if fatal is None or r in fatal}
    deadline = time.monotonic() + wall_limit_s if wall_limit_s else None
    try:
        while True:
            if any(p.poll() not in (None, 0) for p in watched.values()):
                settle(procs, grace_s)
                return _root_cause(watched)
            if all(p.poll() is not None for p in procs.values()):
                return None
            if deadline and time.monotonic() > deadline:
                return RuntimeFailure(f"the {what} exceeded its wall-clock limit of {wall_limit_s:g} s", peer=None)
            time.sleep(0.05)
    finally:
        end_processes(procs)


def settle(procs: dict[str, RoleProcess], grace_s: float) -> None:
    """Give the processes still running ``grace_s`` to end (and report what they saw); collect
    the output of those that ended."""
    grace = time.monotonic() + grace_s
    while time.monotonic() < grace and any(p.poll() is None for p in procs.values()):
        time.sleep(0.05)
    for p in procs.values():
        if p.poll() is not None:
            p.join_output()


def end_processes(procs: dict[str, RoleProcess]) -> None:
    """End every process (by its PID) and collect its last output."""
    for p in procs.values():
        p.kill()
    for p in procs.values():
        p.join_output()


def _root_cause(procs: dict[str, RoleProcess]) -> RuntimeFailure:
    exited = sorted((p for p in procs.values() if p.poll() not in (None, 0)),
                    key=lambda p: p.exited_at or float("inf"))
    killed = [p for p in exited if p.proc.returncode < 0]
    if killed:
        p = killed[0]
        seen = next((q.error_line() for q in exited if q is not p and q.error_line()), None)
        return RuntimeFailure(f"{p.role} (pid {p.pid}) {_describe(p.proc.returncode)}"
                              + (f"; {seen}" if seen else ""), peer=p.role)
    for p in exited:
        msg = p.error_line()
        if msg:
            import re

            m = re.search(r"peer '([^']+)'", msg) or re.search(r"to '([^']+)'", msg)
            return RuntimeFailure(msg, peer=m.group(1) if m else p.role)
    p = exited[0]
    tail = p.stderr[-1] if p.stderr else ""
    return RuntimeFailure(f"{p.role} (pid {p.pid}) {_describe(p.proc.returncode)}" + (f": {tail}" if tail else ""),
                          peer=p.role)


@dataclass(frozen=True)
class Launch:
    """What :func:`run_job` hands a transport: the job and how to run it on this machine.

    Attributes:
        job: the job every role runs.
        workdir: where the transport leaves ``epochs.json`` (and checkpoints, message logs).
        resume: continue after the last checkpointed epoch in ``workdir``.
        host, port: the rendezvous address (``port`` None: a free one).
        say: where progress lines go.
        master: the cloud's initial model, when the caller already has it (threads only).
        data: the end device's data, when the caller already has it (threads only).
        wall_limit_s: give up after this many seconds (None: no limit).
        on_start: called with ``{role: RoleProcess}`` once processes started (process transports).
        progress: False draws no progress bar (pretraining, batches); None: on a terminal.
        controller: what the cloud asks after each epoch (:mod:`jqodi.runtime.control`); process
            transports hand it to the cloud process as JSON (its ``to_spec()``).
    """

    job: Job
    workdir: Path
    resume: bool = False
    host: str = "127.0.0.1"
    port: int | None = None
    say: Callable[[str], None] = print
    master: Any = None
    data: Any = None
    wall_limit_s: float | None = None
    on_start: Callable[[dict], None] | None = None
    progress: bool | None = None
    controller: Any = None


#: The closed-loop controller's spec in the workdir (``jqodi cloud --controller``; reused on resume).
CONTROLLER_NAME = "controller.json"

TRANSPORTS: Registry[Callable[[Launch], None]] = Registry("transport", RuntimeFailure)
"""How the roles of a job run and talk, by name (``jqodi run --transport NAME``)."""


@TRANSPORTS.register("gloo", description="one process per role (python -m jqodi cloud|edge|end), "
                                         "torch.distributed gloo point-to-point")
def run_processes(launch: Launch) -> None:
    """Every role as a subprocess of this machine over gloo; the cloud's progress is relayed."""
    def on_line(role, line):  # relay the cloud's progress; errors come back as one line
        if role == "cloud" and not line.startswith("[stderr]"):
            launch.say(line)
    spec = launch.workdir / CONTROLLER_NAME if launch.controller is not None else None
    launch_processes(launch.job, launch.workdir, host=launch.host, port=launch.port, resume=launch.resume,
                     on_line=on_line, wall_limit_s=launch.wall_limit_s, on_start=launch.on_start,
                     controller_file=spec)


@TRANSPORTS.register("inprocess", description="every role as a thread of this process "
                                              "(in-memory queues, the same bytes as on the wire)")
def run_threads(launch: Launch) -> None:
    """Every role as a thread of this process; checkpoints and ``epochs.json`` as over gloo."""
    from jqodi.runtime.local import run_inprocess
    from jqodi.runtime.process import initial_master, load_checkpoint, run_progress, save_checkpoint, write_epochs

    job, wd, say = launch.job, launch.workdir, launch.say
    master = launch.master if launch.master is not None else initial_master(job, say, progress=launch.progress)
    state = load_checkpoint(wd, job, master) if launch.resume else None
    if state is not None:
        say(f"resuming after epoch {state.epoch}/{job.total_epochs}")

    def checkpoint(st):
        save_checkpoint(wd, job, st)
        write_epochs(wd, st)

    on_progress, on_epoch = run_progress(job.replace(start_epoch=state.epoch if state else 0), say,
                                         enabled=launch.progress)
    run = run_inprocess(job, master, launch.data, on_epoch=on_epoch, on_progress=on_progress,
                        checkpoint=checkpoint, state=state, controller=launch.controller, log=say)
    write_epochs(wd, run.state)


def run_job(job: Job, *, transport: str = "gloo", workdir: str | Path = "runs/latest", resume: bool = False,
            host: str = "127.0.0.1", port: int | None = None, say: Callable[[str], None] = print,
            predicted=None, master=None, data=None, wall_limit_s: float | None = None,
            on_start=None, progress: bool | None = None, controller=None) -> RunRecord:
    """Run ``job`` (all roles on this machine, over the registered ``transport``) and return its
    :class:`RunRecord`.

    ``predicted`` (optional): the cost model's epoch, as ``predicted(edge, cut)`` or a list by
    epoch index (:func:`jqodi.runtime.plan.predict_epoch`). ``controller``: asked after each epoch.
    ``progress=False`` draws no progress bar (pretraining, batches); ``say`` gets the epoch lines.
    """
    from jqodi.runtime.process import EPOCHS_NAME, initial_master

    wd = Path(workdir)
    if job.pretrained.get("source", "pretrained") == "pretrained" and master is None:
        initial_master(job, progress=progress)  # pretrain once here (on a cache miss): the cloud finds the cache
    if controller is not None:  # beside the job: the cloud process rebuilds it, a resumed run reuses it
        wd.mkdir(parents=True, exist_ok=True)
        (wd / CONTROLLER_NAME).write_text(json.dumps(controller.to_spec()))
    try:
        run = TRANSPORTS.get(transport)
        run(Launch(job, wd, resume=resume, host=host, port=port, say=say, master=master, data=data,
                   wall_limit_s=wall_limit_s, on_start=on_start, progress=progress, controller=controller))
    except RuntimeFailure as e:
        record_from_epochs(job, wd / EPOCHS_NAME, predicted=predicted, status="failed",
                           error=str(e)).save(wd / "record.json")
        raise
    rec = record_from_epochs(job, wd / EPOCHS_NAME, predicted=predicted)
    rec.save(wd / "record.json")
    return rec


def run_plan(scenario, solution, *, transport: str = "gloo", workdir: str | Path = "runs/latest",
             resume: bool = False, emulate: bool | None = None, dilation: float | str | None = None,
             timeout_s: float | None = None, startup_timeout_s: float | None = None,
             max_epochs: int | None = None, pretrained: dict | None = None,
             say: Callable[[str], None] = print, port: int | None = None, job: Job | None = None,
             meter: str = "auto", inference_requests: int = 0, **kw) -> RunRecord:
    """Run ``solution`` on ``scenario`` (all roles on this machine): the public entry point.

    ``resume`` continues from the checkpoint in ``workdir`` (the job saved there is reused).
    Returns the :class:`RunRecord` (also saved as ``workdir/record.json``).
    """
    from jqodi.runtime.plan import job_from_plan, predict_epoch

    wd = Path(workdir)
    if job is None and resume and (wd / "job.json").is_file():
        job = Job.from_dict(json.loads((wd / "job.json").read_text()))
        say(f"resume: reusing the job in {wd / 'job.json'}")
    if job is None:
        job = job_from_plan(scenario, solution, emulate=emulate, dilation=dilation, timeout_s=timeout_s,
                            startup_timeout_s=startup_timeout_s, max_epochs=max_epochs, pretrained=pretrained,
                            meter=meter)
        edges = edges_of_roles(job.emulation.devices if job.emulation else {})
        job = job.replace(inference_requests=inference_requests, inference_edges=edges)
    if job.target_loss is None:  # a job from elsewhere: the record still says whether L_max was reached
        job = job.replace(target_loss=float(scenario.target_loss))
    wd.mkdir(parents=True, exist_ok=True)  # every transport: the job beside its record (resume reads it)
    (wd / "job.json").write_text(json.dumps(job.to_dict(), indent=2))
    cache: dict[tuple[str, int], dict] = {}

    def predicted(edge: str, cut: int) -> dict:  # per (edge, cut): a re-planned epoch may run anywhere
        if (edge, cut) not in cache:
            cache[(edge, cut)] = predict_epoch(scenario, job.model, job.bits, cut, edge)
        return cache[(edge, cut)]
    rt = scenario.runtime
    rec = run_job(job, transport=transport, workdir=wd, resume=resume, host=rt.host,
                  port=port if port is not None else rt.port,
                  say=say, predicted=predicted, **kw)
    rec.solution = solution.to_dict() if hasattr(solution, "to_dict") else solution
    rec.save(wd / "record.json")
    return rec
