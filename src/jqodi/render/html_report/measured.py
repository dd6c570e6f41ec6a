"""The report's sections for a measured evaluation (``summary.json`` of
``benchmarks/paper_cifar.py``, with its ``runs/*.json`` beside it): Table VI measured beside the
paper's, the estimators held out, Observation 2, and the fine-tuning curves per model with L_max."""
from __future__ import annotations

import statistics
from typing import Mapping, Sequence

from jqodi.render.html_report.page import Section, fig_row, finite_or_none, fmt, note_html, table
from jqodi.render.svg import Line, line_chart

__all__ = ["measured_sections"]


def _k(v) -> str:
    return "∞" if v is None else fmt(v)


def _bits(b: int) -> str:
    return "fp32" if b == 32 else f"{b}-bit"


def _table_vi(summary: Mapping) -> list[Section]:
    cfg = summary.get("config") or {}
    rows = [{"model (width)": f"{r['model']} ({fmt(r['width'])})", "π_q": _bits(r["bits"]), "L_max": fmt(r["target_loss"]),
             "K (mean ± std)": "∞" if r.get("K_mean") is None else f"{fmt(r['K_mean'])} ± {fmt(r.get('K_std'))}",
             "reached": r.get("reached"), "K^exp probe": _k(r.get("probe_K_exp")), "K^rob probe": _k(r.get("probe_K_rob")),
             "K^exp store": _k(r.get("store_K_exp")), "K^rob store": _k(r.get("store_K_rob")),
             "γ": fmt(r.get("gamma")), "paper K": r.get("paper_K", "–"),
             "paper K^exp / K^rob": (f"{r['paper_K_exp']} / {r['paper_K_rob']}" if r.get("paper_K_exp") is not None
                                     else "–")}
            for r in summary.get("table_vi") or []]
    if not rows:
        return []
    note = note_html(f"Training cross-entropy on the end device's {cfg.get('train_size')} images; ∞ = not reached "
                     f"within {cfg.get('max_epochs')} epochs; seeds {cfg.get('seeds')}; estimators held out "
                     f"(probe: {cfg.get('probe_epochs')} epochs of another seed; store: the other seeds' curves).")
    return [("Table VI measured on CIFAR-10, beside the paper's", note + table(rows, [(k, k) for k in rows[0]]))]


def _estimators_and_obs2(summary: Mapping) -> list[Section]:
    out: list[Section] = []
    est = summary.get("estimators") or {}
    if est:
        rows = [{"estimator": name, "predictions": m.get("predictions"),
                 "median |K^exp − K| / K": fmt(100 * m["median_rel_error_K_exp"], "%")
                 if m.get("median_rel_error_K_exp") is not None else "–",
                 "K^rob ≥ K": fmt(100 * m["coverage_K_rob_ge_K"], "%") if m.get("coverage_K_rob_ge_K") is not None else "–"}
                for name, m in est.items()]
        out.append(("Estimators, held out", table(rows, [(k, k) for k in rows[0]])))
    obs = summary.get("observation_2") or []
    if obs:
        rows = [{"model": o["model"], "K by bits": ", ".join(f"{_bits(int(b))} {_k(k)}" for b, k in o["K_by_bits"].items()),
                 "fewer bits → more epochs": "holds" if o["fewer_bits_more_epochs"] else "; ".join(o["violations"]),
                 "1 bit": {None: "not run", True: "reached", False: "never reached"}[o.get("one_bit_reached")]}
                for o in obs]
        out.append(("Observation 2 on real runs", table(rows, [(k, k) for k in rows[0]])))
    return out


def _curves(summary: Mapping, runs: Sequence[Mapping]) -> list[Section]:
    """Per model: the training loss per epoch of every bit-width (the median over seeds)."""
    figs = []
    for model in dict.fromkeys(r["model"] for r in runs):
        lines, target = [], None
        for bits in sorted({r["bits"] for r in runs if r["model"] == model}):
            rs = [r for r in runs if (r["model"], r["bits"]) == (model, bits)]
            target = finite_or_none(rs[0].get("target_loss"))
            n = max(len(r["train_losses"]) for r in rs)
            ys = [statistics.median([r["train_losses"][e] for r in rs if e < len(r["train_losses"])])
                  for e in range(n)]
            lines.append(Line(_bits(bits), list(range(1, n + 1)), ys))
        figs.append(line_chart(lines, title=f"{model}: training loss per epoch (median over seeds)", xlabel="epoch",
                               ylabel="training loss (log)", logy=True,
                               hlines={f"L_max = {fmt(target)}": target} if target is not None else None))
    return [("Fine-tuning curves", fig_row(*figs))] if figs else []


def measured_sections(summary: Mapping, runs: Sequence[Mapping] = ()) -> list[Section]:
    """The sections of one measured evaluation: ``summary`` (its ``summary.json``) and the runs."""
    return _table_vi(summary) + _estimators_and_obs2(summary) + _curves(summary, runs)
