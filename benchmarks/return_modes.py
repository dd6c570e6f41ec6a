"""Which return trip lets the cloud's master keep the worker's sub-step updates? (prints JSON)

For LeNet (CPU width) on Fashion-MNIST Data 1, fine-tunes at each bit-width with each
``TrainConfig.return_mode`` and reports the validation-loss curve, the best loss and the bytes
of one epoch's down and up trips. Usage: ``python benchmarks/return_modes.py [--epochs 10]``.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch


def main(argv=None) -> int:
    from jqodi.core.data import end_device_data
    from jqodi.core.codec import RETURN_MODES
    from jqodi.core.pretrained import load_pretrained
    from jqodi.core.training import TrainConfig
    from jqodi.learning.reference import finetune

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--bits", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--modes", nargs="+", default=list(RETURN_MODES))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--optimizer", default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = end_device_data("data1", "fashion-mnist")
    pre = load_pretrained(args.model, "fashion-mnist", progress=False)
    rows = []
    for bits in args.bits:
        for mode in args.modes:
            for seed in args.seeds:
                kw = {"return_mode": mode}
                if args.lr is not None:
                    kw["lr"] = args.lr
                if args.optimizer is not None:
                    kw["optimizer"] = args.optimizer
                cfg = TrainConfig(**kw)
                r = finetune(args.model, bits, data, args.epochs, seed, cfg=cfg, pretrained=pre, progress=False)
                rows.append({"bits": bits, "mode": mode, "seed": seed, "lr": cfg.lr, "optimizer": cfg.optimizer,
                             "start_loss": round(r.start_loss, 4),
                             "val_loss": [round(v, 4) for v in r.val_losses],
                             "best_val_loss": round(min(r.val_losses), 4),
                             "final_val_loss": round(r.val_losses[-1], 4),
                             "final_val_accuracy": round(r.epochs[-1].val_accuracy, 4),
                             "bytes_down": r.epochs[0].bytes_down, "bytes_up": r.epochs[0].bytes_up})
                print(json.dumps(rows[-1]), file=sys.stderr)
    print(json.dumps({"model": args.model, "epochs": args.epochs, "runs": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
