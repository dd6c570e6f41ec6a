"""γ_(a,q): the loss added by quantizing the pretrained model (Eq. (12)), expected and robust.

γ is measured on the end device's validation split as the mean over samples of
``loss(quantized) − loss(full precision)``. Its uncertainty comes from which validation images the
SD happens to hold: a bootstrap over *validation batches* (contiguous groups of ``batch_size``
samples, resampled with replacement) gives the distribution of the mean; the expected value is the
plain mean and the robust value the ``quantile`` (default 95 %) of the bootstrap distribution.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["GammaEstimate", "gamma_estimate"]


@dataclass(frozen=True)
class GammaEstimate:
    """γ expected (mean) and robust (upper bootstrap quantile), with the bootstrap's std."""

    expected: float
    robust: float
    std: float
    n_samples: int


def gamma_estimate(loss_differences: Sequence[float], *, batch_size: int = 50, n_boot: int = 1000,
                   quantile: float = 0.95, seed: int = 0) -> GammaEstimate:
    """Bootstrap γ from per-sample ``loss_q − loss_fp`` on the validation split."""
    d = np.asarray(loss_differences.detach().cpu() if hasattr(loss_differences, "detach") else loss_differences,
                   dtype=float).ravel()
    if d.size == 0:
        raise ValueError("gamma_estimate needs at least one validation sample")
    if not np.all(np.isfinite(d)):
        return GammaEstimate(float("inf"), float("inf"), float("inf"), int(d.size))
    n_batches = max(1, int(np.ceil(d.size / batch_size)))
    sums = np.array([b.sum() for b in np.array_split(d, n_batches)])
    counts = np.array([b.size for b in np.array_split(d, n_batches)])
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, n_batches, size=(n_boot, n_batches))
    boot = sums[pick].sum(1) / counts[pick].sum(1)
    return GammaEstimate(float(d.mean()), float(np.quantile(boot, quantile)), float(boot.std()), int(d.size))
