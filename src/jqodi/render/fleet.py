"""Tables for fleet plans: one row per solver, and one row per edge server (load, devices)."""
from __future__ import annotations

from jqodi.render.tables import fmt_j, format_table

__all__ = ["fleet_comparison_table", "fleet_edge_table", "fleet_unserved_lines"]


def fleet_comparison_table(solutions) -> str:
    """Solvers side by side: status, devices served, total energy, vs the best served-all plan."""
    ref = min((s.energy_j for s in solutions if s.status != "infeasible"), default=None)
    rows = []
    for s in solutions:
        over = sum(s.overload_s.values())
        lb = s.extra.get("lower_bound_j")
        rows.append([s.solver, s.status, f"{s.served}/{len(s.plans)}", fmt_j(s.energy_j),
                     f"{100 * (s.energy_j / ref - 1):+.2f}%" if ref and s.status != "infeasible" else "-",
                     f"{over:.1f}" if over > 0 else "0",
                     fmt_j(lb) if lb is not None else "-",
                     f"{s.extra.get('plan_time_ms', 0.0) / 1e3:.2f}"])
    return format_table(["solver", "status", "served", "energy J", "vs best", "overload s", "bound J",
                         "plan s"], rows)


def fleet_edge_table(sol) -> str:
    """Per edge server: planned busy seconds, capacity, utilisation and the devices it serves."""
    rows = []
    for x, names in sol.edge_devices().items():
        load, cap = sol.edge_load_s[x], sol.edge_capacity_s[x]
        shown = ", ".join(names[:6]) + (f" (+{len(names) - 6} more)" if len(names) > 6 else "")
        rows.append([x, f"{load:.1f}", f"{cap:.1f}", f"{100 * load / cap:.1f}%" if cap > 0 else "-",
                     len(names), shown or "-"])
    return format_table(["edge", "load s", "capacity s", "util", "devices", "names"], rows)


def fleet_unserved_lines(sol, limit: int = 10) -> list[str]:
    """One line per device the plan does not serve, with the reason."""
    out = []
    for name in sol.unserved[:limit]:
        s = sol.plans[name]
        why = s.extra.get("fleet_reason") or s.extra.get("explanation", {}).get("message", "")
        out.append(f"{name}: not served: {why}")
    if len(sol.unserved) > limit:
        out.append(f"(+{len(sol.unserved) - limit} more devices not served)")
    return out
