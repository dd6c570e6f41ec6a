"""The report's sections for one run directory (``record.json`` of ``jqodi run``, a deployment or
``make demo``; its ``summary.json`` when the main job wrote one): the outcome, predicted vs measured
per epoch, phase and node, the loss curve with L_max and K^exp/K^rob, re-plans, inference, the
probes' loss curves."""
from __future__ import annotations

from html import escape
from types import SimpleNamespace
from typing import Mapping

from jqodi.render.html_report.page import Section, fig_row, finite_or_none, fmt, note_html, rel_err, table
from jqodi.render.runs import _predicted_node_energy
from jqodi.render.svg import Line, Mark, bar_chart, line_chart

__all__ = ["run_sections"]


def _outcome(rec: Mapping, totals: Mapping) -> Section:
    t = totals.get("target") or {}
    rows = [("status", rec.get("status") + (f": {rec['error']}" if rec.get("error") else "")),
            ("epochs run", len(rec.get("epochs", [])))]
    if t.get("target_loss") is not None:
        reached = (f"reached at epoch {t['epoch']}" if t.get("reached") else "NOT reached")
        rows.append(("target L_max", f"{fmt(t['target_loss'])}: {reached} (final val loss {fmt(t.get('final_val_loss'))})"))
    rows += [("time (s)", f"{fmt(totals.get('time_s'))} measured, {fmt(totals.get('predicted_time_s'))} predicted "
                          f"({rel_err(totals.get('predicted_time_s'), totals.get('time_s')) or '-'})"),
             ("energy (J)", f"{fmt(totals.get('energy_j'))} measured, {fmt(totals.get('predicted_energy_j'))} predicted "
                            f"({rel_err(totals.get('predicted_energy_j'), totals.get('energy_j')) or '-'})"),
             ("emulation", f"on, dilation ×{fmt(rec.get('dilation'))}: the scenario's devices and links, not this "
                           "host's" if rec.get("emulated") else "off: the host's own speed"),
             ("meters", ", ".join(f"{k}={v}" for k, v in sorted((totals.get("meters") or {}).items())) or "-")]
    sol = rec.get("solution") or {}
    if sol.get("model"):
        sched = " + ".join(f"{e['epochs']}×({e['edge']}, cut {e['cut']})" for e in sol.get("schedule", []))
        rows.append(("plan", f"{sol.get('solver')}: {sol['model']} {sol.get('bits')}-bit, {sched}; predicted "
                             f"{fmt(sol.get('time_s'))} s, {fmt(sol.get('energy_j'))} J"))
    body = "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in rows) + "</table>"
    return ("Outcome", body + "".join(note_html(n) for n in rec.get("notes", [])))


def _per_epoch(rec: Mapping) -> list[Section]:
    eps = rec.get("epochs") or []
    if not eps:
        return []
    xs = [e["epoch"] for e in eps]
    pred = [e.get("predicted") or {} for e in eps]
    charts = [line_chart([Line("predicted", xs, [p.get(k) for p in pred], dashed=True, dots=True),
                          Line("measured", xs, [e.get(k) for e in eps], dots=True)],
                         title=f"{label} per epoch: predicted vs measured", xlabel="epoch", ylabel=label,
                         width=460, height=280)
              for k, label in (("time_s", "time (s)"), ("energy_j", "energy (J)"))]
    rows = [{"epoch": e["epoch"], "edge": e.get("edge"), "cut": e.get("cut"),
             "pred s": p.get("time_s"), "meas s": e.get("time_s"), "err s": rel_err(p.get("time_s"), e.get("time_s")),
             "pred J": p.get("energy_j"), "meas J": e.get("energy_j"),
             "err J": rel_err(p.get("energy_j"), e.get("energy_j")), "train loss": e.get("train_loss"),
             "val loss": e.get("val_loss"), "val acc": e.get("val_accuracy")} for e, p in zip(eps, pred)]
    cols = [(k, k) for k in rows[0]]
    emu = (note_html(f"Emulated: measured seconds are wall-clock / {fmt(rec.get('dilation'))} (the dilation).")
           if rec.get("emulated") else "")
    return [("Predicted vs measured per epoch", fig_row(*charts) + table(rows, cols) + emu)]


def _run_loss(rec: Mapping, summary: Mapping | None) -> list[Section]:
    eps = rec.get("epochs") or []
    if not eps:
        return []
    xs = [e["epoch"] for e in eps]
    lines = [Line("validation loss", xs, [e.get("val_loss") for e in eps], dots=True),
             Line("training loss", xs, [e.get("train_loss") for e in eps], dashed=True)]
    target = finite_or_none(rec.get("target_loss"))
    hl = {f"L_max = {fmt(target)}": target} if target is not None else None
    k_exp, k_rob = _run_ks(rec, summary)
    vl = {f"K^{n} = {k}": k for n, k in (("exp", k_exp), ("rob", k_rob)) if k is not None}
    return [("Loss curve (measured), L_max and K^exp / K^rob",
             fig_row(line_chart(lines, title="loss per epoch", xlabel="epoch", ylabel="loss (log)", logy=True,
                              hlines=hl, vlines=vl, xlim=(0, max(xs + list(vl.values()))))))]


def _run_ks(rec: Mapping, summary: Mapping | None) -> tuple[int | None, int | None]:
    lvp = (summary or {}).get("learning_vs_prediction") or {}
    if lvp.get("epochs_expected") is not None:
        return lvp.get("epochs_expected"), lvp.get("epochs_robust")
    sol = rec.get("solution") or {}
    planned = sum(int(e.get("epochs", 0)) for e in sol.get("schedule", [])) or None
    return sol.get("epochs_expected"), planned if sol.get("epochs_estimate", "robust") == "robust" else None


def _run_phases(rec: Mapping, totals: Mapping) -> list[Section]:
    eps = rec.get("epochs") or []
    if not eps or "phases_s" not in eps[0]:
        return []
    phases = list(eps[0]["phases_s"])
    meas = {ph: sum(e["phases_s"].get(ph, 0.0) for e in eps) for ph in phases}
    preds = {ph: [((e.get("predicted") or {}).get("phases_s") or {}).get(ph) for e in eps] for ph in phases}
    pred = {ph: (sum(v) if all(x is not None for x in v) else None) for ph, v in preds.items()}
    pred_j = {ph: [((e.get("predicted") or {}).get("phases_j") or {}).get(ph) for e in eps] for ph in phases}
    rows = [{"phase": ph, "predicted s": pred[ph], "measured s": meas[ph], "err": rel_err(pred[ph], meas[ph]),
             "predicted J": sum(v) if all(x is not None for x in v) else None}
            for ph, v in ((ph, pred_j[ph]) for ph in phases)]
    chart = bar_chart(phases, {"predicted": [pred[p] for p in phases], "measured": [meas[p] for p in phases]},
                      title="time per phase, all epochs", ylabel="time (s, log)", logy=True, width=760)
    out = [("Per phase: predicted vs measured", fig_row(chart) + table(rows, [(k, k) for k in rows[0]]))]
    nodes = totals.get("compute_energy_j") or {}
    if nodes:
        pn = _predicted_node_energy(SimpleNamespace(epochs=eps))
        names = sorted(nodes)
        rows = [{"node": n, "measured J": nodes[n], "predicted J": pn.get(n), "err": rel_err(pn.get(n), nodes[n])}
                for n in names]
        tj = sum(sum((e.get("transfer_energy_j") or {}).values()) for e in eps)
        rows.append({"node": "transfers (bytes × J/bit)", "measured J": tj, "predicted J": pn.get("transfers"),
                     "err": rel_err(pn.get("transfers"), tj)})
        chart = bar_chart([r["node"] for r in rows], {"predicted": [r["predicted J"] for r in rows],
                                                      "measured": [r["measured J"] for r in rows]},
                          title="energy per node, all epochs", ylabel="energy (J, log)", logy=True, width=760)
        links = [{"link": k, "bytes": v} for k, v in sorted((totals.get("bytes") or {}).items())]
        out.append(("Per node: energy predicted vs measured, bytes per link",
                    fig_row(chart) + table(rows, [(k, k) for k in rows[0]]) + table(links, [("link", "link"), ("bytes", "bytes")])))
    return out


def _replans(rec: Mapping) -> list[Section]:
    ctl = rec.get("control") or {}
    if not ctl:
        return []
    summ = ctl.get("controller") or {}
    lines = [f"policy {summ.get('policy', '-')}; epochs ended ({ctl.get('status', '-')}): "
             f"{ctl.get('reason') or 'the plan is done'}"]
    best = ctl.get("best") or {}
    if best:
        lines.append(f"best model: epoch {best.get('epoch')} (val loss {fmt(best.get('val_loss'))}), kept by the cloud")

    def plan(entries, model, bits):
        return f"{model} {bits}-bit " + " + ".join(f"{e['epochs']}×({e['edge']}, cut {e['cut']})" for e in entries or [])

    rows = [{"after epoch": r.get("epoch"), "trigger": r.get("trigger"), "reason": r.get("reason"),
             "old plan": plan(r.get("old"), r.get("old_model"), r.get("old_bits")),
             "new plan": plan(r.get("new"), r.get("new_model"), r.get("new_bits")),
             "old predicted J": r.get("old_predicted_energy_j"), "new predicted J": r.get("predicted_energy_j"),
             "solve ms": r.get("solve_ms")} for r in ctl.get("replans") or []]
    body = "".join(f"<p>{escape(x)}</p>" for x in lines)
    body += table(rows, [(k, k) for k in rows[0]]) if rows else "<p>No re-plan.</p>"
    return [("Closed loop and re-plans", body)]


def _inference(rec: Mapping) -> list[Section]:
    inf = rec.get("inference") or []
    if not inf:
        return []
    rows = [{"devices": r.get("combo"), "cut": r.get("cut"), "requests": r.get("requests"),
             "p50 ms": 1e3 * r["latency_p50_s"] if finite_or_none(r.get("latency_p50_s")) is not None else None,
             "p95 ms": 1e3 * r["latency_p95_s"] if finite_or_none(r.get("latency_p95_s")) is not None else None,
             "predicted ms": 1e3 * r["predicted_latency_s"] if finite_or_none(r.get("predicted_latency_s")) is not None else None,
             "mJ / request": 1e3 * r["energy_j"] if finite_or_none(r.get("energy_j")) is not None else None,
             "predicted mJ": 1e3 * r["predicted_energy_j"] if finite_or_none(r.get("predicted_energy_j")) is not None else None,
             "accuracy": r.get("accuracy")} for r in inf]
    return [("Collaborative inference after fine-tuning", table(rows, [(k, k) for k in rows[0]]))]


def _probes(summary: Mapping | None) -> list[Section]:
    probes = (summary or {}).get("probes") or []
    if not probes:
        return []
    est = {(e["model"], e["bits"]): e for e in summary.get("estimates") or []}
    target = finite_or_none((summary.get("target_rule") or {}).get("target_loss"))
    lines = []
    for p in probes:
        vl = p.get("val_losses") or []
        e = est.get((p["model"], p["bits"]), {})
        ln = Line(f"{p['model']} {p['bits']}-bit", list(range(len(vl) + 1)), [p.get("start_loss")] + vl, dots=True)
        if target is not None:
            ln.marks += [Mark(e[k], target, name, shape) for k, name, shape in
                         (("epochs_expected", "K^exp", "diamond"), ("epochs_robust", "K^rob", "triangle"))
                         if e.get(k) is not None]
        lines.append(ln)
    rows = [{"model": e["model"], "bits": e["bits"], "L_a": e.get("base_loss"), "γ": e.get("gamma"),
             "K^exp": "∞" if e.get("epochs_expected") is None else e["epochs_expected"],
             "K^rob": "∞" if e.get("epochs_robust") is None else e["epochs_robust"], "source": e.get("source")}
            for e in summary.get("estimates") or []]
    chart = line_chart(lines, title="probe fine-tuning: validation loss, K^exp / K^rob marked at L_max",
                       xlabel="epoch", ylabel="validation loss (log)", logy=True,
                       hlines={f"L_max = {fmt(target)}": target} if target is not None else None, width=760)
    return [("Measured learning estimates (probes)",
             fig_row(chart) + (table(rows, [(k, k) for k in rows[0]]) if rows else ""))]


def run_sections(rec: Mapping, totals: Mapping, *, summary: Mapping | None = None) -> list[Section]:
    """The sections of one run: the parsed ``record.json`` (``totals`` as saved, or recomputed by
    the caller from the record) and the main job's ``summary.json`` when there is one."""
    return ([_outcome(rec, totals)] + _per_epoch(rec) + _run_loss(rec, summary) + _run_phases(rec, totals)
            + _replans(rec) + _inference(rec) + _probes(summary))
