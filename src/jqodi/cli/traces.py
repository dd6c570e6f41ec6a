"""``jqodi traces``: list and export the runs in the trace store (fine-tuning, probes and the runtime's),
and import an export back (``--import FILE``: merge another machine's traces, rebuild a library)."""
from __future__ import annotations

import sys
from pathlib import Path

HELP = "list, export (table, CSV or JSON) and import fine-tuning traces, the runtime's runs included"


def add_arguments(p) -> None:
    from jqodi.cli import _types as t
    from jqodi.cli._learning_common import add_store_argument

    add_store_argument(p)
    p.add_argument("--model", default=None)
    p.add_argument("--bits", type=t.bits, default=None)
    p.add_argument("--dataset", default=None, help="the cloud's dataset: fashion-mnist, cifar10, cifar100 or a path")
    p.add_argument("--data", default=None, help="the end device's data: data1, data2 or the path of your own")
    p.add_argument("--source", default=None, help="finetune, probe or runtime (a run of a plan)")
    p.add_argument("--job", default=None, metavar="ID", help="the runtime run of this job id")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="table (runs), csv (one row per epoch) or json (runs with epochs)")
    p.add_argument("--json", action="store_true", help="same as --format json")
    p.add_argument("--output", "-o", default=None, help="write to this file instead of stdout (gzip'd if it ends in .gz)")
    p.add_argument("--import", dest="import_file", default=None, metavar="FILE",
                   help="add the runs of FILE (what --format json wrote, or .json.gz) to the store; "
                        "runs already there are not added again")


def run(args) -> int:
    from jqodi.cli._learning_common import fmt, table
    from jqodi.errors import TraceStoreError
    from jqodi.core.paths import default_store_path
    from jqodi.core.traces import TraceStore

    path = Path(args.store) if args.store else default_store_path()
    if args.import_file:
        return _import(args, path)
    if not path.exists():
        raise TraceStoreError(f"no trace store at {path} (run 'jqodi finetune' first, or pass --store)")
    from jqodi.core.data import canonical_data_name, canonical_dataset
    from jqodi.core.data.catalog import data_label

    # as the store names them: a dataset by its canonical name (cifar-10 is cifar10), your own data
    # by its absolute path however it was written
    with TraceStore(path) as store:
        runs = store.runs(model=args.model, bits=args.bits,
                          dataset=None if args.dataset is None else canonical_dataset(args.dataset),
                          data_name=None if args.data is None else canonical_data_name(args.data),
                          source=args.source, job_id=args.job)
    fmt_ = "json" if args.json else args.format
    if fmt_ == "csv":
        text = TraceStore.to_csv(runs)
    elif fmt_ == "json":
        text = TraceStore.to_json(runs) + "\n"
    else:
        rows = [[r.id, r.created_utc, r.model, r.bits, data_label(r.data_name, r.dataset), r.train_size, r.seed,
                 fmt(r.base_loss), fmt(r.start_loss), fmt(r.gamma), r.epochs_run,
                 fmt(min(r.val_losses)) if r.epochs else "-", r.source, r.job_id or "-"] for r in runs]
        text = table(rows, ["id", "created", "model", "bits", "data", "train", "seed", "L_a", "start",
                            "gamma", "epochs", "best val", "source", "job"]) + f"\n{len(runs)} run(s) in {path}"
        no_epoch = sum(1 for r in runs if not r.epochs)
        if no_epoch:  # a run stopped before its first epoch (older versions stored one): not corrupt, not used
            text += f" ({no_epoch} recorded no epoch: stopped before its first; the estimators leave them out)"
        text += "\n"
    if args.output:
        if args.output.endswith(".gz"):  # gzip'd, reproducible (no name or time in the header)
            import gzip

            Path(args.output).write_bytes(gzip.compress(text.encode(), mtime=0))
        else:
            Path(args.output).write_text(text)
        print(f"wrote {len(runs)} run(s) to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _import(args, path: Path) -> int:
    from jqodi.core.traces import TraceStore, import_runs, read_export
    from jqodi.errors import JqodiError

    listing = [f"--{k}" for k in ("model", "bits", "dataset", "data", "source", "job", "output")
               if getattr(args, k, None) is not None] + (["--format"] if args.json or args.format != "table" else [])
    if listing:
        raise JqodiError(f"--import adds every run of the file; {', '.join(listing)} only apply to listing")
    export = read_export(args.import_file)  # a file that is not an export: one line, exit 2, store untouched
    with TraceStore(path) as store:
        counts = import_runs(store, export)
        total = store.count()
    print(f"imported {args.import_file}: {counts.text()}; {total} run(s) in {path}")
    return 0
