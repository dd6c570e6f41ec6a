"""One process of a fleet run, over gloo: what ``jqodi fleet-node ROLE`` runs.

* ``cloud`` — publishes the :class:`~jqodi.runtime.fleet_job.FleetJob`, admits every process
  (:mod:`jqodi.runtime.auth`: the same job secret and per-message HMAC as a single run), then runs
  one :class:`~jqodi.runtime.roles.CloudRole` per device, each in its own thread with its own
  full-precision master. It writes ``devices/NAME/epochs.json`` after every epoch of a device and
  ``fleet.json`` (each device's status, error and epoch end times) at the end.
* ``edge:X`` — one :class:`~jqodi.runtime.roles.EdgeRole` per device whose plan uses X (one model
  copy each), in threads; under emulation their compute steps share one
  :class:`~jqodi.runtime.fleet_emulation.ProcessorSharing` server (the capacity model's).
* ``end:NAME`` — the device's :class:`~jqodi.runtime.roles.EndRole`; its data stays here.

A device whose job fails (its end process dies, a protocol violation, …) fails alone: its
threads end, its peers hear ``device_failed``, the other devices run on, and ``fleet.json`` says
which device failed and why. The cloud process itself, or an edge server, failing ends the
devices that depend on it.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Callable

from jqodi.core.devices import edge_role
from jqodi.errors import JqodiError, RuntimeFailure
from jqodi.runtime.fleet_job import FleetJob, device_of_role, end_role, fleet_ranks
from jqodi.runtime.job import Job

__all__ = ["serve_fleet_role", "FLEET_NAME", "DEVICES_DIR", "device_dir"]

FLEET_NAME = "fleet.json"
DEVICES_DIR = "devices"


def device_dir(workdir: str | Path, device: str) -> Path:
    return Path(workdir) / DEVICES_DIR / device


def _local_names(fleet: FleetJob, role: str, device: str) -> tuple[str, dict[str, str]]:
    """This role's local name in ``device``'s job and its peers' (local → process role)."""
    job = fleet.devices[device]
    if role == "cloud":
        return "cloud", {"end": end_role(device), **{edge_role(e): edge_role(e) for e in job.edges}}
    if role.startswith("edge:"):
        return role, {"cloud": "cloud", "end": end_role(device)}
    return "end", {"cloud": "cloud", **{edge_role(e): edge_role(e) for e in job.edges}}


def my_devices(fleet: FleetJob, role: str) -> list[str]:
    if role == "cloud":
        return list(fleet.devices)
    if role.startswith("edge:"):
        return fleet.devices_on(role.split(":", 1)[1])
    d = device_of_role(role)
    if d not in fleet.devices:
        raise RuntimeFailure(f"{role}: not part of this fleet", peer=role)
    return [d]


def link_rates(fleet: FleetJob, role: str) -> dict[str, float]:
    """Emulated send rate (bit/s, dilated) from ``role`` to each process it talks to."""
    out: dict[str, float] = {}
    for d in my_devices(fleet, role):
        emu = fleet.devices[d].emulation
        if emu is None or not emu.enabled:
            continue
        me, names = _local_names(fleet, role, d)
        for local, real in names.items():
            link = emu.link(me, local)
            if link is not None:
                out[real] = link.rate_bps / emu.dilation
    return out


def merged_limits(jobs: list[Job]):
    """The message limits every device's job allows at once (per-device shapes are checked by the views)."""
    from jqodi.runtime.messages import MessageLimits, message_limits

    per = [message_limits(j) for j in jobs]
    return MessageLimits(max_message_bytes=max(x.max_message_bytes for x in per),
                         max_batch=max(x.max_batch for x in per), num_classes=max(x.num_classes for x in per))


def _peers(fleet: FleetJob, role: str, devices: list[str]) -> list[str]:
    out: list[str] = []
    for d in devices:
        out += [p for p in _local_names(fleet, role, d)[1].values() if p not in out]
    return out


def serve_fleet_role(role: str, *, host: str, port: int, timeout_s: float, startup_timeout_s: float,
                     fleet: FleetJob | None = None, workdir: str | Path | None = None,
                     token_file: str | Path | None = None, bind_host: str | None = None,
                     message_log: str | Path | None = None,
                     say: Callable[[str], None] = lambda s: print(s, flush=True)) -> int:
    """Run ``role`` of a fleet until every device it serves is done; returns 0. An end device whose
    job failed raises :class:`RuntimeFailure` (its process exits 2 with the reason); the cloud and
    the edges carry on past a device's failure (``fleet.json`` names it). ``message_log``: every
    message's kind, peer and tensor shapes, written there as JSON when the process ends."""
    from jqodi.core.threads import set_threads
    from jqodi.runtime.auth import TOKEN_FILE_NAME, load_secret, new_secret, write_token_file
    from jqodi.runtime.fleet_transport import DeviceView, Mux
    from jqodi.runtime.messages import MessageLimits, message_limits
    from jqodi.runtime.process import _dump_log
    from jqodi.runtime.rendezvous import connect
    from jqodi.runtime.transport import GlooTransport

    set_threads()
    secret = load_secret(token_file)
    published = None
    if role == "cloud":
        if fleet is None:
            raise JqodiError("cloud: needs a fleet job (--job FILE)")
        if secret is None:
            secret = new_secret()
            path = write_token_file(Path(workdir or ".") / TOKEN_FILE_NAME, secret)
            say(f"cloud: job token written to {path} (mode 0600): give it to the other processes with --token-file")
        published = fleet.to_dict()
    pg, ranks, job_dict, keep = connect(role, host, port, startup_timeout_s, job=published, bind_host=bind_host,
                                        secret=secret, say=say, ranks_of=fleet_ranks)
    fleet = FleetJob.from_dict(job_dict)
    devices = my_devices(fleet, role)
    mac = all(fleet.devices[d].message_mac for d in devices)
    t = GlooTransport(pg, role, ranks, timeout_s=timeout_s, link_rate_bps=link_rates(fleet, role),
                      limits=MessageLimits.control_only(), secret=secret if mac else None)
    t.start()
    t.limits = merged_limits([fleet.devices[d] for d in devices])
    mux = Mux(t, _peers(fleet, role, devices)).start()
    runner = _Runner(fleet, role, devices, mux, say, workdir)
    try:
        runner.build({d: DeviceView(mux, d, *_local_names(fleet, role, d), limits=message_limits(fleet.devices[d]))
                      for d in devices})
        runner.run()
    except BaseException as e:  # this whole process fails: every peer hears why
        t.abort(f"{role}: {e}" if not isinstance(e, RuntimeFailure) else str(e), getattr(e, "peer", role))
        if keep[2] is not None:
            keep[2].stop()
        _dump_log(t, message_log)
        raise
    t.close(wait_s=min(timeout_s, 10.0))
    if keep[2] is not None:
        keep[2].stop()
    _dump_log(t, message_log)
    if role.startswith("end:") and runner.failed:  # the device's own process says why it failed
        raise RuntimeFailure(next(iter(runner.failed.values())), peer=role)
    return 0  # the cloud and the edges end normally: fleet.json says which devices failed


class _Runner:
    """The device threads of one fleet process."""

    def __init__(self, fleet: FleetJob, role: str, devices: list[str], mux, say, workdir):
        self.fleet, self.role, self.devices, self.mux, self.say = fleet, role, devices, mux, say
        self.workdir = Path(workdir) if workdir is not None else None
        self.roles: dict[str, object] = {}
        self.views: dict[str, object] = {}
        self.failed: dict[str, str] = {}
        self.failed_peer: dict[str, str | None] = {}
        self.started_at = time.time()
        self.finished_at: dict[str, float] = {}

    def build(self, views: dict) -> None:
        from jqodi.runtime.local import make_context
        from jqodi.runtime.roles import CloudRole, CloudState, EdgeRole, EndRole

        self.views = views
        server = None
        for d, view in views.items():
            job = self.fleet.devices[d]
            ctx = make_context(job, view, (lambda s, d=d: self.say(f"{d}: {s}")) if self.role == "cloud" else
                               (lambda s: None))
            if self.role == "cloud":
                from jqodi.runtime.process import initial_master

                self.roles[d] = CloudRole(ctx, CloudState(initial_master(job), 0, []),
                                          on_epoch=self._on_epoch(d), checkpoint=self._checkpoint(d))
            elif self.role.startswith("edge:"):
                if ctx.clock.device is not None and self.fleet.edge_sharing == "processor-sharing":
                    from jqodi.runtime.fleet_emulation import ProcessorSharing, SharedComputeClock

                    server = server or ProcessorSharing()
                    ctx.clock = SharedComputeClock.sharing(server, ctx.clock)
                self.roles[d] = EdgeRole(ctx, self.role.split(":", 1)[1])
            else:
                self.roles[d] = EndRole(ctx)

    def _on_epoch(self, d: str):
        from jqodi.runtime.process import epoch_line

        total = self.fleet.devices[d].total_epochs
        return lambda rec: self.say(f"{d}: {epoch_line(rec, total)}")

    def _checkpoint(self, d: str):
        from jqodi.runtime.process import write_epochs

        def save(state) -> None:
            if state.epochs:  # when each epoch ended, on the fleet's clock (edge utilisation over time)
                state.epochs[-1].setdefault("t_end_wall_s", time.time() - self.started_at)
            if self.workdir is not None:
                directory = device_dir(self.workdir, d)
                directory.mkdir(parents=True, exist_ok=True)
                write_epochs(directory, state)
        return save

    def _body(self, d: str) -> None:
        try:
            self.roles[d].run()
        except BaseException as e:  # noqa: BLE001 - this device's job ends here; the others run on
            reason = str(e) if isinstance(e, JqodiError) else f"{self.role} crashed: {type(e).__name__}: {e}"
            self.failed[d] = reason
            self.failed_peer[d] = getattr(e, "peer", None)
            self.views[d].fail(reason, self.failed_peer[d])
            if self.role == "cloud":
                self.say(f"{d}: failed: {reason}")
        finally:
            self.finished_at[d] = time.time() - self.started_at

    def run(self) -> None:
        self.started_at = time.time()
        threads = [threading.Thread(target=self._body, args=(d,), name=f"{self.role}/{d}", daemon=True)
                   for d in self.devices]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        if self.role == "cloud" and self.workdir is not None:
            out = {"run_id": self.fleet.run_id, "devices": {}}
            for d in self.devices:
                st = self.roles[d].state
                out["devices"][d] = {"status": "failed" if d in self.failed else "completed",
                                     "error": self.failed.get(d), "peer": self.failed_peer.get(d),
                                     "epochs": st.epoch, "finished_wall_s": self.finished_at.get(d)}
            path = self.workdir / FLEET_NAME
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(out, indent=2))
            tmp.replace(path)
