"""The evaluation's figures (Fig. 7/8, 11/12) from a :class:`jqodi.app.evaluation.Evaluation`.

Time vs energy (:func:`plot_time_energy`), loss vs energy and time (:func:`plot_loss_curves`)
and time and energy per node (:func:`plot_breakdown`); the text tables are
:func:`jqodi.render.evaluation.summary_tables`. Strategies with identical plans are drawn
once more, dashed and thicker, so both stay visible.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

__all__ = ["plot_time_energy", "plot_loss_curves", "plot_breakdown", "plan_key"]

StrategyResult = Any   # jqodi.app.evaluation.StrategyResult (render does not import the app)
Evaluation = Any       # jqodi.app.evaluation.Evaluation


def _label_of(r: StrategyResult, shown: Sequence[StrategyResult] = ()) -> str:
    extra = " (deadline missed)" if r.model and not r.meets_deadline else ""
    same = _same_as(r, shown)
    if same is not None:
        extra += f" (same plan as {same.label})"
    return f"{r.label}: {r.choice()}{extra}"


def plan_key(r: StrategyResult) -> tuple:
    """A plan as a multiset: epochs are interchangeable, so the schedule's order does not count."""
    return r.model, r.bits, tuple(sorted((e.edge, e.cut, e.epochs) for e in r.schedule))


def _same_as(r: StrategyResult, shown: Sequence[StrategyResult]) -> StrategyResult | None:
    """The first strategy shown before ``r`` with exactly the same plan, if any."""
    for prev in shown:
        if prev is r:
            return None
        if plan_key(prev) == plan_key(r):
            return prev
    return None


def _style(r: StrategyResult, shown: Sequence[StrategyResult]) -> dict:
    """Dashed and thicker for a plan drawn over an identical earlier one, so both stay visible."""
    if _same_as(r, shown) is not None or r.label == "Optimal (mixed)":
        return {"linestyle": (0, (4, 3)), "linewidth": 2.2}
    return {"linestyle": "-", "linewidth": 1.5}


def _shown(ev: Evaluation) -> list[StrategyResult]:
    """Strategies with a plan; the mixed optimum only when it differs from the static one."""
    shown = [r for r in ev.strategies if r.model is not None]
    try:
        static, mixed = ev.strategy("Optimum"), ev.strategy("Optimal (mixed)")
    except KeyError:
        return shown
    if mixed.model and static.model and plan_key(mixed) == plan_key(static):
        shown = [r for r in shown if r is not mixed]
    return shown


def plot_time_energy(ev: Evaluation, path: str | os.PathLike) -> Path:
    """Fig. 7(c)/11(c): cumulative time vs energy, epoch by epoch; circle = target reached,
    square = not reached. Left: every strategy; right: zoomed on the deadline (a baseline that
    runs far past it would otherwise flatten the others)."""
    from jqodi.render.report import Series, draw_series, figure

    shown = _shown(ev)
    series = [Series(_label_of(r, shown), [p.time_s for p in r.trajectory],
                     [p.energy_j for p in r.trajectory], marker=".",
                     end_marker="o" if r.reaches_target else "s",
                     linestyle=_style(r, shown)["linestyle"], color=f"C{i}")
              for i, r in enumerate(shown)]
    fig = figure(11.0, 5.0)
    axes = fig.subplots(1, 2)
    x_zoom = 1.15 * ev.deadline_s
    y_zoom = max([y for s in series for x, y in zip(s.x, s.y) if x <= x_zoom] or [1.0]) * 1.1
    for ax, zoom in ((axes[0], False), (axes[1], True)):
        draw_series(ax, series)
        ax.axvline(ev.deadline_s, color="grey", linestyle=":", linewidth=1)
        _label_deadline(ax, ev.deadline_s)
        if zoom:
            ax.set_xlim(0, x_zoom)
            ax.set_ylim(0, y_zoom)
        ax.set_xlabel("time taken (s)")
        ax.set_ylabel("energy (J)")
        ax.grid(True, alpha=0.3)
    return _finish(fig, axes, (f"{ev.scenario}: (c) time vs energy (○ L_max reached, □ not)",
                               f"zoom: t ≤ {x_zoom:g} s"), path)


def _finish(fig, axes, titles: tuple[str, str], path: str | os.PathLike, ncols: int = 2) -> Path:
    """Both panels' titles, one legend under them (the left panel's entries), saved to ``path``."""
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=8, frameon=False)
    return _save(fig, path)


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _label_deadline(ax, deadline_s: float) -> None:
    ax.annotate(f"T_max = {deadline_s:g} s", (deadline_s, 0.98), xycoords=("data", "axes fraction"),
                ha="right", va="top", fontsize=8, color="grey", rotation=90, xytext=(-2, 0),
                textcoords="offset points")


def plot_loss_curves(ev: Evaluation, path: str | os.PathLike) -> Path | None:
    """Fig. 7(a)/(b), 11(a)/(b): loss (log axis) vs cumulative energy and vs time, side by
    side, up to 1.15 T_max; a strategy that runs past that is named in an "off chart" note."""
    from jqodi.render.report import Series, figure

    shown = [r for r in _shown(ev) if r.trajectory and r.trajectory[0].loss is not None]
    if not shown:
        return None
    fig = figure(11.0, 5.0)
    axes = fig.subplots(1, 2)
    # the same window as the zoomed time-energy panel: up to 1.15 T_max
    t_max = 1.15 * ev.deadline_s
    e_max = max([p.energy_j for r in shown for p in r.trajectory if p.time_s <= t_max] or [1.0])
    x_max = {"time_s": t_max, "energy_j": 1.1 * e_max}
    for ax, key, xlabel in ((axes[0], "energy_j", "energy (J)"), (axes[1], "time_s", "time taken (s)")):
        for i, r in enumerate(shown):
            s = Series(_label_of(r, shown), [getattr(p, key) for p in r.trajectory],
                       [p.loss for p in r.trajectory])
            ax.plot(s.x, s.y, color=f"C{i}", label=s.label, **_style(r, shown))
            ax.plot([s.x[-1]], [s.y[-1]], marker="o" if r.reaches_target else "s", color=f"C{i}",
                    markerfacecolor="white", markeredgewidth=2, markersize=8, linestyle="none")
        ax.axhline(ev.target_loss, color="grey", linestyle="--", linewidth=1)
        ax.annotate(f"L_max = {ev.target_loss:g}", (0.02, ev.target_loss),
                    xycoords=("axes fraction", "data"), ha="left", va="top", fontsize=8,
                    color="grey", xytext=(0, -2), textcoords="offset points")
        if key == "time_s":
            ax.axvline(ev.deadline_s, color="grey", linestyle=":", linewidth=1)
            _label_deadline(ax, ev.deadline_s)
        ax.set_yscale("log")
        ax.set_xlim(0, x_max[key])
        off = [r for r in shown if getattr(r.trajectory[-1], key) > x_max[key]]
        if off:
            xlabel += "\n(off chart: " + "; ".join(
                f"{r.label} ends at {r.trajectory[-1].time_s:.0f} s, {r.trajectory[-1].energy_j:.0f} J"
                for r in off) + ")"
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation loss (predicted, log scale)")
        ax.grid(True, alpha=0.3)
    return _finish(fig, axes, (f"{ev.scenario}: (a) loss vs energy", f"{ev.scenario}: (b) loss vs time"), path)


def plot_breakdown(ev: Evaluation, path: str | os.PathLike) -> Path | None:
    """Fig. 8/12: time and energy on each node/link per strategy (grouped bars, log axis)."""
    from jqodi.render.report import figure

    shown = [r for r in _shown(ev) if r.breakdown]
    if not shown:
        return None
    order = list(dict.fromkeys(n for r in shown for n in r.breakdown))  # NODE_TERMS' order, then "other"
    nodes = [n for n in order
             if any(n in r.breakdown and (r.breakdown[n]["time_s"] or r.breakdown[n]["energy_j"])
                    for r in shown)]
    fig = figure(11.0, 4.4)
    axes = fig.subplots(1, 2)
    width = 0.8 / max(1, len(nodes))
    for ax, key, ylabel in ((axes[0], "time_s", "time (s)"), (axes[1], "energy_j", "energy (J)")):
        for j, node in enumerate(nodes):
            xs = [i + (j - (len(nodes) - 1) / 2) * width for i in range(len(shown))]
            ys = [max(r.breakdown.get(node, {}).get(key, 0.0), 0.0) for r in shown]
            ax.bar(xs, ys, width=width, label=node, color=f"C{j}")
        ax.set_xticks(range(len(shown)))
        ax.set_xticklabels([r.label for r in shown], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", alpha=0.3)
    return _finish(fig, axes, (f"{ev.scenario}: (a) time per node", f"{ev.scenario}: (b) energy per node"), path,
                   ncols=len(nodes))
