"""The HTML report of ``jqodi report DIR``: one self-contained page (inline CSS and SVG, no
scripts, nothing fetched from anywhere) built from what evaluations and runs saved as JSON.

- :func:`evaluation_sections` — one ``evaluation.json`` (``jqodi evaluate``): every strategy's
  time vs energy (Fig. 7(c)/11(c)), loss vs energy, time and epoch with K^exp/K^rob marked
  (Fig. 7(a)/(b)), time and energy per node and per phase (Figs. 8, 12), the cut-point sweep
  (Fig. 3, Observation 4), Tables V–VII with the paper's values beside ours.
- :func:`run_sections` — one run directory (``record.json`` of ``jqodi run``, a deployment or
  ``make demo``; its ``summary.json`` when the main job wrote one): the outcome, predicted vs
  measured per epoch, phase and node, the loss curve with L_max and K^exp/K^rob, re-plans,
  inference, the probes' loss curves.
- :func:`page` — the sections as one HTML document.

A section appears only when its data does. Inputs are plain JSON data (dicts); this module
reads no files.
"""
from __future__ import annotations

import math
from html import escape
from types import SimpleNamespace
from typing import Any, Mapping, Sequence

from jqodi.render.runs import _predicted_node_energy
from jqodi.render.svg import Line, Mark, bar_chart, line_chart

__all__ = ["page", "evaluation_sections", "run_sections", "table"]

Section = tuple[str, str]  # (heading, HTML body)

_CSS = """
body{font-family:sans-serif;margin:1.5em auto;max-width:1320px;color:#222;padding:0 1em}
h1{font-size:1.5em} h2{border-bottom:2px solid #ccd;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.6em} nav ul ul{display:flex;flex-wrap:wrap;gap:0 1.4em;padding-left:1em;list-style:none}
table{border-collapse:collapse;margin:.6em 0;font-size:13px} .wide{overflow-x:auto}
th,td{border:1px solid #ccd;padding:3px 7px;vertical-align:top} th{background:#eef}
td.n{text-align:right;font-variant-numeric:tabular-nums} tr.paper td{background:#fafaf2}
.figs{display:flex;flex-wrap:wrap;gap:12px} figure{margin:0} .note{color:#555;font-size:13px}
code{background:#f3f3f3;padding:0 3px}
"""


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def fmt(v: Any, unit: str = "") -> str:
    """A cell: ``-`` for none, yes/no, numbers with 4 significant digits (thousands grouped)."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "∞"
        a = abs(v)
        s = f"{v:,.1f}" if a >= 1000 else f"{v:.4g}" if a >= 1e-3 or v == 0 else f"{v:.3g}"
    elif isinstance(v, int) and abs(v) >= 10000:
        s = f"{v:,}"
    else:
        s = str(v)
    return s + unit


def _err(pred: Any, meas: Any) -> str | None:
    p, m = _num(pred), _num(meas)
    if p is None or m is None or p == 0:
        return None
    return f"{(m - p) / p:+.0%}"


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]], *,
          row_class: str | None = None) -> str:
    """An HTML table: ``columns`` are (key, header); numbers right-aligned; a row's ``_class``
    (or ``row_class``) becomes its class."""
    head = "".join(f"<th>{escape(h)}</th>" for _, h in columns)
    body = []
    for r in rows:
        cls = r.get("_class") or row_class
        cells = "".join(f'<td class="n">{escape(fmt(r.get(k)))}</td>' if _num(r.get(k)) is not None
                        else f"<td>{escape(fmt(r.get(k)))}</td>" for k, _ in columns)
        body.append(f'<tr class="{cls}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _figs(*svgs: str | None) -> str:
    return '<div class="figs">' + "".join(f"<figure>{s}</figure>" for s in svgs if s) + "</div>"


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def page(title: str, intro: str, groups: Sequence[tuple[str, Sequence[Section]]]) -> str:
    """The whole document: a title, an intro paragraph, a table of contents, then each group
    (a ``<h2>`` per evaluation or run) with its sections (``<h3>``)."""
    toc, parts = [], []
    for gi, (heading, sections) in enumerate(groups):
        gid = f"g{gi}-{_slug(heading)}"
        toc.append(f'<li><a href="#{gid}">{escape(heading)}</a><ul>'
                   + "".join(f'<li><a href="#{gid}-{si}">{escape(h)}</a></li>' for si, (h, _) in enumerate(sections))
                   + "</ul></li>")
        parts.append(f'<h2 id="{gid}">{escape(heading)}</h2>')
        parts += [f'<section id="{gid}-{si}"><h3>{escape(h)}</h3>{body}</section>'
                  for si, (h, body) in enumerate(sections)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><link rel=\"icon\" href=\"data:,\">"
            f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1><p>{intro}</p>"
            f"<nav><ul>{''.join(toc)}</ul></nav>{''.join(parts)}</body></html>\n")


# ---------------------------------------------------------------------------------------------
# evaluations (evaluation.json)


def _shown(ev: Mapping) -> list[Mapping]:
    """Strategies with a plan (the figures draw these)."""
    return [s for s in ev.get("strategies", []) if s.get("model") is not None]


def _plan_key(s: Mapping) -> tuple:
    return (s.get("model"), s.get("bits"),
            tuple(sorted((e["edge"], e["cut"], e["epochs"]) for e in s.get("schedule", []))))


def _strategy_lines(ev: Mapping, x: str, y: str, *, marks: bool = False) -> list[Line]:
    """One line per strategy; a plan identical to an earlier one is dashed (both stay visible)."""
    k_of = {(r["model"], r["bits"]): r for r in ev.get("epochs_table", [])}
    choice = {r.get("strategy"): r.get("ours_choice") for r in ev.get("comparison", [])}
    lines, seen = [], []
    for s in _shown(ev):
        traj = s.get("trajectory") or []
        same = next((p["label"] for p in seen if _plan_key(p) == _plan_key(s)), None)
        seen.append(s)
        label = f"{s['label']}: {choice.get(s['label']) or s['model']}" + (f" (= {same})" if same else "")
        ln = Line(label, [p.get(x) for p in traj], [p.get(y) for p in traj], dashed=same is not None,
                  end="circle" if s.get("reaches_target") else "square")
        if marks and traj:
            row = k_of.get((s["model"], s["bits"]), {})
            for key, name, shape in (("K_exp", "K^exp", "diamond"), ("K_rob", "K^rob", "triangle")):
                k = row.get(key)
                if isinstance(k, int) and k < len(traj) and traj[k].get(y) is not None:
                    ln.marks.append(Mark(traj[k][x], traj[k][y], name, shape))
        lines.append(ln)
    return lines


def _fig7(ev: Mapping) -> list[Section]:
    shown = _shown(ev)
    if not any(s.get("trajectory") for s in shown):
        return []
    t_max = _num(ev.get("deadline_s"))
    vl = {f"T_max = {fmt(t_max)} s": t_max} if t_max else {}
    lines = _strategy_lines(ev, "time_s", "energy_j")
    svgs = [line_chart(lines, title="time vs energy, epoch by epoch (○ L_max reached, □ not)",
                       xlabel="time taken (s)", ylabel="energy (J)", vlines=vl)]
    far = t_max and any((s.get("time_s") or 0) > 1.15 * t_max for s in shown)
    if far:
        e_zoom = max([p["energy_j"] for s in shown for p in s["trajectory"] if p["time_s"] <= 1.15 * t_max] or [1.0])
        svgs.append(line_chart(lines, title=f"zoomed on the deadline (t ≤ {fmt(1.15 * t_max)} s)",
                               xlabel="time taken (s)", ylabel="energy (J)", vlines=vl,
                               xlim=(0, 1.15 * t_max), ylim=(0, 1.1 * e_zoom)))
    cols = [("strategy", "strategy"), ("ours_choice", "ours"), ("ours_energy_j", "E (J)"),
            ("ours_time_s", "T (s)"), ("ours_epochs", "epochs"), ("ours_reaches_target", "L_max reached"),
            ("ours_meets_deadline", "T_max met")]
    if ev.get("paper_key"):
        cols += [("paper_choice", "paper's choice"), ("paper_energy_j", "paper E (J)"),
                 ("paper_time_s", "paper T (s)")]
    notes = "".join(_note(f"{s['label']}: {s['note']}") for s in ev.get("strategies", []) if s.get("note"))
    return [("Time vs energy of every strategy (Fig. 7(c) / 11(c))",
             _figs(*svgs) + table(ev.get("comparison", []), cols) + notes)]


def _loss(ev: Mapping) -> list[Section]:
    if not any(p.get("loss") is not None for s in _shown(ev) for p in s.get("trajectory") or []):
        return []
    hl = {f"L_max = {fmt(ev.get('target_loss'))}": ev.get("target_loss")} if _num(ev.get("target_loss")) else {}
    t_max = _num(ev.get("deadline_s"))
    xlim_t = (0, 1.15 * t_max) if t_max else None
    e_lim = max([p["energy_j"] for s in _shown(ev) for p in s["trajectory"]
                 if not t_max or p["time_s"] <= 1.15 * t_max] or [1.0])
    svgs = [line_chart(_strategy_lines(ev, "energy_j", "loss"), title="(a) loss vs energy", xlabel="energy (J)",
                       ylabel="validation loss (log)", logy=True, hlines=hl, xlim=(0, 1.1 * e_lim)),
            line_chart(_strategy_lines(ev, "time_s", "loss"), title="(b) loss vs time", xlabel="time taken (s)",
                       ylabel="validation loss (log)", logy=True, hlines=hl, xlim=xlim_t,
                       vlines={f"T_max = {fmt(t_max)} s": t_max} if t_max else None),
            line_chart(_strategy_lines(ev, "epoch", "loss", marks=True), title="loss vs epoch, K^exp / K^rob marked",
                       xlabel="epoch", ylabel="validation loss (log)", logy=True, hlines=hl)]
    return [("Loss curves (Fig. 7(a)/(b)) with K^exp and K^rob",
             _figs(*svgs) + _note("Predicted losses drawn through the plan's anchors (start L_a + γ, L_max at "
                                  "K^exp, K^rob): a prediction, not a training curve; measured losses are in the "
                                  "run sections. Axes stop at 1.15 T_max."))]


def _breakdowns(ev: Mapping) -> list[Section]:
    out = []
    for key, title, what in (("breakdown", "Time and energy per node and link (Figs. 8, 12)", "node"),
                             ("phases", "Time and energy per phase (cost terms of Eq. (1)–(10))", "phase")):
        shown = [s for s in _shown(ev) if s.get(key)]
        if not shown:
            continue
        names = list(dict.fromkeys(n for s in shown for n in s[key]
                                   if any((s2[key].get(n) or {}).get("energy_j") or (s2[key].get(n) or {}).get("time_s")
                                          for s2 in shown)))
        cats = [s["label"] for s in shown]
        charts = [bar_chart(cats, {n: [(s[key].get(n) or {}).get(unit) for s in shown] for n in names},
                            title=f"{label} per {what}", ylabel=f"{label} ({u}, log)", logy=True,
                            width=620 if len(names) <= 6 else 900)
                  for unit, label, u in (("time_s", "time", "s"), ("energy_j", "energy", "J"))]
        rows = [{what: n, **{f"{s['label']} {u}": (s[key].get(n) or {}).get(k)
                             for s in shown for k, u in (("time_s", "s"), ("energy_j", "J"))}} for n in names]
        cols = [(what, what)] + [(f"{s['label']} {u}", f"{s['label']} ({u})") for s in shown for u in ("s", "J")]
        out.append((title, _figs(*charts) + table(rows, cols)))
    return out


def _shape(energies: Sequence[float]) -> str:
    """Observation 4's test: does energy first fall, then rise, as the cut moves deeper?"""
    i = min(range(len(energies)), key=energies.__getitem__)
    if len(energies) < 2 or max(energies) - min(energies) <= 1e-9 * max(abs(max(energies)), 1.0):
        return "flat"
    if i == 0:
        return "rises from the first cut"
    if i == len(energies) - 1:
        return "falls throughout"
    return "falls, then rises (Observation 4)"


def _cut_sweep(ev: Mapping) -> list[Section]:
    rows = ev.get("cut_sweep") or []
    if not rows:
        return []
    jq = next((s for s in _shown(ev) if s.get("label") == "JQODI"), None)
    edges = list(dict.fromkeys(r["edge"] for r in rows))
    edge = (jq["schedule"][0]["edge"] if jq and jq.get("schedule") else edges[0])
    charts, table_rows = [], []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        for unit, label in (("epoch_energy_j", "energy per epoch (J)"), ("epoch_time_s", "time per epoch (s)")):
            lines = []
            for bits in dict.fromkeys(r["bits"] for r in mine):
                pts = sorted((r["cut"], r[unit]) for r in mine if r["bits"] == bits and r["edge"] == edge)
                if pts:
                    lines.append(Line("fp32" if bits == 32 else f"{bits}-bit", [c for c, _ in pts],
                                      [v for _, v in pts], dots=True))
            if lines:
                charts.append(line_chart(lines, title=f"{model} @ {edge}: {label} vs cut", xlabel="partition point",
                                         ylabel=label, xzero=False, width=440, height=280))
        for (bits, e) in dict.fromkeys((r["bits"], r["edge"]) for r in mine):
            pts = sorted((r["cut"], r["epoch_energy_j"]) for r in mine if r["bits"] == bits and r["edge"] == e)
            energies = [v for _, v in pts]
            table_rows.append({"model": model, "bits": bits, "edge": e,
                               "energy per epoch by cut (J)": " · ".join(f"{c}: {fmt(v)}" for c, v in pts),
                               "least-energy cut": pts[min(range(len(pts)), key=energies.__getitem__)][0],
                               "shape": _shape(energies)})
    holds = sum(r["shape"].startswith("falls, then") for r in table_rows)
    body = (_figs(*charts)
            + _note(f"Observation 4 (energy first falls, then rises as the cut moves deeper) holds for {holds} of "
                    f"{len(table_rows)} (model, bits, edge). Charts: the edge of JQODI's plan ({edge}); the table "
                    "has every edge; bit-widths that cost the same draw one line. The paper's Fig. 3 shows LeNet "
                    "4-bit on the RTX 3090 over 200 epochs.")
            + "<details><summary>every (model, bits, edge)</summary>"
            + table(table_rows, [(k, k) for k in ("model", "bits", "edge", "energy per epoch by cut (J)",
                                                  "least-energy cut", "shape")]) + "</details>")
    return [("Cut-point sweep (Fig. 3, Observation 4)", body)]


def _table_v(ev: Mapping, paper_v: Mapping | None) -> list[Section]:
    jq = next((s for s in _shown(ev) if s.get("solver") == "jqodi"), None)
    if jq is None:
        return []
    plan_j = _num(jq.get("plan_energy_j"))
    total = _num(jq.get("energy_j"))
    rows = [{"": "ours", "total energy (J)": total, "JQODI planning energy (J)": plan_j,
             "planning / total (‰)": 1000 * plan_j / total if plan_j is not None and total else None,
             "planning time (s)": _num(jq.get("plan_time_s"))}]
    if paper_v:
        pt, pp = _num(paper_v.get("total_energy_j")), _num(paper_v.get("planning_energy_j"))
        rows.append({"": "paper", "total energy (J)": pt, "JQODI planning energy (J)": pp,
                     "planning / total (‰)": 1000 * pp / pt if pp is not None and pt else None, "_class": "paper"})
    note = ("" if plan_j is not None else
            _note("Planning energy: not measured here (no meter recorded it); the planning time is the solver's "
                  "wall time on the host that made this page."))
    return [("Table V: system energy and JQODI's own overhead",
             table(rows, [(k, k) for k in ("", "total energy (J)", "JQODI planning energy (J)",
                                           "planning / total (‰)", "planning time (s)")]) + note)]


def _table_vi(ev: Mapping) -> list[Section]:
    rows = ev.get("epochs_table") or []
    if not rows:
        return []
    cols = [("model", "model"), ("bits", "bits"), ("loss_start", "L_a + γ"), ("K_exp", "K^exp"), ("K_rob", "K^rob")]
    if any("paper_K" in r for r in rows):
        cols += [("paper_K", "paper K"), ("paper_K_exp", "paper K^exp"), ("paper_K_rob", "paper K^rob")]
    name = {"data1": "Table VI", "data2": "Table VII"}.get(ev.get("paper_key") or "", "Tables VI/VII")
    return [(f"Epoch estimates ({name}): ours beside the paper's",
             table([{**r, "K_exp": "∞" if r.get("K_exp") is None else r["K_exp"],
                     "K_rob": "∞" if r.get("K_rob") is None else r["K_rob"]} for r in rows], cols)
             + _note("∞: the target loss is out of reach for that candidate."))]


def evaluation_sections(ev: Mapping, *, paper_table_v: Mapping | None = None) -> list[Section]:
    """The sections of one evaluation (the parsed ``evaluation.json``); ``paper_table_v`` is the
    paper's Table V row for its data split, when it has one."""
    head = (f"T_max = {fmt(ev.get('deadline_s'))} s, L_max = {fmt(ev.get('target_loss'))}"
            + (f"; the paper's figures: {ev['paper_key']}" if ev.get("paper_key") else ""))
    overview = f"<p>{escape(head)}</p>" + "".join(_note(n) for n in ev.get("notes", []))
    return ([("Overview", overview)] + _fig7(ev) + _loss(ev) + _breakdowns(ev) + _cut_sweep(ev)
            + _table_v(ev, paper_table_v) + _table_vi(ev))


# ---------------------------------------------------------------------------------------------
# runs (record.json, summary.json)


def _outcome(rec: Mapping, totals: Mapping) -> Section:
    t = totals.get("target") or {}
    rows = [("status", rec.get("status") + (f": {rec['error']}" if rec.get("error") else "")),
            ("epochs run", len(rec.get("epochs", [])))]
    if t.get("target_loss") is not None:
        reached = (f"reached at epoch {t['epoch']}" if t.get("reached") else "NOT reached")
        rows.append(("target L_max", f"{fmt(t['target_loss'])}: {reached} (final val loss {fmt(t.get('final_val_loss'))})"))
    rows += [("time (s)", f"{fmt(totals.get('time_s'))} measured, {fmt(totals.get('predicted_time_s'))} predicted "
                          f"({_err(totals.get('predicted_time_s'), totals.get('time_s')) or '-'})"),
             ("energy (J)", f"{fmt(totals.get('energy_j'))} measured, {fmt(totals.get('predicted_energy_j'))} predicted "
                            f"({_err(totals.get('predicted_energy_j'), totals.get('energy_j')) or '-'})"),
             ("emulation", f"on, dilation ×{fmt(rec.get('dilation'))}: the scenario's devices and links, not this "
                           "host's" if rec.get("emulated") else "off: the host's own speed"),
             ("meters", ", ".join(f"{k}={v}" for k, v in sorted((totals.get("meters") or {}).items())) or "-")]
    sol = rec.get("solution") or {}
    if sol.get("model"):
        sched = " + ".join(f"{e['epochs']}×({e['edge']}, cut {e['cut']})" for e in sol.get("schedule", []))
        rows.append(("plan", f"{sol.get('solver')}: {sol['model']} {sol.get('bits')}-bit, {sched}; predicted "
                             f"{fmt(sol.get('time_s'))} s, {fmt(sol.get('energy_j'))} J"))
    body = "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in rows) + "</table>"
    return ("Outcome", body + "".join(_note(n) for n in rec.get("notes", [])))


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
             "pred s": p.get("time_s"), "meas s": e.get("time_s"), "err s": _err(p.get("time_s"), e.get("time_s")),
             "pred J": p.get("energy_j"), "meas J": e.get("energy_j"),
             "err J": _err(p.get("energy_j"), e.get("energy_j")), "train loss": e.get("train_loss"),
             "val loss": e.get("val_loss"), "val acc": e.get("val_accuracy")} for e, p in zip(eps, pred)]
    cols = [(k, k) for k in rows[0]]
    emu = (_note(f"Emulated: measured seconds are wall-clock / {fmt(rec.get('dilation'))} (the dilation).")
           if rec.get("emulated") else "")
    return [("Predicted vs measured per epoch", _figs(*charts) + table(rows, cols) + emu)]


def _run_loss(rec: Mapping, summary: Mapping | None) -> list[Section]:
    eps = rec.get("epochs") or []
    if not eps:
        return []
    xs = [e["epoch"] for e in eps]
    lines = [Line("validation loss", xs, [e.get("val_loss") for e in eps], dots=True),
             Line("training loss", xs, [e.get("train_loss") for e in eps], dashed=True)]
    target = _num(rec.get("target_loss"))
    hl = {f"L_max = {fmt(target)}": target} if target is not None else None
    k_exp, k_rob = _run_ks(rec, summary)
    vl = {f"K^{n} = {k}": k for n, k in (("exp", k_exp), ("rob", k_rob)) if k is not None}
    return [("Loss curve (measured), L_max and K^exp / K^rob",
             _figs(line_chart(lines, title="loss per epoch", xlabel="epoch", ylabel="loss (log)", logy=True,
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
    rows = [{"phase": ph, "predicted s": pred[ph], "measured s": meas[ph], "err": _err(pred[ph], meas[ph]),
             "predicted J": sum(v) if all(x is not None for x in v) else None}
            for ph, v in ((ph, pred_j[ph]) for ph in phases)]
    chart = bar_chart(phases, {"predicted": [pred[p] for p in phases], "measured": [meas[p] for p in phases]},
                      title="time per phase, all epochs", ylabel="time (s, log)", logy=True, width=760)
    out = [("Per phase: predicted vs measured", _figs(chart) + table(rows, [(k, k) for k in rows[0]]))]
    nodes = totals.get("compute_energy_j") or {}
    if nodes:
        pn = _predicted_node_energy(SimpleNamespace(epochs=eps))
        names = sorted(nodes)
        rows = [{"node": n, "measured J": nodes[n], "predicted J": pn.get(n), "err": _err(pn.get(n), nodes[n])}
                for n in names]
        tj = sum(sum((e.get("transfer_energy_j") or {}).values()) for e in eps)
        rows.append({"node": "transfers (bytes × J/bit)", "measured J": tj, "predicted J": pn.get("transfers"),
                     "err": _err(pn.get("transfers"), tj)})
        chart = bar_chart([r["node"] for r in rows], {"predicted": [r["predicted J"] for r in rows],
                                                      "measured": [r["measured J"] for r in rows]},
                          title="energy per node, all epochs", ylabel="energy (J, log)", logy=True, width=760)
        links = [{"link": k, "bytes": v} for k, v in sorted((totals.get("bytes") or {}).items())]
        out.append(("Per node: energy predicted vs measured, bytes per link",
                    _figs(chart) + table(rows, [(k, k) for k in rows[0]]) + table(links, [("link", "link"), ("bytes", "bytes")])))
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
             "p50 ms": 1e3 * r["latency_p50_s"] if _num(r.get("latency_p50_s")) is not None else None,
             "p95 ms": 1e3 * r["latency_p95_s"] if _num(r.get("latency_p95_s")) is not None else None,
             "predicted ms": 1e3 * r["predicted_latency_s"] if _num(r.get("predicted_latency_s")) is not None else None,
             "mJ / request": 1e3 * r["energy_j"] if _num(r.get("energy_j")) is not None else None,
             "predicted mJ": 1e3 * r["predicted_energy_j"] if _num(r.get("predicted_energy_j")) is not None else None,
             "accuracy": r.get("accuracy")} for r in inf]
    return [("Collaborative inference after fine-tuning", table(rows, [(k, k) for k in rows[0]]))]


def _probes(summary: Mapping | None) -> list[Section]:
    probes = (summary or {}).get("probes") or []
    if not probes:
        return []
    est = {(e["model"], e["bits"]): e for e in summary.get("estimates") or []}
    target = _num((summary.get("target_rule") or {}).get("target_loss"))
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
             _figs(chart) + (table(rows, [(k, k) for k in rows[0]]) if rows else ""))]


def run_sections(rec: Mapping, totals: Mapping, *, summary: Mapping | None = None) -> list[Section]:
    """The sections of one run: the parsed ``record.json`` (``totals`` as saved, or recomputed by
    the caller from the record) and the main job's ``summary.json`` when there is one."""
    return ([_outcome(rec, totals)] + _per_epoch(rec) + _run_loss(rec, summary) + _run_phases(rec, totals)
            + _replans(rec) + _inference(rec) + _probes(summary))
