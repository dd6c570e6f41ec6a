"""``jqodi finetune``: quantization-aware fine-tuning of a pretrained model on the SD's data."""
from __future__ import annotations

import json

HELP = "fine-tune a cloud-pretrained model at q bits on the end device's data (recorded in the trace store)"


def add_arguments(p) -> None:
    from jqodi.cli import _types as t
    from jqodi.cli._learning_common import add_data_arguments, add_store_argument

    p.add_argument("--model", required=True, help="registered model: lenet, vgg, resnet20, or one a plugin adds")
    p.add_argument("--bits", type=t.bits, required=True, help="weight bit-width 1..8, or 32 (no quantization)")
    p.add_argument("--epochs", type=t.positive_int, default=20)
    p.add_argument("--seed", type=int, default=0, help="seed of the batch order and stochastic rounding")
    add_data_arguments(p)
    p.add_argument("--width", type=t.width, default=None, help="width multiplier (default: CPU scale)")
    p.add_argument("--pretrain-epochs", type=t.positive_int, default=None, help="epochs of the cached cloud model (default 4)")
    p.add_argument("--lr", type=t.positive_float, default=None)
    p.add_argument("--batch-size", type=t.int_at_least(2), default=None)
    p.add_argument("--optimizer", choices=["adam", "sgd"], default=None)
    p.add_argument("--act-bits", type=t.int_at_least(1), default=None, help="activation bit-width (default 8; 32 = off)")
    p.add_argument("--return-mode", default=None, choices=["codes", "stochastic", "delta-fp16", "latent"],
                   help="what the return trip carries (default stochastic q-bit codes)")
    p.add_argument("--target-loss", type=t.positive_float, default=None, help="stop once the validation loss is ≤ this")
    add_store_argument(p)
    p.add_argument("--no-store", action="store_true", help="do not record the run")
    p.add_argument("--threads", type=t.positive_int, default=None,
                   help="torch CPU threads (default: $JQODI_THREADS, else every usable core)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--json", action="store_true", help="print the run as JSON")


def run(args) -> int:
    import dataclasses

    from jqodi.cli._learning_common import fmt, table
    from jqodi.core.data import end_device_data
    from jqodi.core.traces import TraceStore
    from jqodi.core.quant import check_bits
    from jqodi.core.pretrained import DEFAULT_PRETRAIN_EPOCHS
    from jqodi.core.training import TrainConfig
    from jqodi.learning.reference import finetune
    from jqodi.core.zoo import get_spec

    from jqodi.cli._learning_common import set_verb_threads

    set_verb_threads(args)
    get_spec(args.model)
    check_bits(args.bits)
    overrides = {k: v for k, v in {"lr": args.lr, "batch_size": args.batch_size, "optimizer": args.optimizer,
                                   "act_bits": args.act_bits, "return_mode": args.return_mode}.items()
                 if v is not None}
    cfg = dataclasses.replace(TrainConfig(), **overrides)
    data = end_device_data(args.data, args.dataset, args.data_dir, args.train_size, args.val_size, args.data_seed)
    store = None if args.no_store else TraceStore(args.store)
    try:
        r = finetune(args.model, args.bits, data, args.epochs, args.seed, width=args.width, cfg=cfg, store=store,
                     progress=False if args.quiet else None, stop_at_loss=args.target_loss,
                     data_dir=args.data_dir,
                     pretrain_epochs=args.pretrain_epochs or DEFAULT_PRETRAIN_EPOCHS)
    finally:
        if store is not None:
            store.close()
    if args.json:
        print(json.dumps(r.to_dict(), indent=1))
        return 0
    from jqodi.core.data.catalog import data_label

    print(f"{r.model} {r.bits}-bit (width {r.width:g}) on {data_label(r.data_name, r.dataset)} "
          f"({r.train_size} train, {r.val_size} val), seed {r.seed}")
    print(f"L_a {r.base_loss:.4f} (acc {r.base_accuracy:.1%}); quantized {r.start_loss:.4f} "
          f"(acc {r.start_accuracy:.1%}); gamma {r.gamma:+.4f} (robust {r.gamma_robust:+.4f})")
    rows = [[e.epoch, fmt(e.train_loss), fmt(e.val_loss), f"{e.val_accuracy:.1%}", f"{e.wall_s:.1f}",
             e.bytes_down, e.bytes_up] for e in r.epochs]
    print(table(rows, ["epoch", "train loss", "val loss", "val acc", "s", "bytes down", "bytes up"]))
    where = f"run {r.id} in {store.path}" if store is not None else "not recorded (--no-store)"
    print(f"{len(r.epochs)} epochs in {r.wall_s:.1f}s; {where}")
    return 0
