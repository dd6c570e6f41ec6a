"""The learned prior itself: :class:`CurvePrior` calibrates each curve variant on simulated probes of
the library's runs and corrects a new probe's extrapolation by the bias and spread it learned.

Steps 2–4 of :mod:`jqodi.learning.prior`: simulated probes (:meth:`CurvePrior.samples`), the update
with a probe (K^exp_v = K̂_v · exp(median_w e), K^rob_v = K̂_v · exp(quantile_w(e, q')), the variants'
vote weighted by their held-out error) and the cold start (the probe alone, a doubled margin).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from jqodi.learning.curves import PROBE_MIN_MARGIN, EpochEstimate, estimate_from_probe, first_epoch_below
from jqodi.learning.prior.library import CurveRun, library_from_store, similarity
from jqodi.learning.prior.variants import VARIANTS, fit_residual, predicted_first_epoch, variant_curve

__all__ = ["COLD_START_MARGIN", "CurvePrior", "MIN_EFFECTIVE_SAMPLES", "PROBE_LENGTHS"]

#: probe lengths the prior is calibrated for (a probe of another length uses the next shorter one)
PROBE_LENGTHS = (1, 2, 3, 5)
#: below this effective number of similar stored configurations the store knows too little: probe alone
MIN_EFFECTIVE_SAMPLES = 1.5
#: the probe-alone fallback's robust margin (twice the probe estimator's default)
COLD_START_MARGIN = 2 * PROBE_MIN_MARGIN
#: a variant whose RMS relative residual on the probe exceeds this multiple of the best one's
#: (and FIT_RESIDUAL_FLOOR) is not used
FIT_RESIDUAL_FACTOR = 2.0
FIT_RESIDUAL_FLOOR = 0.02
#: robust quantile of the calibrated K
ROBUST_QUANTILE = 0.9
#: bandwidth of the depth kernel (in log K̂)
DEPTH_BANDWIDTH = 0.35


def _wquantile(v: np.ndarray, w: np.ndarray, q: float) -> float:
    order = np.argsort(v, kind="stable")
    cw = np.cumsum(w[order]) / w.sum()
    return float(v[order][min(int(np.searchsorted(cw, q - 1e-12)), v.size - 1)])


def _group_n_eff(w: np.ndarray, run: np.ndarray, runs: Sequence[CurveRun]) -> float:
    """Kish's effective sample size over *configurations*: the samples of one group are correlated."""
    totals: dict = {}
    for wi, ri in zip(w, run):
        g = runs[ri].group
        totals[g] = totals.get(g, 0.0) + wi
    t = np.asarray(list(totals.values()))
    return float(t.sum() ** 2 / np.sum(t ** 2)) if t.sum() > 0 else 0.0


def _calibrated_error(depth: np.ndarray, err: np.ndarray, w_cfg: np.ndarray, query_depth: float,
                      P: int) -> float | None:
    """Held-out error of a variant's *calibrated* K on the library (weighted median |e − m(depth)|).

    m(depth) is the depth-local weighted median of e, what the calibration adds; a variant biased
    in a way the store knows is as good as an unbiased one. Samples whose target the probe
    already reached (K ≤ P, trivially right) do not count; the others are weighted by how
    similar their configuration is and (with twice the calibration's bandwidth) how close their
    depth is to the query's.
    """
    keep = (depth + err > math.log(P + 0.5)) & (w_cfg > 0)
    if keep.sum() < 2:
        return None
    d, e, wc = depth[keep], err[keep], w_cfg[keep]
    grid = np.linspace(d.min(), d.max(), 16) if d.max() > d.min() else d[:1]
    med = np.asarray([_wquantile(e, wc * np.exp(-0.5 * ((d - g) / DEPTH_BANDWIDTH) ** 2) + 1e-300, 0.5)
                      for g in grid])
    m = np.interp(d, grid, med)
    w = wc * np.exp(-0.5 * ((d - query_depth) / (2 * DEPTH_BANDWIDTH)) ** 2)
    if w.sum() <= 0:
        return None
    return _wquantile(np.abs(e - m), w, 0.5)


@dataclass
class _Samples:
    """Calibration samples of one variant at one probe length (parallel arrays)."""

    group: list = field(default_factory=list)
    run: list = field(default_factory=list)      # index into the library
    depth: list = field(default_factory=list)    # log K̂ (K̂ capped at the horizon)
    err: list = field(default_factory=list)      # log K − log K̂

    def arrays(self):
        return np.asarray(self.depth, float), np.asarray(self.err, float), np.asarray(self.run, int)


class CurvePrior:
    """The learned prior: a library of stored curves and their simulated-probe errors."""

    def __init__(self, runs: Sequence[CurveRun], *, horizon: int = 300, skipped: dict[str, int] | None = None):
        self.runs = list(runs)
        self.horizon = int(horizon)
        self.skipped = dict(skipped or {})
        self._samples: dict[tuple, _Samples] = {}
        self._fit_cache: dict[tuple, np.ndarray | None] = {}

    @classmethod
    def from_store(cls, store, **kw) -> "CurvePrior":
        runs, skipped = library_from_store(store)
        return cls(runs, skipped=skipped, **kw)

    @property
    def skipped_count(self) -> int:
        return sum(self.skipped.values())

    # -- calibration -------------------------------------------------------------------------
    def _fit(self, i: int, variant, P: int) -> np.ndarray | None:
        key = (i, variant, P)
        if key not in self._fit_cache:
            r = self.runs[i]
            self._fit_cache[key] = variant_curve(variant, r.losses[:P], r.start_loss, self.horizon)
        return self._fit_cache[key]

    def samples(self, variant, P: int) -> _Samples:
        """Simulated-probe samples of ``variant`` with probes of ``P`` epochs (computed once).

        For a pair (a, b) the targets are (i) every loss level b reaches, and (ii) the loss a's
        fitted curve predicts at each epoch j ≤ len(b). Targets of kind (i) alone would leave
        out the slow cases — a level b never reaches gives no sample — and bias deep
        extrapolations toward optimism; kind (ii) alone has no samples for predictions deeper
        than the library's runs. A target b does not reach within its epochs counts with
        K = len(b) + 1 (a lower bound: still optimistic for those, but not left out).
        """
        key = (variant, P)
        if key in self._samples:
            return self._samples[key]
        s = _Samples()
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(self.runs):
            groups.setdefault(r.group, []).append(i)
        for g, members in groups.items():
            pairs = [(a, b) for a in members for b in members if a != b] or [(m, m) for m in members]
            for a, b in pairs:
                if self.runs[a].losses.size < P:
                    continue
                pred = self._fit(a, variant, P)
                if pred is None:
                    continue
                probe, truth = self.runs[a].losses[:P], self.runs[b].losses
                levels = [float(pred[j - 1]) for j in range(1, truth.size + 1)]
                levels += sorted(set(np.minimum.accumulate(truth).tolist()), reverse=True)
                for level in levels:
                    k_hat = min(predicted_first_epoch(pred, level), float(self.horizon))
                    obs = first_epoch_below(probe, level)
                    if obs is not None:
                        k_hat = min(k_hat, float(obs))
                    k_true = first_epoch_below(truth, level) or truth.size + 1
                    s.group.append(g)
                    s.run.append(b)
                    s.depth.append(math.log(k_hat))
                    s.err.append(math.log(k_true) - math.log(k_hat))
        self._samples[key] = s
        return s

    # -- estimation --------------------------------------------------------------------------
    def estimate(self, probe: Sequence[float], target_loss: float, query: dict, *,
                 start_loss: float | None = None, exclude_group: tuple | None = None,
                 quantile: float = ROBUST_QUANTILE) -> EpochEstimate:
        """K^exp / K^rob for a candidate described by ``query`` from its probe's validation losses.

        ``query``: model, dataset, data_name, bits, width, train_size and optionally pretrained
        (identity key) and shift (log(L_0/L_a)). ``exclude_group``: leave that configuration's
        runs out of the library (the held-out benchmark).
        """
        y = np.asarray(probe, dtype=float)
        if y.size == 0 or not np.all(np.isfinite(y)):
            return EpochEstimate(None, None, method="prior+probe", note="probe has no finite losses")
        P = max((p for p in PROBE_LENGTHS if p <= y.size), default=None)
        y = y[:P] if P else y
        relevant = [r for r in self.runs if r.model == query["model"] and r.group != exclude_group]
        if not relevant:
            return self._probe_only(y, target_loss, f"cold start: no stored runs of {query['model']}")
        w_run = np.asarray([0.0 if r.group == exclude_group else similarity(query, r) for r in self.runs])
        observed = first_epoch_below(y, target_loss)
        fits = {}
        for variant in VARIANTS:
            pred = variant_curve(variant, y, start_loss, self.horizon)
            if pred is not None:
                fits[variant] = (pred, fit_residual(pred, y))
        if fits:   # a variant that does not describe the probe at all is not extrapolated
            worst = max(FIT_RESIDUAL_FLOOR, FIT_RESIDUAL_FACTOR * min(r for _, r in fits.values()))
            fits = {v: f for v, f in fits.items() if f[1] <= worst}
        members = []
        for variant, (pred, _) in fits.items():
            k_hat = predicted_first_epoch(pred, target_loss)
            if observed is not None:
                k_hat = min(k_hat, float(observed))
            k_hat = min(k_hat, float(self.horizon))
            depth, err, run = self.samples(variant, P).arrays()
            if err.size == 0:
                continue
            w = w_run[run] * np.exp(-0.5 * ((depth - math.log(k_hat)) / DEPTH_BANDWIDTH) ** 2)
            if w.sum() <= 0:
                continue
            n_eff = _group_n_eff(w, run, self.runs)
            held_out_error = _calibrated_error(depth, err, w_run[run], math.log(k_hat), P)
            if held_out_error is None or n_eff < MIN_EFFECTIVE_SAMPLES:
                continue
            q = min(1.0, quantile * (1.0 + 1.0 / float(w.sum() ** 2 / np.sum(w ** 2))))
            members.append((held_out_error, variant, k_hat * math.exp(_wquantile(err, w, 0.5)),
                            k_hat * math.exp(_wquantile(err, w, q)), n_eff))
        if not members:
            why = "too few similar stored runs" if fits else "no curve fits the probe"
            return self._probe_only(y, target_loss, f"{why}: probe alone")
        # the calibrated variants vote, weighted by their held-out error (the best one most)
        members.sort(key=lambda m: m[0])
        vote = np.asarray([1.0 / (m[0] + 0.02) for m in members])
        k_exp = _wquantile(np.asarray([m[2] for m in members]), vote, 0.5)
        k_rob = _wquantile(np.asarray([m[3] for m in members]), vote, 0.5)
        err_med, variant, _, _, n_eff = members[0]
        ke = max(1, int(round(k_exp)))
        kr = max(ke, int(math.ceil(k_rob - 1e-9)))
        name = f"{variant[0]}{'+start' if variant[1] else ''}"
        return EpochEstimate(None if ke > self.horizon else ke, None if kr > self.horizon else kr,
                             final_loss_expected=target_loss if ke <= self.horizon else None,
                             final_loss_robust=target_loss if kr <= self.horizon else None,
                             method="prior+probe", family=name, n_eff=round(n_eff, 1),
                             note=f"{name} (best of {len(members)} calibrated variants) fitted to {P} probe epochs, "
                                  f"calibrated on {len(relevant)} stored {query['model']} runs ({n_eff:.1f} "
                                  f"effective configurations, held-out error {math.exp(err_med) - 1:.0%})")

    def _probe_only(self, y: np.ndarray, target_loss: float, why: str) -> EpochEstimate:
        e = estimate_from_probe(y, target_loss, horizon=self.horizon, min_margin=COLD_START_MARGIN)
        e.method = "probe"
        e.note = f"{why}; K^rob widened to ≥ {1 + COLD_START_MARGIN:.1f}·K^exp"
        return e
