"""``jqodi profile``: per-block FLOPs, parameters, bytes at q bits and cut-layer sizes of a model."""
from __future__ import annotations

import argparse
import json

from jqodi.errors import ModelError

HELP = ("profile a model: per-block forward FLOPs, parameters, bytes at q bits, activations at each cut "
        "(stored under $JQODI_HOME/profiles; --refresh recomputes)")


def _shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().replace("×", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"input shape must look like 3x32x32, got {text!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"input shape must be CxHxW with positive sizes, got {text!r}")
    return shape  # type: ignore[return-value]


def _bits(text: str) -> list[int]:
    try:
        bits = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bits must be a comma list like 2,4,8,32, got {text!r}") from None
    if not bits or any(b not in set(range(1, 9)) | {32} for b in bits):
        raise argparse.ArgumentTypeError(f"bit-widths must be among 1..8 and 32, got {text!r}")
    return list(dict.fromkeys(bits))  # "8,8" sizes the blocks at 8 bits once


def add_arguments(p: argparse.ArgumentParser) -> None:
    from jqodi.cli import _types as t

    p.add_argument("--model", default="lenet", help="registered model name (lenet, vgg, resnet20, ...)")
    p.add_argument("--input", type=_shape, default=(3, 32, 32), metavar="CxHxW",
                   help="input shape of one sample (default 3x32x32; Fashion-MNIST is 1x28x28)")
    p.add_argument("--classes", type=t.int_at_least(2), default=10, help="number of classes (default 10)")
    p.add_argument("--width", type=t.width, default=1.0, help="width multiplier in (0, 16] (default 1.0 = paper size)")
    p.add_argument("--bits", type=_bits, default=[1, 2, 4, 6, 8, 32], metavar="LIST",
                   help="bit-widths to size the blocks at (default 1,2,4,6,8,32)")
    p.add_argument("--act-bits", type=t.int_at_least(1), default=8, help="bits per activation element at the cuts (default 8)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--refresh", action="store_true",
                   help="recompute the profile with torch and overwrite the one stored in $JQODI_HOME/profiles "
                        "(stored profiles are otherwise reused while the model's code is unchanged)")


def run(args: argparse.Namespace) -> int:
    from jqodi.render.tables import format_table, human_bytes, si
    from jqodi.core.profile import profile_named_model

    if not 1 <= args.act_bits <= 32:
        raise ModelError(f"--act-bits must be within 1..32, got {args.act_bits}")
    prof = profile_named_model(args.model, args.input, args.classes, args.width, refresh=args.refresh)
    if args.json:
        print(json.dumps(prof.to_dict(args.bits, args.act_bits), indent=2))
        return 0
    shape = "x".join(map(str, prof.input_shape))
    print(f"{prof.model}  input {shape}  classes {prof.num_classes}  width {prof.width:g}: "
          f"{si(prof.flops, 'FLOP')} forward per sample, {prof.params:,} parameters")
    rows = []
    for b in prof.blocks:
        rows.append([b.index, b.name, si(b.flops), f"{b.params:,}",
                     *[human_bytes(b.bytes_at(q)) for q in args.bits], "x".join(map(str, b.out_shape))])
    rows.append(["", "total", si(prof.flops), f"{prof.params:,}",
                 *[human_bytes(prof.bytes_at(q)) for q in args.bits], ""])
    print(format_table(["block", "name", "FLOPs", "params", *[f"{q}-bit" for q in args.bits], "output"], rows))
    print()
    cut_rows = [[j, f"{prof.act_elements(j):,}", human_bytes(prof.act_bytes(j, args.act_bits)),
                 human_bytes(prof.act_bytes(j, 32)),
                 si(sum(b.flops for b in prof.blocks[:j])), si(sum(b.flops for b in prof.blocks[j:]))]
                for j in prof.cuts]
    print(format_table(["cut", "act elements", f"act {args.act_bits}-bit", "act fp32", "SD FLOPs", "ES FLOPs"],
                       cut_rows))
    if prof.uncounted:
        print(f"\nnot counted (unknown leaf modules): {', '.join(prof.uncounted)}")
    return 0
