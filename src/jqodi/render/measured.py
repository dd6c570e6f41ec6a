"""Markdown tables of the measured CIFAR-10 evaluation (:mod:`jqodi.app.measured`): Table VI beside
the paper's, the estimators' error and coverage, Observation 2, Fig. 7(c) and Table V."""
from __future__ import annotations

from typing import Any, Mapping

__all__ = ["measured_markdown"]


def _k(v: Any) -> str:
    return "∞" if v is None else f"{v:.1f}" if isinstance(v, float) and not float(v).is_integer() else f"{v:.0f}"


def _num(v: Any, fmt: str = ".1f") -> str:
    return "–" if v is None else format(v, fmt)


def _bits(b: int) -> str:
    return "fp32" if b == 32 else f"{b}-bit"


def measured_markdown(summary: Mapping[str, Any]) -> str:
    """The summary of ``benchmarks/paper_cifar.py`` as Markdown."""
    cfg = summary["config"]
    data = cfg.get("data", "data1")
    table = "Table VI" if data == "data1" else "Table VII (Data 2 analog)"
    lines = [f"**{table} measured** (CIFAR-10 {data}: {cfg['train_size']} + {cfg['val_size']} test-batch images; "
             f"L = training cross-entropy; ≤ {cfg['max_epochs']} epochs; seeds {cfg['seeds']}; "
             f"probe {cfg['probe_epochs']} epochs; held-out predictions averaged over seeds; ∞ = not reached within "
             f"{cfg['max_epochs']} epochs)", "",
             "| L_max | model (width) | L | π_q | K (mean ± std) | reached | K^exp probe | K^rob probe | "
             "K^exp store | K^rob store | γ (train) | γ^rob | paper K | paper K^exp | paper K^rob |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary["table_vi"]:
        k = "∞" if r["K_mean"] is None else f"{r['K_mean']:.1f} ± {r['K_std']:.1f}"
        lines.append(
            f"| {r['target_loss']:g} | {r['model']} ({r['width']:g}) | {r['L_a']:.4f} | {_bits(r['bits'])} | {k} | "
            f"{r['reached']} | {_k(r['probe_K_exp'])} | {_k(r['probe_K_rob'])} | {_k(r['store_K_exp'])} | "
            f"{_k(r['store_K_rob'])} | {_num(r['gamma'], '+.4f')} | {_num(r['gamma_robust'], '+.4f')} | "
            f"{r.get('paper_K', '–')} | "
            f"{_k(r.get('paper_K_exp')) if 'paper_K' in r else '–'} | "
            f"{_k(r.get('paper_K_rob')) if 'paper_K' in r else '–'} |")
    lines += ["", "**Estimators (held out)**", "",
              "| estimator | predictions | median \\|K^exp − K\\|/K | K^rob ≥ K |", "|---|---|---|---|"]
    for name, m in summary["estimators"].items():
        cov = "–" if m["coverage_K_rob_ge_K"] is None else f"{m['coverage_K_rob_ge_K']:.0%}"
        err = "–" if m["median_rel_error_K_exp"] is None else f"{m['median_rel_error_K_exp']:.0%}"
        lines.append(f"| {name} | {m['predictions']} | {err} | {cov} |")
    lines += ["", "**Observation 2** (fewer bits → more epochs; 1 bit may never reach L_max)", ""]
    for o in summary["observation_2"]:
        ks = ", ".join(f"{_bits(int(b))} {_k(v)}" for b, v in o["K_by_bits"].items())
        verdict = "holds" if o["fewer_bits_more_epochs"] else "does not hold: " + "; ".join(o["violations"])
        one = {None: "1 bit not run", True: "1 bit reached", False: "1 bit never reached"}[o["one_bit_reached"]]
        lines.append(f"- {o['model']}: K = {ks} — {verdict}; {one}")
    fig = "Fig. 7(c)" if data == "data1" else "Fig. 11(c)"
    lines += ["", f"**{fig} planned with the measured estimates** (paper testbed: fitted device files)", "",
              "| strategy | ours: choice | energy J | time s | reaches L_max | meets T_max | paper: choice | "
              "energy J | time s |", "|---|---|---|---|---|---|---|---|---|"]
    for c in summary["fig7c"]:
        lines.append(f"| {c['strategy']} | {c['ours_choice']} | {_num(c['ours_energy_j'])} | {_num(c['ours_time_s'])} | "
                     f"{c['ours_reaches_target']} | {c['ours_meets_deadline']} | {c.get('paper_choice', '–')} | "
                     f"{_num(c.get('paper_energy_j'))} | {_num(c.get('paper_time_s'), '.3f')} |")
    v = summary["table_v"]
    clock = "CPU time" if v.get("clock") == "process CPU time" else "wall time"  # results before the CPU clock: wall
    lines += ["", f"**Table V** (planning energy = JQODI's planning {clock} on this host × the cloud's busy power)", "",
              "| | total energy J | planning time s | cloud power W | JQODI energy J | share |", "|---|---|---|---|---|---|",
              f"| ours | {_num(v['total_energy_j'])} | {v['planning_time_s']:.4f} | {v['cloud_busy_power_w']:.1f} | "
              f"{v['jqodi_energy_j']:.2f} | {_num(v['jqodi_share'] and 1000 * v['jqodi_share'], '.2f')} ‰ |",
              f"| paper | {v['paper']['total_energy_j']:g} | – | – | {v['paper']['jqodi_energy_j']:g} | "
              f"{1000 * v['paper_share']:.2f} ‰ |"]
    run = summary.get("run")
    if run and run.get("status") == "not run":
        lines += ["", f"**JQODI's plan was not run for real:** {run['why'][:300]}"]
    elif run:
        plan = run["plan"]
        sched = ", ".join(f"{e['epochs']}×(cut {e['cut']} @ {e['edge']})" for e in plan["schedule"] or [])
        lines += ["", f"**JQODI's plan run for real** ({plan['model']} {_bits(plan['bits'])}, {sched}; predicted "
                      f"{_num(plan['time_s'])} s, {_num(plan['energy_j'])} J for the whole plan; {run['epochs_run']} "
                      f"epoch(s) run, dilation ×{run['dilation']:.1f}; L_max {run['target_loss']:g} on the training "
                      f"loss {'reached at epoch ' + str(run['K_measured']) if run['K_measured'] else 'not reached'})",
                  "", "| epoch | edge, cut | training loss | predicted s | measured s | predicted J | measured J |",
                  "|---|---|---|---|---|---|---|"]
        for e in run["per_epoch"]:
            lines.append(f"| {e['epoch']} | {e['edge']}, {e['cut']} | {e['train_loss']:.4f} | "
                         f"{_num(e['predicted_time_s'], '.2f')} | {e['time_s']:.2f} | {_num(e['predicted_energy_j'])} | "
                         f"{e['energy_j']:.1f} |")
    load = summary.get("load_average_1min_at_start")
    lines += ["", f"Wall {summary['wall_s']:.0f} s (pretraining {summary['pretrain_wall_s']:.0f} s, "
                  f"{summary['runs_trained_now']} runs trained now in {summary['runs_wall_s']:.0f} s), "
                  f"{summary['jobs']} job(s) × {summary['threads_per_job']} thread(s)"
                  + (f", load average {load:.1f} at start" if load is not None else "") + "."]
    return "\n".join(lines) + "\n"
