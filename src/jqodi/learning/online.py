"""Online epoch estimates: K^exp / K^rob refitted after every epoch of a run.

Before a run, K^exp and K^rob come from a probe or prior runs (:mod:`jqodi.learning.curves`):
five probe epochs can be far off. During the run the real validation curve becomes visible, so
after every epoch :func:`refit_remaining` refits it with the probe estimator
(:func:`jqodi.learning.curves.estimate_from_probe`, the power law on every epoch seen so far)
and combines it with the estimate the plan started from (the *prior*):

* **Seeded by the prior.** The remaining epochs of the refit and of the prior are averaged
  with weights ``w = n / (n + prior_epochs · r)`` and ``1 − w`` after ``n`` epochs: the prior
  counts as ``prior_epochs`` epochs of evidence (5, a probe's length) while the refit has to
  extrapolate at least as far as it has seen (``r`` = the refit's remaining epochs / ``n``,
  at most 1), and less as the extrapolation gets shorter: the curve's own K wins as its target
  comes into view. With fewer than 3 epochs there is nothing to fit and the prior stands.
* **Uncertainty that shrinks.** The robust estimate covers the epochs still to come, not the
  whole run: the refit's robust remaining epochs are at least one more than the expected ones
  and ``(1 + margin)`` times them (``margin`` = the probe estimator's
  :data:`~jqodi.learning.curves.PROBE_MIN_MARGIN`, 0.4), and at least what the refit's
  bootstrap says. As the target approaches the expected remainder shrinks and the margin with it.
* **Reached is reached.** Once the last validation loss is ≤ L_max (and, with ``confirm``
  further epochs requested, has stayed there that long) nothing remains.

A refit that says the target is out of reach (∞) is trusted only once it outweighs the prior
(``n ≥ prior_epochs``); before that the prior stands. Everything here counts epochs of the
candidate being trained; switching candidates starts a new curve.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from jqodi.learning.curves import PROBE_MIN_MARGIN, estimate_from_probe

__all__ = ["OnlineEstimate", "refit_remaining", "target_reached", "PRIOR_EPOCHS"]

#: How many epochs of evidence the estimate a plan started from is worth (a probe's length).
PRIOR_EPOCHS = 5


@dataclass(frozen=True)
class OnlineEstimate:
    """Epochs still needed after ``epochs_done`` (``None`` = the target looks out of reach).

    ``total_*`` = ``epochs_done + remaining_*``; ``weight_observed`` is the share of the
    run's own curve in the estimate (0 = the prior alone).
    """

    epochs_done: int
    reached: bool
    remaining_expected: int | None
    remaining_robust: int | None
    weight_observed: float
    source: str

    @property
    def total_expected(self) -> int | None:
        return None if self.remaining_expected is None else self.epochs_done + self.remaining_expected

    @property
    def total_robust(self) -> int | None:
        return None if self.remaining_robust is None else self.epochs_done + self.remaining_robust


def target_reached(val_losses: Sequence[float], target_loss: float, confirm: int = 0) -> int | None:
    """The epoch (1-based) at which the target counts as reached: the first epoch whose loss is
    ≤ ``target_loss`` and stays so for ``confirm`` further epochs; ``None`` if not (yet)."""
    run = 0
    for i, v in enumerate(val_losses):
        run = run + 1 if v <= target_loss else 0
        if run >= confirm + 1:
            return i + 1 - confirm
    return None


def _remaining_robust(rem_exp: int, margin: float) -> int:
    if rem_exp <= 0:
        return 0
    return max(rem_exp + 1, math.ceil(rem_exp * (1.0 + margin) - 1e-9))


def refit_remaining(val_losses: Sequence[float], target_loss: float, prior_expected: int | None,
                    prior_robust: int | None, *, confirm: int = 0, prior_epochs: float = PRIOR_EPOCHS,
                    margin: float = PROBE_MIN_MARGIN, horizon: int = 300, seed: int = 0,
                    n_boot: int = 0) -> OnlineEstimate:
    """Epochs still needed to reach ``target_loss`` after the epochs in ``val_losses``.

    ``prior_expected`` / ``prior_robust`` are K^exp / K^rob the run was planned with (counted
    from its first epoch; ``None`` = out of reach). ``n_boot`` bootstrap refits widen the robust
    estimate further (0 = the margin rule alone: two curve fits, tens of milliseconds). The same
    inputs give the same answer, which is cached. See the module docstring.
    """
    return _refit(tuple(float(v) for v in val_losses), float(target_loss), prior_expected, prior_robust,
                  int(confirm), float(prior_epochs), float(margin), int(horizon), int(seed), int(n_boot))


@lru_cache(maxsize=4096)
def _refit(y: tuple[float, ...], target_loss: float, prior_expected: int | None, prior_robust: int | None,
           confirm: int, prior_epochs: float, margin: float, horizon: int, seed: int, n_boot: int) -> OnlineEstimate:
    n = len(y)
    if target_reached(y, target_loss, confirm) is not None:
        return OnlineEstimate(n, True, 0, 0, 1.0, "reached")
    # reached but not yet confirmed: the confirmation epochs remain
    if confirm and y and y[-1] <= target_loss:
        streak = next((i for i, v in enumerate(reversed(y)) if v > target_loss), n)
        left = confirm + 1 - streak
        return OnlineEstimate(n, False, left, left, 1.0, "confirming")
    prior_rem_exp = None if prior_expected is None else max(1, prior_expected - n)
    prior_rem_rob = None if prior_robust is None else max(prior_rem_exp or 1, prior_robust - n, 1)
    if prior_rem_exp is not None and prior_rem_rob is None:
        prior_rem_rob = _remaining_robust(prior_rem_exp, margin)
    if n < 3 or not all(math.isfinite(v) for v in y):
        return OnlineEstimate(n, False, prior_rem_exp, prior_rem_rob, 0.0, "prior")
    fit = estimate_from_probe(y, target_loss, horizon=horizon, seed=seed, min_margin=0.0, n_boot=n_boot)
    w = n / (n + float(prior_epochs))
    if fit.expected is None:
        if prior_rem_exp is None or n >= prior_epochs:
            return OnlineEstimate(n, False, None, None, w, "refit: out of reach")
        return OnlineEstimate(n, False, prior_rem_exp, prior_rem_rob, 0.0, "prior (refit: out of reach)")
    fit_rem_exp = max(1, fit.expected - n)
    w = n / (n + float(prior_epochs) * min(1.0, fit_rem_exp / n))
    fit_rem_rob = _remaining_robust(fit_rem_exp, margin)
    if fit.robust is not None:
        fit_rem_rob = max(fit_rem_rob, fit.robust - n)
    if prior_rem_exp is None:  # the prior said never; the curve says otherwise
        return OnlineEstimate(n, False, fit_rem_exp, fit_rem_rob, 1.0, "refit")
    rem_exp = max(1, round(w * fit_rem_exp + (1 - w) * prior_rem_exp))
    rem_rob = max(_remaining_robust(rem_exp, 0.0), round(w * fit_rem_rob + (1 - w) * prior_rem_rob))
    return OnlineEstimate(n, False, rem_exp, rem_rob, w, "refit+prior")
