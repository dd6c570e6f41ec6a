"""A planning instance as text: one row per candidate (and, optionally, every option)."""
from __future__ import annotations

__all__ = ["render_instance"]


def render_instance(inst, show_options: bool = False) -> str:
    """A readable summary of a :class:`PlanningInstance`: one row per candidate."""
    from jqodi.render.tables import fmt_j, fmt_s, format_table

    meta = inst.meta or {}
    lines = [f"instance of {meta.get('scenario', '?')} ({meta.get('cost_model', '?')} cost model): "
             f"deadline {inst.deadline_s:g} s, target loss {inst.target_loss:g}, "
             f"{len(inst.candidates)} candidates, search bits {meta.get('search_bits')}, "
             f"baseline bits {meta.get('baseline_bits')}"]
    rows = []
    for c in inst.candidates:
        k_exp, k_rob = c.epochs.expected, c.epochs.robust
        if c.options:
            fast = min(c.options, key=lambda o: (o.epoch_time_s, o.epoch_energy_j))
            cheap = min(c.options, key=lambda o: (o.epoch_energy_j, o.epoch_time_s))
            fast_s = f"{fast.edge}/cut{fast.cut} {fmt_s(fast.epoch_time_s)} s"
            cheap_s = f"{cheap.edge}/cut{cheap.cut} {fmt_j(cheap.epoch_energy_j)} J"
            if k_rob is None:
                verdict = "target out of reach"
            else:
                t_rob = c.quantize_time_s + k_rob * fast.epoch_time_s
                t_text = f"{t_rob:.0f}" if t_rob >= 10 else fmt_s(t_rob)   # 0.24 s, not "0 s"
                verdict = f"{t_text} s ≤ deadline" if t_rob <= inst.deadline_s else f"{t_text} s > deadline"
        else:
            fast_s = cheap_s = "-"
            verdict = "no feasible option"
        rows.append([c.model, c.bits, "∞" if k_exp is None else k_exp, "∞" if k_rob is None else k_rob,
                     fmt_s(c.quantize_time_s), fmt_j(c.quantize_energy_j), len(c.options), fast_s, cheap_s,
                     verdict])
    lines.append(format_table(["model", "bits", "K^exp", "K^rob", "τ_q s", "ε_q J", "options",
                               "fastest epoch", "cheapest epoch", "K^rob epochs at fastest"], rows))
    if inst.serving is not None:
        lines.append(f"serving: {inst.serving.requests:.6g} requests, p95 bound {inst.serving.latency_slo_s:g} s "
                     "per request")
        srows = []
        for c in inst.candidates:
            sv = c.serving
            if sv is None or not sv.feasible:
                srows.append([c.model, c.bits, "cannot serve", "-", "-", (sv.reason if sv is not None else "-")])
            else:
                where = "end device" if sv.mode == "end-only" else f"{sv.edge}/cut{sv.cut}"
                srows.append([c.model, c.bits, where, f"{sv.request_time_s * 1e3:.4g}",
                              f"{sv.request_energy_j * 1e3:.4g}", fmt_j(inst.serving.requests * sv.request_energy_j)])
        lines.append(format_table(["model", "bits", "serves on", "ms/request", "mJ/request", "serving J"], srows))
    if meta.get("missing_estimates"):
        lines.append(f"no learning estimate (left out): {', '.join(meta['missing_estimates'])}")
    if show_options:
        for c in inst.candidates:
            lines.append(f"\n{c.model} @ {c.bits} bits")
            rows = [[o.edge, o.cut, fmt_s(o.epoch_time_s), fmt_j(o.epoch_energy_j)] for o in c.options]
            rows += [[i["edge"], i["cut"], "∞", "∞ (" + str(i.get("reason")) + ")"] for i in c.infeasible]
            lines.append(format_table(["edge", "cut", "epoch s", "epoch J"], rows, indent="  "))
    return "\n".join(lines)
