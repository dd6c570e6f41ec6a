"""The curve variants the prior extrapolates a probe with, and their fast least-squares fit.

A *variant* is a family of :data:`jqodi.learning.curves.CURVE_MODELS` (pow3, exp3, ilog2, pow2),
fitted to a probe's epochs with or without the quantized start loss as an extra point at epoch 0
(:data:`VARIANTS`, :func:`variant_curve`). :func:`fit_fast` fits a family by variable projection.
"""
from __future__ import annotations

import math

import numpy as np

from jqodi.learning.curves import CURVE_MODELS

__all__ = ["VARIANTS", "fit_fast", "fit_residual", "predicted_first_epoch", "variant_curve"]

#: (family, with the start loss as epoch 0)
VARIANTS = tuple((f, s) for f in ("pow3", "exp3", "ilog2", "pow2") for s in (False, True))


def variant_curve(variant: tuple[str, bool], probe: np.ndarray, start_loss: float | None,
                  horizon: int) -> np.ndarray | None:
    """The loss a variant fitted to a probe predicts for epochs 1..horizon; None if it cannot be fitted."""
    family, with_start = variant
    n_params = len(CURVE_MODELS[family][2])
    if with_start:
        if start_loss is None:
            return None
        y = np.concatenate([[start_loss], probe])
        t = np.arange(1, y.size + 1, dtype=float)   # epoch k at t = k + 1
        offset = 1
    else:
        y, t, offset = probe, np.arange(1, probe.size + 1, dtype=float), 0
    if y.size < n_params:
        return None
    p = fit_fast(family, t, y)
    if p is None:
        return None
    return CURVE_MODELS[family][0](np.arange(1 + offset, horizon + 1 + offset, dtype=float), *p)


_RATES = np.geomspace(1e-3, 5.0, 400)


def fit_fast(family: str, t: np.ndarray, y: np.ndarray) -> tuple | None:
    """Least-squares parameters of ``family`` (a ≥ 0, b ≥ 0, c ≥ 0), like :func:`~jqodi.learning.curves.fit_curve`.

    Variable projection: for every rate b on a log grid (1e-3..5) the amplitude a and floor c
    are linear, solved in closed form under the sign constraints; the b with the least squared
    error wins. ~1 ms a fit, and no optimizer that may fail to converge on three points.
    """
    if family == "ilog2":
        phi = (1.0 / np.log(t + 1.0))[None, :]
    elif family in ("pow3", "pow2"):
        phi = np.power(t[None, :], -_RATES[:, None])
    elif family == "exp3":
        phi = np.exp(-_RATES[:, None] * (t[None, :] - 1.0))
    else:
        raise ValueError(f"unknown curve family {family!r}")
    if family == "pow2":   # y = a·φ: no floor
        a = np.maximum((phi * y).sum(1) / np.maximum((phi * phi).sum(1), 1e-300), 0.0)
        c = np.zeros_like(a)
    else:
        pm, ym = phi.mean(1), y.mean()
        var = ((phi - pm[:, None]) ** 2).sum(1)
        a = np.where(var > 1e-18, ((phi - pm[:, None]) * (y - ym)).sum(1) / np.maximum(var, 1e-300), 0.0)
        c = ym - a * pm
        neg_a = a < 0
        a, c = np.where(neg_a, 0.0, a), np.where(neg_a, ym, c)
        neg_c = c < 0   # floor at 0: the amplitude alone
        a_c0 = np.maximum((phi * y).sum(1) / np.maximum((phi * phi).sum(1), 1e-300), 0.0)
        a, c = np.where(neg_c, a_c0, a), np.where(neg_c, 0.0, c)
    sse = ((c[:, None] + a[:, None] * phi - y[None, :]) ** 2).sum(1)
    if not np.any(np.isfinite(sse)):
        return None
    i = int(np.nanargmin(sse))
    if family == "ilog2":
        return (float(a[i]), float(c[i]))
    if family == "pow2":
        return (float(a[i]), float(_RATES[i]))
    return (float(a[i]), float(_RATES[i]), float(c[i]))


def predicted_first_epoch(pred: np.ndarray, target: float) -> float:
    """First epoch (1-based) of a predicted curve at or below ``target``; ∞ if none."""
    hit = np.flatnonzero(pred <= target)
    return float(hit[0] + 1) if hit.size else math.inf


def fit_residual(pred: np.ndarray, probe: np.ndarray) -> float:
    """RMS relative residual of a fitted variant on the probe's epochs."""
    return float(np.sqrt(np.mean(np.square((pred[:probe.size] - probe) / probe))))
