"""Plain-text tables and human-readable numbers for the CLI (no dependencies)."""
from __future__ import annotations

import math
from typing import Iterable, Sequence

__all__ = ["format_table", "si", "human_bytes", "fmt_s", "fmt_j"]


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]], indent: str = "") -> str:
    """A table of already formatted cells (``"1.23 GiB"``, ``"rtx3090/cut1 3.52 s"``).

    Laid out by :func:`jqodi.render.report.format_table`, so every verb's tables look alike. The one
    thing added here: a column whose cells all *read* as numbers (``"65.00 M"``, ``"2,334,026"``,
    ``"∞"``) is right-aligned, which ``report`` can only tell from unformatted values.
    """
    from jqodi.render.report import format_table as layout

    cells = [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    right = [_numeric_column([r[i] for r in cells]) for i in range(len(headers))]

    def pad(text: str, i: int) -> str:
        return text.rjust(widths[i]) if right[i] else text

    table = layout([{i: pad(c, i) for i, c in enumerate(r)} for r in cells],
                   [(i, pad(h, i)) for i, h in enumerate(headers)])
    return "\n".join(indent + line for line in table.splitlines())


def _numeric_column(values: list[str]) -> bool:
    vals = [v for v in values if v not in ("", "-", "—")]
    return bool(vals) and all(_looks_numeric(v) for v in vals)


def _looks_numeric(s: str) -> bool:
    s = s.replace(",", "").split(" ")[0].rstrip("%")
    try:
        float(s)
        return True
    except ValueError:
        return s in ("inf", "∞")


def si(x: float, unit: str = "") -> str:
    """1.23 G, 456 k ... (powers of 1000)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "∞"
    for p, s in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= p:
            return f"{x / p:.2f} {s}{unit}"
    return f"{x:.0f} {unit}".rstrip() if float(x).is_integer() else f"{x:.3g} {unit}".rstrip()


def human_bytes(n: float) -> str:
    for p, s in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= p:
            return f"{n / p:.2f} {s}"
    return f"{n:.0f} B"


def fmt_s(x: float) -> str:
    if not math.isfinite(x):
        return "∞"
    return f"{x:.3g}" if x < 0.01 else f"{x:.2f}"


def fmt_j(x: float) -> str:
    if not math.isfinite(x):
        return "∞"
    return f"{x:.3g}" if x < 1 else f"{x:.1f}"  # 0.0122 J is not "0.0"
