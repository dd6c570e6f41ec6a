"""Small self-contained SVG charts for the HTML report (``jqodi report``): no matplotlib, no
scripts, no fonts or files from elsewhere; each function returns one ``<svg>`` element as text.

- :func:`line_chart` — lines and markers (linear or log axes), dashed reference lines
  (``L_max``, ``T_max``), labelled marks on a line (``K^exp``, ``K^rob``), an end marker per
  line (circle: target reached, square: not, as in Fig. 7(c) of the paper).
- :func:`bar_chart` — grouped bars (one group per category, one bar per series), linear or log.

Every chart carries a ``<title>`` (read by screen readers) and its legend inside the SVG.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from html import escape
from typing import Mapping, Sequence

__all__ = ["Line", "Mark", "line_chart", "bar_chart", "PALETTE"]

#: colours of the series, in order (matplotlib's tab10, so the PNGs and the page agree, then two more)
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939")

_FONT = "font-family:sans-serif;font-size:11px"
_CHAR_W = 6.2  # average width of one character at 11 px, for the legend's layout
_CLIP_IDS = itertools.count(1)  # clip paths need ids unique on the page


@dataclass
class Mark:
    """A labelled point drawn on a chart (e.g. ``K^exp`` on a loss curve): ``shape`` is
    ``diamond``, ``triangle``, ``circle`` or ``square``."""

    x: float
    y: float
    label: str
    shape: str = "diamond"


@dataclass
class Line:
    """One series of a :func:`line_chart`. ``None`` values are gaps; ``end`` is ``circle``,
    ``square`` or ``None``; ``dots`` draws a small dot at every point."""

    label: str
    x: Sequence[float | None]
    y: Sequence[float | None]
    color: str | None = None
    dashed: bool = False
    dots: bool = False
    end: str | None = None
    marks: list[Mark] = field(default_factory=list)


def _num(v) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        return f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-")
    if a >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _log_ticks(lo: float, hi: float) -> list[float]:
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    ticks = [10.0 ** k for k in range(a, b + 1)]
    if b - a <= 2:  # few decades: 2 and 5 between the powers too
        ticks = sorted(t * m for t in ticks for m in (1, 2, 5))
    return [t for t in ticks if lo / 1.0001 <= t <= hi * 1.0001] or [lo, hi]


class _Axis:
    """Maps data to pixels on one axis (linear or log10)."""

    def __init__(self, values: Sequence[float], lo_px: float, hi_px: float, *, log: bool = False,
                 lim: tuple[float | None, float | None] | None = None, zero: bool = False):
        vals = [v for v in values if v is not None and (v > 0 or not log)]
        lo, hi = (min(vals), max(vals)) if vals else ((1.0, 10.0) if log else (0.0, 1.0))
        if zero and not log:
            lo, hi = min(lo, 0.0), max(hi, 0.0)
        if lim:
            lo = lim[0] if lim[0] is not None else lo
            hi = lim[1] if lim[1] is not None else hi
        self.log = log
        if log:
            lo, hi = lo / 1.25, hi * 1.25  # room for the markers and the smallest bar
            self.ticks = _log_ticks(lo, hi)
            self.lo, self.hi = math.log10(min(lo, self.ticks[0])), math.log10(max(hi, self.ticks[-1]))
        else:
            if hi == lo:
                lo, hi = lo - (abs(lo) or 1.0) * 0.5, hi + (abs(hi) or 1.0) * 0.5
            pad = 0.04 * (hi - lo)  # room for the markers at the ends
            lo, hi = (lo if lo == 0 else lo - pad), hi + pad
            self.ticks = [t for t in _nice_ticks(lo, hi) if lo - 1e-12 <= t <= hi + 1e-12] or [lo, hi]
            self.lo, self.hi = lo, hi
        self.lo_px, self.hi_px = lo_px, hi_px

    def __call__(self, v: float) -> float:
        if self.log:
            v = math.log10(max(v, 1e-300))
        frac = (v - self.lo) / ((self.hi - self.lo) or 1.0)
        return self.lo_px + frac * (self.hi_px - self.lo_px)

    def inside(self, v: float | None) -> bool:
        if v is None or (self.log and v <= 0):
            return False
        p = self(v)
        return min(self.lo_px, self.hi_px) - 0.5 <= p <= max(self.lo_px, self.hi_px) + 0.5


def _legend(entries: Sequence[tuple[str, str, str]], width: float, top: float, left: float
            ) -> tuple[list[str], float]:
    """Legend rows under the plot: (label, colour, kind: ``line``, ``dashed``, ``box`` or a
    marker shape). Returns the SVG parts and the height used."""
    parts, x, y = [], left, top + 12
    for label, color, kind in entries:
        w = 26 + _CHAR_W * len(label) + 14
        if x > left and x + w > width - 4:
            x, y = left, y + 16
        if kind == "box":
            parts.append(f'<rect x="{x:.1f}" y="{y - 8:.1f}" width="14" height="9" fill="{color}"/>')
        elif kind in ("line", "dashed"):
            dash = ' stroke-dasharray="5 3"' if kind == "dashed" else ""
            parts.append(f'<line x1="{x:.1f}" y1="{y - 4:.1f}" x2="{x + 20:.1f}" y2="{y - 4:.1f}" '
                         f'stroke="{color}" stroke-width="2"{dash}/>')
        else:
            parts.append(_marker(kind, x + 10, y - 4, color, size=4, fill=color))
        parts.append(f'<text x="{x + 26:.1f}" y="{y:.1f}">{escape(label)}</text>')
        x += w
    return parts, (y - top + 8) if entries else 0.0


def _marker(shape: str, x: float, y: float, color: str, size: float = 5.0, fill: str = "white",
            tip: str = "") -> str:
    """A marker; ``tip`` becomes its tooltip."""
    inner = f"<title>{escape(tip)}</title>" if tip else ""
    style = f'fill="{fill}" stroke="{color}" stroke-width="2"'
    if shape == "square":
        return (f'<rect x="{x - size:.1f}" y="{y - size:.1f}" width="{2 * size:.1f}" height="{2 * size:.1f}" '
                f"{style}>{inner}</rect>")
    if shape in ("diamond", "triangle"):
        r = size + 1
        pts = (f"{x:.1f},{y - r:.1f} {x + r:.1f},{y:.1f} {x:.1f},{y + r:.1f} {x - r:.1f},{y:.1f}"
               if shape == "diamond" else f"{x:.1f},{y - r:.1f} {x + r:.1f},{y + size:.1f} {x - r:.1f},{y + size:.1f}")
        return f'<polygon points="{pts}" {style}>{inner}</polygon>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{size:.1f}" {style}>{inner}</circle>'


def _frame(width: float, height: float, title: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width:.0f}" '
            f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" style="{_FONT}">'
            f"<title>{escape(title)}</title>" + "".join(body) + "</svg>")


def _axes(xa: _Axis | None, ya: _Axis, left: float, top: float, right: float, bottom: float,
          xlabel: str, ylabel: str) -> list[str]:
    out = [f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#999"/>']
    for t in ya.ticks:
        y = ya(t)
        if top - 0.5 <= y <= bottom + 0.5:
            out.append(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e4e4"/>')
            out.append(f'<text x="{left - 4}" y="{y + 3.5:.1f}" text-anchor="end">{_fmt_tick(t)}</text>')
    if xa is not None:
        for t in xa.ticks:
            x = xa(t)
            if left - 0.5 <= x <= right + 0.5:
                out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}" stroke="#eeeeee"/>')
                out.append(f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="middle">{_fmt_tick(t)}</text>')
        out.append(f'<text x="{(left + right) / 2:.1f}" y="{bottom + 30}" text-anchor="middle">{escape(xlabel)}</text>')
    out.append(f'<text transform="translate(13,{(top + bottom) / 2:.1f}) rotate(-90)" '
               f'text-anchor="middle">{escape(ylabel)}</text>')
    return out


def line_chart(lines: Sequence[Line], *, title: str, xlabel: str, ylabel: str, logy: bool = False,
               hlines: Mapping[str, float] | None = None, vlines: Mapping[str, float] | None = None,
               xlim: tuple[float | None, float | None] | None = None,
               ylim: tuple[float | None, float | None] | None = None, xzero: bool = True,
               width: int = 620, height: int = 340) -> str:
    """Lines on shared axes; points outside ``xlim``/``ylim`` are clipped. ``hlines``/``vlines``:
    label → value, drawn grey and dashed/dotted with their label. ``xzero``: the x axis starts
    at 0 (else at the data)."""
    left, top, right = 64.0, 24.0, width - 14.0
    entries = [(ln.label, ln.color or PALETTE[i % len(PALETTE)], "dashed" if ln.dashed else "line")
               for i, ln in enumerate(lines)]
    entries += [(label, "#444", shape) for shape, label in dict.fromkeys((m.shape, m.label)
                                                                         for ln in lines for m in ln.marks)]
    _, legend_h = _legend(entries, width, 0, left)
    bottom = height - 40.0
    height = int(height + legend_h)
    xs = ([_num(v) for ln in lines for v in ln.x] + [_num(v) for v in (vlines or {}).values()]
          + [_num(m.x) for ln in lines for m in ln.marks])
    ys = ([_num(v) for ln in lines for v in ln.y] + [_num(v) for v in (hlines or {}).values()]
          + [_num(m.y) for ln in lines for m in ln.marks])
    xa = _Axis(xs, left, right, lim=xlim, zero=xzero)
    ya = _Axis(ys, bottom, top, log=logy, lim=ylim, zero=not logy)
    body = [f'<text x="{width / 2:.1f}" y="14" text-anchor="middle" font-weight="bold">{escape(title)}</text>']
    body += _axes(xa, ya, left, top, right, bottom, xlabel, ylabel)
    clip = f"clip{next(_CLIP_IDS)}"
    body.append(f'<clipPath id="{clip}"><rect x="{left}" y="{top}" width="{right - left}" '
                f'height="{bottom - top}"/></clipPath>')
    for label, v in (hlines or {}).items():
        if ya.inside(_num(v)):
            y = ya(v)
            body.append(f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#666" stroke-dasharray="6 4"/>')
            body.append(f'<text x="{left + 4}" y="{y - 3:.1f}" fill="#555">{escape(label)}</text>')
    for label, v in (vlines or {}).items():
        if xa.inside(_num(v)):
            x = xa(v)
            body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}" stroke="#666" stroke-dasharray="2 3"/>')
            body.append(f'<text x="{x - 3:.1f}" y="{top + 4}" fill="#555" text-anchor="end" '
                        f'transform="rotate(-90 {x - 3:.1f} {top + 4})">{escape(label)}</text>')
    for i, ln in enumerate(lines):
        color = ln.color or PALETTE[i % len(PALETTE)]
        pts = [(x, y) for x, y in zip(map(_num, ln.x), map(_num, ln.y))
               if x is not None and y is not None and (y > 0 or not logy)]
        if not pts:
            continue
        path = " ".join(f"{xa(x):.1f},{ya(y):.1f}" for x, y in pts)
        dash = ' stroke-dasharray="6 4"' if ln.dashed else ""
        width_px = 2.4 if ln.dashed else 1.6
        body.append(f'<g clip-path="url(#{clip})"><polyline points="{path}" fill="none" stroke="{color}" '
                    f'stroke-width="{width_px}"{dash}><title>{escape(ln.label)}</title></polyline>')
        if ln.dots:
            body += [f'<circle cx="{xa(x):.1f}" cy="{ya(y):.1f}" r="2" fill="{color}"/>' for x, y in pts]
        body.append("</g>")  # the markers are not clipped: they are drawn only when inside
        if ln.end and xa.inside(pts[-1][0]) and ya.inside(pts[-1][1]):
            body.append(_marker(ln.end, xa(pts[-1][0]), ya(pts[-1][1]), color))
        for m in ln.marks:
            if xa.inside(_num(m.x)) and ya.inside(_num(m.y)):
                body.append(_marker(m.shape, xa(m.x), ya(m.y), color, size=4.5, fill=color,
                                    tip=f"{ln.label}: {m.label} = {_fmt_tick(m.x)}"))
    body += _legend(entries, width, bottom + 40, left)[0]
    return _frame(width, height, title, body)


def bar_chart(categories: Sequence[str], series: Mapping[str, Sequence[float | None]], *, title: str,
              ylabel: str, logy: bool = False, width: int = 620, height: int = 320) -> str:
    """Grouped bars: one group per category, one bar per series (``series[name][i]`` is the value
    in category ``i``; ``None`` or ≤ 0 on a log axis: no bar). The value is in each bar's tooltip."""
    left, top, right = 64.0, 24.0, width - 14.0
    entries = [(name, PALETTE[i % len(PALETTE)], "box") for i, name in enumerate(series)]
    _, legend_h = _legend(entries, width, 0, left)
    bottom = height - 40.0
    height = int(height + legend_h)
    vals = [_num(v) for vs in series.values() for v in vs]
    ya = _Axis(vals, bottom, top, log=logy, zero=not logy)
    body = [f'<text x="{width / 2:.1f}" y="14" text-anchor="middle" font-weight="bold">{escape(title)}</text>']
    body += _axes(None, ya, left, top, right, bottom, "", ylabel)
    n_cat, n_ser = max(1, len(categories)), max(1, len(series))
    group_w = (right - left) / n_cat
    bar_w = group_w * 0.8 / n_ser
    base = bottom if logy else ya(0.0)
    for ci, cat in enumerate(categories):
        x0 = left + ci * group_w + group_w * 0.1
        for si, (name, vs) in enumerate(series.items()):
            v = _num(vs[ci]) if ci < len(vs) else None
            if v is None or (logy and v <= 0):
                continue
            y = ya(v)
            body.append(f'<rect x="{x0 + si * bar_w:.1f}" y="{min(y, base):.1f}" width="{max(bar_w - 1, 1):.1f}" '
                        f'height="{max(abs(base - y), 0.5):.1f}" fill="{PALETTE[si % len(PALETTE)]}">'
                        f"<title>{escape(cat)} · {escape(name)}: {_fmt_tick(v)}</title></rect>")
        body.append(f'<text x="{left + (ci + 0.5) * group_w:.1f}" y="{bottom + 14}" text-anchor="middle">'
                    f"{escape(cat)}</text>")
    leg, _ = _legend(entries, width, bottom + 24, left)
    return _frame(width, height, title, body + leg)
