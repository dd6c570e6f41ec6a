"""The paper's Data 1 evaluation measured on real CIFAR-10 images (Table VI, Observation 2, Fig. 7).

Where :mod:`jqodi.app.evaluation` plans from a table of epoch counts, this module *measures* the
table: it fine-tunes every (model, bits) × seed on the end device's Data 1 split until the loss
reaches L_max, reads K, lets the probe and the store estimators predict each run from the others
(held out), measures γ, and then plans the paper's testbed with those measured estimates.

**Data 1** (paper §V-A): 2,000 training + 500 validation images from the CIFAR-10 *test* batch
(:func:`jqodi.core.data.end_device_data`); the cloud pretrains on the training batches present
(``data_batch_1``/``data_batch_2`` in ``../shared``: 20,000 images; cached under
``$JQODI_HOME/pretrained``, :func:`jqodi.core.pretrained.load_pretrained`).

**Which loss L_max refers to: the training loss.** §III-C defines L(k) on "the test dataset of the
SD", but the values the paper reports rule that out: L = 0.0186 / 0.0156 / 0.0188 for the
full-precision LeNet-like, ResNet20 and VGG-like (Table VI) and L_max = 0.02 are cross-entropies
of ≈ 99.5 % confident correct answers — no CIFAR-10 model of that size gets near them on held-out
images (a well-trained ResNet20 has a test cross-entropy ≈ 0.3), while a model *fitting its
training images* does; §V-C describes Fig. 7(b) as "the training loss versus time taken curves"; and Data 2
(more training images) reaching the target more easily is what §V-D attributes to "more training
data". So L(k) here is the mean cross-entropy over epoch k's training batches on the SD, as the
worker computes it while training (the quantity a training log prints; no extra pass), and
L_a (the table's L) is the full-precision pretrained model's cross-entropy on the SD's training
split. The validation loss and accuracy of every epoch are recorded beside it.

γ_(a,q) is measured on the same loss: the mean over the SD's training images of
``loss(quantized) − loss(full precision)`` before fine-tuning, bootstrapped
(:func:`jqodi.learning.gamma.gamma_estimate`); γ on the validation split is reported beside it.

**Estimators, held out** (as ``benchmarks/estimators.py``): for each run (seed s) the *probe*
estimator sees the first P epochs of another seed's run of the same (model, bits)
(:func:`jqodi.learning.curves.estimate_from_probe`), the *store* estimator the full curves of the
other seeds (:func:`jqodi.learning.curves.estimate_from_runs`); error = median |K^exp − K| / K,
coverage = share of runs with K^rob ≥ K (∞ counts as a hit only for a run that never reached).

Outputs are plain JSON (documented in docs/evaluation-cifar.md): one file per run under
``runs/`` (what makes the command resumable), ``table_vi.json``, ``estimates.json`` (the
``jqodi estimate`` schema: ``jqodi plan/evaluate/run --estimates`` read it) and ``plan.json``.
"""
from __future__ import annotations

import copy
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from jqodi.errors import JqodiError

__all__ = ["BITS", "MeasureConfig", "LOSS_KIND", "run_path", "measure_run", "table_vi", "estimator_metrics",
           "observation_2", "measured_estimates", "plan_with_estimates", "run_measured_plan"]

#: The bit-widths of Table VI plus the two baselines' (Minimal Model 1 bit, Full Model fp32).
BITS = (1, 2, 4, 6, 8, 32)
#: What L(k) and L_max are about (see the module docstring).
LOSS_KIND = "training cross-entropy (mean over the epoch's batches on the SD)"

Say = Callable[[str], None]


@dataclass(frozen=True)
class MeasureConfig:
    """What one measured evaluation runs. ``widths``: model → width multiplier (the CPU budget's
    choice, docs/evaluation-cifar.md); ``target_loss``: model → L_max on the training loss;
    ``max_epochs``: the horizon N ("not reached within N epochs"); ``probe_epochs``: P, the
    probe's length and the least epochs every run trains; ``lr``: Adam's learning rate."""

    widths: Mapping[str, float]
    bits: Sequence[int] = BITS
    seeds: Sequence[int] = (0, 1, 2)
    target_loss: Mapping[str, float] = field(default_factory=dict)
    max_epochs: int = 60
    probe_epochs: int = 5
    train_size: int = 2000
    val_size: int = 500
    pretrain_epochs: int = 4
    lr: float = 1e-3
    batch_size: int = 64
    data_dir: str | None = None
    #: the SD's data: ``data1`` (the paper's) or ``data2-shifted`` (the Data 2 analog; sizes 5000/1000)
    data: str = "data1"
    #: bootstrap refits of the probe estimator (its default; fewer only to keep tests short)
    probe_boot: int = 50

    def target(self, model: str) -> float:
        return float(self.target_loss.get(model, 0.02))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["widths"], d["target_loss"] = dict(self.widths), {m: self.target(m) for m in self.widths}
        d["bits"], d["seeds"] = list(self.bits), list(self.seeds)
        return d


def run_path(out_dir: str | Path, model: str, width: float, bits: int, seed: int) -> Path:
    """Where one run's JSON lives (its presence means the run is done)."""
    return Path(out_dir) / "runs" / f"{model}_w{width:g}_{bits}bit_s{seed}.json"


def _first_below(values: Sequence[float], target: float) -> int | None:
    for i, v in enumerate(values):
        if v <= target:
            return i + 1
    return None


def measure_run(model: str, bits: int, seed: int, cfg: MeasureConfig, *, pretrained, data,
                on_epoch: Callable[[int, float], None] | None = None,
                fp_cache: dict | None = None) -> dict[str, Any]:
    """Fine-tune ``model`` at ``bits`` (seed ``seed``) on the SD's ``data`` from ``pretrained``
    until the training loss is ≤ L_max (but at least ``probe_epochs`` epochs) or ``max_epochs``.

    Each epoch is the protocol's (:func:`jqodi.learning.reference.protocol_epoch`: pack at q bits,
    train a fresh optimizer on the SD's training split, validate, fold the update into the
    master). Returns the run as a plain dict (see docs/evaluation-cifar.md). ``fp_cache``: a dict
    kept across runs of the same ``pretrained`` and ``data`` (one per process): the fp32 model's
    per-sample losses are the same for every bit-width and seed, so they are computed once."""
    import torch

    from jqodi.core.quant import pack_model, prepare_qat, unpack_model
    from jqodi.core.training import TrainConfig, per_sample_losses
    from jqodi.learning.gamma import gamma_estimate
    from jqodi.learning.reference import protocol_epoch

    train_cfg = TrainConfig(lr=cfg.lr, batch_size=cfg.batch_size)
    target = cfg.target(model)
    t0 = time.perf_counter()
    key = (id(pretrained), id(data))
    if fp_cache is not None and key in fp_cache:
        fp_tr, fp_va, fp_va_ok = fp_cache[key]
    else:
        fp = copy.deepcopy(pretrained.model).eval()
        fp_tr, _ = per_sample_losses(fp, data.train)
        fp_va, fp_va_ok = per_sample_losses(fp, data.val)
        if fp_cache is not None:
            fp_cache[key] = (fp_tr, fp_va, fp_va_ok)
    master = prepare_qat(copy.deepcopy(pretrained.model), bits, train_cfg.act_bits,
                         calibration=pretrained.calibration)
    worker = copy.deepcopy(master)
    unpack_model(worker, pack_model(master, bits))
    q_tr, _ = per_sample_losses(worker, data.train)
    q_va, q_va_ok = per_sample_losses(worker, data.val)
    g_tr = gamma_estimate(q_tr - fp_tr, seed=seed)
    g_va = gamma_estimate(q_va - fp_va, seed=seed)
    train_losses: list[float] = []
    val_losses: list[float] = []
    val_acc: list[float] = []
    epoch_s: list[float] = []
    torch.manual_seed(seed)
    for ep in range(1, cfg.max_epochs + 1):
        rec = protocol_epoch(master, worker, data.train, data.val, bits, train_cfg, seed, ep)
        train_losses.append(float(rec.train_loss))
        val_losses.append(float(rec.val_loss))
        val_acc.append(float(rec.val_accuracy))
        epoch_s.append(float(rec.wall_s))
        if on_epoch:
            on_epoch(ep, float(rec.train_loss))
        if not math.isfinite(rec.train_loss):
            break
        if rec.train_loss <= target and ep >= cfg.probe_epochs:
            break
    k = _first_below(train_losses, target)
    return {"model": model, "width": float(pretrained.meta["width"]), "bits": bits, "seed": seed,
            "target_loss": target, "loss_kind": LOSS_KIND, "K": k, "epochs_run": len(train_losses),
            "max_epochs": cfg.max_epochs,
            "L_a": float(fp_tr.mean()), "L_a_val": float(fp_va.mean()),
            "val_accuracy_fp32": float(fp_va_ok.float().mean()),
            "start_loss": float(q_tr.mean()), "start_loss_val": float(q_va.mean()),
            "start_val_accuracy": float(q_va_ok.float().mean()),
            "gamma": g_tr.expected, "gamma_robust": g_tr.robust,
            "gamma_val": g_va.expected, "gamma_val_robust": g_va.robust,
            "train_losses": train_losses, "val_losses": val_losses, "val_accuracy": val_acc,
            "epoch_s": epoch_s, "wall_s": time.perf_counter() - t0,
            "lr": cfg.lr, "batch_size": cfg.batch_size, "data": cfg.data, "train_size": len(data.train),
            "val_size": len(data.val),
            "pretrained": {k_: pretrained.meta.get(k_) for k_ in
                           ("dataset", "epochs", "cloud_train_size", "cloud_val_loss", "cloud_val_accuracy")}}


def _mean(xs: Sequence[float]) -> float | None:
    v = [x for x in xs if x is not None and math.isfinite(x)]
    return statistics.mean(v) if v else None


def _held_out(runs: Sequence[dict], target: float, probe_epochs: int, n_boot: int = 50) -> list[dict]:
    """Per run: what the probe and the store estimators predict for it without seeing it."""
    from jqodi.learning.curves import estimate_from_probe, estimate_from_runs

    out = []
    for i, r in enumerate(runs):
        others = [o for j, o in enumerate(runs) if j != i]
        if not others:
            continue
        probe_run = runs[(i + 1) % len(runs)]
        p = estimate_from_probe(probe_run["train_losses"][:probe_epochs], target, seed=r["seed"], n_boot=n_boot)
        s = estimate_from_runs([o["train_losses"] for o in others], target)
        out.append({"seed": r["seed"], "K": r["K"], "probe": {"K_exp": p.expected, "K_rob": p.robust},
                    "store": {"K_exp": s.expected, "K_rob": s.robust}})
    return out


def _avg_k(ks: Sequence[int | None]) -> float | None:
    """Mean of the finite predictions; ``None`` (∞) when most are ∞."""
    fin = [k for k in ks if k is not None]
    return statistics.mean(fin) if len(fin) * 2 > len(ks) else None


def held_out_group(runs: Sequence[dict], cfg: MeasureConfig) -> list[dict]:
    """The held-out predictions of one (model, bits) group's runs (what :func:`table_vi` computes
    per group; a benchmark may compute them in worker processes and pass them in)."""
    rs = sorted(runs, key=lambda r: r["seed"])
    return _held_out(rs, rs[0]["target_loss"], cfg.probe_epochs, cfg.probe_boot)


def table_vi(runs: Sequence[dict], cfg: MeasureConfig, paper: Mapping | None = None,
             held_out: Mapping[tuple[str, int], list[dict]] | None = None) -> list[dict[str, Any]]:
    """Rows of Table VI from the runs: per (model, bits) K mean ± std over seeds (``None`` = not
    reached within ``max_epochs`` by any seed), how many reached, the held-out probe/store
    K^exp and K^rob (means over the seeds' predictions), γ measured, and the paper's row beside.
    ``held_out``: (model, bits) → :func:`held_out_group` of that group, computed already."""
    from jqodi.app.paper import PAPER

    paper_epochs = (paper if paper is not None else PAPER["data1" if cfg.data == "data1" else "data2"])["epochs"]
    by_key: dict[tuple[str, int], list[dict]] = {}
    for r in runs:
        by_key.setdefault((r["model"], r["bits"]), []).append(r)
    rows = []
    for (model, bits), rs in sorted(by_key.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        rs = sorted(rs, key=lambda r: r["seed"])
        target = rs[0]["target_loss"]
        ks = [r["K"] for r in rs]
        fin = [k for k in ks if k is not None]
        held = (held_out or {}).get((model, bits))
        if held is None:
            held = _held_out(rs, target, cfg.probe_epochs, cfg.probe_boot)
        row: dict[str, Any] = {
            "model": model, "width": rs[0]["width"], "bits": bits, "target_loss": target,
            "L_a": _mean([r["L_a"] for r in rs]), "start_loss": _mean([r["start_loss"] for r in rs]),
            "K_per_seed": {str(r["seed"]): r["K"] for r in rs},
            "K_mean": statistics.mean(fin) if fin else None,
            "K_std": statistics.pstdev(fin) if len(fin) > 1 else (0.0 if fin else None),
            "reached": f"{len(fin)}/{len(ks)}", "max_epochs": max(r["max_epochs"] for r in rs),
            "final_loss_mean": _mean([r["train_losses"][-1] for r in rs if r["train_losses"]]),
            "gamma": _mean([r["gamma"] for r in rs]),
            "gamma_robust": max((g for r in rs if (g := r["gamma_robust"]) is not None and math.isfinite(g)),
                                default=None),
            "gamma_val": _mean([r["gamma_val"] for r in rs]),
            "epoch_s_median": statistics.median([s for r in rs for s in r["epoch_s"]] or [0.0]),
            "held_out": held}
        for est in ("probe", "store"):
            row[f"{est}_K_exp"] = _avg_k([h[est]["K_exp"] for h in held]) if held else None
            row[f"{est}_K_rob"] = _avg_k([h[est]["K_rob"] for h in held]) if held else None
        p = paper_epochs.get((model, bits), "absent") if bits not in (1, 32) else "absent"
        if p != "absent":
            row.update({"paper_K": "∞" if p is None else f"{p[0]}±{p[1]}",
                        "paper_K_exp": None if p is None else p[2], "paper_K_rob": None if p is None else p[3]})
        rows.append(row)
    return rows


def estimator_metrics(rows: Sequence[dict]) -> dict[str, dict[str, Any]]:
    """Per estimator over every held-out prediction: median |K^exp − K| / K (an ∞ answer for a
    reached run, or a finite one for a run that never reached, is 100 % off), coverage (share of
    K^rob ≥ K; ∞ covers everything), and how many predictions."""
    out = {}
    for est in ("probe", "store"):
        rel, cover, n = [], 0, 0
        for row in rows:
            for h in row["held_out"]:
                n += 1
                k, ke, kr = h["K"], h[est]["K_exp"], h[est]["K_rob"]
                if k is None:
                    rel.append(0.0 if ke is None else 1.0)
                    cover += kr is None
                else:
                    rel.append(1.0 if ke is None else abs(ke - k) / k)
                    cover += kr is None or kr >= k
        out[est] = {"predictions": n,
                    "median_rel_error_K_exp": round(statistics.median(rel), 4) if rel else None,
                    "coverage_K_rob_ge_K": round(cover / n, 4) if n else None}
    return out


def observation_2(rows: Sequence[dict]) -> list[dict[str, Any]]:
    """The paper's Observation 2 per model: fewer bits → more epochs (K non-increasing in the
    bit-width among the quantized rows, a row never reached counting as ∞), and 1 bit may never
    reach the target. Returns per model the K by bits and what holds."""
    out = []
    models = sorted({r["model"] for r in rows})
    for m in models:
        rs = sorted((r for r in rows if r["model"] == m), key=lambda r: r["bits"])
        kb = [(r["bits"], math.inf if r["K_mean"] is None else r["K_mean"]) for r in rs]
        quantized = [(b, k) for b, k in kb if b != 32]
        pairs = list(zip(quantized, quantized[1:]))
        violations = [f"{b1}-bit K={_fmt(k1)} < {b2}-bit K={_fmt(k2)}" for (b1, k1), (b2, k2) in pairs if k1 < k2]
        one = dict(kb).get(1)
        out.append({"model": m, "K_by_bits": {str(b): (None if not math.isfinite(k) else k) for b, k in kb},
                    "fewer_bits_more_epochs": not violations, "violations": violations,
                    "one_bit_reached": None if one is None else math.isfinite(one)})
    return out


def _fmt(k: float) -> str:
    return "∞" if not math.isfinite(k) else f"{k:.1f}"


def measured_estimates(rows: Sequence[dict], runs: Sequence[dict], cfg: MeasureConfig, *, source: str = "probe"):
    """:class:`~jqodi.core.estimates.LearningEstimate` per (model, bits) as a deployment would have
    them before fine-tuning seed 0 (the lowest seed): K^exp/K^rob from seed 0's first P epochs —
    ``source="probe"``: the probe estimator on those epochs alone; ``"store"``: the store estimator
    on the *other* seeds' full curves of the same (model, bits), aligned to seed 0's probe (a trace
    store that has seen this configuration fine-tuned before; never seed 0's own later epochs).
    L_a and γ measured (means over seeds; γ^rob the largest). A row whose γ is not finite (the
    quantized model's loss overflowed) gets no estimate: it is not planned."""
    from jqodi.core.estimates import LearningEstimate
    from jqodi.learning.curves import estimate_from_probe, estimate_from_runs

    if source not in ("probe", "store"):
        raise ValueError(f"source must be 'probe' or 'store', not {source!r}")

    out = []
    for row in rows:
        if row["gamma"] is None or row["L_a"] is None:   # the quantized model's loss was not finite
            continue
        rs = sorted((r for r in runs if (r["model"], r["bits"]) == (row["model"], row["bits"])),
                    key=lambda r: r["seed"])
        probe_epochs = cfg.probe_epochs
        head = rs[0]["train_losses"][:probe_epochs]
        if source == "store" and len(rs) > 1:
            probe = estimate_from_runs([r["train_losses"] for r in rs[1:]], row["target_loss"], probe=head,
                                       horizon=cfg.max_epochs)
            how = f"store(seeds {[r['seed'] for r in rs[1:]]} aligned to {probe_epochs} epochs of seed {rs[0]['seed']}"
        else:
            probe = estimate_from_probe(head, row["target_loss"], seed=0, n_boot=cfg.probe_boot)
            how = f"probe({probe_epochs} epochs of seed {rs[0]['seed']}"
        out.append(LearningEstimate(
            model=row["model"], bits=row["bits"], base_loss=max(0.0, row["L_a"]), gamma=row["gamma"],
            gamma_robust=row["gamma_robust"], epochs_expected=probe.expected, epochs_robust=probe.robust,
            target_loss=row["target_loss"], final_loss_expected=probe.final_loss_expected,
            final_loss_robust=probe.final_loss_robust,
            source=f"measured:{how}; cifar10 {cfg.data}, "
                   f"{LOSS_KIND}, width {row['width']:g})",
            provenance={"model": row["model"], "width": row["width"], "dataset": "cifar10", "data_name": cfg.data,
                        "train_size": cfg.train_size, "val_size": cfg.val_size, "data_seed": 0,
                        "pretrain_epochs": cfg.pretrain_epochs, "loss_kind": "train-cross-entropy"}))
    return out


def plan_with_estimates(scenario_path: str | Path, estimates, target_loss: float,
                        progress: Say | None = None, paper_key: str = "data1",
                        out_dir: str | Path | None = None) -> dict[str, Any]:
    """Plan the paper's Data 1 testbed (``scenario_path``, its fitted device files) with the
    measured ``estimates`` in place of its static table; every strategy of Section V-A
    (:func:`jqodi.app.evaluation.evaluate_instance`), beside the paper's Fig. 7(c) and Table V.

    Planning energy (Table V's "JQODI Energy"): JQODI's planning CPU time on this host (this
    process's, :func:`time.process_time`) × the cloud device's busy power (the planner runs on the
    CS). CPU time, not wall time: on a shared host the wall clock also counts the waits for a core,
    so load would inflate the energy; the wall times are kept beside it. With ``out_dir``, the evaluation is
    also written there as ``jqodi evaluate --out`` writes it (``evaluation.json``, ``summary.txt``,
    the PNG figures), which ``jqodi report`` reads."""
    import dataclasses

    from jqodi.app.evaluation import evaluate_instance
    from jqodi.app.paper import PAPER
    from jqodi.app.trajectories import loss_anchors_from_estimates
    from jqodi.core.costs import compile_instance, epoch_costs
    from jqodi.core.scenario import load_scenario
    from jqodi.planner import solve

    estimates = list(estimates)
    scenario = load_scenario(scenario_path)
    measured = {e.model for e in estimates}
    # only the measured models, and none of the scenario's static rows: nothing unmeasured is planned
    scenario = scenario.model_copy(update={"target_loss": float(target_loss), "learning": [],
                                           "models": [m for m in scenario.models if m.name in measured]})
    if not scenario.models:
        raise JqodiError(f"{scenario_path}: none of its models was measured ({', '.join(sorted(measured))})")
    t_compile, c_compile = time.perf_counter(), time.process_time()
    instance = compile_instance(scenario, estimates)
    compile_wall_s, compile_s = time.perf_counter() - t_compile, time.process_time() - c_compile

    def epoch_cost(model: str, bits: int, cut: int, edge: str):
        return epoch_costs(scenario, model, bits, cut, edge)

    anchors = loss_anchors_from_estimates(list(estimates), instance.target_loss)
    ev = evaluate_instance(instance, solve=solve, epoch_cost=epoch_cost, loss_anchors=anchors,
                           paper_key=paper_key, name=f"cifar10-{paper_key}-measured", progress=progress)
    if out_dir is not None:
        from jqodi.app.evaluation import write_outputs

        write_outputs(ev, out_dir)
    # planning time = compiling the instance (profiles, cost tables: cold, first) + JQODI's solve
    # (the median of 5; the first, cold solve is the evaluation's plan_cpu_s), in CPU seconds
    times, walls = [], []
    for _ in range(5):
        t, c = time.perf_counter(), time.process_time()
        solve(instance, solver="jqodi", epochs="robust")
        times.append(time.process_time() - c)
        walls.append(time.perf_counter() - t)
    jq = ev.strategy("JQODI")
    plan_s = compile_s + statistics.median(times)
    cloud_w = float(scenario.cloud.device().busy_power_w)
    paper_v = {"total_energy_j": 7651.3, "jqodi_energy_j": 28.35} if paper_key == "data1" else \
        {"total_energy_j": 12091.0, "jqodi_energy_j": 36.75}         # Table V
    table_v = {"total_energy_j": jq.energy_j, "planning_time_s": plan_s, "clock": "process CPU time",
               "compile_s": compile_s, "solve_s_median": statistics.median(times), "solve_s_first": jq.plan_cpu_s,
               "planning_wall_s": compile_wall_s + statistics.median(walls), "compile_wall_s": compile_wall_s,
               "solve_wall_s_median": statistics.median(walls), "load_average": round(os.getloadavg()[0], 2),
               "cloud_busy_power_w": cloud_w,
               "jqodi_energy_j": plan_s * cloud_w,
               "jqodi_share": (plan_s * cloud_w / jq.energy_j) if jq.energy_j else None,
               "paper": paper_v, "paper_share": paper_v["jqodi_energy_j"] / paper_v["total_energy_j"]}
    strategies = []
    for s in ev.strategies:
        d = {k: v for k, v in dataclasses.asdict(s).items() if k not in ("trajectory", "breakdown")}
        d["choice"] = s.choice()
        d["trajectory"] = [dataclasses.asdict(p) for p in s.trajectory]
        d["breakdown"] = s.breakdown
        strategies.append(d)
    return {"scenario": str(scenario_path), "deadline_s": instance.deadline_s, "target_loss": instance.target_loss,
            "instance": instance.to_dict() if hasattr(instance, "to_dict") else None,
            "strategies": strategies, "comparison": ev.comparison, "epochs_table": ev.epochs_table,
            "table_v": table_v, "paper_fig7c": PAPER[paper_key]["strategies"], "notes": ev.notes}


def run_measured_plan(scenario_path: str | Path, estimates, cfg: MeasureConfig, workdir: str | Path, *,
                      max_epochs: int | None = None, progress: bool | None = None,
                      say: Say | None = None) -> dict[str, Any]:
    """Run JQODI's plan for real (every role a local process, emulated testbed, dilated time).

    The scenario is ``scenario_path`` (the paper's testbed) with the measured models at their
    measured widths, the CIFAR-10 folder of ``cfg``, L_max = the largest measured target and the
    measured ``estimates`` (written to ``workdir/estimates.json``; ``workdir/scenario.yaml`` is
    the scenario run: ``jqodi run workdir/scenario.yaml --estimates workdir/estimates.json`` plans
    the same). Every planned epoch runs, with no controller (the closed loop's early stop watches
    the validation loss, our L_max is on the training loss); the epoch where the training loss
    first reaches L_max is read from the record. Returns predicted vs measured.

    The dilation is the automatic one (:func:`jqodi.runtime.plan.plan_dilation`): the larger of
    the epoch rule (4 × the host's own epoch time / the plan's shortest predicted epoch) and the
    overrun rule (per (edge, cut) of the schedule, the smallest dilation at which the roles'
    expected overrun of their padded compute is at most 5 % of the dilated predicted epoch;
    :func:`jqodi.runtime.plan.dilation_choice`), with the host's speed and its parts' batches
    timed by one thread's CPU time instead of the wall clock: what the host's core needs, a quiet
    host's wall time, not how long a loaded host made it wait (under the epoch rule alone the
    wall-clock figure was ×31 at load 28 where the CPU clock gave ≈ ×4.7, and the run's wall time
    grows with it). On a loaded host the roles may then fall behind their padded steps; each epoch's
    ``overrun_s`` in the record says by how much. Both figures and the load average are returned
    (``dilation_how``)."""
    import dataclasses

    import yaml

    from jqodi.app.run import RunOptions, run_scenario
    from jqodi.core.estimates import save_estimates

    estimates = list(estimates)
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load(Path(scenario_path).read_text())
    target = max(cfg.target(m) for m in cfg.widths)
    raw.update({"name": f"cifar10-{cfg.data}-measured", "target_loss": target, "learning": [],
                "models": [{"name": m, "width": float(w)} for m, w in cfg.widths.items()]})
    raw["data"] = {**raw["data"], "dataset": "cifar10", "split": cfg.data, "data_dir": cfg.data_dir,
                   "train_size": cfg.train_size, "val_size": cfg.val_size}
    # the measured runs split the SD's data with seed 0: the run uses the same images
    raw.setdefault("training", {}).update({"lr": cfg.lr, "batch_size": cfg.batch_size, "seed": 0})
    scen = work / "scenario.yaml"
    scen.write_text(yaml.safe_dump(raw, sort_keys=False))
    est_path = work / "estimates.json"
    save_estimates(est_path, estimates)
    # the estimates describe the *training* loss (Table VI's K, see LOSS_KIND) while a run's provenance
    # check expects the validation loss the closed loop watches: this run has no controller and reads
    # K from the training losses, so that one difference is allowed (and said in a note)
    opts = RunOptions(workdir=work / "run", estimates=est_path, policy=None, trace_store=None, progress=progress,
                      max_epochs=max_epochs, data_dir=cfg.data_dir, allow_estimate_mismatch=True)
    dilation = _cpu_dilation(scen, opts)
    record, _ = run_scenario(scen, dataclasses.replace(opts, dilation=dilation["dilation"]),
                             say=say or (lambda line: None))
    eps = record.epochs
    totals = record.totals
    train = [e["train_loss"] for e in eps]
    k = _first_below(train, target)
    sol = record.solution or {}
    return {"scenario": str(scen), "estimates": str(est_path), "record": str(work / "run" / "record.json"),
            "plan": {k_: sol.get(k_) for k_ in ("model", "bits", "schedule", "energy_j", "time_s")},
            "epochs_run": len(eps), "dilation": record.dilation, "dilation_how": dilation, "target_loss": target,
            "K_measured": k, "train_losses": train, "val_losses": [e["val_loss"] for e in eps],
            "predicted": {"time_s": totals.get("predicted_time_s"), "energy_j": totals.get("predicted_energy_j")},
            "measured": {"time_s": totals["time_s"], "energy_j": totals["energy_j"]},
            "per_epoch": [{"epoch": e["epoch"], "edge": e["edge"], "cut": e["cut"], "train_loss": e["train_loss"],
                           "time_s": e["time_s"], "energy_j": e["energy_j"],
                           "predicted_time_s": (e.get("predicted") or {}).get("time_s"),
                           "predicted_energy_j": (e.get("predicted") or {}).get("energy_j")} for e in eps],
            "status": record.status}


def _cpu_dilation(scenario_path: Path, opts) -> dict[str, Any]:
    """The run's automatic dilation with the host timed by CPU time (see :func:`run_measured_plan`),
    beside the wall-clock one ``jqodi run --dilation auto`` would take now."""
    from jqodi.app.run import load_for_run, plan_for_run
    from jqodi.runtime.plan import plan_dilation

    scenario = load_for_run(scenario_path, opts)
    solution = plan_for_run(scenario, opts, say=lambda line: None)  # the plan run_scenario makes (deterministic)
    return {"dilation": plan_dilation(scenario, solution, clock=time.thread_time), "clock": "thread CPU time",
            "wall_clock_dilation": plan_dilation(scenario, solution), "load_average": round(os.getloadavg()[0], 2)}
