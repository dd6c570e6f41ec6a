"""Whole-life energy versus requests as text and as a plot (a :class:`jqodi.app.serving.ServingSweep`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["serving_tables", "plot_serving_crossover", "served_vs_planned"]

ServingSweep = Any  # jqodi.app.serving.ServingSweep (render does not import the app)

#: Lines drawn besides those on the lower envelope (the cheapest to fine-tune).
EXTRA_LINES = 4


def _where(ln) -> str:
    return "end device" if ln.mode == "end-only" else f"{ln.edge}, cut {ln.cut}"


def serving_tables(sweep: ServingSweep) -> str:
    """The lines (candidates), the crossovers and the plan each solver chooses per request count."""
    from jqodi.render.report import format_table

    lines = sorted(sweep.lines, key=lambda ln: ln.finetune_energy_j)
    parts = [format_table(
        [{"cand": ln.key, "ft": f"{ln.finetune_energy_j:.1f}", "req": f"{ln.request_energy_j:.4g}",
          "ms": f"{ln.request_time_s * 1e3:.4g}", "where": _where(ln)} for ln in lines],
        [("cand", "candidate"), ("ft", "fine-tune (J)"), ("req", "J/request"), ("ms", "ms/request"),
         ("where", "serves on")],
        title=f"{sweep.scenario}: whole-life energy = fine-tune + requests × J/request "
              f"(p95 bound {sweep.latency_slo_s:g} s)")]
    if sweep.crossovers:
        parts.append("crossovers: " + "; ".join(f"{c['to']} beats {c['from']} from {c['requests']:.4g} requests"
                                                for c in sweep.crossovers))
    else:
        parts.append("crossovers: none (one candidate is cheapest at every number of requests)")
    if sweep.excluded:
        parts.append("excluded: " + "; ".join(f"{e['candidate']} ({e['why']})" for e in sweep.excluded))

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    parts.append(format_table(
        [{"r": f"{r['requests']:.0e}" if r["requests"] else "0", "solver": r["solver"],
          "plan": "infeasible" if r["status"] == "infeasible" else f"{r['model']}@{r['bits']}",
          "e": fmt(r["energy_j"], ".1f"), "ft": fmt(r["finetune_energy_j"], ".1f"),
          "sv": fmt(r["serving_energy_j"], ".1f")} for r in sweep.chosen],
        [("r", "requests"), ("solver", "solver"), ("plan", "chosen"), ("e", "total (J)"),
         ("ft", "fine-tune (J)"), ("sv", "serving (J)")], title="chosen plan per number of requests"))
    return "\n".join(parts)


def plot_serving_crossover(sweep: ServingSweep, path: str | os.PathLike) -> Path:
    """Total energy versus requests (log-log) for the candidates on the lower envelope (named by
    the crossovers) and the cheapest few to fine-tune; crossovers marked by vertical lines."""
    import numpy as np

    from jqodi.render.report import figure

    by_ft = sorted(sweep.lines, key=lambda ln: (ln.finetune_energy_j, ln.request_energy_j))
    on_env = {c["from"] for c in sweep.crossovers} | {c["to"] for c in sweep.crossovers}
    if by_ft:
        on_env.add(by_ft[0].key)
    shown = [ln for ln in by_ft if ln.key in on_env]
    shown += [ln for ln in by_ft if ln.key not in on_env][:EXTRA_LINES]
    top = max([10 * c["requests"] for c in sweep.crossovers] + [1e10])
    r = np.logspace(0, np.log10(top), 400)
    fig = figure(8.0, 5.0)
    ax = fig.subplots()
    for i, ln in enumerate(shown):
        ax.plot(r, ln.finetune_energy_j + r * ln.request_energy_j, color=f"C{i % 10}",
                linewidth=2.2 if ln.key in on_env else 1.0, linestyle="-" if ln.key in on_env else "--",
                label=f"{ln.key} ({_where(ln)}, {ln.request_energy_j:.3g} J/req)")
    for c in sweep.crossovers:
        if c["requests"] >= 1:
            ax.axvline(c["requests"], color="grey", linestyle=":", linewidth=1)
            ax.annotate(f"{c['to']} from {c['requests']:.3g}", (c["requests"], 0.02),
                        xycoords=("data", "axes fraction"), rotation=90, fontsize=8, color="grey",
                        ha="right", va="bottom")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("requests served after fine-tuning")
    ax.set_ylabel("total energy: fine-tuning + serving (J)")
    ax.grid(True, which="both", alpha=0.3)
    note = "" if sweep.crossovers else " — no crossover"
    ax.set_title(f"{sweep.scenario}: whole-life energy vs requests (p95 ≤ {sweep.latency_slo_s:g} s){note}",
                 fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def served_vs_planned(result, section: dict) -> tuple[dict, list[str]]:
    """Measured serving (a :class:`jqodi.runtime.inference.InferenceResult`) against the plan's
    ``serving`` section: per-request latency p50/p95 and energy, and whether the p95 bound held.
    Returns the figures (for JSON) and the lines ``jqodi infer --plan`` prints."""
    slo = section.get("latency_slo_s")
    held = None if slo is None else bool(result.latency_p95_s <= slo)
    where = "end device alone" if section["mode"] == "end-only" else f"split at cut {section['cut']} with {section['edge']}"
    fig = {"mode": section["mode"], "edge": section.get("edge"), "cut": section.get("cut"),
           "predicted_request_time_s": section["request_time_s"], "predicted_request_energy_j": section["request_energy_j"],
           "latency_p50_s": result.latency_p50_s, "latency_p95_s": result.latency_p95_s,
           "request_energy_j": result.energy_j, "latency_slo_s": slo, "bound_held": held}
    lines = [f"planned serving: {where}",
             f"  latency p50 {result.latency_p50_s * 1e3:.4g} ms, p95 {result.latency_p95_s * 1e3:.4g} ms "
             f"(predicted {section['request_time_s'] * 1e3:.4g} ms)",
             f"  energy  {result.energy_j * 1e3:.4g} mJ/request (predicted {section['request_energy_j'] * 1e3:.4g} mJ)",
             "  bound   " + ("not given" if slo is None else
                             f"p95 ≤ {slo:g} s: {'held' if held else 'MISSED'}")]
    return fig, lines
