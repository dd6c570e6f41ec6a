"""Running roles: one role in this process (over gloo), or all of them as threads (in-process).

:func:`run_role` is what ``jqodi cloud|edge|end`` call; :func:`run_inprocess` runs the cloud,
the edges and the end device as threads of this process over :class:`InProcessTransport`
(tests, quick runs; same roles, same bytes).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

from jqodi.errors import JqodiError, RuntimeFailure
from jqodi.runtime.emulation import clock_for
from jqodi.runtime.job import Job
from jqodi.core.devices import edge_role
from jqodi.runtime.roles import CloudRole, CloudState, EdgeRole, EndRole, RoleContext
from jqodi.runtime.transport import InProcessHub, InProcessTransport, Transport

__all__ = ["make_context", "run_inprocess", "InProcessRun", "role_names", "make_meter_for"]


def role_names(job: Job) -> list[str]:
    return ["cloud", "end"] + [edge_role(e) for e in job.edges]


def link_rates(job: Job, me: str) -> dict[str, float]:
    """Emulated send rate (bit/s, already dilated) from ``me`` to each peer it talks to."""
    emu = job.emulation
    if emu is None or not emu.enabled:
        return {}
    out = {}
    for peer in role_names(job):
        if peer == me:
            continue
        link = emu.link(me, peer)
        if link is not None:
            out[peer] = link.rate_bps / emu.dilation
    return out


def make_meter_for(job: Job, role: str, emulate: bool | None = None):
    """The energy meter of ``role``: when emulating (``emulate``; ``None``: as the job says) a
    device of the scenario, the model meter at that device's busy power — and at its idle power
    for the time it is up and not busy, when the device declares one (the plan charges idle:
    :func:`jqodi.runtime.plan.emulation_from_scenario`), a window's wall time scaled back by the
    dilation; else the job's meter kind (``auto``, ``rapl``, …; ``model`` at the device's busy
    power when the job names one)."""
    from jqodi.runtime.energy import ModelMeter, make_meter

    emu = job.emulation
    dev = emu.devices.get(role) if emu is not None else None
    if emulate is None:
        emulate = bool(emu is not None and emu.enabled)
    if emulate and dev is not None:  # emulated devices: profile power
        if dev.idle_power_w is not None:
            return ModelMeter(dev.busy_power_w, dev.idle_power_w, time_scale=1.0 / emu.dilation)
        return make_meter("model", busy_power_w=dev.busy_power_w)
    return make_meter(job.meter, busy_power_w=dev.busy_power_w if dev is not None else None)


def make_context(job: Job, transport: Transport, log: Callable[[str], None] = lambda s: None) -> RoleContext:
    """A role's context; with emulation and a timeline in the job, the role's compute follows its
    device's slowdowns and its sends on a trace-driven link follow the trace (in dilated time)."""
    import time

    from jqodi.runtime.control import EmulatedTimeline

    emu = job.emulation
    enabled = bool(emu and emu.enabled)
    clock = clock_for(transport.me, emu, enabled, job)
    timeline = None
    if enabled and emu.timeline:
        timeline = EmulatedTimeline(emu.timeline, emu.dilation)
        if clock.device is not None:
            clock.slowdown = timeline.slowdown(transport.me)
        for peer in role_names(job):
            key = _link_key(transport.me, peer)
            link = emu.link(transport.me, peer)
            if peer == transport.me or link is None or not timeline.follows_trace(key):
                continue

            def wire(begin: float, nbytes: int, key=key, nominal=link.rate_bps) -> float:
                offset = time.time() - time.monotonic()  # the trace runs on the shared wall clock
                return timeline.wire_done(key, nbytes, begin + offset, nominal) - offset
            transport.link_wire[peer] = wire
    return RoleContext(job, transport, clock, make_meter_for(job, transport.me), log, timeline)


def _link_key(a: str, b: str) -> str:
    """The timeline's key of the link between roles ``a`` and ``b`` (``edge:X|end``, ``cloud|edge:X``)."""
    pair = sorted((a, b), key=lambda r: {"cloud": 0, "end": 2}.get(r, 1))
    return f"{pair[0]}|{pair[1]}"


@dataclass
class InProcessRun:
    """The outcome of :func:`run_inprocess`: the cloud's state and every role's transport."""

    state: CloudState
    transports: dict[str, Transport]
    errors: dict[str, BaseException]


def run_inprocess(job: Job, master, data=None, *, on_epoch=None, on_progress=None, checkpoint=None,
                  heartbeat_s: float | None = None, fault: Callable[[str, InProcessHub], None] | None = None,
                  state: CloudState | None = None, controller=None,
                  log: Callable[[str], None] | None = None) -> InProcessRun:
    """Run every role of ``job`` as a thread of this process; ``master`` is the cloud's model
    (QAT-prepared at ``job.bits``), updated in place. ``data`` is the SD's
    :class:`jqodi.core.data.EndDeviceData` (loaded from ``job.data`` if None).

    ``state`` (a checkpoint's) resumes after its last completed epoch. ``controller``: what the
    cloud asks after each epoch (:mod:`jqodi.runtime.control`); ``log``: the cloud's lines (re-plans).
    Raises the first :class:`RuntimeFailure` a role reported.
    """
    if state is not None:
        job = job.replace(start_epoch=state.epoch)
    hub = InProcessHub()
    names = role_names(job)
    from jqodi.runtime.messages import message_limits

    limits = message_limits(job)
    transports = {n: InProcessTransport(hub, n, names, timeout_s=job.timeout_s, heartbeat_s=heartbeat_s,
                                        link_rate_bps=link_rates(job, n), limits=limits) for n in names}
    state = state or CloudState(master, epoch=job.start_epoch)
    errors: dict[str, BaseException] = {}
    ctxs = {n: make_context(job, t, log if n == "cloud" and log else (lambda s: None)) for n, t in transports.items()}
    roles = {"cloud": CloudRole(ctxs["cloud"], state, on_epoch, on_progress, checkpoint, controller=controller),
             "end": EndRole(ctxs["end"], data)}
    for e in job.edges:
        roles[edge_role(e)] = EdgeRole(ctxs[edge_role(e)], e)

    def body(name: str):
        t = transports[name]
        try:
            roles[name].run()
        except RuntimeFailure as e:
            errors[name] = e
            t.abort(str(e), e.peer)
            hub.kill(name)
            return
        except BaseException as e:  # noqa: BLE001 - a crash of this role: its peers must notice
            errors[name] = e
            hub.kill(name)
            return
        t.close(wait_s=job.timeout_s)

    for t in transports.values():
        t.start()
    threads = [threading.Thread(target=body, args=(n,), name=f"role-{n}", daemon=True) for n in names]
    for th in threads:
        th.start()
    if fault is not None:
        fault("started", hub)
    for th in threads:
        th.join()
    for t in transports.values():
        t._closing.set()
    if errors:
        # the root cause: a crash beats the failures it caused in the others
        crash = next((e for e in errors.values() if not isinstance(e, RuntimeFailure)), None)
        if crash is not None and not isinstance(crash, JqodiError):
            raise crash
        first = crash or next(iter(errors.values()))
        raise first
    return InProcessRun(state, transports, errors)
