"""Applying a learning-estimates file (``jqodi estimate``) to a scenario: every verb that takes
``--estimates`` (``plan``, ``instance``, ``run``, ``evaluate``) loads it with
:func:`estimates_for_scenario`, which refuses a file made for another model, data or target.

What a scenario fixes about the fine-tuning its estimates must describe (:func:`scenario_provenance`):
per candidate model its width; the end device's data (cloud dataset, split, train/validation sizes,
the seed that picks the images — the runtime draws them with ``training.seed``); the loss kind
(cross-entropy); L_max; and the pretrained model a run starts from (the default pretraining,
:data:`jqodi.core.train_config.DEFAULT_PRETRAIN_EPOCHS` epochs, unless a run starts from random
weights). The pretrained checkpoint's hash is not compared here: planning loads no checkpoint
(``jqodi estimate --check`` compares it). A mismatch is one line, exit 2, naming the field, the
file's value and the scenario's; ``--allow-estimate-mismatch`` turns it into a note.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

__all__ = ["OVERRIDE_FLAG", "estimates_for_scenario", "scenario_provenance"]

#: the flag of every verb that applies estimates: use a mismatching file anyway (with a note)
OVERRIDE_FLAG = "--allow-estimate-mismatch"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def scenario_provenance(scenario, model: str, *, pretrained: bool = True) -> dict[str, Any]:
    """What an estimate for ``model`` must describe to apply to ``scenario``
    (keys of :data:`jqodi.core.estimates.PROVENANCE_FIELDS` and ``target_loss``; ``None`` = not compared).

    ``pretrained=False``: the run starts from random weights, so no pretrained model is compared.
    """
    from jqodi.core.data import canonical_data_name, canonical_dataset, cloud_dataset_name
    from jqodi.core.train_config import DEFAULT_PRETRAIN_EPOCHS
    from jqodi.learning.estimate import LOSS_KIND

    data = scenario.data
    return {"model": model, "width": float(scenario.model_entry(model).width),
            "dataset": canonical_dataset(cloud_dataset_name(data.dataset, data.split)),
            "data_name": canonical_data_name(data.split),
            "train_size": data.train_size, "val_size": data.val_size, "data_seed": scenario.training.seed,
            "loss_kind": LOSS_KIND, "pretrain_epochs": DEFAULT_PRETRAIN_EPOCHS if pretrained else None,
            "target_loss": float(scenario.target_loss)}


def estimates_for_scenario(path: str | Path, scenario, *, allow_mismatch: bool = False, pretrained: bool = True,
                           note: Callable[[str], None] = _stderr) -> list:
    """The estimates in ``path``, checked against ``scenario`` (see the module docstring).

    Raises :class:`jqodi.errors.JqodiError` (one line) when a row of a model the scenario
    plans describes another model, data or target, unless ``allow_mismatch``; notes (a mismatch
    used anyway, rows without provenance) go to ``note``.
    """
    from jqodi.core.estimates import check_provenance, load_estimates

    estimates = load_estimates(path)
    names = [m.name for m in scenario.models]
    rows = [e for e in estimates if e.model in names]   # rows of other models are not planned with
    notes: list[str] = []
    where = f"estimates file {path}"
    for m in names:
        mine = [e for e in rows if e.model == m]
        if mine:   # rows without provenance are compared by their target loss alone (provenance_mismatch)
            notes += check_provenance(mine, scenario_provenance(scenario, m, pretrained=pretrained), where=where,
                                      allow_mismatch=allow_mismatch)
    for n in dict.fromkeys(notes):
        note(f"note: {n}")
    return estimates
