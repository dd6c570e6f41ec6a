"""Plain-text tables and human-readable numbers for the CLI (no dependencies)."""
from __future__ import annotations

import math
from typing import Iterable, Sequence

__all__ = ["format_table", "si", "human_bytes", "fmt_s", "fmt_j"]


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]], indent: str = "") -> str:
    """Left-align text columns, right-align numeric ones; one header rule."""
    rows = [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))

    def numeric(col: int) -> bool:
        vals = [r[col] for r in rows if r[col] not in ("", "-", "—")]
        return bool(vals) and all(_looks_numeric(v) for v in vals)

    right = [numeric(i) for i in range(len(headers))]

    def line(cells):
        return indent + "  ".join(c.rjust(w) if right[i] else c.ljust(w)
                                  for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [line(headers), indent + "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


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
    return f"{x:.3g}" if x < 0.01 else f"{x:.1f}"
