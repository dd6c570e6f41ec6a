"""What the paper reports (Section V-C/D, Tables V-VII), and our figures set beside them.

:data:`PAPER` holds the reference figures per data split (``data1``/``data2``): each strategy's
choice, energy and time, the epoch table (Tables VI/VII) and Table V (total and planning
energy). They are shown beside our results, never used as results. :func:`epochs_table` and :func:`comparison` build the rows of
:class:`jqodi.app.evaluation.Evaluation` that put ours and the paper's side by side.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from jqodi.core.instance import LossEstimates, PlanningInstance

__all__ = ["PAPER", "paper_key_for", "epochs_table", "comparison"]

PAPER: dict[str, dict[str, Any]] = {
    "data1": {
        "deadline_s": 180.0,
        "target_loss": {"lenet": 0.0186, "resnet20": 0.02, "vgg": 0.0188},
        # Table V: the whole system's energy for JQODI's plan, and what running JQODI cost
        "table_v": {"total_energy_j": 7651.3, "planning_energy_j": 28.35},
        "strategies": {
            "JQODI": {"model": "lenet", "bits": 6, "cut": 1, "edge": "rtx3090",
                      "energy_j": 7651.3, "time_s": 142.335, "reaches_target": True},
            "Optimum": {"model": "lenet", "bits": 8, "cut": 1, "edge": "rtx3090",
                        "energy_j": 6988.1, "time_s": 135.564, "reaches_target": True},
            "Full Model": {"model": "vgg", "bits": 32, "cut": 1, "edge": "rtx4090",
                           "energy_j": 19091.0, "time_s": 330.86, "reaches_target": True},
            "Minimal Model": {"model": "lenet", "bits": 1, "cut": 2, "edge": "rtx3090",
                              "energy_j": None, "time_s": None, "reaches_target": False},
        },
        # Table VI: (model, bits) → (K mean, K ±, K^exp, K^rob); None = ∞
        "epochs": {
            ("lenet", 2): (126, 6, 126, 132), ("lenet", 4): (44, 4, 44, 48),
            ("lenet", 6): (33, 3, 33, 36), ("lenet", 8): (26, 3, 26, 29),
            ("resnet20", 2): None, ("resnet20", 4): (56, 4, 56, 60),
            ("resnet20", 6): (48, 2, 48, 50), ("resnet20", 8): (42, 2, 42, 44),
            ("vgg", 2): (71, 5, 71, 76), ("vgg", 4): (43, 3, 43, 46),
            ("vgg", 6): (39, 3, 39, 42), ("vgg", 8): (29, 2, 29, 31),
        },
    },
    "data2": {
        "deadline_s": 2000.0,
        "target_loss": {"lenet": 0.02, "resnet20": 0.02, "vgg": 0.02},
        "table_v": {"total_energy_j": 12091.0, "planning_energy_j": 36.75},
        "strategies": {
            "JQODI": {"model": "resnet20", "bits": 8, "cut": 1, "edge": "rtx4090",
                      "energy_j": 12091.0, "time_s": None, "reaches_target": True},
            "Optimum": {"model": "resnet20", "bits": 6, "cut": 1, "edge": "rtx4090",
                        "energy_j": None, "time_s": None, "reaches_target": True},
            "Full Model": {"model": "lenet", "bits": 32, "cut": 1, "edge": "rtx3090",
                           "energy_j": None, "time_s": None, "reaches_target": True},
            "Minimal Model": {"model": "vgg", "bits": 1, "cut": 2, "edge": "rtx4090",
                              "energy_j": None, "time_s": None, "reaches_target": True},
        },
        # Table VII
        "epochs": {
            ("lenet", 2): (145, 7, 145, 152), ("lenet", 4): (53, 3, 53, 56),
            ("lenet", 6): (36, 3, 36, 39), ("lenet", 8): (33, 2, 33, 35),
            ("resnet20", 2): None, ("resnet20", 4): (59, 3, 59, 62),
            ("resnet20", 6): (47, 2, 47, 49), ("resnet20", 8): (50, 2, 50, 52),
            ("vgg", 2): (113, 6, 113, 119), ("vgg", 4): (73, 4, 73, 77),
            ("vgg", 6): (69, 3, 69, 72), ("vgg", 8): (58, 2, 58, 60),
        },
    },
}


def epochs_table(instance: PlanningInstance, paper: Mapping | None,
                 anchors: Mapping[tuple[str, int], LossEstimates]) -> list[dict[str, Any]]:
    """Per candidate: our K^exp/K^rob and start loss, beside the paper's K (Tables VI/VII)."""
    rows = []
    paper_epochs = (paper or {}).get("epochs", {})
    for c in sorted(instance.candidates, key=lambda c: (c.model, c.bits)):
        row: dict[str, Any] = {"model": c.model, "bits": c.bits,
                               "K_exp": c.epochs.expected, "K_rob": c.epochs.robust,
                               "loss_start": c.loss.start if c.loss else None}
        if c.loss is None and (c.model, c.bits) in anchors:
            row["loss_start"] = anchors[(c.model, c.bits)].start
        if (c.model, c.bits) in paper_epochs:
            p = paper_epochs[(c.model, c.bits)]
            row.update({"paper_K": "∞" if p is None else f"{p[0]}±{p[1]}",
                        "paper_K_exp": None if p is None else p[2],
                        "paper_K_rob": None if p is None else p[3]})
        rows.append(row)
    return rows


def comparison(results: Sequence[Any], paper: Mapping | None) -> list[dict[str, Any]]:
    """Per strategy (a :class:`jqodi.app.evaluation.StrategyResult`): our choice and figures,
    beside the paper's and which parts of the choice agree."""
    rows = []
    pstrats = (paper or {}).get("strategies", {})
    for r in results:
        m = r.main_option
        row: dict[str, Any] = {
            "strategy": r.label, "ours_choice": r.choice(), "ours_energy_j": r.energy_j,
            "ours_time_s": r.time_s, "ours_epochs": r.epochs or None,
            "ours_reaches_target": r.reaches_target if r.model else None,
            "ours_meets_deadline": r.meets_deadline if r.model else None,
            "ours_model": r.model, "ours_bits": r.bits,
            "ours_cut": m.cut if m else None, "ours_edge": m.edge if m else None,
        }
        p = pstrats.get(r.label)
        if p is not None:
            bits = "fp32" if p["bits"] == 32 else f"{p['bits']}-bit"
            row.update({"paper_choice": f"{p['model']} {bits} cut {p['cut']} @ {p['edge']}",
                        "paper_energy_j": p["energy_j"], "paper_time_s": p["time_s"],
                        "paper_reaches_target": p["reaches_target"],
                        "same_model": p["model"] == r.model, "same_bits": p["bits"] == r.bits,
                        "same_cut": m is not None and p["cut"] == m.cut,
                        "same_edge": m is not None and p["edge"] == m.edge})
        rows.append(row)
    return rows


def paper_key_for(scenario: Any = None, path: str | os.PathLike | None = None) -> str | None:
    """``data1``/``data2`` when the scenario is one of the paper's (by its data split or
    file name), else ``None``."""
    split = getattr(getattr(scenario, "data", None), "split", None)
    name = f"{getattr(scenario, 'name', '')} {Path(path).stem if path else ''}".lower()
    for key in ("data1", "data2"):
        if key in name.replace("-", "").replace("_", ""):
            return key
    return split if split in PAPER else None
