"""The one set of fine-tuning defaults (torch-free, so the scenario and the job can derive from it).

:class:`TrainConfig` is what the reference loop and the runtime's roles train with. The
scenario's ``training:`` section (:class:`jqodi.core.scenario.TrainingSpec`) takes its defaults
from here, and the job's :class:`jqodi.runtime.job.TrainingConfig` is a subclass that adds only
the wire precision and the seed. Adam at 1e-4 is what fine-tuning a pretrained, freshly quantized model
needed (docs/learning.md).
"""
from __future__ import annotations

from dataclasses import dataclass

from jqodi.core.validation import FORBID_EXTRA
from jqodi.errors import JqodiError

__all__ = ["DEFAULT_PRETRAIN_EPOCHS", "TrainConfig", "TrainConfigError", "TRAIN_DEFAULTS", "RETURN_MODES"]

#: Epochs the cloud pretrains a model for (the pretrained model every fine-tuning starts from;
#: :mod:`jqodi.core.pretrained` trains it, estimates record it).
DEFAULT_PRETRAIN_EPOCHS = 4

#: How the ES returns its trained part to the CS (:mod:`jqodi.core.codec`).
RETURN_MODES = ("codes", "stochastic", "delta-fp16", "latent")


class TrainConfigError(JqodiError, ValueError):
    """A hyper-parameter out of range (a ``ValueError`` too, so pydantic names the field path)."""


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning hyper-parameters. ``lr`` etc. apply to weights; steps get no weight decay."""

    __pydantic_config__ = FORBID_EXTRA

    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    optimizer: str = "adam"
    act_bits: int | None = None
    return_mode: str = "stochastic"
    eval_batch_size: int = 500

    def __post_init__(self):
        if self.optimizer not in ("sgd", "adam"):
            raise TrainConfigError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.return_mode not in RETURN_MODES:
            raise TrainConfigError(f"return_mode must be one of {', '.join(RETURN_MODES)}, got {self.return_mode!r}")
        if self.batch_size < 2:
            raise TrainConfigError(f"batch_size must be ≥ 2 (BatchNorm), got {self.batch_size}")
        if not self.lr > 0:
            raise TrainConfigError(f"lr must be > 0, got {self.lr}")


#: The defaults, as one instance.
TRAIN_DEFAULTS = TrainConfig()
