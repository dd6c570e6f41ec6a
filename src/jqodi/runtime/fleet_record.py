"""What a fleet run measured (issue 12, part 4): :class:`FleetRecord`.

Per device: its single-device :class:`~jqodi.runtime.record.RunRecord` (every epoch's measured
phases, bytes and energy), its status (``completed`` | ``failed``, with the cause), time (testbed
seconds from the fleet's first epoch to the device's last: the processes' start-up is not
counted, a device that starts late is), energy, and whether it met its deadline.
Totals over the fleet. Edge utilisation over time: each epoch's work on its edge server
(FLOPs / the edge's speed: dedicated busy seconds) spread over the epoch's interval, summed per
edge and time bin; 1.0 = the edge busy all the time (processor sharing never exceeds it).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from jqodi.core.devices import edge_role
from jqodi.runtime.fleet_job import FleetJob, end_role
from jqodi.runtime.fleet_node import FLEET_NAME, device_dir
from jqodi.runtime.process import EPOCHS_NAME
from jqodi.runtime.record import JsonRecord, record_from_epochs

__all__ = ["FleetRecord", "fleet_record", "edge_intervals", "utilisation"]

UTILISATION_BINS = 40


@dataclass
class FleetRecord(JsonRecord):
    """A fleet run: per-device summaries and records, totals, edge utilisation over time.

    ``devices[name]``: ``status``, ``error``, ``epochs`` / ``planned_epochs``, ``time_s``,
    ``energy_j``, ``deadline_s``, ``deadline_met`` (``None`` when the run was cut short by
    ``max_epochs``: the plan did not run whole), ``edges``, ``target`` and the plan's
    ``predicted`` figures when the app gave them. ``utilisation``: ``t_s`` (bin starts, testbed
    seconds), ``bin_s`` and per edge one value per bin. ``records[name]``: the RunRecord dict.
    """

    run_id: str
    edges: list[str]
    dilation: float
    devices: dict[str, dict] = field(default_factory=dict)
    records: dict[str, dict] = field(default_factory=dict)
    utilisation: dict = field(default_factory=dict)
    intervals: list[dict] = field(default_factory=list)
    status: str = "completed"
    error: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def totals(self) -> dict:
        ds = self.devices.values()
        done = [d for d in ds if d["status"] == "completed"]
        return {"devices": len(self.devices), "completed": len(done), "failed": len(self.devices) - len(done),
                "deadline_met": sum(1 for d in ds if d.get("deadline_met")),
                "deadline_unknown": sum(1 for d in ds if d.get("deadline_met") is None),
                "energy_j": sum(d["energy_j"] for d in ds),
                "makespan_s": max((d["time_s"] for d in ds), default=0.0),
                "predicted_energy_j": sum(d.get("predicted", {}).get("energy_j", 0.0) for d in ds) or None}

    def failed(self) -> dict[str, str]:
        """Device → why its job failed."""
        return {n: d.get("error") or "failed" for n, d in self.devices.items() if d["status"] != "completed"}


def edge_intervals(fleet: FleetJob, device: str, raw_epochs: list[dict], dilation: float) -> list[dict]:
    """Each epoch of ``device`` as ``{device, edge, start_s, end_s, work_s}`` (testbed seconds since
    the fleet started; ``work_s`` = the edge's dedicated busy seconds for it)."""
    job = fleet.devices[device]
    emu = job.emulation
    out = []
    for r in raw_epochs:
        if "t_end_wall_s" not in r:
            continue
        node = next((n for n in r["nodes"] if n["node"] == edge_role(r["edge"])), None)
        if node is None:
            continue
        dev = emu.devices.get(edge_role(r["edge"])) if emu is not None and emu.enabled else None
        work = sum(node["flops"].values()) / dev.flops if dev is not None else sum(node["compute_s"].values())
        end = r["t_end_wall_s"] / dilation
        out.append({"device": device, "edge": r["edge"], "epoch": r["epoch"] + 1,
                    "start_s": max(0.0, end - r["wall_s"] / dilation), "end_s": end, "work_s": work})
    return out


def utilisation(intervals: list[dict], edges: list[str], bins: int = UTILISATION_BINS) -> dict:
    """Busy share of every edge per time bin: each interval's work spread evenly over it."""
    horizon = max((iv["end_s"] for iv in intervals), default=0.0)
    if horizon <= 0:
        return {"t_s": [], "bin_s": 0.0, "edges": {e: [] for e in edges}}
    width = horizon / bins
    series = {e: [0.0] * bins for e in edges}
    for iv in intervals:
        span = iv["end_s"] - iv["start_s"]
        if span <= 0 or iv["edge"] not in series:
            continue
        rate = iv["work_s"] / span
        for b in range(int(iv["start_s"] // width), min(bins, int(math.ceil(iv["end_s"] / width)))):
            lo, hi = max(iv["start_s"], b * width), min(iv["end_s"], (b + 1) * width)
            if hi > lo:
                series[iv["edge"]][b] += rate * (hi - lo) / width
    return {"t_s": [b * width for b in range(bins)], "bin_s": width, "edges": series}


def fleet_record(fleet: FleetJob, workdir: str | Path, *, processes: dict[str, str] | None = None,
                 predicted: dict | None = None, status: str | None = None, error: str | None = None) -> FleetRecord:
    """The record of the fleet run in ``workdir`` (the cloud's ``fleet.json`` and per-device epochs).

    ``processes``: role → how its process ended abnormally (the launcher's words): an end
    device's own death is the cause its record names. ``predicted``: per device, the plan's figures.
    """
    wd = Path(workdir)
    state = json.loads((wd / FLEET_NAME).read_text()) if (wd / FLEET_NAME).is_file() else {"devices": {}}
    processes = processes or {}
    predicted = predicted or {}
    dilations = {j.emulation.dilation for j in fleet.devices.values() if j.emulation is not None and j.emulation.enabled}
    dilation = max(dilations) if dilations else 1.0
    rec = FleetRecord(fleet.run_id, fleet.edges, dilation, status=status or "completed", error=error,
                      meta=dict(fleet.meta))
    raw, ivs_of = {}, {}
    for d in fleet.devices:
        path = device_dir(wd, d) / EPOCHS_NAME
        raw[d] = json.loads(path.read_text())["epochs"] if path.is_file() else []
        ivs_of[d] = edge_intervals(fleet, d, raw[d], dilation)
    # the fleet's clock starts with its first epoch (not with the processes' start-up)
    origin = min((iv["start_s"] for ivs in ivs_of.values() for iv in ivs), default=0.0)
    for ivs in ivs_of.values():
        for iv in ivs:
            iv["start_s"] -= origin
            iv["end_s"] -= origin
    for d, job in fleet.devices.items():
        st = state["devices"].get(d, {})
        died = processes.get(end_role(d))
        ok = st.get("status") == "completed" and died is None
        why = died or st.get("error") or (None if ok else "the device's job did not finish (no result from the cloud)")
        rr = record_from_epochs(job, device_dir(wd, d) / EPOCHS_NAME, status="completed" if ok else "failed", error=why)
        ivs = ivs_of[d]
        rec.intervals += ivs
        pred = predicted.get(d, {})
        time_s = max((iv["end_s"] for iv in ivs), default=sum(e["time_s"] for e in rr.epochs))
        deadline = pred.get("deadline_s")
        # a run cut short (--max-epochs) did not run the plan: whether it met the deadline is unknown
        whole = job.max_epochs is None or job.max_epochs >= sum(s.epochs for s in job.schedule)
        rec.devices[d] = {"status": "completed" if ok else "failed", "error": why,
                          "epochs": len(rr.epochs), "planned_epochs": job.total_epochs,
                          "edges": job.edges, "model": job.model, "bits": job.bits,
                          "time_s": time_s, "energy_j": sum(e["energy_j"] for e in rr.epochs),
                          "deadline_s": deadline,
                          "deadline_met": (bool(ok and time_s <= deadline)
                                           if deadline is not None and (whole or not ok) else None),
                          "target": rr.target, "predicted": pred}
        rec.records[d] = rr.to_dict()
    rec.utilisation = utilisation(rec.intervals, fleet.edges)
    if rec.status == "completed" and rec.failed():
        rec.status = "partial"  # some devices failed, the others finished
    return rec
