"""Plans as text: the solver comparison table and the savings line."""
from __future__ import annotations

import math

from jqodi.planner.explain import NO_ESTIMATE, OUTSIDE_OMEGA

__all__ = ["comparison_table", "comparison_notes", "savings_summary", "energy_split_lines", "excluded_lines",
           "shared_excluded_lines", "bits_used_line"]


def comparison_table(rows: list[dict]) -> str:
    """A plain-text table of :func:`jqodi.planner.compare` rows (laid out by :func:`jqodi.render.report.format_table`)."""
    from jqodi.render.report import format_table as layout

    def fmt(v, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    cells = [{"solver": r["solver"], "status": r["status"], "model": r["model"] or "-",
              "bits": fmt(r["bits"], "d"), "energy": fmt(r["energy_j"], ".1f"), "time": fmt(r["time_s"], ".2f"),
              "gap": _gap_text(r),
              "plan": fmt(r["plan_time_ms"], ".1f"), "schedule": r["schedule"]} for r in rows]
    columns = [("solver", "solver"), ("status", "status"), ("model", "model"), ("bits", "bits"),
               ("energy", "energy (J)"), ("time", "time (s)"), ("gap", "vs optimal"),
               ("plan", "plan (ms)"), ("schedule", "schedule")]
    if any("serving" in r["solution"].extra for r in rows if "solution" in r):
        # a serving demand: energy is fine-tuning + serving; show both parts and where it serves
        for r, c in zip(rows, cells):
            ex = r["solution"].extra if "solution" in r else {}
            sv = ex.get("serving")
            c["finetune"] = fmt(ex.get("finetune_energy_j"), ".1f")
            c["serve"] = "-" if sv is None else format(sv["energy_j"], ".1f")
            c["serves"] = "-" if sv is None else _serving_text(sv)
        columns[5:5] = [("finetune", "fine-tune (J)"), ("serve", "serving (J)"), ("serves", "serves on")]
    return layout(cells, columns)


#: What the "vs optimal" cell says for a row without a plan, by ``row["misses"]``.
MISSES_TEXT = {"deadline": "misses deadline", "target": "misses target", "latency": "misses latency",
               "candidates": "no candidate"}


def _gap_text(r: dict) -> str:
    """The "vs optimal" cell: the gap; why there is no plan; "outside Ω" for a bit-width ``optimal``
    does not search (such a gap can be negative)."""
    if r.get("misses"):
        return MISSES_TEXT.get(r["misses"], "no plan")
    if r["vs_optimal_pct"] is None:
        return "-"
    return f"{r['vs_optimal_pct']:+.2f}%" + ("" if r.get("in_search_space", True) else " outside Ω")


def comparison_notes(rows: list[dict], instance) -> list[str]:
    """The lines under :func:`comparison_table`: what "vs optimal" means for this instance, the
    :func:`savings_summary`, and a note for each baseline whose bit-width lies outside Ω and that
    beats the optimum over Ω."""
    from jqodi.planner.common import search_bits

    omega = search_bits(instance)
    space = "all candidates" if omega is None else "Ω = bits {" + ", ".join(map(str, omega)) + "}"
    ref = next((r for r in rows if r["solver"] == "optimal"), None)
    if ref is None or ref["status"] == "infeasible":
        line = f"vs optimal: not computed ({'optimal not run' if ref is None else 'optimal found no plan'} over {space})"
    else:
        line = f"vs optimal: energy above optimal's plan (the least meeting deadline and target over {space})"
        if any(not r.get("in_search_space", True) for r in rows if not r.get("misses")):
            line += "; outside Ω: bits optimal does not search, may be < 0"
    if any(r.get("misses") for r in rows):
        line += "; misses …: no plan (why: below)"
    lines = [line] + [x for x in [savings_summary(rows)] if x]
    for r in rows:
        if not r.get("in_search_space", True) and r["vs_optimal_pct"] is not None and r["vs_optimal_pct"] < 0:
            lines.append(f"note: {r['solver']}'s {r['bits']}-bit plan needs {-r['vs_optimal_pct']:.2f}% less energy "
                         f"than the optimum over Ω: move {r['bits']} from the scenario's baseline_bits to its bits to let "
                         f"jqodi choose it")
    return lines


def _serving_text(sv: dict) -> str:
    where = "end device" if sv["mode"] == "end-only" else f"{sv['edge']}, cut {sv['cut']}"
    return f"{where} ({sv['request_time_s'] * 1e3:.3g} ms/req)"


def energy_split_lines(sol) -> list[str]:
    """How a solution's energy splits between fine-tuning and serving (empty without a serving
    demand): the lines ``jqodi plan`` prints under the energy."""
    sv = sol.extra.get("serving")
    if sv is None:
        return []
    where = "the end device alone" if sv["mode"] == "end-only" else f"split at cut {sv['cut']} with {sv['edge']}"
    total = sol.energy_j or 0.0
    share = (lambda e: f"{100 * e / total:.1f}%") if total > 0 else (lambda e: "-")
    ft = sol.extra["finetune_energy_j"]
    return [f"  fine-tuning {ft:.2f} J ({share(ft)}, quantization included)",
            f"  serving     {sv['energy_j']:.2f} J ({share(sv['energy_j'])}): {sv['requests']:.6g} requests × "
            f"{sv['request_energy_j']:.4g} J on {where}, {sv['request_time_s'] * 1e3:.4g} ms each"]


def savings_summary(rows: list[dict]) -> str | None:
    """One line: how much ``optimal`` saves over each other feasible solver (a baseline outside Ω
    that beats it is left to :func:`comparison_notes`)."""
    ref = next((r for r in rows if r["solver"] == "optimal" and r["status"] != "infeasible"), None)
    if ref is None:
        return None
    parts = [f"{r['optimal_saves_pct']:.2f}% over {r['solver']}" for r in rows
             if r is not ref and r["status"] != "infeasible" and r["optimal_saves_pct"] is not None
             and math.isfinite(r["optimal_saves_pct"])
             and (r.get("in_search_space", True) or r["optimal_saves_pct"] >= 0)]  # else: comparison_notes
    return ("optimal saves " + ", ".join(parts)) if parts else None


#: ``jqodi plan`` shows at most this many excluded candidates one per line (``--json`` has them all).
EXCLUDED_SHOWN = 8


def shared_excluded_lines(rows) -> list[str]:
    """The "excluded" section of ``jqodi plan --solver all``, once: :func:`excluded_lines` of the
    first row's solution (``jqodi``: the candidates over Ω), after a line naming every solver whose
    solution excluded the same candidates for the same reasons (the others, the baselines, search
    other bit-widths: a row of theirs without a plan says why below). Empty when nothing was excluded."""
    if not rows:
        return []
    first = rows[0]["solution"]
    lines = excluded_lines(first)
    if not lines:
        return []
    same = [r["solver"] for r in rows if (r["solution"].extra.get("excluded") or []) == first.extra["excluded"]]
    return [f"candidates {', '.join(same)} can put in no plan (--json: 'excluded' of each solution):", *lines]


def excluded_lines(sol) -> list[str]:
    """The "excluded" section of a plan: each candidate the solver searched that can be in no plan,
    and why (``extra["excluded"]``, :func:`jqodi.planner.explain.excluded_candidates`); then the
    candidates outside Ω ("not searched") on one line, the first :data:`EXCLUDED_SHOWN` by name.
    Empty when nothing was excluded."""
    rows = list(sol.extra.get("excluded") or [])
    if not rows:
        return []
    outside = [r for r in rows if r["reason"] == OUTSIDE_OMEGA]
    listed = [r for r in rows if r["reason"] != OUTSIDE_OMEGA]
    width = max((len(r["candidate"]) for r in listed[:EXCLUDED_SHOWN]), default=0)
    lines = [f"{r['candidate']:<{width}}  {r['why']}" for r in listed[:EXCLUDED_SHOWN]]
    if len(listed) > EXCLUDED_SHOWN:
        lines.append(f"(+{len(listed) - EXCLUDED_SHOWN} more: --json lists them under 'excluded')")
    out = [("excluded      " if i == 0 else " " * 14) + ln for i, ln in enumerate(lines)]
    if outside:
        bits = sorted({r["bits"] for r in outside})
        names = ", ".join(r["candidate"] for r in outside[:EXCLUDED_SHOWN]) + (
            f" (+{len(outside) - EXCLUDED_SHOWN} more)" if len(outside) > EXCLUDED_SHOWN else "")
        out.append(f"not searched  {names} (bits {', '.join(map(str, bits))}: "
                   f"baseline_bits, for the Full/Minimal-Model baselines; move one to 'bits' to let "
                   f"{sol.solver} choose it)")
    return out


def bits_used_line(sol) -> str | None:
    """For *Minimal Model*: the bit-width it used when the instance has no 1-bit candidate
    (``extra["bits_used"]`` > 1), and why; ``None`` otherwise."""
    q = sol.extra.get("bits_used")
    if q is None or q <= 1:
        return None
    left_out = [r["candidate"] for r in sol.extra.get("excluded") or [] if r["reason"] == NO_ESTIMATE
                and r["bits"] < q]
    why = f"1-bit {', '.join(left_out)} left out for want of a learning estimate" if left_out else \
        "the instance has no 1-bit candidate"
    return f"note: {sol.solver} used the fewest bits present, {q}, not the paper's 1 bit ({why})"
