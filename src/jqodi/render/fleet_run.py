"""A fleet run's results: the per-device table, the totals and the edge-utilisation plot.

Takes a :class:`jqodi.runtime.fleet_record.FleetRecord` (render does not import the runtime).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jqodi.render.tables import format_table

__all__ = ["fleet_run_report", "plot_utilisation"]

FleetRecord = Any


def _num(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def fleet_run_report(rec: FleetRecord) -> str:
    """Per device: status, epochs, measured vs planned time and energy, deadline; then the totals."""
    rows = []
    for name, d in rec.devices.items():
        p = d.get("predicted") or {}
        rows.append([name, d["status"], f"{d['epochs']}/{d['planned_epochs']}", ",".join(d["edges"]),
                     _num(d["time_s"], ".3g"), _num(p.get("shared_epoch_s"), ".3g"),
                     _num(d["energy_j"], ".4g"), _num(p.get("energy_j"), ".4g"), _num(d.get("deadline_s"), "g"),
                     {True: "yes", False: "no", None: "n/a"}[d.get("deadline_met")]])
    out = [format_table(["device", "status", "epochs", "edges", "time s", "pred. epoch s (shared)", "energy J",
                         "plan J (all epochs)", "deadline s", "met"], rows)]
    t = rec.totals
    known = t["devices"] - t.get("deadline_unknown", 0)
    met = f"{t['deadline_met']} of {known} met their deadline" if known else "deadline n/a"
    if t.get("deadline_unknown"):
        met += f" ({t['deadline_unknown']} ran only part of their plan)"
    out.append(f"\n{t['completed']}/{t['devices']} devices completed, {met}; "
               f"{t['energy_j']:.4g} J measured in all, the last finished at {t['makespan_s']:.3g} s (testbed time)")
    for name, why in rec.failed().items():
        out.append(f"failed: {name}: {why}")
    for name, why in (rec.meta.get("unserved") or {}).items():
        out.append(f"not run (the plan cannot serve it): {name}: {why}")
    util = rec.utilisation
    for edge, series in (util.get("edges") or {}).items():
        if series:
            busy = sum(series) * util["bin_s"]
            out.append(f"edge {edge}: busy {busy:.3g} s of {len(series) * util['bin_s']:.3g} s, "
                       f"peak utilisation {max(series):.0%}")
    return "\n".join(out)


def plot_utilisation(rec: FleetRecord, path: str | os.PathLike) -> Path | None:
    """Edge utilisation over time (one line per edge server) and each device's epochs, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    util = rec.utilisation
    if not util.get("t_s"):
        return None
    fig = Figure(figsize=(7.5, 4.8), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(1.2, 1))
    width = util["bin_s"]
    for edge, series in util["edges"].items():
        xs = [t for t in util["t_s"] for _ in (0, 1)][1:] + [util["t_s"][-1] + width]
        ys = [v for v in series for _ in (0, 1)]
        top.plot([0.0] + xs[:-1] + [xs[-1]], [ys[0]] + ys, label=f"edge {edge}")
    top.axhline(1.0, color="grey", lw=0.8, ls=":")
    top.set_ylabel("utilisation")
    top.set_ylim(bottom=0)
    top.legend(fontsize=8, frameon=False)
    top.set_title(f"fleet run {rec.run_id}: edge utilisation (work / time) and each device's epochs", fontsize=10)
    names = list(rec.devices)
    edges = list(util["edges"])
    for iv in rec.intervals:
        y = names.index(iv["device"]) if iv["device"] in names else 0
        bottom.barh(y, iv["end_s"] - iv["start_s"], left=iv["start_s"], height=0.6,
                    color=f"C{edges.index(iv['edge']) if iv['edge'] in edges else 0}", edgecolor="white")
    for y, n in enumerate(names):
        if rec.devices[n]["status"] != "completed":
            bottom.annotate("failed", (rec.devices[n]["time_s"], y), fontsize=7, color="red", va="center",
                            xytext=(3, 0), textcoords="offset points")
    bottom.set_yticks(range(len(names)), names, fontsize=7)
    bottom.set_xlabel("testbed seconds since the fleet started")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p)
    return p
