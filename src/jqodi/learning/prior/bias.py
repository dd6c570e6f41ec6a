"""A learned correction of the prior's point estimate and of its conformal scores (session 11; the point correction is the default, CQR is off).

The conformal step (:meth:`jqodi.learning.prior.CurvePrior.conformal_margin`) can only *widen* K^exp:
K^rob ≥ K^exp. Where the calibrated K^exp is itself biased in a way the library shows — too late on
probes that flatten, too early on slow tails — no margin undoes it. This module learns that bias from
the conformal residuals r = log K − log K^exp themselves (:meth:`CurvePrior.residuals`, made
leave-one-configuration-out): a linear function of features the estimator has before the truth
(:func:`bias_features`), fitted by weighted pinball loss with a ridge penalty (:func:`fit_quantile_ridge`):

* at τ = 0.5 (a median regression) it corrects the point estimate, K^exp' = K^exp · exp(f(x));
* at an upper τ it is the first stage of *conformalized quantile regression*: the conformal score becomes
  r − f_τ(x) and the margin f_τ(x) + q̂.

Every residual's correction is fitted on the *other* configurations' residuals (:func:`loco_predictions`),
so the conformal step that follows sees the corrected estimator's out-of-sample errors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from jqodi.learning.curves import first_epoch_below
from jqodi.learning.prior.conformal import wquantile

__all__ = ["BIAS_FEATURES", "QuantileRidge", "bias_features", "fit_quantile_ridge", "group_weights", "loco_predictions"]

#: what :func:`bias_features` returns, in order (all known before the truth)
BIAS_FEATURES = ("log K^exp", "probe reached the target", "log(last probe loss / target)",
                 "last epoch's log improvement", "change of the log improvement", "vote spread",
                 "log2 data size", "log2 bits")
#: IRLS iterations of the pinball fit and the smallest |residual| it divides by
_IRLS_STEPS = 60
_IRLS_EPS = 1e-3


def bias_features(k_exp: int, probe: np.ndarray, target_loss: float, spread: float, query: dict) -> tuple:
    """The features of one question (:data:`BIAS_FEATURES`): K^exp (log), whether the probe already reached the
    target, how far the target lies below the probe's last loss (log, 0 when that loss is at or below it), the probe's last-epoch
    improvement log(y_{P−1}/y_P) and its change (a curvature; 0 for probes too short), step 3's vote spread
    log K^rob_vote − log K^exp, and the configuration's data size and bits (log2)."""
    y = np.log(np.maximum(np.asarray(probe, float), 1e-12))
    t = math.log(max(float(target_loss), 1e-12))
    reached = float(first_epoch_below(probe, target_loss) is not None)   # the estimator's own test of it
    below = max(0.0, float(y[-1]) - t)
    d = -np.diff(y)
    last = float(d[-1]) if d.size else 0.0
    curv = float(d[-1] - d[-2]) if d.size >= 2 else 0.0
    size = math.log2(max(float(query.get("train_size") or 1), 1.0))
    bits = math.log2(max(float(query.get("bits") or 32), 1.0))
    return (math.log(max(k_exp, 1)), reached, below, last, curv, float(spread), size, bits)


@dataclass(frozen=True)
class QuantileRidge:
    """A fitted linear τ-quantile of r on standardised features: f(x) = b0 + ((x − mean)/scale) · beta."""

    tau: float
    b0: float
    mean: np.ndarray
    scale: np.ndarray
    beta: np.ndarray

    def __call__(self, x) -> np.ndarray | float:
        x = np.asarray(x, float)
        out = self.b0 + ((x - self.mean) / self.scale) @ self.beta
        return float(out) if np.ndim(out) == 0 else out


def fit_quantile_ridge(X: np.ndarray, r: np.ndarray, w: np.ndarray, tau: float, ridge: float) -> QuantileRidge:
    """Weighted linear τ-quantile regression with a ridge penalty: minimises
    Σ w_i ρ_τ(r_i − f(x_i)) / Σ w + ridge · ‖beta‖² (ρ_τ the pinball loss; features standardised with the
    weighted mean and standard deviation, the intercept not penalised) by iteratively reweighted least squares."""
    X, r, w = np.asarray(X, float), np.asarray(r, float), np.asarray(w, float)
    w = w / w.sum()
    mean = w @ X
    scale = np.sqrt(w @ (X - mean) ** 2)
    scale = np.where(scale > 1e-9, scale, 1.0)   # a constant feature stays 0 after standardising
    Z = np.hstack([np.ones((X.shape[0], 1)), (X - mean) / scale])
    pen = np.full(Z.shape[1], 2.0 * ridge)
    pen[0] = 0.0
    theta = np.zeros(Z.shape[1])
    theta[0] = wquantile(r, w, tau)
    for _ in range(_IRLS_STEPS):
        res = r - Z @ theta
        # ρ_τ(u) ≈ c·u²/(2|u|) around the current residuals (c = τ above the fit, 1 − τ below)
        u = w * np.where(res > 0, tau, 1.0 - tau) / np.maximum(np.abs(res), _IRLS_EPS)
        new = np.linalg.solve(Z.T @ (u[:, None] * Z) + np.diag(pen), Z.T @ (u * r))
        if np.max(np.abs(new - theta)) < 1e-7:
            theta = new
            break
        theta = new
    return QuantileRidge(float(tau), float(theta[0]), mean, scale, theta[1:])


def loco_predictions(X: np.ndarray, r: np.ndarray, groups: list, tau: float, ridge: float) -> np.ndarray:
    """f(x_i) for every row, each from a fit on the *other* groups' rows (each group weighing 1 in all);
    0 where fewer than two other groups are left."""
    X, r = np.asarray(X, float), np.asarray(r, float)
    numbers: dict = {}
    g = np.asarray([numbers.setdefault(x, len(numbers)) for x in groups], dtype=int)
    w = group_weights(groups)
    out = np.zeros(r.size)
    if len(numbers) < 3:
        return out
    for k in range(len(numbers)):
        rows = g == k
        out[rows] = fit_quantile_ridge(X[~rows], r[~rows], w[~rows], tau, ridge)(X[rows])
    return out


def group_weights(groups: list) -> np.ndarray:
    """1 / (the group's number of rows): each configuration weighs 1."""
    counts: dict = {}
    for x in groups:
        counts[x] = counts.get(x, 0) + 1
    return np.asarray([1.0 / counts[x] for x in groups])
