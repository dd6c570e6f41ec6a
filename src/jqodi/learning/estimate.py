"""Measured learning estimates per candidate (model, bits): L_a, γ, K^exp, K^rob.

:func:`estimate_candidate` combines the trace store and, where the store knows nothing of the
candidate, a short probe run:

* ``method="store"``: prior runs of the same (model, bits, dataset, SD data, width) in the store
  (those with the SD's train/validation sizes if there are any, else all)
  (:func:`jqodi.learning.curves.estimate_from_runs`); L_a and γ are their means, γ^rob the
  largest robust γ among them. Runs of the runtime (``source="runtime"``, every epoch of a real
  run) count as curves like fine-tuning runs, but measure no L_a or γ: the runs of a candidate
  must include at least one reference run (``finetune`` or ``probe``); runs started from random
  weights (``jqodi run --random-init``) are left out.
* ``method="probe"``: a fresh fine-tuning run of ``probe_epochs`` (≤ 5) epochs, recorded in the
  store with ``source="probe"``, fitted with the learning-curve ensemble
  (:func:`jqodi.learning.curves.estimate_from_probe`); γ from its bootstrap.
* ``method="auto"`` (default): the store if it holds a reference run of the candidate, else a probe.

The result is a :class:`jqodi.core.estimates.LearningEstimate` (``source`` says which method),
the schema ``jqodi instance --estimates FILE`` reads.
"""
from __future__ import annotations

import math
from typing import Sequence

from jqodi.errors import JqodiError
from jqodi.learning.curves import EpochEstimate, estimate_from_probe, estimate_from_runs
from jqodi.core.estimates import LearningEstimate

__all__ = ["MAX_PROBE_EPOCHS", "estimate_candidate", "estimate_from_traces"]

MAX_PROBE_EPOCHS = 5


def _mean(xs: Sequence[float | None]) -> float | None:
    v = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(v) / len(v) if v else None


def estimate_from_traces(runs, target_loss: float, *, horizon: int = 300) -> tuple[EpochEstimate, dict]:
    """Epoch estimate and γ/L_a summary from stored :class:`~jqodi.core.traces.RunTrace` s."""
    est = estimate_from_runs([r.val_losses for r in runs], target_loss, horizon=horizon)
    summary = {"base_loss": _mean([r.base_loss for r in runs]), "gamma": _mean([r.gamma for r in runs]),
               "gamma_robust": max((r.gamma_robust for r in runs if r.gamma_robust is not None), default=None),
               "runs": [r.id for r in runs]}
    return est, summary


def _from_random_weights(run) -> bool:
    """A runtime run started from random weights (``jqodi run --random-init``, benchmarks): a real
    trace, but not a fine-tuning curve of the pretrained model."""
    return (run.config.get("pretrained") or {}).get("source") == "random"


def estimate_candidate(model: str, bits: int, target_loss: float, data, *, store=None, method: str = "auto",
                       probe_epochs: int = MAX_PROBE_EPOCHS, seed: int = 0, width: float | None = None,
                       cfg=None, pretrained=None, progress: bool | None = None,
                       horizon: int = 300) -> LearningEstimate:
    """Estimate L_a, γ, K^exp and K^rob for fine-tuning ``model`` at ``bits`` on ``data``."""
    if method not in ("auto", "probe", "store"):
        raise JqodiError(f"estimate method must be auto, probe or store, got {method!r}")
    if not 1 <= probe_epochs <= MAX_PROBE_EPOCHS:
        raise JqodiError(f"probe epochs must be in 1..{MAX_PROBE_EPOCHS}, got {probe_epochs}")
    from jqodi.core.training import default_width

    width = default_width(model) if width is None else float(width)
    priors = []
    if store is not None and method in ("auto", "store"):
        priors = [r for r in store.runs(model=model, bits=bits, dataset=data.dataset, data_name=data.name,
                                        width=width) if r.epochs and not _from_random_weights(r)]
        same_size = [r for r in priors if (r.train_size, r.val_size) == (len(getattr(data, "train", ()) or ()),
                                                                         len(getattr(data, "val", ()) or ()))]
        # runs on the same SD sizes first (when they include a reference run); other sizes only if none
        priors = same_size if any(r.base_loss is not None for r in same_size) else priors
    if method == "store" and not priors:
        raise JqodiError(f"the trace store has no run of {model} at {bits} bits on {data.name}/{data.dataset}; "
                         f"run 'jqodi finetune' or use --method probe")
    if priors and all(r.base_loss is None for r in priors):
        # only runs of the runtime: their curves count, but L_a and γ come from a reference run
        if method == "store":
            raise JqodiError(f"the trace store's runs of {model} at {bits} bits on {data.name}/{data.dataset} are "
                             f"runtime runs only, which do not measure L_a and γ; run 'jqodi finetune' or use "
                             f"--method probe")
        priors = []
    if priors:
        est, s = estimate_from_traces(priors, target_loss, horizon=horizon)
        return LearningEstimate(model=model, bits=bits, base_loss=s["base_loss"], gamma=s["gamma"],
                                epochs_expected=est.expected, epochs_robust=est.robust,
                                target_loss=target_loss, gamma_robust=s["gamma_robust"],
                                final_loss_expected=est.final_loss_expected,
                                final_loss_robust=est.final_loss_robust,
                                source=f"measured:store({len(priors)} runs)")
    from jqodi.core.training import TrainConfig
    from jqodi.learning.reference import finetune

    r = finetune(model, bits, data, probe_epochs, seed, width=width, cfg=cfg or TrainConfig(),
                 pretrained=pretrained, progress=progress)
    if store is not None:
        r.config["probe"] = True
        r.source = "probe"
        store.record_run(r)
    est = estimate_from_probe(r.val_losses, target_loss, horizon=horizon, seed=seed)
    return LearningEstimate(model=model, bits=bits, base_loss=r.base_loss, gamma=r.gamma,
                            epochs_expected=est.expected, epochs_robust=est.robust, target_loss=target_loss,
                            gamma_robust=r.gamma_robust, final_loss_expected=est.final_loss_expected,
                            final_loss_robust=est.final_loss_robust,
                            source=f"measured:probe({probe_epochs} epochs)")


def reachable(estimates: Sequence[LearningEstimate]) -> list[LearningEstimate]:
    return [e for e in estimates if e.epochs_expected is not None]


