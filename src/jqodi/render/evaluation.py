"""The evaluation's text tables: strategies (ours beside the paper's) and epoch estimates."""
from __future__ import annotations

from typing import Any

__all__ = ["summary_tables"]


def summary_tables(ev: Any) -> str:
    """The text tables: strategies (ours vs the paper's) and epoch estimates (Tables VI/VII)."""
    from jqodi.render.report import format_table

    cols = [("strategy", "strategy"), ("ours_choice", "ours"), ("ours_energy_j", "E (J)"),
            ("ours_time_s", "T (s)"), ("ours_epochs", "epochs"),
            ("ours_reaches_target", "L_max?"), ("ours_meets_deadline", "T_max?")]
    if ev.paper_key:
        cols += [("paper_choice", "paper"), ("paper_energy_j", "paper E (J)"),
                 ("paper_time_s", "paper T (s)")]
    parts = [format_table(ev.comparison, cols,
                          title=f"{ev.scenario}: T_max = {ev.deadline_s:g} s, "
                                f"L_max = {ev.target_loss:g}")]
    ecols = [("model", "model"), ("bits", "bits"), ("K_exp", "K^exp"), ("K_rob", "K^rob")]
    if ev.paper_key:
        ecols += [("paper_K", "paper K"), ("paper_K_exp", "paper K^exp"),
                  ("paper_K_rob", "paper K^rob")]
    parts.append(format_table(ev.epochs_table, ecols, title="epoch estimates (Tables VI/VII)"))
    return "\n\n".join(parts)
