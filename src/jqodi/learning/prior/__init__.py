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
4. **K^rob by conformal prediction.** The whole of step 3 is run leave-one-configuration-out on
   the library itself (:meth:`CurvePrior.residuals`: every configuration's probe predicts its
   own other runs with that configuration left out), giving residuals r = log K − log K^exp at its
   best loss by log-spaced epochs and by its last epoch.
   K^rob = ⌊K^exp · exp(q̂)⌋ with q̂ their weighted quantile at level 0.9·(1 + 1/n_eff), the
   weights being the similarity of each residual's configuration to the query and a depth
   kernel in log K^exp (weighted split-conformal prediction: :meth:`CurvePrior.conformal_margin`).
   It calibrates what the quantile vote of step 3 cannot: the error of the calibrated K^exp itself.
   How the quantile is formed (:class:`ConformalScheme`: pooled or per kind of target — reached
   by the probe or extrapolated —, raw or normalised scores) is chosen per probe length by an
   inner leave-one-configuration-out split of the residuals (:meth:`CurvePrior.select_scheme`), and so
   is the quantile's level (:meth:`CurvePrior.select_level`, session 8: the smallest covering ≥ 93 % there).
5. **Cold start.** With no stored run of the model, the other models' runs calibrate it (they
   weigh ×0.2 each in the similarity) and the conformal margin is doubled in log K; with no
   stored run at all, or too little weight behind a query (fewer than
   :data:`MIN_EFFECTIVE_SAMPLES` effective configurations), the estimate falls back to the probe
   alone (:func:`jqodi.learning.curves.estimate_from_probe`) with a doubled robust margin. The
   ``note`` says which.

Five modules, one concept each: :mod:`jqodi.learning.prior.library` (step 1 and the similarity
kernel), :mod:`jqodi.learning.prior.variants` (the curve variants and :func:`fit_fast`),
:mod:`jqodi.learning.prior.conformal` (step 4's schemes and weighted statistics),
:mod:`jqodi.learning.prior.bias` (session 11: K^exp of extrapolated targets corrected by a median regression of
the conformal residuals on features known before the truth, the conformal step then on the corrected residuals) and
:mod:`jqodi.learning.prior.curve_prior` (steps 2–5: :class:`CurvePrior`). Everything public is
importable from here (``from jqodi.learning.prior import CurvePrior``).
"""
from __future__ import annotations

from jqodi.learning.prior.conformal import CONFORMAL_SCHEMES, SELECTABLE_SCHEMES, ConformalScheme
from jqodi.learning.prior.curve_prior import (COLD_START_MARGIN, CONFORMAL_LEVEL, MIN_EFFECTIVE_SAMPLES, PROBE_LENGTHS,
                                              CurvePrior)
from jqodi.learning.prior.library import (CurveRun, from_random_weights, library_from_runs, library_from_store,
                                          pretrain_options, pretrained_key, similarity)
from jqodi.learning.prior.variants import VARIANTS, fit_fast

__all__ = ["COLD_START_MARGIN", "CONFORMAL_LEVEL", "CONFORMAL_SCHEMES", "ConformalScheme", "CurvePrior", "CurveRun",
           "MIN_EFFECTIVE_SAMPLES", "PROBE_LENGTHS", "SELECTABLE_SCHEMES", "VARIANTS", "fit_fast",
           "from_random_weights", "library_from_runs", "library_from_store", "pretrain_options", "pretrained_key",
           "similarity"]
