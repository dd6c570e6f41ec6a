"""The prior's library: stored runs of the trace store reduced to :class:`CurveRun` s, and how
similar two configurations are.

Every valid stored run (fine-tunes, probes, runtime epochs) becomes a :class:`CurveRun`; runs of
the same *configuration* (model, bits, width, pretrained model, dataset, SD split and sizes;
different seeds) form a group (:attr:`CurveRun.group`). Corrupt or foreign rows (non-finite or
non-positive losses, gaps in the epochs, unknown models, unreadable rows, runs from random weights)
are skipped and counted, never fatal (:func:`library_from_store`). :func:`similarity` is the kernel
over configurations that weights the library's samples for a query.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

__all__ = ["CurveRun", "from_random_weights", "library_from_runs", "library_from_store", "pretrain_options",
           "pretrained_key", "similarity"]


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
    from jqodi.core.traces.store import NO_EPOCH_REASON
    from jqodi.core.zoo import available_models

    try:
        if r.model not in available_models():
            return None, f"unknown model {r.model!r}"
        losses = np.asarray([e.val_loss for e in r.epochs], dtype=float)
        if losses.size == 0:
            return None, NO_EPOCH_REASON   # skipped_text counts these apart from the unusable
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
