"""The ADP value of a state, Eq. (14): how far the loss is ahead of an ideal loss–time curve.

``L_ideal(T)`` starts at ``L(0)`` for ``T = 0``, ends at ``L_max`` for ``T = T_max`` and follows a
power law in between (Section III-E):

    L_ideal(T) = A · (T + t0)^(−α),  with  A·t0^(−α) = L(0)  and  A·(T_max + t0)^(−α) = L_max,

so ``t0 = T_max / ((L(0)/L_max)^(1/α) − 1)`` and ``A = L(0) · t0^α`` (``α`` is the curve's
exponent, 0.5 by default). Then

    V(s) = 0                                   if T > T_max and L > L_max,
    V(s) = 1                                   if T ≤ T_max and L < L_max,
    V(s) = logistic((L_ideal(T) − L) / scale)  otherwise,                     (14)

with ``logistic(x) = 1 / (1 + e^(−x))`` and ``scale`` normalising loss differences (default
``(L(0) − L_max) / 4``, so a state a quarter of the way ahead of the ideal curve scores ≈ 0.73).
When ``L(0) ≤ L_max`` the ideal curve is the constant ``L_max``.
"""
from __future__ import annotations

import math

__all__ = ["ideal_loss", "state_value"]


def ideal_loss(time_s: float, start_loss: float, target_loss: float, deadline_s: float, exponent: float = 0.5) -> float:
    """L_ideal(T): the power-law loss–time curve from (0, L(0)) to (T_max, L_max)."""
    if deadline_s <= 0:
        raise ValueError(f"deadline_s must be > 0, got {deadline_s}")
    if exponent <= 0:
        raise ValueError(f"exponent must be > 0, got {exponent}")
    if start_loss <= target_loss or target_loss <= 0:
        return target_loss
    t0 = deadline_s / ((start_loss / target_loss) ** (1.0 / exponent) - 1.0)
    a = start_loss * t0 ** exponent
    return a * (max(time_s, 0.0) + t0) ** (-exponent)


def _logistic(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def state_value(time_s: float, loss: float, *, start_loss: float, target_loss: float, deadline_s: float,
                exponent: float = 0.5, scale: float | None = None) -> float:
    """V(s(k)) of Eq. (14) for a state at time ``T(k) = time_s`` with loss ``L(k) = loss``."""
    if time_s > deadline_s and loss > target_loss:
        return 0.0
    if time_s <= deadline_s and loss < target_loss:
        return 1.0
    if scale is None:
        scale = max((start_loss - target_loss) / 4.0, 1e-6)
    return _logistic((ideal_loss(time_s, start_loss, target_loss, deadline_s, exponent) - loss) / scale)
