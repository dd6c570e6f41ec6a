"""The fleet job: one :class:`~jqodi.runtime.job.Job` per end device, run together.

A fleet run has one cloud process, one process per edge server and one per end device
(issue 12, part 3). Every device's job is an ordinary single-device :class:`Job` (its model,
bits, schedule, data, emulated devices and links), written in the roles' *local* names
(``cloud``, ``edge:X``, ``end``); the fleet maps them onto the processes:

* ``cloud`` → the one cloud process (one master model per device, no averaging: docs/fleet.md);
* ``edge:X`` → edge server X's process (one model copy per device it serves, its compute shared
  among them, :mod:`jqodi.runtime.fleet_emulation`);
* ``end`` → ``end:NAME``, the device's own process (its data never leaves it).

Ranks: cloud 0, edges 1..E in order of first use, then the end devices in the job's order.
The runtime never sees the fleet plan: the app layer turns it into this job
(:func:`jqodi.app.fleet_run.fleet_job_from_plan`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from jqodi.core.devices import edge_role
from jqodi.runtime.job import DEFAULT_STARTUP_TIMEOUT_S, DEFAULT_TIMEOUT_S, Job, JobError

__all__ = ["FleetJob", "end_role", "device_of_role", "fleet_ranks", "END_PREFIX"]

END_PREFIX = "end:"


def end_role(device: str) -> str:
    """The process role of end device ``device``: ``"end:NAME"``."""
    return f"{END_PREFIX}{device}"


def device_of_role(role: str) -> str | None:
    return role[len(END_PREFIX):] if role.startswith(END_PREFIX) else None


def fleet_ranks(job: dict) -> dict[str, int]:
    """Rank of every role of a fleet job (its dict, as published at the rendezvous)."""
    ranks = {"cloud": 0}
    for e in job["edges"]:
        ranks[edge_role(e)] = len(ranks)
    for d in job["devices"]:
        ranks[end_role(d)] = len(ranks)
    return ranks


@dataclass(frozen=True)
class FleetJob:
    """Every device's job (by device name, in run order) and what the processes share.

    ``timeout_s`` / ``startup_timeout_s``: as :class:`Job`'s, for the fleet's transports.
    ``edge_sharing``: ``processor-sharing`` (the capacity model's: an emulated edge serves its
    devices' concurrent compute steps at an equal share of its speed each) or ``dedicated``
    (every device's compute is padded as if it had the edge to itself: the plan's assumption
    without the capacity model, for comparison).
    """

    devices: dict[str, Job]
    run_id: str = "fleet"
    timeout_s: float = DEFAULT_TIMEOUT_S
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S
    edge_sharing: str = "processor-sharing"
    meta: dict = field(default_factory=dict)  # the plan's figures, for the record (the runtime ignores it)

    def __post_init__(self):
        if not self.devices:
            raise JobError("fleet job: no devices")
        object.__setattr__(self, "devices", {str(n): j if isinstance(j, Job) else Job.from_dict(j)
                                             for n, j in self.devices.items()})
        if self.edge_sharing not in ("processor-sharing", "dedicated"):
            raise JobError(f"fleet job: edge_sharing must be processor-sharing or dedicated, got {self.edge_sharing!r}")
        for v, what in ((self.timeout_s, "timeout_s"), (self.startup_timeout_s, "startup_timeout_s")):
            if not (math.isfinite(v) and v > 0):
                raise JobError(f"fleet job: {what} must be > 0, got {v}")

    @property
    def edges(self) -> list[str]:
        """Edge servers that get a process: every device job's, in first-use order."""
        out: list[str] = []
        for job in self.devices.values():
            out += [e for e in job.edges if e not in out]
        return out

    def devices_on(self, edge: str) -> list[str]:
        """The devices whose schedule uses ``edge`` (each gets its own model copy there)."""
        return [d for d, job in self.devices.items() if edge in job.edges]

    @property
    def roles(self) -> list[str]:
        return list(fleet_ranks({"edges": self.edges, "devices": list(self.devices)}))

    def to_dict(self) -> dict:
        return {"fleet": True, "run_id": self.run_id, "timeout_s": self.timeout_s,
                "startup_timeout_s": self.startup_timeout_s, "edge_sharing": self.edge_sharing,
                "meta": self.meta, "edges": self.edges,
                "devices": {n: j.to_dict() for n, j in self.devices.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "FleetJob":
        if not isinstance(d, dict) or not d.get("fleet"):
            raise JobError("fleet job: not a fleet job (no 'fleet: true')")
        unknown = set(d) - {"fleet", "run_id", "timeout_s", "startup_timeout_s", "edge_sharing", "meta", "edges",
                            "devices"}
        if unknown:
            raise JobError(f"fleet job: unknown key {sorted(unknown)[0]!r}")
        devices = d.get("devices")
        if not isinstance(devices, dict):
            raise JobError("fleet job.devices: must be a mapping of device name to job")
        jobs = {}
        for n, j in devices.items():
            try:
                jobs[str(n)] = Job.from_dict(j)
            except JobError as e:
                raise JobError(f"fleet job.devices.{n}: {e}") from None
        return cls(jobs, run_id=str(d.get("run_id", "fleet")), timeout_s=float(d.get("timeout_s", DEFAULT_TIMEOUT_S)),
                   startup_timeout_s=float(d.get("startup_timeout_s", DEFAULT_STARTUP_TIMEOUT_S)),
                   edge_sharing=str(d.get("edge_sharing", "processor-sharing")), meta=dict(d.get("meta") or {}))
