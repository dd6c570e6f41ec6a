"""Small shared helpers for results: aligned text tables, atomic JSON, and plots.

Nothing here knows about planning or the runtime; every verb that prints a table or saves a
figure uses these so that all outputs look alike.

- :func:`format_table` — rows of dicts → an aligned text table (numbers right-aligned).
- :func:`save_json` — write JSON atomically (temp file + ``os.replace``); dataclasses, numpy
  values, paths and objects with ``to_dict()`` are converted; ``inf``/``nan`` become ``null``.
- :func:`line_plot`, :func:`scatter_plot`, :func:`stacked_bars` — PNG figures through
  matplotlib's object-oriented API on the Agg canvas. matplotlib is imported only when a plot
  is drawn, and pyplot never is (no global figure state, no display needed).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["format_table", "format_value", "to_jsonable", "save_json", "line_plot",
           "scatter_plot", "stacked_bars", "figure", "draw_series", "Series"]


def format_value(v: Any, fmt: str | None = None) -> str:
    """One cell: ``None`` → ``-``, ±inf → ``∞``, floats with 4 significant digits (at least
    one decimal when ≥ 100), booleans as yes/no; ``fmt`` (a format spec) overrides."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float) and math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    if fmt is not None:
        return format(v, fmt)
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 100 else f"{v:.4g}"
    return str(v)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def format_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[Any],
                 *, title: str | None = None) -> str:
    """An aligned text table.

    Args:
        rows: one mapping per row; a missing key shows as ``-``.
        columns: each a key, ``(key, header)`` or ``(key, header, format_spec)``.
        title: an optional line printed above the table.

    Numeric columns are right-aligned, the rest left-aligned; a rule of ``─`` under the header.
    """
    cols = []
    for c in columns:
        if isinstance(c, str):
            cols.append((c, c, None))
        elif len(c) == 2:
            cols.append((c[0], c[1], None))
        else:
            cols.append((c[0], c[1], c[2]))
    rows = list(rows)
    cells = [[format_value(r.get(key), fmt) for key, _, fmt in cols] for r in rows]
    numeric = [all(_is_number(r.get(key)) or r.get(key) is None for r in rows) and rows
               for key, _, _ in cols]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, (_, h, _) in enumerate(cols)]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [title] if title else []
    out.append(line([h for _, h, _ in cols]))
    out.append("  ".join("─" * w for w in widths))
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def to_jsonable(obj: Any) -> Any:
    """Plain JSON data from dataclasses, ``to_dict()`` objects, numpy values, paths, tuples.
    Non-finite floats become ``None`` (JSON has no infinity)."""
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return to_jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, without importing numpy
        return to_jsonable(obj.tolist())
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def save_json(path: str | os.PathLike, obj: Any, *, indent: int = 2, private: bool = False) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically: readers see the old file or the new one,
    never half of one. Creates the parent directory. Returns the path.

    Permissions: results are not secrets, so a new file follows the umask (0644 under the usual
    022), as any file the user writes, and a file replaced keeps its mode, as a plain overwrite
    would. ``private=True`` (keys, tokens, anything secret) writes it readable by its owner only
    (0600), whatever the umask or the old file's mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False, ensure_ascii=False) + "\n"
    keep = None
    if not private:
        try:
            keep = path.stat().st_mode & 0o7777
        except OSError:
            keep = None
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    # created with 0666 the kernel narrows by the umask (0600 when private), so no window is wider
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if keep is not None:
                os.fchmod(f.fileno(), keep)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


# ---------------------------------------------------------------------------------------------
# plots


@dataclasses.dataclass
class Series:
    """One line or point set of a figure.

    ``end_marker`` draws a marker on the last point only (``"o"`` reached, ``"s"`` not, as in
    Fig. 7(c) of the paper); ``marker`` draws one on every point.
    """

    label: str
    x: Sequence[float]
    y: Sequence[float]
    marker: str | None = None
    end_marker: str | None = None
    linestyle: str = "-"
    color: str | None = None


def _figure(width_in: float, height_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def draw_series(ax, series: Sequence[Series]) -> None:
    """Draw series on a matplotlib Axes (lines, markers, the end marker of each)."""
    for i, s in enumerate(series):
        color = s.color or f"C{i}"
        ax.plot(s.x, s.y, linestyle=s.linestyle, marker=s.marker, color=color, label=s.label,
                markersize=4)
        if s.end_marker and len(s.x):
            ax.plot([s.x[-1]], [s.y[-1]], linestyle="none", marker=s.end_marker, color=color,
                    markersize=9, markerfacecolor="white", markeredgewidth=2)


def line_plot(path: str | os.PathLike, series: Sequence[Series], *, xlabel: str, ylabel: str,
              title: str = "", hlines: Mapping[str, float] | None = None,
              vlines: Mapping[str, float] | None = None, logy: bool = False,
              size_in: tuple[float, float] = (6.0, 4.0), legend_loc: str = "best") -> Path:
    """Lines (e.g. loss vs cumulative energy). ``hlines``/``vlines``: label → value, dashed."""
    fig = _figure(*size_in)
    ax = fig.add_subplot()
    draw_series(ax, series)
    for label, y in (hlines or {}).items():
        ax.axhline(y, color="grey", linestyle="--", linewidth=1)
        ax.annotate(label, (0.02, y), xycoords=("axes fraction", "data"), ha="left", va="top",
                    fontsize=8, color="grey", xytext=(0, -2), textcoords="offset points")
    for label, x in (vlines or {}).items():
        ax.axvline(x, color="grey", linestyle=":", linewidth=1)
        ax.annotate(label, (x, 0.98), xycoords=("data", "axes fraction"), ha="right", va="top",
                    fontsize=8, color="grey", rotation=90, xytext=(-2, 0),
                    textcoords="offset points")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc=legend_loc)
    return _save(fig, path)


def scatter_plot(path: str | os.PathLike, series: Sequence[Series], *, xlabel: str, ylabel: str,
                 title: str = "", vlines: Mapping[str, float] | None = None,
                 size_in: tuple[float, float] = (6.0, 4.0), legend_loc: str = "best") -> Path:
    """Same as :func:`line_plot` (a scatter is a series with markers and no line); kept as its
    own name so callers read as what they draw."""
    return line_plot(path, series, xlabel=xlabel, ylabel=ylabel, title=title, vlines=vlines,
                     size_in=size_in, legend_loc=legend_loc)


def stacked_bars(ax_or_path, groups: Sequence[str], parts: Mapping[str, Sequence[float]], *,
                 ylabel: str, title: str = "", size_in: tuple[float, float] = (6.0, 4.0)):
    """Stacked bars: one bar per group, one stacked segment per part (``parts[name][i]`` is the
    value of part ``name`` in group ``i``). Draws into an existing matplotlib Axes, or into a
    new figure saved at the given path (then returns the path)."""
    if isinstance(ax_or_path, (str, os.PathLike)):
        fig = _figure(*size_in)
        ax = fig.add_subplot()
    else:
        fig, ax = None, ax_or_path
    bottoms = [0.0] * len(groups)
    for i, (name, values) in enumerate(parts.items()):
        values = [float(v) for v in values]
        ax.bar(list(groups), values, bottom=bottoms, label=name, color=f"C{i}", width=0.6)
        bottoms = [b + v for b, v in zip(bottoms, values)]
    for x, total in enumerate(bottoms):
        ax.annotate(format_value(total), (x, total), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    ax.margins(y=0.12)
    if fig is not None:
        return _save(fig, ax_or_path)
    return ax


def figure(width_in: float = 6.0, height_in: float = 4.0):
    """A fresh Agg-backed matplotlib Figure (for multi-panel plots); save it with ``fig.savefig``."""
    return _figure(width_in, height_in)
