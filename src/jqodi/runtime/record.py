"""What a run measured, next to what the cost model predicted: :class:`RunRecord`.

Per epoch: time per phase (the terms of Eq. (7)–(10) and the ``extended`` cut-layer traffic),
bytes per link, energy per node (compute, from each node's meter; idle apart, when the emulated
device declares an idle power: the ``extended`` model's ``idle_energy``) and per link (transfer:
bytes × the link's energy per bit), losses. Under emulation the measured times are reported raw and
divided by the dilation (``*_s`` are emulated seconds, ``raw_*`` wall-clock seconds).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jqodi.core.devices import CLOUD_ROLE, END_ROLE, edge_role, link_key

__all__ = ["RunRecord", "measure_epoch", "record_from_epochs"]

# The phases measured are the cost model's per-epoch terms (jqodi.core.costs.TERMS).


def _node(rec: dict, name: str) -> dict:
    for n in rec["nodes"]:
        if n["node"] == name:
            return n
    return {"busy_s": {}, "send_s": {}, "energy_j": 0.0, "meter": "none", "bytes": {}, "cut": {}}


def measure_epoch(rec: dict, dilation: float, link_energy_per_bit: dict[str, float] | None = None) -> dict:
    """Turn the cloud's raw epoch record into measured phases (emulated seconds), bytes and energy."""
    cloud, end, es = _node(rec, CLOUD_ROLE), _node(rec, END_ROLE), _node(rec, edge_role(rec["edge"]))
    raw = {
        "end_compute": sum(end["busy_s"].values()),
        "edge_compute": sum(es["busy_s"].values()),
        "cloud_update": sum(cloud["busy_s"].values()),
        "cloud_to_edge": cloud["send_s"].get("cloud_to_edge", 0.0),
        "edge_to_end": es["send_s"].get("edge_to_end", 0.0),
        "end_to_edge": end["send_s"].get("end_to_edge", 0.0),
        "edge_to_cloud": es["send_s"].get("edge_to_cloud", 0.0),
        "activations": end["send_s"].get("activations", 0.0) + es["send_s"].get("activations", 0.0),
    }
    link_bytes: dict[str, int] = {}
    for n in rec["nodes"]:
        for link, b in n["bytes"].items():
            if b:
                link_bytes[link] = link_bytes.get(link, 0) + int(b)
    transfer_j = {}
    for link, b in link_bytes.items():
        a, c = link.split("->")
        eps = (link_energy_per_bit or {}).get(link_key(a, c), (link_energy_per_bit or {}).get(link_key(c, a)))
        if eps is not None:
            transfer_j[link] = 8.0 * b * eps
    cut_elements = sum(n.get("cut", {}).get("elements", 0) for n in rec["nodes"])
    cut_bytes = sum(n.get("cut", {}).get("bytes", 0) for n in rec["nodes"])
    # per node: busy (compute) and idle energy apart; idle only where the node's meter charges it
    idle = {n["node"]: float(n.get("idle_j", 0.0)) for n in rec["nodes"]}
    energy = {n["node"]: float(n["energy_j"]) - idle[n["node"]] for n in rec["nodes"]}
    return {
        "epoch": rec["epoch"] + 1, "edge": rec["edge"], "cut": rec["cut"],
        "train_loss": rec["train_loss"], "val_loss": rec["val_loss"], "val_accuracy": rec["val_accuracy"],
        "time_s": rec["wall_s"] / dilation, "raw_time_s": rec["wall_s"],
        "phases_s": {k: v / dilation for k, v in raw.items()}, "raw_phases_s": raw,
        "bytes": link_bytes, "compute_energy_j": energy, "idle_energy_j": idle, "transfer_energy_j": transfer_j,
        "energy_j": sum(energy.values()) + sum(idle.values()) + sum(transfer_j.values()),
        "meters": {n["node"]: n["meter"] for n in rec["nodes"]},
        "cut_traffic": {"bytes": cut_bytes, "fp32_bytes": 4 * cut_elements},
        "overrun_s": {n["node"]: n.get("overrun_s", 0.0) / dilation for n in rec["nodes"]},
    }


class JsonRecord:
    """A record dataclass saved as JSON: its fields and its ``totals`` (dropped again on load)."""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["totals"] = self.totals
        return d

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=2, default=_jsonable))
        return p

    @classmethod
    def load(cls, path: str | Path):
        d = json.loads(Path(path).read_text())
        d.pop("totals", None)
        return cls(**d)


@dataclass
class RunRecord(JsonRecord):
    """One run of a plan: the job, per-epoch measured (and predicted) figures, and the totals.

    ``epochs[i]`` holds ``measured`` fields (see :func:`measure_epoch`) and, when the scenario
    was known, ``predicted`` (``time_s``, ``energy_j``, ``phases_s``, ``phases_j`` from
    :func:`jqodi.core.costs.epoch_costs`). ``inference`` holds the collaborative-inference results.
    """

    job: dict
    epochs: list[dict] = field(default_factory=list)
    dilation: float = 1.0
    emulated: bool = False
    status: str = "completed"
    error: str | None = None
    solution: dict | None = None
    inference: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    control: dict = field(default_factory=dict)  # how the epochs ended: status, reason, re-plans, best model
    target_loss: float | None = None  # L_max of the plan (None: the job named none)

    @property
    def target(self) -> dict:
        """Whether the validation loss reached ``target_loss``: ``reached``, the first ``epoch`` (1-based)
        at or below it (``None`` if never), the ``final_val_loss``."""
        losses = [e["val_loss"] for e in self.epochs]
        epoch = None if self.target_loss is None else next(
            (e["epoch"] for e in self.epochs if e["val_loss"] <= self.target_loss), None)
        return {"target_loss": self.target_loss, "reached": epoch is not None, "epoch": epoch,
                "final_val_loss": losses[-1] if losses else None}

    @property
    def meters(self) -> dict[str, str]:
        """The energy meter that measured each node's figures (the last epoch's, per node)."""
        out: dict[str, str] = {}
        for e in self.epochs:
            out.update(e.get("meters") or {})
        return out

    @property
    def totals(self) -> dict:
        m_t = sum(e["time_s"] for e in self.epochs)
        m_e = sum(e["energy_j"] for e in self.epochs)
        pred = [e.get("predicted") for e in self.epochs]
        out = {"epochs": len(self.epochs), "time_s": m_t, "energy_j": m_e,
               "final_val_loss": self.epochs[-1]["val_loss"] if self.epochs else None,
               "final_val_accuracy": self.epochs[-1]["val_accuracy"] if self.epochs else None}
        if self.epochs and all(p is not None for p in pred):
            out["predicted_time_s"] = sum(p["time_s"] for p in pred)
            out["predicted_energy_j"] = sum(p["energy_j"] for p in pred)
        # per node (energy) and per link (bytes), summed over the epochs; idle only where charged
        for key in ("compute_energy_j", "idle_energy_j", "bytes"):
            summed: dict[str, float] = {}
            for e in self.epochs:
                for n, v in (e.get(key) or {}).items():
                    summed[n] = summed.get(n, 0) + v
            out[key] = summed
        cut_b = sum(e["cut_traffic"]["bytes"] for e in self.epochs)
        cut_fp = sum(e["cut_traffic"]["fp32_bytes"] for e in self.epochs)
        out["cut_traffic"] = {"bytes": cut_b, "fp32_bytes": cut_fp,
                              "saved_fraction": (1 - cut_b / cut_fp) if cut_fp else 0.0}
        out["target"] = self.target
        out["meters"] = self.meters
        return out



def record_from_epochs(job, epochs_path: str | Path, *, predicted=None,
                       status: str = "completed", error: str | None = None) -> RunRecord:
    """The :class:`RunRecord` of ``job`` (a :class:`jqodi.runtime.job.Job`) from the cloud's
    ``epochs.json``: what ``jqodi run`` and a cloud started by hand both save as ``record.json``.
    ``predicted`` (per epoch) defaults to the job's own :meth:`~jqodi.runtime.job.Job.predicted_per_epoch`."""
    emu = job.emulation
    dilation = emu.dilation if emu is not None and emu.enabled else 1.0
    rec = RunRecord(job=job.to_dict(), dilation=dilation, emulated=bool(emu and emu.enabled), status=status,
                    error=error, target_loss=job.target_loss)
    predicted = job.predicted_per_epoch() if predicted is None else predicted
    path = Path(epochs_path)
    if not path.is_file():
        return rec
    stored = json.loads(path.read_text())
    rec.inference = stored.get("inference") or []
    rec.control = stored.get("control") or {}
    if rec.control.get("status") == "paused" and rec.status == "completed":
        rec.status = "paused"
    eps = {k: v.energy_per_bit_j for k, v in emu.links.items()} if emu is not None else {}
    for r in stored["epochs"]:
        m = measure_epoch(r, rec.dilation, eps)
        if callable(predicted):  # re-planned runs: the prediction of the option each epoch ran on
            p = predicted(r["edge"], r["cut"])
            if p is not None:
                m["predicted"] = p
        elif predicted is not None and r["epoch"] < len(predicted):
            m["predicted"] = predicted[r["epoch"]]
        rec.epochs.append(m)
    return rec


def _jsonable(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)
