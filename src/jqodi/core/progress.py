"""A one-line progress bar on stderr for long work (epochs, batches)."""
from __future__ import annotations

import sys

__all__ = ["Progress"]


class Progress:
    """A one-line progress bar on stderr (redrawn on a TTY, one line per epoch otherwise)."""

    def __init__(self, enabled: bool | None, label: str):
        self.enabled = True if enabled is None else enabled
        self.tty = sys.stderr.isatty()
        self.label = label

    def batch(self, done: int, total: int, loss: float) -> None:
        if self.enabled and self.tty:
            w = 24
            fill = int(w * done / max(1, total))
            sys.stderr.write(f"\r{self.label} [{'#' * fill}{'.' * (w - fill)}] {done}/{total} loss {loss:.4f}")
            sys.stderr.flush()

    def line(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write(("\r\x1b[K" if self.tty else "") + text + "\n")
            sys.stderr.flush()
