"""Argument types shared by every verb: numbers are checked where they are parsed, once.

``type=positive_int`` and friends raise :class:`argparse.ArgumentTypeError`, which the parser turns
into one line (``jqodi: error: argument --epochs: must be an integer ≥ 1, got '0'``) and exit code 2,
before any work (a pretraining, a rendezvous) has started. NaN and ±inf are never numbers a flag
accepts.
"""
from __future__ import annotations

import argparse
import math

__all__ = ["positive_int", "nonneg_int", "int_at_least", "positive_float", "nonneg_float", "port",
           "bits", "dilation", "width"]


def _int(text: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def int_at_least(low: int, what: str = "an integer"):
    """A type: an integer ≥ ``low``."""

    def parse(text: str) -> int:
        value = _int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {what} ≥ {low}, got {text!r}")
        return value

    parse.__name__ = f"int≥{low}"  # argparse names the type in some messages
    return parse


positive_int = int_at_least(1)
nonneg_int = int_at_least(0)


def positive_float(text: str) -> float:
    """A finite number > 0 (seconds, watts, a learning rate, a target loss)."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def nonneg_float(text: str) -> float:
    """A finite number ≥ 0."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number ≥ 0, got {text!r}")
    return value


def port(text: str) -> int:
    """A TCP port, 1..65535."""
    value = _int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port in 1..65535, got {text!r}")
    return value


def bits(text: str) -> int:
    """A weight bit-width: 1..8, or 32 (no quantization)."""
    value = _int(text)
    if value not in set(range(1, 9)) | {32}:
        raise argparse.ArgumentTypeError(f"must be a bit-width in 1..8 or 32, got {text!r}")
    return value


def width(text: str) -> float:
    """A width multiplier within (0, 16], the range a scenario's ``models[].width`` allows."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 < value <= 16:  # also rejects nan
        raise argparse.ArgumentTypeError(f"width must be within (0, 16], got {text!r}")
    return value


def dilation(text: str) -> float | str:
    """``auto`` or a finite number ≥ 1 (emulation's time dilation)."""
    if text == "auto":
        return text
    value = _float(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a number ≥ 1 or 'auto', got {text!r}")
    return value
