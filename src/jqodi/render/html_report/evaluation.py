"""The report's sections for one ``evaluation.json`` (``jqodi evaluate``): every strategy's time vs
energy (Fig. 7(c)/11(c)), loss vs energy, time and epoch with K^exp/K^rob marked (Fig. 7(a)/(b)),
time and energy per node and per phase (Figs. 8, 12), the cut-point sweep (Fig. 3, Observation 4),
Tables V–VII with the paper's values beside ours."""
from __future__ import annotations

from html import escape
from typing import Mapping, Sequence

from jqodi.render.html_report.page import Section, fig_row, finite_or_none, fmt, note_html, table
from jqodi.render.svg import Line, Mark, bar_chart, line_chart

__all__ = ["evaluation_sections"]


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
    t_max = finite_or_none(ev.get("deadline_s"))
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
    notes = "".join(note_html(f"{s['label']}: {s['note']}") for s in ev.get("strategies", []) if s.get("note"))
    return [("Time vs energy of every strategy (Fig. 7(c) / 11(c))",
             fig_row(*svgs) + table(ev.get("comparison", []), cols) + notes)]


def _loss(ev: Mapping) -> list[Section]:
    if not any(p.get("loss") is not None for s in _shown(ev) for p in s.get("trajectory") or []):
        return []
    hl = {f"L_max = {fmt(ev.get('target_loss'))}": ev.get("target_loss")} if finite_or_none(ev.get("target_loss")) else {}
    t_max = finite_or_none(ev.get("deadline_s"))
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
             fig_row(*svgs) + note_html("Predicted losses drawn through the plan's anchors (start L_a + γ, L_max at "
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
        out.append((title, fig_row(*charts) + table(rows, cols)))
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
    body = (fig_row(*charts)
            + note_html(f"Observation 4 (energy first falls, then rises as the cut moves deeper) holds for {holds} of "
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
    plan_j = finite_or_none(jq.get("plan_energy_j"))
    total = finite_or_none(jq.get("energy_j"))
    rows = [{"": "ours", "total energy (J)": total, "JQODI planning energy (J)": plan_j,
             "planning / total (‰)": 1000 * plan_j / total if plan_j is not None and total else None,
             "planning time (s)": finite_or_none(jq.get("plan_time_s"))}]
    if paper_v:
        pt, pp = finite_or_none(paper_v.get("total_energy_j")), finite_or_none(paper_v.get("planning_energy_j"))
        rows.append({"": "paper", "total energy (J)": pt, "JQODI planning energy (J)": pp,
                     "planning / total (‰)": 1000 * pp / pt if pp is not None and pt else None, "_class": "paper"})
    note = ("" if plan_j is not None else
            note_html("Planning energy: not measured here (no meter recorded it); the planning time is the solver's "
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
             + note_html("∞: the target loss is out of reach for that candidate."))]


def evaluation_sections(ev: Mapping, *, paper_table_v: Mapping | None = None) -> list[Section]:
    """The sections of one evaluation (the parsed ``evaluation.json``); ``paper_table_v`` is the
    paper's Table V row for its data split, when it has one."""
    head = (f"T_max = {fmt(ev.get('deadline_s'))} s, L_max = {fmt(ev.get('target_loss'))}"
            + (f"; the paper's figures: {ev['paper_key']}" if ev.get("paper_key") else ""))
    overview = f"<p>{escape(head)}</p>" + "".join(note_html(n) for n in ev.get("notes", []))
    return ([("Overview", overview)] + _fig7(ev) + _loss(ev) + _breakdowns(ev) + _cut_sweep(ev)
            + _table_v(ev, paper_table_v) + _table_vi(ev))
