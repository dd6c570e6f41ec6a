"""Plans as text: the solver comparison table and the savings line."""
from __future__ import annotations

import math

__all__ = ["comparison_table", "savings_summary"]


def comparison_table(rows: list[dict]) -> str:
    """A plain-text table of :func:`jqodi.planner.compare` rows (laid out by :func:`jqodi.render.report.format_table`)."""
    from jqodi.render.report import format_table as layout

    def fmt(v, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    cells = [{"solver": r["solver"], "status": r["status"], "model": r["model"] or "-",
              "bits": fmt(r["bits"], "d"), "energy": fmt(r["energy_j"], ".1f"), "time": fmt(r["time_s"], ".2f"),
              "gap": "-" if r["vs_optimal_pct"] is None else f"{r['vs_optimal_pct']:+.2f}%",
              "plan": fmt(r["plan_time_ms"], ".1f"), "schedule": r["schedule"]} for r in rows]
    return layout(cells, [("solver", "solver"), ("status", "status"), ("model", "model"), ("bits", "bits"),
                          ("energy", "energy (J)"), ("time", "time (s)"), ("gap", "vs optimal"),
                          ("plan", "plan (ms)"), ("schedule", "schedule")])


def savings_summary(rows: list[dict]) -> str | None:
    """One line: how much ``optimal`` saves over each other feasible solver."""
    ref = next((r for r in rows if r["solver"] == "optimal" and r["status"] != "infeasible"), None)
    if ref is None:
        return None
    parts = [f"{r['optimal_saves_pct']:.2f}% over {r['solver']}" for r in rows
             if r is not ref and r["status"] != "infeasible" and r["optimal_saves_pct"] is not None
             and math.isfinite(r["optimal_saves_pct"])]
    return ("optimal saves " + ", ".join(parts)) if parts else None
