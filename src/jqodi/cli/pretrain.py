"""``jqodi pretrain``: train the zoo models on the cloud dataset and cache the checkpoints."""
from __future__ import annotations

import json

HELP = "pretrain zoo models on the cloud dataset (cached checkpoints, the paper's 'fully trained in the cloud')"


def add_arguments(p) -> None:
    from jqodi.cli import _types as t

    p.add_argument("--models", nargs="+", default=["lenet", "vgg", "resnet20"], help="zoo models to pretrain")
    p.add_argument("--dataset", default="fashion-mnist", help="cloud dataset: fashion-mnist, cifar10, cifar100, or the path of your own image folder "
                        "(one sub-folder per class) or .npz file")
    p.add_argument("--data-dir", default=None, help="folder holding the dataset files")
    p.add_argument("--width", type=t.width, default=None,
                   help="width multiplier (default: CPU scale, lenet 0.25, vgg 0.125, resnet20 0.5; 1 = paper)")
    p.add_argument("--epochs", type=t.positive_int, default=None, help="pretraining epochs (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="pretrain again even if a checkpoint is cached")
    p.add_argument("--threads", type=t.positive_int, default=None,
                   help="torch CPU threads (default: $JQODI_THREADS, else every usable core)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args) -> int:
    from jqodi.cli._learning_common import fmt, table
    from jqodi.core.quant import model_size_bytes
    from jqodi.core.pretrained import DEFAULT_PRETRAIN_EPOCHS, load_pretrained
    from jqodi.core.zoo import get_spec

    from jqodi.cli._learning_common import set_verb_threads

    set_verb_threads(args)
    for m in args.models:
        get_spec(m)  # unknown model -> ModelError before any work
    epochs = DEFAULT_PRETRAIN_EPOCHS if args.epochs is None else args.epochs
    rows, out = [], []
    for m in args.models:
        pre = load_pretrained(m, args.dataset, args.width, epochs=epochs, seed=args.seed, data_dir=args.data_dir,
                              progress=not args.quiet and None, force=args.force)
        n_params = sum(p.numel() for p in pre.model.parameters())
        rec = {"model": m, "dataset": pre.meta["dataset"], "width": pre.meta["width"], "epochs": pre.meta["epochs"],
               "params": n_params, "bytes_fp32": model_size_bytes(pre.model, 32),
               "cloud_val_loss": pre.meta["cloud_val_loss"], "cloud_val_accuracy": pre.meta["cloud_val_accuracy"],
               "pretrain_wall_s": pre.meta["wall_s"], "path": str(pre.path)}
        out.append(rec)
        rows.append([m, rec["width"], rec["epochs"], n_params, rec["bytes_fp32"], fmt(rec["cloud_val_loss"]),
                     f"{rec['cloud_val_accuracy']:.1%}", f"{rec['pretrain_wall_s']:.0f}", rec["path"]])
    if args.json:
        print(json.dumps({"pretrained": out}, indent=2))
    else:
        print(table(rows, ["model", "width", "epochs", "params", "bytes(fp32)", "cloud val loss", "acc",
                           "train s", "checkpoint"]))
    return 0
