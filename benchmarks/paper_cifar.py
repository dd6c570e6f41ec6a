"""The paper's Data 1 evaluation on real CIFAR-10: Table VI measured, then planned (prints JSON).

One resumable command. For each model × bits {1, 2, 4, 6, 8, fp32} × seed it fine-tunes the
cloud-pretrained model on Data 1 (2,000 + 500 images of the CIFAR-10 test batch; the cloud
pretrains on the training batches present, cached in $JQODI_HOME/pretrained) until the training
loss reaches L_max or N epochs, then builds Table VI (K mean ± std, K^exp/K^rob of the probe and
store estimators held out, γ measured) beside the paper's, checks Observation 2, writes the
measured estimates and plans the paper's testbed (examples/paper-data1.yaml, fitted device files)
with them: every strategy beside Fig. 7(c), and Table V with planning energy. What L_max refers to,
the widths and the JSON files: docs/evaluation-cifar.md; the code: jqodi.app.measured.

    PYTHONPATH=src .venv/bin/python benchmarks/paper_cifar.py --quick   # ≤ 10 min: LeNet, L_max 0.5, ≤ 8 epochs
    PYTHONPATH=src .venv/bin/python benchmarks/paper_cifar.py           # full: 3 models, L_max 0.02, ≤ 60 epochs

Every finished run is a JSON file under OUT/runs/; running the command again skips them (kill it
any time and start it again). ``--rescore`` trains nothing: it scores the estimators again from
the saved runs' curves (after a change to an estimator), re-derives the deployment's estimates and
re-plans, and keeps JQODI's plan run (run.json) as it was unless ``--run-epochs`` is given.
``--jobs 2`` trains two runs at once (one thread each). Progress
(one line per epoch and per run, with the ETA of the whole job) goes to stderr; the summary JSON
to stdout and OUT/summary.json. The dataset folder: --data-dir, else $JQODI_CIFAR_DIR, else
../shared/datasets/cifar-10-batches-py beside the repository.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "cifar-10-batches-py"

#: full mode: the widths the 2-hour CPU budget allows (docs/evaluation-cifar.md, "Widths")
FULL_WIDTHS = {"lenet": 0.25, "resnet20": 0.25, "vgg": 0.125}
QUICK_WIDTHS = {"lenet": 0.25}


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _fmt_s(s: float) -> str:
    from jqodi.core.progress import format_duration

    return format_duration(s)


#: per worker process: the pretrained models and the SD's data, loaded once (not once per run)
_LOADED: dict = {}


def _worker(task: dict) -> dict:
    """One run in a worker process (also called in-process with --jobs 1)."""
    from jqodi.core.quant.heap import keep_freed_memory; keep_freed_memory()  # trains here (core/quant/heap.py)
    import torch

    from jqodi.app.measured import MeasureConfig, measure_run, run_path
    from jqodi.core.data import end_device_data
    from jqodi.core.pretrained import load_pretrained
    from jqodi.render.report import save_json

    torch.set_num_threads(task["threads"])
    cfg = MeasureConfig(**task["cfg"])
    m, b, s = task["model"], task["bits"], task["seed"]
    key = ("pre", m, cfg.widths[m], cfg.pretrain_epochs, cfg.data_dir)
    if key not in _LOADED:
        _LOADED[key] = load_pretrained(m, "cifar10", cfg.widths[m], epochs=cfg.pretrain_epochs,
                                       data_dir=cfg.data_dir, progress=task["progress"])
    pre = _LOADED[key]
    dkey = ("data", cfg.data, cfg.data_dir, cfg.train_size, cfg.val_size)
    if dkey not in _LOADED:
        _LOADED[dkey] = end_device_data(cfg.data, "cifar10", cfg.data_dir, cfg.train_size, cfg.val_size, seed=0)
    data = _LOADED[dkey]

    def on_epoch(ep: int, loss: float) -> None:
        if task["progress"]:
            _say(f"  {m} {'fp32' if b == 32 else f'{b}-bit'} seed {s}: epoch {ep} training loss {loss:.4f}")

    run = measure_run(m, b, s, cfg, pretrained=pre, data=data, on_epoch=on_epoch,
                      fp_cache=_LOADED.setdefault("fp32 losses", {}))
    save_json(run_path(task["out"], m, cfg.widths[m], b, s), run)
    return run


def _held_out_worker(runs: list, cfg: dict) -> list:
    """The held-out estimator predictions of one (model, bits) group, in a worker process."""
    from jqodi.app.measured import MeasureConfig, held_out_group

    return held_out_group(runs, MeasureConfig(**cfg))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="LeNet only, L_max 0.5, ≤ 8 epochs, probe 3 (≤ 10 min)")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results/paper_cifar[_quick])")
    ap.add_argument("--data-dir", default=None, help="the CIFAR-10 python batches' folder")
    ap.add_argument("--models", nargs="+", default=None, help="model=width or model (default width of the mode)")
    ap.add_argument("--bits", nargs="+", type=int, default=[1, 2, 4, 6, 8, 32])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--max-epochs", type=int, default=None, help="N: a run not at L_max after N epochs is ∞")
    ap.add_argument("--probe-epochs", type=int, default=None)
    ap.add_argument("--target", action="append", default=[], metavar="MODEL=LOSS", help="L_max of one model")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--jobs", type=int, default=1, help="runs trained at once (worker processes)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run (default 2 // jobs, ≥ 1)")
    ap.add_argument("--data", choices=("data1", "data2-shifted"), default="data1",
                    help="the SD's data: the paper's Data 1 (default) or the Data 2 analog (5000 + 1000 images, "
                         "docs/evaluation-cifar.md)")
    ap.add_argument("--scenario", default=None,
                    help="the testbed to plan with the measured estimates (default examples/paper-data1.yaml, "
                         "paper-data2.yaml with --data data2-shifted)")
    ap.add_argument("--run-epochs", type=int, default=None, metavar="N",
                    help="run only the first N epochs of JQODI's plan for real (default: quick 3, full all; 0: skip)")
    ap.add_argument("--deploy-estimator", choices=("store", "probe"), default="store",
                    help="the deployment's K^exp/K^rob for planning: the store estimator on the other seeds' curves "
                         "aligned to seed 0's probe (default), or the probe estimator on seed 0's probe alone")
    ap.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    ap.add_argument("--rescore", action="store_true",
                    help="train nothing: score the estimators, the deployment's estimates and the plan again from "
                         "the runs saved in OUT/runs (all must be there); run.json is kept unless --run-epochs is given")
    args = ap.parse_args(argv)

    from jqodi.app.measured import (MeasureConfig, estimator_metrics, measured_estimates, observation_2,
                                    plan_with_estimates, run_path, table_vi)
    from jqodi.core.data import load_cifar
    from jqodi.core.estimates import save_estimates
    from jqodi.errors import JqodiError
    from jqodi.render.report import save_json

    data_dir = args.data_dir or os.environ.get("JQODI_CIFAR_DIR") or str(DEFAULT_DATA)
    rerun_plan = not args.rescore or args.run_epochs is not None
    try:
        if rerun_plan:   # fail early, in one line, on a missing or bad dataset (a re-score needs none)
            load_cifar(data_dir, "test")
            load_cifar(data_dir, "train")
    except JqodiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    widths = dict(QUICK_WIDTHS if args.quick else FULL_WIDTHS)
    if args.models:
        widths = {}
        for item in args.models:
            name, _, w = item.partition("=")
            widths[name] = float(w) if w else (QUICK_WIDTHS | FULL_WIDTHS).get(name, 1.0)
    default_target = 0.5 if args.quick else 0.02
    targets = {m: default_target for m in widths}
    for item in args.target:
        name, _, v = item.partition("=")
        targets[name] = float(v)
    cfg = MeasureConfig(widths=widths, bits=tuple(args.bits), seeds=tuple(args.seeds), target_loss=targets,
                        max_epochs=args.max_epochs or (8 if args.quick else 60),
                        probe_epochs=args.probe_epochs or (3 if args.quick else 5), lr=args.lr,
                        data_dir=data_dir, data=args.data,
                        train_size=2000 if args.data == "data1" else 5000,
                        val_size=500 if args.data == "data1" else 1000)
    paper_key = "data1" if args.data == "data1" else "data2"
    scenario = args.scenario or str(ROOT / "examples" / f"paper-{paper_key}.yaml")
    stem = "paper_cifar" + ("" if args.data == "data1" else "_data2") + ("_quick" if args.quick else "")
    out = Path(args.out or ROOT / "benchmarks" / "results" / stem)
    out.mkdir(parents=True, exist_ok=True)
    threads = args.threads or max(1, 2 // max(1, args.jobs))
    t0 = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    # pretraining first, in this process (cached; later runs and workers load the checkpoint)
    from jqodi.core.pretrained import load_pretrained
    import torch

    torch.set_num_threads(threads)
    if not args.rescore:   # a re-score loads no model
        for m, w in widths.items():
            load_pretrained(m, "cifar10", w, epochs=cfg.pretrain_epochs, data_dir=data_dir, progress=not args.quiet)
    t_pre = time.perf_counter() - t0

    tasks, done = [], []
    for m in widths:
        for b in cfg.bits:
            for s in cfg.seeds:
                p = run_path(out, m, widths[m], b, s)
                if p.is_file():
                    run = json.loads(p.read_text())
                    if run.get("max_epochs") == cfg.max_epochs and run.get("target_loss") == cfg.target(m) \
                            and run.get("lr") == cfg.lr:
                        done.append(run)
                        continue
                tasks.append({"model": m, "bits": b, "seed": s, "cfg": cfg.to_dict(), "out": str(out),
                              "threads": threads, "progress": not args.quiet})
    if args.rescore and tasks:
        print(f"error: --rescore: {len(tasks)} run(s) of this configuration are not saved in {out}/runs "
              f"(first: {run_path(out, tasks[0]['model'], widths[tasks[0]['model']], tasks[0]['bits'], tasks[0]['seed'])})",
              file=sys.stderr)
        return 2
    n_all = len(tasks) + len(done)
    _say(f"paper_cifar: {n_all} runs ({len(done)} already done in {out}/runs), {len(widths)} model(s) "
         f"{widths}, bits {list(cfg.bits)}, seeds {list(cfg.seeds)}, L_max {targets}, ≤ {cfg.max_epochs} epochs; "
         f"{args.jobs} job(s) × {threads} thread(s)")
    t_runs = time.perf_counter()
    finished_s: list[float] = []

    def report(run: dict) -> None:
        done.append(run)
        finished_s.append(run["wall_s"])
        left = n_all - len(done)
        eta = statistics.mean(finished_s) * left / max(1, args.jobs)
        bits = "fp32" if run["bits"] == 32 else f"{run['bits']}-bit"
        k = "∞" if run["K"] is None else run["K"]
        _say(f"[{len(done)}/{n_all}] {run['model']} {bits} seed {run['seed']}: K={k} "
             f"({run['epochs_run']} epochs, {run['wall_s']:.0f} s); elapsed {_fmt_s(time.perf_counter() - t0)}, "
             f"ETA {_fmt_s(eta)}")

    held_out: dict = {}
    if args.jobs <= 1:
        for t in tasks:
            report(_worker(t))
    else:
        # the held-out estimators of each (model, bits) group run in the pool too, as soon as the
        # group's seeds are done (the tail's CPU is mostly these bootstrapped probe fits)
        import multiprocessing as mp

        def group_of(run: dict) -> list[dict]:
            return [r for r in done if (r["model"], r["bits"]) == (run["model"], run["bits"])]

        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            futs = [pool.submit(_worker, t) for t in tasks]
            groups: dict = {}

            def submit_group(run: dict) -> None:
                key = (run["model"], run["bits"])
                rs = group_of(run)
                if key not in groups and len(rs) == len(cfg.seeds):
                    groups[key] = pool.submit(_held_out_worker, rs, cfg.to_dict())

            for run in list(done):
                submit_group(run)
            for f in as_completed(futs):
                run = f.result()
                report(run)
                submit_group(run)
            held_out = {k: f.result() for k, f in groups.items()}
    t_runs = time.perf_counter() - t_runs

    rows = table_vi(done, cfg, held_out=held_out)
    metrics = estimator_metrics(rows)
    # the same, only over runs that reached L_max (an ∞ answer for a run that never did is exact,
    # and at a hard target those dominate the median above)
    metrics_reached = estimator_metrics([{**r, "held_out": [h for h in r["held_out"] if h["K"] is not None]}
                                         for r in rows])
    obs2 = observation_2(rows)
    estimates = measured_estimates(rows, done, cfg, source=args.deploy_estimator)
    save_estimates(out / "estimates.json", estimates)
    _say(f"planning the paper's testbed ({scenario}) with the measured estimates …")
    plan = plan_with_estimates(scenario, estimates, max(targets.values()),
                               progress=None if args.quiet else _say, paper_key=paper_key,
                               out_dir=out / "evaluation")
    save_json(out / "plan.json", plan)
    run_epochs = args.run_epochs if args.run_epochs is not None else (3 if args.quick else None)
    measured_run = None
    previous = json.loads((out / "summary.json").read_text()) if args.rescore and (out / "summary.json").is_file() else {}
    if not rerun_plan:   # --rescore: the plan run as it was (made with the estimates before the re-score)
        if (out / "run.json").is_file():
            measured_run = json.loads((out / "run.json").read_text())
            measured_run["note"] = ("run before the re-score, with the estimates then "
                                    "(its plan: plan.epochs, the K^rob it was planned with)")
    elif run_epochs != 0:
        from jqodi.app.measured import run_measured_plan

        _say("running JQODI's plan for real (emulated testbed, every role a local process) …")
        t_run = time.perf_counter()
        try:
            measured_run = run_measured_plan(scenario, estimates, cfg, out / "run", max_epochs=run_epochs,
                                             progress=not args.quiet, say=_say)
        except JqodiError as e:   # e.g. no candidate reaches L_max by the estimates: said, not a crash
            _say(f"the plan was not run: {e}"[:400])
            measured_run = {"status": "not run", "why": str(e)}
        measured_run["wall_s"] = time.perf_counter() - t_run
        save_json(out / "run.json", measured_run)
    timing = {"jobs": args.jobs, "threads_per_job": threads, "load_average_1min_at_start": load,
              "wall_s": time.perf_counter() - t0, "pretrain_wall_s": t_pre, "runs_wall_s": t_runs,
              "runs_trained_now": len(tasks)}
    if args.rescore:   # the timings are the training run's; the re-score's own go beside them
        timing = {**{k: previous.get(k, v) for k, v in timing.items()}, "rescored": {
            **timing, "estimators_before": previous.get("estimators"),
            "estimators_reached_runs_before": previous.get("estimators_reached_runs"),
            "run_kept": measured_run is not None and not rerun_plan}}
    summary = {"quick": args.quick, "config": cfg.to_dict(), **timing,
               "table_vi": rows, "estimators": metrics, "estimators_reached_runs": metrics_reached,
               "observation_2": obs2,
               "table_v": plan["table_v"], "fig7c": plan["comparison"], "run": measured_run,
               "files": {"runs": str(out / "runs"), "estimates": str(out / "estimates.json"),
                         "plan": str(out / "plan.json"), "evaluation": str(out / "evaluation"),
                         "summary": str(out / "summary.json"),
                         "run": str(out / "run.json") if measured_run else None,
                         "markdown": str(out / "tables.md")}}
    from jqodi.render.measured import measured_markdown

    md = measured_markdown(summary)
    (out / "tables.md").write_text(md)
    save_json(out / "summary.json", summary)
    _say(md)
    print(json.dumps({k: v for k, v in summary.items() if k != "table_vi"}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
