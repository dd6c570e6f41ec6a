"""Runs as text: predicted vs measured per epoch, node and link; how the closed loop ended the
epochs; inference summaries."""
from __future__ import annotations

from typing import TYPE_CHECKING

from jqodi.core.costs import TERMS
from jqodi.core.devices import edge_role
from jqodi.runtime.job import dilation_words
from jqodi.runtime.record import RunRecord

if TYPE_CHECKING:
    from jqodi.runtime.inference import InferenceResult

__all__ = ["control_lines", "format_inference", "run_outcome", "run_report", "run_table"]


def format_inference(results: list[InferenceResult]) -> str:
    from jqodi.render.tables import format_table

    rows = []
    for r in results:
        rows.append([r.combo, r.cut if r.cut is not None else "-", r.requests,
                     f"{r.latency_p50_s * 1e3:.3g}", f"{r.latency_p95_s * 1e3:.3g}",
                     f"{r.predicted_latency_s * 1e3:.3g}" if r.predicted_latency_s is not None else "-",
                     f"{r.energy_j * 1e3:.3g}",
                     f"{r.predicted_energy_j * 1e3:.3g}" if r.predicted_energy_j is not None else "-",
                     " ".join(f"{k}={v * 1e3:.3g}" for k, v in r.energy_per_request_j.items()),
                     f"{r.bytes_per_request:.0f}", f"{r.accuracy:.1%}"])
    return format_table(["devices", "cut", "requests", "p50 ms", "p95 ms", "pred ms", "mJ/req", "pred mJ",
                         "mJ/req per node", "B/req", "acc"], rows)


def run_outcome(rec: RunRecord) -> str:
    """How the run ended, in a few lines: status, target reached or not (at which epoch), time and
    energy predicted vs measured, emulation, and the meter behind each node's energy."""
    t, tot = rec.target, rec.totals
    lines = [f"run {rec.status}" + (f": {rec.error}" if rec.error else "") + f", {len(rec.epochs)} epoch(s)"]
    if t["target_loss"] is None:
        lines.append("target: none in the job (no L_max to compare with)")
    elif t["reached"]:
        lines.append(f"target L_max {t['target_loss']:.4g}: REACHED at epoch {t['epoch']} "
                     f"(final val loss {t['final_val_loss']:.4f})")
    else:
        final = "-" if t["final_val_loss"] is None else f"{t['final_val_loss']:.4f}"
        lines.append(f"target L_max {t['target_loss']:.4g}: NOT reached (final val loss {final} "
                     f"after {len(rec.epochs)} epoch(s))")
    if rec.epochs:
        lines.append(f"time {_fmt(tot['time_s'], ' s')} measured vs {_fmt(tot.get('predicted_time_s'), ' s')} "
                     f"predicted; energy {_fmt(tot['energy_j'], ' J')} measured vs "
                     f"{_fmt(tot.get('predicted_energy_j'), ' J')} predicted")
    auto = (rec.job.get("emulation") or {}).get("dilation_auto")
    lines.append(f"emulation ON (dilation {dilation_words(rec.dilation, auto)}): devices, links and their power are the "
                 f"scenario's, not this host's" if rec.emulated else "emulation off: this host's own speed")
    if rec.meters:
        lines.append("meters: " + ", ".join(f"{n}={m}" for n, m in sorted(rec.meters.items()))
                     + ("  (model: the scenario's device busy power × this host's busy time, not a measurement "
                        "of this host: docs/energy.md)" if not rec.emulated and "model" in rec.meters.values() else ""))
    return "\n".join(lines)


def run_report(rec: RunRecord, workdir=None, *, inference: bool = True) -> str:
    """The report every run ends with (``jqodi run``, the demo, a cloud started by hand): the
    outcome, predicted vs measured per epoch, phase, link and node, then the inference served."""
    from pathlib import Path

    from jqodi.runtime.inference import InferenceResult

    parts = ["", run_outcome(rec), "", run_table(rec)]
    if inference and rec.inference:
        parts += ["\ncollaborative inference", format_inference([InferenceResult.from_dict(r) for r in rec.inference])]
    if workdir is not None:
        parts.append(f"\nrecord: {Path(workdir) / 'record.json'}")
    return "\n".join(parts)


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "-"
    if v == 0:
        return "0"
    a = abs(v)
    s = f"{v:.3g}" if a < 1000 else f"{v:,.0f}"
    return s + unit


def _err(p: float | None, m: float) -> str:
    if p is None or p == 0:
        return "-"
    return f"{(m - p) / p:+.0%}"


def run_table(rec: RunRecord) -> str:
    """Predicted vs measured: per-epoch time/energy/loss, then phases, bytes and energy per node."""
    lines = []
    emu = f" (emulated, dilation ×{rec.dilation:.3g}: measured = wall-clock / {rec.dilation:.3g})" if rec.emulated else ""
    lines.append(f"per epoch{emu}")
    raw = rec.emulated and rec.dilation != 1
    lines.append(f"{'ep':>3} {'edge':>10} {'cut':>3} {'pred s':>8} {'meas s':>8} {'err':>5} "
                 + (f"{'raw s':>8} " if raw else "")
                 + f"{'pred J':>9} {'meas J':>9} {'err':>5} {'train':>7} {'val':>7} {'acc':>6}")
    for e in rec.epochs:
        p = e.get("predicted") or {}
        lines.append(f"{e['epoch']:>3} {e['edge']:>10} {e['cut']:>3} {_fmt(p.get('time_s')):>8} "
                     f"{_fmt(e['time_s']):>8} {_err(p.get('time_s'), e['time_s']):>5} "
                     + (f"{_fmt(e['raw_time_s']):>8} " if raw else "") +
                     f"{_fmt(p.get('energy_j')):>9} {_fmt(e['energy_j']):>9} "
                     f"{_err(p.get('energy_j'), e['energy_j']):>5} {e['train_loss']:>7.4f} "
                     f"{e['val_loss']:>7.4f} {e['val_accuracy']:>6.1%}")
    if not rec.epochs:
        return "\n".join(lines + ["(no epoch completed)"])
    n = len(rec.epochs)
    lines.append("")
    lines.append(f"time per phase, summed over {n} epoch(s)")
    lines.append(f"{'phase':>14} {'predicted s':>12} {'measured s':>12} {'err':>6}"
                 + (f" {'raw s':>10}" if raw else ""))
    for ph in TERMS:
        m = sum(e["phases_s"][ph] for e in rec.epochs)
        preds = [(e.get("predicted") or {}).get("phases_s", {}).get(ph) for e in rec.epochs]
        p = sum(preds) if all(x is not None for x in preds) else None
        r = sum(e["raw_phases_s"][ph] for e in rec.epochs)
        lines.append(f"{ph:>14} {_fmt(p):>12} {_fmt(m):>12} {_err(p, m):>6}" + (f" {_fmt(r):>10}" if raw else ""))
    tot = rec.totals
    r = sum(e["raw_time_s"] for e in rec.epochs)
    lines.append(f"{'epoch total':>14} {_fmt(tot.get('predicted_time_s')):>12} {_fmt(tot['time_s']):>12} "
                 f"{_err(tot.get('predicted_time_s'), tot['time_s']):>6}" + (f" {_fmt(r):>10}" if raw else ""))
    lines.append("")
    lines.append("bytes per link (all epochs)")
    for link, b in sorted(tot["bytes"].items()):
        lines.append(f"{link:>24} {b:>14,d} B")
    ct = tot["cut_traffic"]
    if ct["fp32_bytes"]:
        lines.append(f"{'cut-layer traffic':>24} {ct['bytes']:>14,d} B  (fp32 would be {ct['fp32_bytes']:,d} B: "
                     f"{ct['saved_fraction']:.0%} saved)")
    lines.append("")
    meters = {}
    for e in rec.epochs:
        meters.update(e["meters"])
    lines.append("energy per node (all epochs)")
    pred_nodes = _predicted_node_energy(rec)
    overrun: dict[str, float] = {}
    for e in rec.epochs:
        for node, s in (e.get("overrun_s") or {}).items():
            overrun[node] = overrun.get(node, 0.0) + s
    idle, pred_idle = tot.get("idle_energy_j") or {}, _predicted_node_idle(rec)
    for node, j in sorted(tot["compute_energy_j"].items()):
        p = pred_nodes.get(node)
        note = f"  (host slower than the device by {overrun[node]:.3g} s)" if rec.emulated and overrun.get(node, 0) > 0 else ""
        lines.append(f"{node:>24} {_fmt(j, ' J'):>12}  predicted {_fmt(p, ' J') if p is not None else '-':>10}  "
                     f"[meter: {meters.get(node, '?')}]{note}")
        if idle.get(node) or pred_idle.get(node):  # extended + idle_energy: the node's waiting, apart
            lines.append(f"{node + ' idle':>24} {_fmt(idle.get(node, 0.0), ' J'):>12}  predicted "
                         f"{_fmt(pred_idle.get(node), ' J') if node in pred_idle else '-':>10}  "
                         f"[idle power × (epoch − busy)]")
    tj = sum(sum(e["transfer_energy_j"].values()) for e in rec.epochs)
    lines.append(f"{'transfers':>24} {_fmt(tj, ' J'):>12}  predicted {_fmt(pred_nodes.get('transfers'), ' J'):>10}  "
                 f"[bytes × link J/bit]")
    lines.append(f"{'total':>24} {_fmt(tot['energy_j'], ' J'):>12}  predicted {_fmt(tot.get('predicted_energy_j'), ' J'):>10}")
    return "\n".join(lines)


def _predicted_node_idle(rec: RunRecord) -> dict[str, float]:
    """Each node's predicted idle energy over the epochs (``extended`` + ``idle_energy``), {} when
    the predictions carry none (older records, or no idle power charged)."""
    out: dict[str, float] = {}
    for e in rec.epochs:
        pi = (e.get("predicted") or {}).get("idle_j")
        if pi is None:
            return {}
        for node, key in (("end", "end"), ("edge", edge_role(e["edge"])), ("cloud", "cloud")):
            out[key] = out.get(key, 0.0) + pi.get(node, 0.0)
    return {k: v for k, v in out.items() if v}


def _predicted_node_energy(rec: RunRecord) -> dict[str, float]:
    out: dict[str, float] = {}
    for e in rec.epochs:
        pj = (e.get("predicted") or {}).get("phases_j")
        if not pj:
            return {}
        out["end"] = out.get("end", 0.0) + pj["end_compute"]
        key = edge_role(e["edge"])
        out[key] = out.get(key, 0.0) + pj["edge_compute"]
        out["cloud"] = out.get("cloud", 0.0) + pj["cloud_update"]
        out["transfers"] = out.get("transfers", 0.0) + sum(
            pj[k] for k in ("cloud_to_edge", "edge_to_end", "end_to_edge", "edge_to_cloud", "activations"))
    return out


def control_lines(record) -> list[str]:
    """How a run's epochs ended, for the console: policy, re-plans, why it stopped, the model
    served, and the energy the stop saved against the plan (predicted energy of the planned
    epochs not run)."""
    ctl = record.control or {}
    if not ctl:
        return []
    summ = ctl.get("controller") or {}
    lines = []
    if summ:
        n = len(summ.get("replans", []))
        pm = summ.get("plan_ms", {})
        lines.append(f"closed loop: policy {summ.get('policy')}, {n} re-plan(s)"
                     + (f" (re-plan time max {pm.get('max', 0):.1f} ms wall, {pm.get('cpu_max', 0):.1f} ms CPU)"
                        if pm.get("count") else ""))
    status = ctl.get("status", "completed")
    lines.append(f"epochs ended ({status}) after {len(record.epochs)}: {ctl.get('reason') or 'the plan is done'}")
    best = ctl.get("best")
    if best:
        lines.append(f"best model: epoch {best['epoch']} (val loss {best['val_loss']:.4f}), kept by the cloud"
                     + (" and served" if record.inference else ""))
    sol = record.solution or {}
    run_pred = [e.get("predicted", {}).get("energy_j") for e in record.epochs]
    if sol.get("energy_j") is not None and record.epochs and all(x is not None for x in run_pred):
        planned = sum(int(e["epochs"]) for e in sol.get("schedule", []))
        line = (f"energy: {sum(e['energy_j'] for e in record.epochs):.4g} J measured over {len(record.epochs)} "
                f"epoch(s), {sum(run_pred):.4g} J predicted for them; the plan predicted {sol['energy_j']:.4g} J "
                f"for {planned}")
        if "target reached" in (ctl.get("reason") or ""):
            line += (f": stopping at the target saved ≈ {max(sol['energy_j'] - sum(run_pred), 0.0):.4g} J "
                     f"(predicted, the one-off quantization included)")
        lines.append(line)
    return lines
