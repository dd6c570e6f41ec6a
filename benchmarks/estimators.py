"""How accurate are the epoch estimators K^exp / K^rob on real fine-tuning runs? (prints JSON)

For every (model, bits) × seed, fine-tunes the cloud-pretrained model on the SD's data (Data 1
analog on Fashion-MNIST by default) until the validation loss reaches the target L_max (plus
``--extra`` epochs, at least ``--probe-epochs``) or ``--max-epochs``; the actual K is the first
epoch at or below L_max. Then, with **held-out seeds** (an estimator never sees the run it
predicts), two estimators predict each run's K:

* ``probe``: the learning-curve ensemble fitted on the first P (≤ 5) epochs of *another* seed's
  run (the probe) — :func:`jqodi.learning.curves.estimate_from_probe`;
* ``store``: the full curves of the *other* seeds' runs — :func:`estimate_from_runs`.

Reports the Table VI layout (actual K mean ± std over seeds beside K^exp and K^rob, averaged over
the held-out predictions), the median relative error |K^exp − K| / K and the share of runs with
K^rob ≥ K (targets: ≤ 10 % and ≥ 90 %). A run that never reaches L_max has K = ∞; an estimator
"hits" it only by answering ∞ (None).

The target per model is ``L_a · (1 + --target-rel)`` (L_a: the fp32 pretrained loss on the SD's
validation split), or ``--target model=loss``.

    python benchmarks/estimators.py --quick          # LeNet × {1,2,4,8} bits × 3 seeds, ≤ 10 min
    python benchmarks/estimators.py                  # 3 models × {2,4,6,8} (+1-bit LeNet) × 3 seeds
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path


def parse_targets(items):
    out = {}
    for it in items or []:
        k, _, v = it.partition("=")
        out[k] = float(v)
    return out


def k_str(k):
    return "∞" if k is None else str(k)


def main(argv=None) -> int:
    import torch

    from jqodi.core.data import end_device_data
    from jqodi.learning.curves import estimate_from_probe, estimate_from_runs
    from jqodi.core.traces import TraceStore
    from jqodi.core.pretrained import load_pretrained
    from jqodi.core.training import TrainConfig, evaluate
    from jqodi.learning.reference import finetune

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="LeNet only, bits 1 2 4 8, ≤ 10 min")
    ap.add_argument("--models", nargs="+", default=None)
    ap.add_argument("--bits", nargs="+", type=int, default=None)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--data", default="data1")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--train-size", type=int, default=None)
    ap.add_argument("--val-size", type=int, default=None)
    ap.add_argument("--max-epochs", type=int, default=None)
    ap.add_argument("--probe-epochs", type=int, default=5)
    ap.add_argument("--extra", type=int, default=2, help="epochs run after reaching the target")
    ap.add_argument("--target-rel", type=float, default=0.05)
    ap.add_argument("--target", action="append", help="model=loss (overrides --target-rel)")
    ap.add_argument("--store", default=None, help="trace store for the runs (default: a temp file)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--markdown", default=None, help="also write the table as Markdown to this file")
    ap.add_argument("--reuse", action="store_true",
                    help="re-evaluate runs already in --store (same model, bits, seed, sizes) instead of re-training")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.quick:
        models = args.models or ["lenet"]
        bits_for = {m: args.bits or [1, 2, 4, 8] for m in models}
        max_epochs = args.max_epochs or 10
    else:
        models = args.models or ["lenet", "vgg", "resnet20"]
        bits_for = {m: args.bits or ([1, 2, 4, 6, 8] if m == "lenet" else [2, 4, 6, 8]) for m in models}
        max_epochs = args.max_epochs or 25
    targets = parse_targets(args.target)
    t0 = time.perf_counter()
    data = end_device_data(args.data, args.dataset, None, args.train_size, args.val_size, seed=0)
    store_path = Path(args.store) if args.store else Path(tempfile.mkdtemp()) / "bench-traces.db"
    cfg = TrainConfig()
    runs = {}  # (model, bits) -> {seed: FinetuneResult}
    target_of = {}
    with TraceStore(store_path) as store:
        for m in models:
            pre = load_pretrained(m, args.dataset, progress=None)
            base_loss, _ = evaluate(pre.model, data.val)
            target_of[m] = targets.get(m, base_loss * (1 + args.target_rel))
            for b in bits_for[m]:
                for s in args.seeds:
                    if args.reuse:
                        old = [r for r in store.runs(model=m, bits=b, seed=s, data_name=args.data,
                                                     dataset=data.dataset, width=pre.meta["width"])
                               if (r.train_size, r.val_size) == (len(data.train), len(data.val))]
                        if old:
                            runs.setdefault((m, b), {})[s] = old[-1]
                            continue
                    r = finetune(m, b, data, max_epochs, s, cfg=cfg, pretrained=pre, store=store, progress=False,
                                 stop_at_loss=target_of[m], min_epochs=args.probe_epochs, extra_epochs=args.extra)
                    runs.setdefault((m, b), {})[s] = r
                    print(f"[{time.perf_counter() - t0:6.0f}s] {m} {b}-bit seed {s}: K={k_str(r.epochs_to(target_of[m]))} "
                          f"(target {target_of[m]:.4f}) losses {[round(v, 3) for v in r.val_losses]}",
                          file=sys.stderr, flush=True)

    # --- held-out evaluation ---------------------------------------------------------------
    rows, per_run = [], []
    for (m, b), by_seed in runs.items():
        target = target_of[m]
        seeds = sorted(by_seed)
        actual = {s: by_seed[s].epochs_to(target) for s in seeds}
        preds = {"probe": {}, "store": {}}
        for i, s in enumerate(seeds):
            others = [o for o in seeds if o != s]
            probe_seed = seeds[(i + 1) % len(seeds)]
            probe = by_seed[probe_seed].val_losses[: args.probe_epochs]
            preds["probe"][s] = estimate_from_probe(probe, target, seed=s)
            preds["store"][s] = estimate_from_runs([by_seed[o].val_losses for o in others], target)
            for name in preds:
                e = preds[name][s]
                per_run.append({"model": m, "bits": b, "seed": s, "estimator": name, "K": actual[s],
                                "K_exp": e.expected, "K_rob": e.robust})
        finite = [k for k in actual.values() if k is not None]
        row = {"model": m, "bits": b, "target_loss": round(target, 4),
               "L_a": round(statistics.mean(r.base_loss for r in by_seed.values()), 4),
               "start_loss": round(statistics.mean(r.start_loss for r in by_seed.values()), 4),
               "train_wall_s": round(sum(r.wall_s or 0.0 for r in by_seed.values()), 1),
               "K": actual, "K_mean": statistics.mean(finite) if finite else None,
               "K_std": statistics.pstdev(finite) if len(finite) > 1 else 0.0 if finite else None,
               "reached": f"{len(finite)}/{len(actual)}"}
        for name in preds:
            ex = [p.expected for p in preds[name].values()]
            rb = [p.robust for p in preds[name].values()]
            row[f"{name}_K_exp"] = ex
            row[f"{name}_K_rob"] = rb
        rows.append(row)

    def metrics(name):
        rel, cover, exact_inf, n = [], 0, 0, 0
        margins, rob_eq_exp = [], 0
        for pr in per_run:
            if pr["estimator"] != name:
                continue
            n += 1
            k, ke, kr = pr["K"], pr["K_exp"], pr["K_rob"]
            rob_eq_exp += ke is not None and kr == ke
            if k is not None and kr is not None:
                margins.append(kr - k)
            if k is None:
                exact_inf += ke is None
                rel.append(0.0 if ke is None else 1.0)  # predicting finite for an unreachable run: 100 % off
                cover += kr is None
            else:
                rel.append(1.0 if ke is None else abs(ke - k) / k)
                cover += kr is None or kr >= k
        return {"runs": n, "median_rel_error_K_exp": round(statistics.median(rel), 4) if rel else None,
                "share_K_rob_ge_K": round(cover / n, 4) if n else None,
                # K^rob − K over runs where both are finite (the price of robustness, in epochs)
                "mean_K_rob_minus_K": round(statistics.mean(margins), 2) if margins else None,
                "runs_K_rob_eq_K_exp": rob_eq_exp,
                "target_median_rel_error": 0.10, "target_share": 0.90}

    result = {"quick": args.quick, "data": args.data, "dataset": args.dataset, "train_size": len(data.train),
              "val_size": len(data.val), "max_epochs": max_epochs, "probe_epochs": args.probe_epochs,
              "seeds": args.seeds, "threads": args.threads, "store": str(store_path),
              "wall_s": round(time.perf_counter() - t0, 1),
              "train_wall_s": round(sum(row["train_wall_s"] for row in rows), 1), "reused": args.reuse,
              "metrics": {"probe": metrics("probe"), "store": metrics("store")},
              "table": rows, "runs": per_run}
    md = markdown(result)
    result["markdown"] = md
    if args.markdown:
        Path(args.markdown).write_text(md)
    print(json.dumps(result, indent=1, default=str))
    return 0


def _avg(xs):
    if any(x is None for x in xs):
        fin = [x for x in xs if x is not None]
        return "∞" if not fin else f"{statistics.mean(fin):.0f}/∞"
    return f"{statistics.mean(xs):.0f}"


def markdown(res) -> str:
    lines = ["| L_max | model | L_a | π_q | K (mean ± std) | reached | K^exp probe | K^rob probe | K^exp store | K^rob store |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["table"]:
        k = "∞" if r["K_mean"] is None else f"{r['K_mean']:.1f} ± {r['K_std']:.1f}"
        lines.append(f"| {r['target_loss']:.4f} | {r['model']} | {r['L_a']:.4f} | {r['bits']}-bit | {k} | {r['reached']} | "
                     f"{_avg(r['probe_K_exp'])} | {_avg(r['probe_K_rob'])} | {_avg(r['store_K_exp'])} | {_avg(r['store_K_rob'])} |")
    lines.append("")
    for name, mt in res["metrics"].items():
        lines.append(f"- **{name}**: median |K^exp − K|/K = {mt['median_rel_error_K_exp']} (target ≤ 0.10); "
                     f"K^rob ≥ K in {mt['share_K_rob_ge_K']:.0%} of {mt['runs']} runs (target ≥ 90 %); "
                     f"mean K^rob − K = {mt['mean_K_rob_minus_K']} epochs; K^rob = K^exp in {mt['runs_K_rob_eq_K_exp']} runs")
    lines.append(f"- {len(res['runs']) // 2} runs, {res['train_size']}+{res['val_size']} images ({res['data']}), "
                 f"≤ {res['max_epochs']} epochs, probe {res['probe_epochs']} epochs, wall {res['wall_s']:.0f} s "
                 f"(fine-tuning {res['train_wall_s']:.0f} s{', runs reused from the store' if res['reused'] else ''}) "
                 f"on {res['threads']} threads")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
