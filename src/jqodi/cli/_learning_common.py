"""Helpers shared by the learning verbs (pretrain, finetune, traces, estimate)."""
from __future__ import annotations

from typing import Sequence


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A plain text table with right-aligned numbers."""
    cells = [[str(h) for h in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def fmt(r):
        return "  ".join(c.rjust(w) if _num(c) else c.ljust(w) for c, w in zip(r, widths)).rstrip()

    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)


def _num(s: str) -> bool:
    try:
        float(s.rstrip("%"))
        return True
    except ValueError:
        return False


def add_data_arguments(p, *, data_default="data1") -> None:
    from jqodi.cli import _types as t

    p.add_argument("--dataset", default="fashion-mnist",
                   help="cloud dataset: fashion-mnist, cifar10, cifar100, or the path of your own image folder "
                        "(one sub-folder per class) or .npz file")
    p.add_argument("--data", default=data_default, metavar="data1|data2|PATH",
                   help="the end device's data: data1 (homogeneous), data2 (heterogeneous), or the path of your "
                        "own image folder or .npz file")
    p.add_argument("--data-dir", default=None, help="folder holding the dataset files")
    p.add_argument("--train-size", type=t.positive_int, default=None, help="SD train images (default: the paper's)")
    p.add_argument("--val-size", type=t.positive_int, default=None, help="SD validation images (default: the paper's)")
    p.add_argument("--data-seed", type=int, default=0, help="seed that picks the SD's images")


def add_store_argument(p) -> None:
    p.add_argument("--store", default=None, help="trace store (SQLite) path; default $JQODI_HOME/traces.db")


def fmt(x, digits=4):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def set_verb_threads(args) -> int:
    """Set torch's threads for a learning verb: ``--threads``, else :mod:`jqodi.core.threads`'s
    default ($JQODI_THREADS, else every usable core)."""
    from jqodi.core.threads import set_threads

    from jqodi.core.quant.heap import keep_freed_memory; keep_freed_memory()  # trains here (core/quant/heap.py)
    return set_threads(args.threads)
