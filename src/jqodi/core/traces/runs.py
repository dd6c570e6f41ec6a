"""A fine-tuning run as data: :class:`RunTrace` (L_a, start loss, γ, settings) with one
:class:`EpochTrace` per epoch (the validation curve L(k)), and the columns the store keeps of each."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["RUN_COLUMNS", "EPOCH_COLUMNS", "EpochTrace", "ValidationCurve", "RunTrace"]

RUN_COLUMNS = ("created_utc", "model", "bits", "dataset", "data_name", "train_size", "val_size", "seed",
               "width", "base_loss", "base_accuracy", "start_loss", "start_accuracy", "gamma",
               "gamma_robust", "epochs_run", "wall_s", "quantize_s", "config", "source", "job_id")
EPOCH_COLUMNS = ("epoch", "train_loss", "val_loss", "val_accuracy", "wall_s", "bytes_down", "bytes_up")


@dataclass
class EpochTrace:
    """One epoch of a run: mean train loss, validation loss/accuracy (L(k)), wall time, bytes moved."""

    epoch: int
    train_loss: float | None
    val_loss: float
    val_accuracy: float | None
    wall_s: float | None = None
    bytes_down: int | None = None
    bytes_up: int | None = None


class ValidationCurve:
    """What a run with per-epoch validation losses (``self.epochs``) can answer."""

    @property
    def val_losses(self) -> list[float]:
        return [e.val_loss for e in self.epochs]

    def epochs_to(self, target_loss: float) -> int | None:
        """K: the first epoch whose validation loss is ≤ ``target_loss`` (None if never)."""
        for e in self.epochs:
            if e.val_loss <= target_loss:
                return e.epoch
        return None


@dataclass
class RunTrace(ValidationCurve):
    """A fine-tuning run: L_a, the quantized start loss, γ and one :class:`EpochTrace` per epoch.

    The one type of a run, fresh (:func:`jqodi.learning.reference.finetune` returns a subclass
    that also holds the trained model) or read back from the store. ``id`` and ``created_utc``
    are the store's (None until recorded).
    """

    model: str
    bits: int
    dataset: str
    data_name: str
    train_size: int
    val_size: int
    seed: int
    width: float
    base_loss: float | None = None
    base_accuracy: float | None = None
    start_loss: float | None = None
    start_accuracy: float | None = None
    gamma: float | None = None
    gamma_robust: float | None = None
    epochs: list[EpochTrace] = field(default_factory=list)
    wall_s: float | None = None
    quantize_s: float | None = None
    config: dict = field(default_factory=dict)
    source: str = "finetune"
    id: int | None = None
    created_utc: str | None = None
    job_id: str | None = None  # the runtime's job id (``source == "runtime"``), else None

    @property
    def epochs_run(self) -> int:
        return len(self.epochs)

    def to_dict(self) -> dict:
        """The stored fields (in the store's column order) and the epochs, as plain data."""
        d: dict[str, Any] = {"id": self.id}
        d.update({k: getattr(self, k) for k in RUN_COLUMNS})
        d["epochs"] = [asdict(e) for e in self.epochs]
        return d
