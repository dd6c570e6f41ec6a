"""Parametric learning curves and the epoch estimators K^exp / K^rob.

The paper predicts K_(a,q), the number of fine-tuning epochs until the validation loss reaches
L_max, with an expected-value and a robust estimator (Tables VI/VII; its appendix is not public).
We build two families, both returning an :class:`EpochEstimate`:

**From a probe run** (:func:`estimate_from_probe`): the first P ≤ 5 epochs of a fine-tuning run
are fitted with parametric learning-curve models in the epoch index k ≥ 1,

* ``pow3``   L(k) = c + a·k^(−b)             (power law with a floor; Eq. (14)'s shape) — default
* ``exp3``   L(k) = c + a·exp(−b·(k−1))       (exponential decay)
* ``ilog2``  L(k) = c + a / log(k + 1)          (inverse-log, slow tails)
* ``pow2``   L(k) = a·k^(−b)                   (power law without floor)

each by bounded least squares (a ≥ 0, b ≥ 0, c ≥ 0: loss does not grow with training),
optionally in log space. Each model predicts K as the first epoch (≤ ``horizon``) whose fitted
loss is ≤ L_max; epochs the probe already observed below L_max count as reached. With several
``models`` (an ensemble) each is weighted by how well it extrapolates: refitted without the last
probe epoch and weighted by 1/|error| on it; K^exp is the weighted median. Uncertainty: residual
bootstrap — every model is refitted on ``fit + resampled residuals`` (residuals inflated by
√(n/(n−p)), ``n_boot`` times). The bootstrap alone is not a usable K^rob: its spread only
reflects how well 5 points fit the *fitted* curve, not how the real curve's slow tail departs
from the power law, so on the benchmark runs it was either equal to K^exp and short (83 % coverage
on LeNet Data 2) or hundreds of epochs. K^rob is therefore

    K^rob = max( min(Q_quantile(bootstrap K's), ⌈max_spread · K^exp⌉),  K^exp + 1,  ⌈(1 + min_margin) · K^exp⌉ )

with ``min_margin`` = 0.4 and ``max_spread`` = 2 (chosen on the LeNet runs only; VGG and ResNet20
are out of sample, docs/learning.md): a relative margin for the tail the fit cannot see, one
epoch for the seed-to-seed spread when the probe already reached L_max, and a cap on a finite
bootstrap tail. An ∞ bootstrap quantile (≥ 10 % of refits never reach L_max) stays ∞.
A K beyond the horizon is ∞; an ∞ estimate becomes ``None`` (the paper's ∞). The default is
the power law alone: on the benchmark runs (docs/learning.md) the 4-model ensemble was less
accurate (21 % vs 18 % median error, 75 % vs 83 % coverage on Data 2).

**From prior runs** (:func:`estimate_from_runs`): full curves of earlier runs of the same
candidate (other seeds, sizes, datasets) in the trace store. Each prior curve is aligned to the
probe's level (additive shift over the overlapping probe epochs, if a probe is given) and read
off at L_max: its K is the first epoch whose loss is ≤ L_max, as for the run being predicted (a
run that stops the epoch it reaches L_max counts that epoch); a curve that ends above L_max is
extrapolated with the power law (the exponential as fallback). K^exp is the
median of the priors' K, K^rob their maximum plus one standard deviation of the K's plus
the probe-free seed spread (at least one epoch): the spread between seeds is what the robust
estimate must cover.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

__all__ = [
    "CURVE_MODELS",
    "EpochEstimate",
    "PROBE_MAX_SPREAD",
    "PROBE_MIN_MARGIN",
    "estimate_from_probe",
    "estimate_from_runs",
    "first_epoch_below",
    "fit_curve",
]

Curve = Callable[..., np.ndarray]

#: K^rob of a probe is at least ⌈(1 + this)·K^exp⌉ and K^exp + 1: a 5-epoch power-law fit
#: extrapolates the slow tail too optimistically (chosen on the LeNet benchmark runs only,
#: docs/learning.md "Robust K from a probe")
PROBE_MIN_MARGIN = 0.4
#: a finite bootstrap K^rob is capped at this multiple of K^exp (the refits of 5 noisy points
#: sometimes put the floor c just under L_max and answer hundreds of epochs)
PROBE_MAX_SPREAD = 2.0


def _pow3(k, a, b, c):
    return c + a * np.power(k, -b)


def _exp3(k, a, b, c):
    return c + a * np.exp(-b * (k - 1.0))


def _ilog2(k, a, c):
    return c + a / np.log(k + 1.0)


def _pow2(k, a, b):
    return a * np.power(k, -b)


#: name -> (function, initial guesses builder, lower bounds, upper bounds)
CURVE_MODELS: dict[str, tuple[Curve, Callable[[np.ndarray], list[list[float]]], list[float], list[float]]] = {
    "pow3": (_pow3, lambda y: [[max(y[0] - y[-1], 1e-3), 0.5, max(y[-1] * 0.9, 0.0)],
                               [max(y[0] - y.min() * 0.5, 1e-3), 1.0, y.min() * 0.5]],
             [0.0, 0.0, 0.0], [np.inf, 5.0, np.inf]),
    "exp3": (_exp3, lambda y: [[max(y[0] - y[-1], 1e-3), 0.3, max(y[-1] * 0.95, 0.0)],
                               [max(y[0] - y.min() * 0.5, 1e-3), 0.05, y.min() * 0.5]],
             [0.0, 0.0, 0.0], [np.inf, 5.0, np.inf]),
    "ilog2": (_ilog2, lambda y: [[max(y[0] - y[-1], 1e-3), max(y[-1] * 0.5, 0.0)]],
              [0.0, 0.0], [np.inf, np.inf]),
    "pow2": (_pow2, lambda y: [[max(y[0], 1e-3), 0.2]], [0.0, 0.0], [np.inf, 5.0]),
}


def fit_curve(name: str, k: np.ndarray, y: np.ndarray, log_space: bool = False) -> np.ndarray | None:
    """Least-squares parameters of curve ``name`` through ``(k, y)``; None if every start fails.

    ``log_space`` fits ``log f`` to ``log y`` (relative errors: the large early losses do not
    dominate the fit of the tail).
    """
    from scipy.optimize import curve_fit

    f0, inits, lo, hi = CURVE_MODELS[name]
    if log_space:
        if np.any(y <= 0):
            return None
        def f(kk, *p):  # noqa: E306
            return np.log(np.maximum(f0(kk, *p), 1e-12))
        target_y = np.log(y)
    else:
        f, target_y = f0, y
    best, best_sse = None, math.inf
    for p0 in inits(y):
        p0 = np.clip(np.asarray(p0, float), np.asarray(lo) + 1e-9, np.where(np.isfinite(hi), np.asarray(hi) - 1e-9, np.inf))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                p, _ = curve_fit(f, k, target_y, p0=p0, bounds=(lo, hi), maxfev=2000)
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((f(k, *p) - target_y) ** 2))
        if np.isfinite(sse) and sse < best_sse:
            best, best_sse = p, sse
    return best


def first_epoch_below(values: Sequence[float], target: float, start_epoch: int = 1) -> int | None:
    """First epoch (numbered from ``start_epoch``) whose value is ≤ ``target``."""
    for i, v in enumerate(values):
        if v <= target:
            return start_epoch + i
    return None


@dataclass
class EpochEstimate:
    """K^exp / K^rob (``None`` = cannot reach the target) and the predicted losses after them."""

    expected: int | None
    robust: int | None
    final_loss_expected: float | None = None
    final_loss_robust: float | None = None
    method: str = "probe"
    samples: list[float] = field(default_factory=list, repr=False)  # K's behind the estimate (inf allowed)
    family: str | None = None      # the curve variant chosen (learned prior)
    n_eff: float | None = None     # effective number of stored samples behind it
    note: str = ""                 # how it was made (cold start, fallback, ...)
    robust_level: float | None = None   # K^rob's coverage level q, when the estimator calibrates one
    robust_margin: float | None = None  # K^rob's relative margin over K^exp before rounding (with q)
    censored: bool = False         # stored curves cut short above the target left it open (estimate_from_runs)


def _member_k(name: str, p: np.ndarray, target: float, ks: np.ndarray) -> float:
    pred = CURVE_MODELS[name][0](ks, *p)
    hit = np.flatnonzero(pred <= target)
    return float(ks[hit[0]]) if hit.size else math.inf


def _finite_or_none(x: float) -> int | None:
    return None if not math.isfinite(x) else int(math.ceil(x - 1e-9))


def estimate_from_probe(val_losses: Sequence[float], target_loss: float, *, horizon: int = 300,
                        n_boot: int = 50, quantile: float = 0.9, seed: int = 0,
                        models: Sequence[str] = ("pow3",),
                        log_space: bool = False, min_margin: float = PROBE_MIN_MARGIN,
                        max_spread: float = PROBE_MAX_SPREAD) -> EpochEstimate:
    """K^exp / K^rob from the validation losses of a probe's first epochs (epoch 1 first).

    K^rob = max(bootstrap ``quantile`` capped at ``max_spread``·K^exp, K^exp + 1,
    ⌈(1 + ``min_margin``)·K^exp⌉); an ∞ bootstrap quantile stays ∞ (see the module docstring).
    """
    y = np.asarray(val_losses, dtype=float)
    if y.size == 0 or not np.all(np.isfinite(y)):
        return EpochEstimate(None, None, method="probe")
    k = np.arange(1, y.size + 1, dtype=float)
    ks = np.arange(1, horizon + 1, dtype=float)
    observed = first_epoch_below(y, target_loss)
    if y.size < 3:  # too few points to fit a curve
        kk = observed if observed is not None else None
        return EpochEstimate(kk, None if kk is None else _finite_or_none(_robust_floor(kk, min_margin, horizon)),
                             method="probe")
    rng = np.random.default_rng(seed)
    point, weights, boot, boot_w, finals = [], [], [], [], []
    for name in models:
        p = fit_curve(name, k, y, log_space)
        if p is None:
            continue
        f = CURVE_MODELS[name][0]
        # weight: how well the member, fitted without the last probe epoch, predicts it
        p_loo = fit_curve(name, k[:-1], y[:-1], log_space)
        err = abs(float(f(k[-1:], *p_loo)[0]) - y[-1]) if p_loo is not None else math.inf
        w = 1.0 / (err + 1e-4 * max(abs(y[-1]), 1e-6))
        kp = _member_k(name, p, target_loss, ks)
        if observed is not None:
            kp = min(kp, observed)
        point.append(kp)
        weights.append(w)
        finals.append(float(f(np.asarray([min(kp, horizon)]), *p)[0]))
        fitted = f(k, *p)
        # residuals of a fit underestimate the noise: inflate by sqrt(n / (n - n_params))
        infl = math.sqrt(y.size / max(1, y.size - len(p)))
        if log_space:
            resid = (np.log(y) - np.log(np.maximum(fitted, 1e-12))) * infl
        else:
            resid = (y - fitted) * infl
        for _ in range(n_boot):
            r = rng.choice(resid, size=resid.size, replace=True)
            yb = np.maximum(fitted, 1e-12) * np.exp(r) if log_space else fitted + r
            pb = fit_curve(name, k, yb, log_space)
            kb = math.inf if pb is None else _member_k(name, pb, target_loss, ks)
            if observed is not None:
                kb = min(kb, observed)
            boot.append(kb)
            boot_w.append(w / max(1, n_boot))
    if not point:
        rob = None if observed is None else _finite_or_none(_robust_floor(observed, min_margin, horizon))
        return EpochEstimate(observed, rob, method="probe")
    k_exp = _weighted_quantile(point, weights, 0.5)
    k_rob = _weighted_quantile(boot + point, boot_w + weights, quantile) if boot else k_exp
    if math.isfinite(k_rob) and math.isfinite(k_exp):
        k_rob = min(k_rob, math.ceil(max_spread * k_exp))  # a finite bootstrap tail of 5 points is noise
    k_rob = max(k_rob, _robust_floor(k_exp, min_margin, horizon))
    fl = _weighted_quantile(finals, weights, 0.5)
    return EpochEstimate(_finite_or_none(k_exp), _finite_or_none(k_rob),
                         final_loss_expected=fl if math.isfinite(k_exp) else None,
                         final_loss_robust=target_loss if math.isfinite(k_rob) else None,
                         method="probe", samples=list(boot + point))


def _robust_floor(k_exp: float, min_margin: float, horizon: int) -> float:
    """The least K^rob for a probe's K^exp: one epoch more and ``min_margin`` relative (∞ past the horizon)."""
    if not math.isfinite(k_exp):
        return math.inf
    k = max(math.ceil(k_exp - 1e-9) + 1, math.ceil(k_exp * (1.0 + min_margin) - 1e-9))
    return float(k) if k <= horizon else math.inf


def _weighted_quantile(values: Sequence[float], weights: Sequence[float], q: float) -> float:
    """The smallest value whose cumulative weight share reaches ``q`` (inf allowed)."""
    v = np.asarray(values, dtype=float)
    w = np.asarray(weights, dtype=float)
    order = np.argsort(v, kind="stable")
    cw = np.cumsum(w[order]) / w.sum()
    return float(v[order][min(np.searchsorted(cw, q - 1e-12), v.size - 1)])


def _prior_k(curve: np.ndarray, target: float, horizon: int) -> float:
    """K of one prior run: the first epoch its (raw) loss is ≤ ``target`` — the same definition as a
    run's actual K (:func:`first_epoch_below`), so a run that stops the epoch it reaches L_max counts
    that epoch. Only a run that never reaches the target is extrapolated (its tail fitted by the
    power law, the exponential as fallback); ∞ if neither reaches it within ``horizon``."""
    hit = first_epoch_below(curve, target)
    return float(hit) if hit is not None else _extrapolated_k(curve, target, horizon)


def _extrapolated_k(curve: np.ndarray, target: float, horizon: int) -> float:
    """K of a prior run that ended above ``target``: its tail extrapolated by the power law
    (Section III-E), the exponential as fallback; ∞ if it does not reach the target within ``horizon``."""
    k = np.arange(1, curve.size + 1, dtype=float)
    ks = np.arange(1, horizon + 1, dtype=float)
    for name in ("pow3", "exp3"):
        p = fit_curve(name, k, curve)
        if p is not None:
            return _member_k(name, p, target, ks)
    return math.inf


def estimate_from_runs(prior_curves: Sequence[Sequence[float]], target_loss: float, *,
                       probe: Sequence[float] | None = None, horizon: int = 300,
                       censored: Sequence[bool] | None = None) -> EpochEstimate:
    """K^exp / K^rob from prior runs' validation curves (optionally aligned to a probe).

    ``censored[i]`` (one flag per curve, else ``ValueError``): curve i was cut short, not run to its end — a
    probe (``source="probe"``), or a run stopped at a target loss above ``target_loss``
    (:func:`jqodi.learning.estimate.stopped_above`), says nothing about the epochs after its last. A
    censored curve that reaches the target counts its epoch like any other; one that ends above it is
    *not* extrapolated (a complete run's tail is; a cut curve's last epochs are not its tail): it only
    says K > its length (a right-censored sample). K^exp is then the median with those samples at +∞ where that median is still one of the known
    K's, and K^rob is ``None`` (a censored sample bounds nothing); when the censored samples decide the
    median, K^exp is ``None`` too. Either way ``censored`` is set (and ``note`` says why) — "the store
    cannot say", not "cannot reach": :func:`jqodi.learning.estimate.estimate_candidate` (``auto``) then
    estimates from a probe, and ``--method store`` says so in one line when K^exp is undecided.
    """
    if censored is not None and len(censored) != len(prior_curves):
        raise ValueError(f"censored has {len(censored)} flags for {len(prior_curves)} prior curves")
    curves = [np.asarray(c, dtype=float) for c in prior_curves if len(c)]
    cut = [bool(x) for c, x in zip(prior_curves, censored or [False] * len(prior_curves)) if len(c)]
    if not curves:
        return EpochEstimate(None, None, method="store")
    ks = []
    for c, is_cut in zip(curves, cut):
        if probe is not None and len(probe):
            p = np.asarray(probe, dtype=float)
            n = min(p.size, c.size)
            c = c + float(np.mean(p[:n] - c[:n]))
        if is_cut:   # a probe: its epoch if it reached the target, else only K > its length (NaN: censored)
            hit = first_epoch_below(c, target_loss)
            ks.append(math.nan if hit is None else float(hit))
        else:
            ks.append(_prior_k(c, target_loss, horizon))
    arr = np.asarray(ks)
    method = "store+probe" if probe is not None and len(probe) else "store"
    open_ = np.isnan(arr)
    if open_.any():
        k_exp = float(np.median(np.where(open_, math.inf, arr)))
        if not math.isfinite(k_exp):
            never = int(np.isinf(arr).sum())   # complete runs whose (extrapolated) curve never reaches the target
            if never:
                why = (f"of {arr.size} stored curves, {never} complete run(s) never reach the target within "
                       f"{horizon} epochs and {int(open_.sum())} cut short (probes, runs stopped at a higher target) "
                       f"end above it; those say nothing about later epochs")
            else:
                why = (f"{int(open_.sum())} of {arr.size} stored curves are cut short (probes, runs stopped at a "
                       f"higher target) and end above the target; they say nothing about later epochs")
            return EpochEstimate(None, None, method=method, samples=list(arr), note=f"censored: {why}",
                                 censored=True)
        return EpochEstimate(_finite_or_none(k_exp), None, final_loss_expected=target_loss, method=method,
                             samples=list(arr), note=f"censored: K^rob none — {int(open_.sum())} stored curve(s) cut "
                                                     f"short end above the target", censored=True)
    finite = arr[np.isfinite(arr)]
    if finite.size * 2 <= arr.size:  # most priors never reach the target
        return EpochEstimate(None, None, method=method, samples=list(arr))
    k_exp = float(np.median(arr))
    if finite.size < arr.size:
        k_rob = math.inf
    else:
        spread = float(np.std(finite)) if finite.size > 1 else 0.0
        k_rob = float(finite.max()) + max(1.0, spread)
    return EpochEstimate(_finite_or_none(k_exp), _finite_or_none(k_rob),
                         final_loss_expected=target_loss if math.isfinite(k_exp) else None,
                         final_loss_robust=target_loss if math.isfinite(k_rob) else None,
                         method=method, samples=list(arr))
