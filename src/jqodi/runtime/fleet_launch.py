"""``run_fleet``: start a fleet's cloud, edge and end-device processes on this machine, watch them,
collect a :class:`~jqodi.runtime.fleet_record.FleetRecord`.

Every process is ``python -m jqodi fleet-node ROLE`` (the launcher keeps their PIDs and ends
them by PID). The cloud's output is relayed. An end-device process that dies ends only its own
device's job: the launcher notes how it died and waits for the rest; the record names the
device and the cause. The cloud failing ends the run (:class:`RuntimeFailure`).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Callable

from jqodi.core.devices import edge_role
from jqodi.core.plugins import child_env
from jqodi.runtime.fleet_job import FleetJob, end_role
from jqodi.runtime.fleet_node import DEVICES_DIR, FLEET_NAME
from jqodi.runtime.launch import RoleProcess, _describe, free_port, supervise

__all__ = ["run_fleet", "FLEET_JOB_NAME"]

FLEET_JOB_NAME = "fleet_job.json"


def run_fleet(fleet: FleetJob, workdir: str | Path, *, host: str = "127.0.0.1", port: int | None = None,
              say: Callable[[str], None] = print, wall_limit_s: float | None = None,
              on_start: Callable[[dict], None] | None = None, predicted: dict | None = None):
    """Run every process of ``fleet`` here; returns its :class:`FleetRecord` (also ``workdir/record.json``).

    ``on_start`` gets ``{role: RoleProcess}`` once started (tests kill one by PID). ``predicted``:
    per device, the plan's figures (``deadline_s``, ``time_s``, ``energy_j``, ``shared_epoch_s``…),
    kept in the record beside the measured ones.
    """
    from jqodi.core.threads import thread_budget
    from jqodi.runtime.auth import TOKEN_FILE_NAME, new_secret, write_token_file
    from jqodi.runtime.fleet_record import fleet_record

    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    (wd / FLEET_NAME).unlink(missing_ok=True)  # a previous run's results must not mix into this one's
    shutil.rmtree(wd / DEVICES_DIR, ignore_errors=True)
    job_path = wd / FLEET_JOB_NAME
    job_path.write_text(json.dumps(fleet.to_dict(), indent=2))
    port = port or free_port(host)
    token = write_token_file(wd / TOKEN_FILE_NAME, new_secret())
    conn = ["--host", host, "--port", str(port), "--timeout", str(fleet.timeout_s),
            "--startup-timeout", str(fleet.startup_timeout_s), "--token-file", str(token)]
    roles = fleet.roles
    env = {**child_env(), "JQODI_THREADS": str(thread_budget(processes=len(roles))), "PYTHONUNBUFFERED": "1"}

    def on_line(role: str, line: str) -> None:
        if role == "cloud" and not line.startswith("[stderr]"):
            say(line)

    py = [sys.executable, "-m", "jqodi", "fleet-node"]

    def argv(role: str) -> list[str]:  # every process writes its message log (kinds, shapes) to the workdir
        return py + [role] + conn + ["--message-log", str(wd / f"messages-{role.replace(':', '-')}.json")]
    procs: dict[str, RoleProcess] = {}
    procs["cloud"] = RoleProcess("cloud", argv("cloud") + ["--job", str(job_path), "--workdir", str(wd)], env, on_line)
    for e in fleet.edges:
        procs[edge_role(e)] = RoleProcess(edge_role(e), argv(edge_role(e)), env, on_line)
    for d in fleet.devices:
        procs[end_role(d)] = RoleProcess(end_role(d), argv(end_role(d)), env, on_line)
    if on_start:
        on_start(procs)
    # the cloud is the run: without it nothing can finish; an end device's exit ends only its own job
    failure = supervise(procs, grace_s=1.5, wall_limit_s=wall_limit_s, fatal=("cloud",), what="fleet run")
    died = {}
    for r, p in procs.items():
        rc = p.proc.returncode
        if rc not in (None, 0):
            why = p.error_line() or (p.stderr[-1] if p.stderr else "")
            # killed: the signal is the cause; exited with an error: its own line says why
            died[r] = f"{r} (pid {p.pid}) {_describe(rc)}" if rc < 0 or not why else why
    rec = fleet_record(fleet, wd, processes=died, predicted=predicted,
                       status="failed" if failure is not None else None,
                       error=str(failure) if failure is not None else None)
    rec.save(wd / "record.json")
    if failure is not None:
        raise failure
    return rec
