"""Learning estimates per (model, bit-width): the table the instance compiler consumes.

One record holds what Table VI/VII of the paper gives per candidate, plus the loss figures
Algorithm 4 uses. The scenario file may carry a static table (``learning:`` section, the paper's
numbers); ``jqodi estimate`` writes a measured one in the same schema (JSON), which
``jqodi instance --estimates FILE`` prefers.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable

from jqodi.errors import JqodiError


@dataclass(frozen=True)
class LearningEstimate:
    """Estimates for fine-tuning ``model`` quantized to ``bits`` on the end device's data.

    ``base_loss`` is L_a (full-precision loss on the SD's validation split); ``gamma`` is
    γ_(a,q) (loss added by quantizing, expected) and ``gamma_robust`` its robust (upper) value;
    ``epochs_expected``/``epochs_robust`` are K^exp/K^rob, ``None`` when the target is out of
    reach (the paper's ∞). ``target_loss`` is the L_max the epochs were estimated for.
    ``final_loss_*`` are the predicted losses after K^exp / K^rob epochs (optional).
    """

    model: str
    bits: int
    base_loss: float
    gamma: float
    epochs_expected: int | None
    epochs_robust: int | None
    target_loss: float | None = None
    gamma_robust: float | None = None
    final_loss_expected: float | None = None
    final_loss_robust: float | None = None
    source: str = "static"

    @property
    def key(self) -> tuple[str, int]:
        return (self.model, self.bits)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LearningEstimate":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise JqodiError(f"learning estimate has unknown field(s): {', '.join(sorted(unknown))}")
        try:
            return cls(**d)
        except TypeError as e:
            raise JqodiError(f"learning estimate is incomplete: {e}") from e


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
    return [LearningEstimate.from_dict(e) for e in data["estimates"]]
