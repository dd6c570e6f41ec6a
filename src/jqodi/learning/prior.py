"""A prior over loss curves learned from the trace store, updated with a probe's epochs.

A probe's first P epochs say little about the slow tail of a fine-tuning curve: any single
parametric curve fitted to them extrapolates with a bias that depends on the model, the data,
the shift between the cloud's and the SD's data and how far the target lies beyond the probe
(docs/learning.md, "Estimates from a learned prior"). The trace store holds many complete
curves; :class:`CurvePrior` learns that bias and its spread from them:

1. **Library.** Every valid stored run (fine-tunes, probes, runtime epochs) becomes a
   :class:`CurveRun`; runs of the same *configuration* (model, bits, width, pretrained model,
   dataset, SD split and sizes; different seeds) form a group. Corrupt or foreign rows (non-finite
   or non-positive losses, gaps in the epochs, unknown models, unreadable rows) are skipped and
   counted, never fatal (:func:`library_from_store`).
2. **Simulated probes.** For every ordered pair (a, b) of runs of one group (a ≠ b when the group
   has two, else a = b), each curve *variant* (a family of
   :data:`jqodi.learning.curves.CURVE_MODELS`, fitted to a's first P epochs by :func:`fit_fast`,
   with or without the quantized start loss as an extra point at epoch 0) predicts the epoch K̂
   at which b reaches each target; the truth is b's K (:meth:`CurvePrior.samples` says which
   targets). Each pair gives samples ``e = log K − log K̂`` at depth ``log K̂``, for P = 1, 2, 3, 5.
3. **Update with the probe.** For a new candidate the same variants are fitted to its probe and
   give K̂_v (a variant whose residual on the probe is far above the best one's is dropped).
   The samples are weighted by how similar their configuration is (a kernel over model,
   dataset, split, bits, width, data size, data shift log(L_0/L_a) and pretrained model:
   :func:`similarity`) and how close their depth is to log K̂_v. Each variant with enough
   similar configurations behind it gives

       K^exp_v = K̂_v · exp(median_w e),     K^rob_v = K̂_v · exp(quantile_w(e, q')),

   with q' = q·(1 + 1/n) (a small-sample correction; n = Kish's effective sample size), and
   the variants vote (weighted medians of K^exp_v and K^rob_v) with weights 1/(held-out error
   + 0.02): the held-out error of the *calibrated* variant on the other configurations
   (:func:`_calibrated_error`), not its fit to the probe. The samples are per P, so the spread
   shrinks as the probe grows: a longer probe leaves less to extrapolate, and the library
   shows it.
4. **Cold start.** With no stored run of the model, or too little weight behind a query
   (fewer than :data:`MIN_EFFECTIVE_SAMPLES` effective configurations), the estimate falls back to the probe alone
   (:func:`jqodi.learning.curves.estimate_from_probe`) with a doubled robust margin, and says so
   in ``note``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from jqodi.learning.curves import CURVE_MODELS, PROBE_MIN_MARGIN, EpochEstimate, estimate_from_probe, first_epoch_below

__all__ = ["COLD_START_MARGIN", "CurvePrior", "CurveRun", "MIN_EFFECTIVE_SAMPLES", "PROBE_LENGTHS",
           "VARIANTS", "fit_fast", "from_random_weights", "library_from_runs", "library_from_store", "pretrain_options",
           "pretrained_key", "similarity"]

#: probe lengths the prior is calibrated for (a probe of another length uses the next shorter one)
PROBE_LENGTHS = (1, 2, 3, 5)
#: (family, with the start loss as epoch 0)
VARIANTS = tuple((f, s) for f in ("pow3", "exp3", "ilog2", "pow2") for s in (False, True))
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


@dataclass
class CurveRun:
    """A stored run reduced to what the prior needs."""

    id: int
    model: str
    dataset: str
    data_name: str
    bits: int
    width: float
    train_size: int
    val_size: int
    seed: int
    source: str
    start_loss: float | None
    base_loss: float | None
    pretrained: str
    losses: np.ndarray = field(repr=False)

    @property
    def group(self) -> tuple:
        return (self.model, self.bits, self.width, self.pretrained, self.dataset, self.data_name,
                self.train_size, self.val_size)

    @property
    def shift(self) -> float:
        """log(L_0 / L_a): how far the SD's data is from the cloud's, as the quantized model sees it."""
        if self.base_loss is None or self.base_loss <= 0 or self.start_loss is None:
            return 0.0
        return math.log(self.start_loss / self.base_loss)


def pretrain_options(config: dict) -> tuple[int | None, int | None]:
    """(pretraining epochs, cloud images) a stored run started from, as far as its config says.

    Fine-tunes record ``pretrain_epochs`` (and, from the benchmark, ``pretrain_cloud_size``);
    runtime runs record the job's ``pretrained`` options (``epochs`` defaulting to
    :data:`jqodi.core.pretrained.DEFAULT_PRETRAIN_EPOCHS`).
    """
    pre = config.get("pretrained")
    if isinstance(pre, dict):
        from jqodi.core.pretrained import DEFAULT_PRETRAIN_EPOCHS

        return pre.get("epochs", DEFAULT_PRETRAIN_EPOCHS), pre.get("cloud_size")
    return config.get("pretrain_epochs"), config.get("pretrain_cloud_size")


def pretrained_key(config: dict) -> str:
    """The pretrained model's identity from a run's config: its hash, else its options."""
    sha = config.get("pretrained_sha256")
    if sha:
        return str(sha)
    epochs, cloud = pretrain_options(config)
    return f"e{'?' if epochs is None else epochs}n{cloud or 'all'}"


def from_random_weights(run) -> bool:
    """A runtime run started from random weights (``jqodi run --random-init``, benchmarks): a real
    trace, but not a fine-tuning curve of the pretrained model."""
    cfg = run.config if isinstance(run.config, dict) else {}
    pre = cfg.get("pretrained")
    return isinstance(pre, dict) and pre.get("source") == "random"


def _valid(r) -> tuple[CurveRun | None, str]:
    from jqodi.core.zoo import available_models

    try:
        if r.model not in available_models():
            return None, f"unknown model {r.model!r}"
        losses = np.asarray([e.val_loss for e in r.epochs], dtype=float)
        if losses.size == 0:
            return None, "no epochs"
        if [e.epoch for e in r.epochs] != list(range(1, losses.size + 1)):
            return None, "epochs not numbered 1..n"
        cfg = r.config if isinstance(r.config, dict) else {}
        if from_random_weights(r):
            return None, "started from random weights"
        # runtime runs measure no start loss: they count without it (variants "+start" skip them)
        start = float(r.start_loss) if r.start_loss is not None else None
        if not (np.all(np.isfinite(losses)) and np.all(losses > 0)) or \
                (start is not None and not (math.isfinite(start) and start > 0)):
            return None, "non-finite or non-positive loss"
        base = float(r.base_loss) if r.base_loss is not None and math.isfinite(float(r.base_loss)) else None
        return CurveRun(int(r.id), str(r.model), str(r.dataset), str(r.data_name), int(r.bits), float(r.width),
                        int(r.train_size), int(r.val_size), int(r.seed), str(r.source), start, base,
                        pretrained_key(cfg), losses), ""
    except (TypeError, ValueError, AttributeError) as e:
        return None, f"malformed ({e})"


def library_from_runs(runs: Iterable) -> tuple[list[CurveRun], dict[str, int]]:
    """Valid :class:`CurveRun` s from :class:`~jqodi.core.traces.RunTrace` s, and skipped-row counts by reason."""
    out, skipped = [], {}
    for r in runs:
        c, why = _valid(r)
        if c is None:
            skipped[why] = skipped.get(why, 0) + 1
        else:
            out.append(c)
    return out, skipped


def library_from_store(store) -> tuple[list[CurveRun], dict[str, int]]:
    """Every readable run of a :class:`~jqodi.core.traces.TraceStore`; unreadable rows are counted."""
    import sqlite3

    from jqodi.errors import TraceStoreError

    try:
        ids = [int(i) for (i,) in store.conn.execute("SELECT id FROM runs ORDER BY id").fetchall()]
    except sqlite3.DatabaseError as e:
        raise TraceStoreError(f"could not read trace store {store.path}: {e}") from e
    good, skipped = [], {}
    for i in ids:
        try:
            good.extend(store.runs(ids=[i]))
        except (TraceStoreError, ValueError, TypeError) as e:  # corrupt config JSON, bad column types
            why = f"unreadable row ({type(e).__name__})"
            skipped[why] = skipped.get(why, 0) + 1
    runs, bad = library_from_runs(good)
    for k, v in bad.items():
        skipped[k] = skipped.get(k, 0) + v
    return runs, skipped


def similarity(a: dict, b: CurveRun) -> float:
    """Kernel weight of library run ``b`` for a query configuration ``a`` (1 = the same configuration).

    Fixed a priori (not tuned on the held-out benchmark): another model ×0.2, another dataset
    ×0.3, another SD split ×0.3, another pretrained model ×0.5, and exp(−distance) in log2 bits,
    log2 width, log2(data size)/1.5 and data shift log(L_0/L_a)/0.5.
    """
    w = 1.0
    w *= 1.0 if a["model"] == b.model else 0.2
    w *= 1.0 if a["dataset"] == b.dataset else 0.3
    w *= 1.0 if a["data_name"] == b.data_name else 0.3
    w *= 1.0 if a.get("pretrained") in (None, b.pretrained) else 0.5
    d = abs(math.log2(a["bits"] / b.bits)) + abs(math.log2(a["width"] / b.width))
    d += abs(math.log2(a["train_size"] / b.train_size)) / 1.5
    if a.get("shift") is not None:
        d += abs(a["shift"] - b.shift) / 0.5
    return w * math.exp(-d)


def _variant_curve(variant: tuple[str, bool], probe: np.ndarray, start_loss: float | None,
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


def _first_below(pred: np.ndarray, target: float) -> float:
    """First epoch (1-based) of a predicted curve at or below ``target``; ∞ if none."""
    hit = np.flatnonzero(pred <= target)
    return float(hit[0] + 1) if hit.size else math.inf


def _wquantile(v: np.ndarray, w: np.ndarray, q: float) -> float:
    order = np.argsort(v, kind="stable")
    cw = np.cumsum(w[order]) / w.sum()
    return float(v[order][min(int(np.searchsorted(cw, q - 1e-12)), v.size - 1)])


def _fit_residual(pred: np.ndarray, probe: np.ndarray) -> float:
    """RMS relative residual of a fitted variant on the probe's epochs."""
    return float(np.sqrt(np.mean(np.square((pred[:probe.size] - probe) / probe))))


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
            self._fit_cache[key] = _variant_curve(variant, r.losses[:P], r.start_loss, self.horizon)
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
                    k_hat = min(_first_below(pred, level), float(self.horizon))
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
            pred = _variant_curve(variant, y, start_loss, self.horizon)
            if pred is not None:
                fits[variant] = (pred, _fit_residual(pred, y))
        if fits:   # a variant that does not describe the probe at all is not extrapolated
            worst = max(FIT_RESIDUAL_FLOOR, FIT_RESIDUAL_FACTOR * min(r for _, r in fits.values()))
            fits = {v: f for v, f in fits.items() if f[1] <= worst}
        members = []
        for variant, (pred, _) in fits.items():
            k_hat = _first_below(pred, target_loss)
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
