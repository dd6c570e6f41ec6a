"""The cloud's record of a run in the trace store: the design's last arrow, runtime → traces.

When the job names a store (``Job.trace_store``, set by :func:`jqodi.runtime.plan.job_from_plan`
to ``$JQODI_HOME/traces.db`` unless told otherwise) the cloud role opens one run for the job
(``source = "runtime"``, ``job_id = Job.run_id``) with its first epoch — a run stopped before
any epoch (Ctrl-C while the roles start) leaves no row; the rows older versions left so are
counted apart, as runs that recorded no epoch (:func:`jqodi.core.traces.store.skipped_text`) —
adds each epoch as it completes (epoch numbered from 1, train and validation loss, accuracy,
wall seconds, bytes the model went down and the updates came up) and, after collaborative
inference, one summary row per device combination. The rows have the shape of a fine-tuning run's
(:func:`jqodi.learning.reference.finetune`), so the epoch estimators read real runs as they read
reference runs (``TraceStore.runs(model=..., bits=...)``).

Why the job carries a path rather than the app passing an observer: the cloud role usually runs
in its own process (``python -m jqodi cloud --job FILE``), where only the job reaches it; the
runtime knows the store (core) and nothing of who planned the run. A store that cannot be
written costs a warning line, never the run.
"""
from __future__ import annotations

from typing import Callable

from jqodi.runtime.job import Job

__all__ = ["RunTraces", "epoch_trace", "run_row"]


def run_row(job: Job, train_size: int, val_size: int) -> dict:
    """The ``runs`` row of ``job`` (L_a, the start loss and γ are the probes', not measured here)."""
    from jqodi.core.data import canonical_data_name, canonical_dataset

    # your own data under its absolute path, as probes and 'jqodi finetune' record it (a job written
    # before scenario paths were stored absolute, or by hand, may name it ./my-images), so the
    # estimators find these runs
    return {"model": job.model, "bits": job.bits, "dataset": canonical_dataset(job.data.dataset),
            "data_name": canonical_data_name(job.data.name), "train_size": int(train_size), "val_size": int(val_size),
            "seed": job.training.seed, "width": job.width, "source": "runtime",
            "config": {"job_id": job.run_id, "schedule": [[s.edge, s.cut, s.epochs] for s in job.schedule],
                       "training": {k: v for k, v in vars(job.training).items() if v is not None},
                       "data_seed": job.data.seed, "pretrained": job.pretrained, "max_epochs": job.max_epochs,
                       "emulated": bool(job.emulation and job.emulation.enabled),
                       "dilation": job.emulation.dilation if job.emulation else 1.0}}


def epoch_trace(rec: dict) -> dict:
    """The ``epochs`` row of one of the cloud's epoch records (``rec['epoch']`` counts from 0)."""
    up = sum(int(b) for n in rec.get("nodes", []) for link, b in n.get("bytes", {}).items()
             if link.endswith("->cloud"))
    return {"epoch": int(rec["epoch"]) + 1, "train_loss": rec.get("train_loss"), "val_loss": rec["val_loss"],
            "val_accuracy": rec.get("val_accuracy"), "wall_s": rec.get("wall_s"),
            "bytes_down": rec.get("bytes_sent", {}).get("model"), "bytes_up": up}


class RunTraces:
    """The cloud's writer: :meth:`open` returns ``None`` when the job names no store. The run's row
    is written with its first epoch (``run_id`` is ``None`` until then)."""

    def __init__(self, store, row: dict, job_id: str, log: Callable[[str], None]):
        self.store, self.row, self.job_id, self.log = store, row, job_id, log
        self.run_id: int | None = None

    @classmethod
    def open(cls, job: Job, train_size: int | None, val_size: int | None,
             log: Callable[[str], None] = lambda s: None) -> "RunTraces | None":
        if not job.trace_store:
            return None
        from jqodi.core.traces import TraceStore
        from jqodi.errors import JqodiError

        train_size = train_size if train_size is not None else job.data.train_size
        val_size = val_size if val_size is not None else job.data.val_size
        if train_size is None or val_size is None:
            log(f"cloud: warning: the SD's data sizes are unknown: the run is not recorded in {job.trace_store}")
            return None
        try:
            return cls(TraceStore(job.trace_store), run_row(job, train_size, val_size), job.run_id, log)
        except JqodiError as e:
            log(f"cloud: warning: not recording the run in the trace store: {e}")
            return None

    def _write(self, method: str, *args) -> None:
        if self.store is None:
            return
        from jqodi.errors import JqodiError

        try:
            if self.run_id is None:  # the first epoch: the job's run (the one already stored when resumed)
                self.run_id = self.store.begin_run(self.row, self.job_id)
            getattr(self.store, method)(self.run_id, *args)
        except JqodiError as e:  # a locked or broken store must not stop the fine-tuning
            self.log(f"cloud: warning: the trace store stops recording this run: {e}")
            self.close()

    def epoch(self, rec: dict) -> None:
        self._write("record_epoch", epoch_trace(rec))

    def inference(self, results: list[dict]) -> None:
        if results:
            self._write("record_inference", results)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None
