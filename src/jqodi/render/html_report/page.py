"""The page of ``jqodi report``: cells, tables, figure rows and the whole document (inline CSS,
no scripts). :data:`Section` is one ``(heading, HTML body)`` pair."""
from __future__ import annotations

import math
from html import escape
from typing import Any, Mapping, Sequence

__all__ = ["Section", "fmt", "finite_or_none", "rel_err", "table", "fig_row", "note_html", "page"]

Section = tuple[str, str]  # (heading, HTML body)

_CSS = """
body{font-family:sans-serif;margin:1.5em auto;max-width:1320px;color:#222;padding:0 1em}
h1{font-size:1.5em} h2{border-bottom:2px solid #ccd;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.6em} nav ul ul{display:flex;flex-wrap:wrap;gap:0 1.4em;padding-left:1em;list-style:none}
table{border-collapse:collapse;margin:.6em 0;font-size:13px} .wide{overflow-x:auto}
th,td{border:1px solid #ccd;padding:3px 7px;vertical-align:top} th{background:#eef}
td.n{text-align:right;font-variant-numeric:tabular-nums} tr.paper td{background:#fafaf2}
.figs{display:flex;flex-wrap:wrap;gap:12px} figure{margin:0} .note{color:#555;font-size:13px}
code{background:#f3f3f3;padding:0 3px}
"""


def finite_or_none(v: Any) -> float | None:
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def fmt(v: Any, unit: str = "") -> str:
    """A cell: ``-`` for none, yes/no, numbers with 4 significant digits (thousands grouped)."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "∞"
        a = abs(v)
        s = f"{v:,.1f}" if a >= 1000 else f"{v:.4g}" if a >= 1e-3 or v == 0 else f"{v:.3g}"
    elif isinstance(v, int) and abs(v) >= 10000:
        s = f"{v:,}"
    else:
        s = str(v)
    return s + unit


def rel_err(pred: Any, meas: Any) -> str | None:
    p, m = finite_or_none(pred), finite_or_none(meas)
    if p is None or m is None or p == 0:
        return None
    return f"{(m - p) / p:+.0%}"


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]], *,
          row_class: str | None = None) -> str:
    """An HTML table: ``columns`` are (key, header); numbers right-aligned; a row's ``_class``
    (or ``row_class``) becomes its class."""
    head = "".join(f"<th>{escape(h)}</th>" for _, h in columns)
    body = []
    for r in rows:
        cls = r.get("_class") or row_class
        cells = "".join(f'<td class="n">{escape(fmt(r.get(k)))}</td>' if finite_or_none(r.get(k)) is not None
                        else f"<td>{escape(fmt(r.get(k)))}</td>" for k, _ in columns)
        body.append(f'<tr class="{cls}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def fig_row(*svgs: str | None) -> str:
    return '<div class="figs">' + "".join(f"<figure>{s}</figure>" for s in svgs if s) + "</div>"


def note_html(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def page(title: str, intro: str, groups: Sequence[tuple[str, Sequence[Section]]]) -> str:
    """The whole document: a title, an intro paragraph, a table of contents, then each group
    (a ``<h2>`` per evaluation or run) with its sections (``<h3>``)."""
    toc, parts = [], []
    for gi, (heading, sections) in enumerate(groups):
        gid = f"g{gi}-{_slug(heading)}"
        toc.append(f'<li><a href="#{gid}">{escape(heading)}</a><ul>'
                   + "".join(f'<li><a href="#{gid}-{si}">{escape(h)}</a></li>' for si, (h, _) in enumerate(sections))
                   + "</ul></li>")
        parts.append(f'<h2 id="{gid}">{escape(heading)}</h2>')
        parts += [f'<section id="{gid}-{si}"><h3>{escape(h)}</h3>{body}</section>'
                  for si, (h, body) in enumerate(sections)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><link rel=\"icon\" href=\"data:,\">"
            f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1><p>{intro}</p>"
            f"<nav><ul>{''.join(toc)}</ul></nav>{''.join(parts)}</body></html>\n")
