"""Learning estimates per (model, bit-width): the table the instance compiler consumes.

One record holds what Table VI/VII of the paper gives per candidate, plus the loss figures
Algorithm 4 uses. The scenario file may carry a static table (``learning:`` section, the paper's
numbers); ``jqodi estimate`` writes a measured one in the same schema (JSON), which
``jqodi instance --estimates FILE`` prefers.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Iterable, Sequence

from pydantic import Field

from jqodi.core.validation import (FORBID_EXTRA, VALID_BITS, FiniteFloat, Int, Name, NoBool, NonNegFloat, PosFloat,
                                   PosInt, validate)
from jqodi.errors import JqodiError

__all__ = ["PROVENANCE_FIELDS", "LearningEstimate", "check_estimate", "check_provenance", "load_estimates",
           "provenance_mismatch", "save_estimates"]

#: a coverage level strictly between 0 and 1 (K^rob's q)
Level = Annotated[float, NoBool, Field(gt=0, lt=1, allow_inf_nan=False)]


@dataclass(frozen=True)
class LearningEstimate:
    """Estimates for fine-tuning ``model`` quantized to ``bits`` on the end device's data.

    ``base_loss`` is L_a (full-precision loss on the SD's validation split); ``gamma`` is
    γ_(a,q) (loss added by quantizing, expected) and ``gamma_robust`` its robust (upper) value;
    ``epochs_expected``/``epochs_robust`` are K^exp/K^rob, ``None`` when the target is out of
    reach (the paper's ∞). ``target_loss`` is the L_max the epochs were estimated for.
    ``final_loss_*`` are the predicted losses after K^exp / K^rob epochs (optional).
    ``provenance`` says what a measured estimate describes (:data:`PROVENANCE_FIELDS`: the
    pretrained model's checkpoint hash and options, the SD's data and sizes, the loss kind);
    ``None`` in static rows and in files written before it existed (:func:`check_provenance`).
    ``epochs_robust_level`` q and ``epochs_robust_margin`` m state how wide K^rob is when the
    estimator knows it (the learned prior's conformal K^rob): K^rob is the level-q bound
    K^exp·(1 + m) in whole epochs, m the relative margin *before* that rounding (0.35 = +35 %);
    both ``None`` (static rows, the probe alone, the stored runs, files written before them) or
    both set.

    The same record is a row of a scenario's static ``learning:`` table and of an estimates
    file; both are validated by pydantic against these field types (:func:`load_estimates`).
    """

    __pydantic_config__ = FORBID_EXTRA

    model: Name
    bits: Int
    base_loss: NonNegFloat
    gamma: FiniteFloat
    epochs_expected: PosInt | None
    epochs_robust: PosInt | None
    target_loss: PosFloat | None = None
    gamma_robust: FiniteFloat | None = None
    final_loss_expected: NonNegFloat | None = None
    final_loss_robust: NonNegFloat | None = None
    source: str = "static"
    provenance: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    epochs_robust_level: Level | None = None
    epochs_robust_margin: NonNegFloat | None = None

    def __post_init__(self) -> None:
        if (self.epochs_robust_level is None) != (self.epochs_robust_margin is None):
            raise ValueError("epochs_robust_level and epochs_robust_margin must both be numbers or both null")

    @property
    def key(self) -> tuple[str, int]:
        return (self.model, self.bits)

    @classmethod
    def from_dict(cls, d: Any, path: str = "estimate") -> "LearningEstimate":
        """Validate one record (unknown or missing fields, wrong types: one line naming the field)."""
        return validate(cls, d, JqodiError, prefix=f"{path}.", top=path)


def check_estimate(e: LearningEstimate) -> None:
    """The consistency a hand-written (static) row must have: a valid bit-width, and K^exp/K^rob
    both numbers (K^rob ≥ K^exp) or both null. Raises ``ValueError``."""
    if e.bits not in VALID_BITS:
        raise ValueError(f"bits {e.bits} is not one of 1..8, 32")
    if (e.epochs_expected is None) != (e.epochs_robust is None):
        raise ValueError("epochs_expected and epochs_robust must both be numbers or both null")
    if e.epochs_expected is not None and e.epochs_robust < e.epochs_expected:  # type: ignore[operator]
        raise ValueError(f"epochs_robust ({e.epochs_robust}) must be ≥ epochs_expected ({e.epochs_expected})")


#: what an estimate must match to describe a model: the pretrained checkpoint and the SD's data
PROVENANCE_FIELDS = ("model", "pretrained_sha256", "pretrain_epochs", "cloud_train_size", "width",
                     "dataset", "data_name", "train_size", "val_size", "data_seed", "loss_kind")


#: the ``jqodi estimate`` option that sets a provenance field (what to re-run it with)
ESTIMATE_OPTION = {"width": "--width", "dataset": "--dataset", "data_name": "--data", "train_size": "--train-size",
                   "val_size": "--val-size", "data_seed": "--data-seed", "pretrain_epochs": "--pretrain-epochs",
                   "target_loss": "--target-loss"}


def _rerun(field: str, value: Any) -> str:
    """`` (--width 0.25)``: the estimate option that makes an estimate for ``value``, or nothing."""
    return f" ({ESTIMATE_OPTION[field]} {value})" if field in ESTIMATE_OPTION else ""


def provenance_mismatch(estimates: Sequence[LearningEstimate], expected: dict[str, Any]) -> str | None:
    """The first way ``estimates`` describe something other than ``expected`` (one line), or None.

    ``expected`` maps :data:`PROVENANCE_FIELDS` (a subset) and ``target_loss`` to values; ``model``
    restricts the check to that model's rows. Rows without provenance are not compared (see :func:`check_provenance`).
    """
    for e in estimates:
        if "model" in expected and e.model != expected["model"]:
            continue
        t = expected.get("target_loss")
        if t is not None and e.target_loss is not None and abs(e.target_loss - t) > 1e-9 * max(1.0, abs(t)):
            return (f"the estimate for {e.model} {e.bits}-bit is for target loss {e.target_loss}, not {t}"
                    + _rerun("target_loss", t))
        if e.provenance is None:
            continue
        for k in PROVENANCE_FIELDS:
            if k == "model" or k not in expected or expected[k] is None:
                continue
            have = e.provenance.get(k)
            if have != expected[k]:
                return (f"the estimate for {e.model} {e.bits}-bit was made with {k} = {have}, "
                        f"not {expected[k]}" + _rerun(k, expected[k]))
    return None


def check_provenance(estimates: Sequence[LearningEstimate], expected: dict[str, Any], *, where: str = "estimates",
                     allow_mismatch: bool = False) -> list[str]:
    """Refuse (:class:`JqodiError`) ``estimates`` made for another model or data; returns notes.

    A row without provenance (a file from before provenance was recorded) is used with a note;
    with ``allow_mismatch`` a mismatch is a note too.
    """
    notes = []
    if any(e.provenance is None and e.source != "static" for e in estimates):
        notes.append(f"{where} has rows without provenance (written by an older jqodi): "
                     f"not checked against the pretrained model")
    why = provenance_mismatch(estimates, expected)
    if why is not None:
        if not allow_mismatch:
            raise JqodiError(f"{where}: {why}; re-run 'jqodi estimate' with the same pretraining and data "
                             f"options, or pass --allow-estimate-mismatch")
        notes.append(f"{where}: {why} (used anyway: --allow-estimate-mismatch)")
    return notes


def save_estimates(path: str | Path, estimates: Iterable[LearningEstimate]) -> None:
    """Write estimates as JSON atomically (write to a temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"estimates": [asdict(e) for e in estimates]}, indent=2))
    tmp.replace(path)


def load_estimates(path: str | Path) -> list[LearningEstimate]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise JqodiError(f"estimates file {path} not found (make one with 'jqodi estimate')") from None
    except (OSError, json.JSONDecodeError) as e:
        raise JqodiError(f"estimates file {path} is unreadable: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("estimates"), list):
        raise JqodiError(f"estimates file {path}: expected an object with a list 'estimates'")
    return [LearningEstimate.from_dict(e, f"{path}: estimates[{i}]") for i, e in enumerate(data["estimates"])]
