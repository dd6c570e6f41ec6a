"""``jqodi estimate``: measured learning estimates (L_a, γ, K^exp, K^rob) per (model, bits)."""
from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

HELP = "estimate gamma, K^exp and K^rob per (model, bits) for a target loss (Table VI) and write them for 'jqodi instance --estimates'"


def add_arguments(p) -> None:
    from jqodi.cli import _types as t
    from jqodi.cli._learning_common import add_data_arguments, add_store_argument

    p.add_argument("--target-loss", type=t.positive_float, required=True, help="L_max: the validation loss to reach")
    p.add_argument("--models", nargs="+", default=["lenet", "vgg", "resnet20"])
    p.add_argument("--bits", nargs="+", type=t.bits, default=[2, 4, 6, 8])
    add_data_arguments(p)
    p.add_argument("--method", choices=["auto", "probe", "store"], default="auto",
                   help="auto: prior runs of the candidate in the store when there are any (a stored probe, or a run "
                        "that stopped at a target above the asked one, is censored: a curve cut short above the "
                        "target says only that K is later), else a "
                        "probe combined with the prior learned from every stored run")
    # default None: the parser must not import the learning layer (numpy) just to list choices
    p.add_argument("--probe-epochs", type=t.positive_int, default=None,
                   help="epochs of a probe run (1..5; default learning.estimate.DEFAULT_PROBE_EPOCHS = 5, "
                        "chosen on the held-out benchmark, docs/learning.md)")
    p.add_argument("--seed", type=int, default=0, help="seed of probe runs")
    p.add_argument("--width", type=t.width, default=None, help="width multiplier (default: CPU scale)")
    p.add_argument("--pretrain-epochs", type=t.positive_int, default=None,
                   help="epochs of the cached cloud model (default 4), as for 'jqodi finetune'")
    add_store_argument(p)
    p.add_argument("--out", "-o", default=None, metavar="FILE",
                   help="where to write the estimates (JSON); default $JQODI_HOME/estimates/"
                        "<dataset>_<data>_<models>_L<target>.json (the path is printed)")
    p.add_argument("--check", metavar="FILE", default=None,
                   help="only check that estimates FILE describes the pretrained model and data these options "
                        "name (exit 2 if not)")
    p.add_argument("--allow-estimate-mismatch", action="store_true",
                   help="with --check: report a mismatch as a note instead of refusing")
    p.add_argument("--threads", type=t.positive_int, default=None,
                   help="torch CPU threads (default: $JQODI_THREADS, else every usable core)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--json", action="store_true", help="print the estimates as JSON")


def run(args) -> int:
    from dataclasses import asdict

    from jqodi.cli._learning_common import fmt, table
    from jqodi.core.estimates import save_estimates
    from jqodi.core.quant import check_bits
    from jqodi.core.traces import TraceStore, skipped_text
    from jqodi.core.zoo import get_spec
    from jqodi.errors import JqodiError
    from jqodi.learning.estimate import DEFAULT_PROBE_EPOCHS, MAX_PROBE_EPOCHS

    if args.probe_epochs is None:
        args.probe_epochs = DEFAULT_PROBE_EPOCHS
    if not args.target_loss > 0:
        raise JqodiError(f"--target-loss must be > 0, got {args.target_loss}")
    if not 1 <= args.probe_epochs <= MAX_PROBE_EPOCHS:
        raise JqodiError(f"--probe-epochs must be in 1..{MAX_PROBE_EPOCHS}, got {args.probe_epochs}")
    if args.pretrain_epochs is not None and args.pretrain_epochs < 1:
        raise JqodiError(f"--pretrain-epochs must be ≥ 1, got {args.pretrain_epochs}")
    from pathlib import Path

    out = Path(args.out) if args.out is not None else default_out(args)
    args.out = str(out)
    if out.is_dir():
        raise JqodiError(f"--out: {out} is a folder; give a file name (e.g. {out / 'estimates.json'})")
    for m in args.models:
        get_spec(m)
    for b in args.bits:
        check_bits(b)
    from jqodi.cli._learning_common import set_verb_threads

    set_verb_threads(args)
    if args.check:
        return _check(args)
    from jqodi.core.data import end_device_data
    from jqodi.core.pretrained import DEFAULT_PRETRAIN_EPOCHS
    from jqodi.core.progress import format_duration
    from jqodi.learning.estimate import estimate_candidate
    from jqodi.learning.prior import CurvePrior

    data = None
    estimates = []
    todo = [(m, b) for m in args.models for b in args.bits]
    t0 = time.monotonic()
    with TraceStore(args.store) as store:
        prior = None
        if args.method != "store":
            prior = CurvePrior.from_store(store)
            if prior.skipped and not args.quiet:
                print(f"trace store {store.path}: left out {skipped_text(prior.skipped)}", file=sys.stderr)
        for i, (m, b) in enumerate(todo):
            if data is None and args.method != "store":
                data = end_device_data(args.data, args.dataset, args.data_dir, args.train_size,
                                       args.val_size, args.data_seed)
            d = data if data is not None else _DataKey(args)
            if not args.quiet:
                spent = time.monotonic() - t0
                eta = f", ETA {format_duration(spent / i * (len(todo) - i))} for the rest" if i else ""
                print(f"estimating {m} {b}-bit ({i + 1}/{len(todo)}{eta}) ...", file=sys.stderr)
            estimates.append(estimate_candidate(
                m, b, args.target_loss, d, store=store, method=args.method, probe_epochs=args.probe_epochs,
                seed=args.seed, width=args.width, progress=False if args.quiet else None, prior=prior,
                pretrain_epochs=args.pretrain_epochs or DEFAULT_PRETRAIN_EPOCHS, data_dir=args.data_dir))
    rows = [[fmt(e.target_loss), e.model, fmt(e.base_loss), f"{e.bits}-bit", fmt(e.gamma), fmt(e.gamma_robust),
             "∞" if e.epochs_expected is None else e.epochs_expected,
             "∞" if e.epochs_robust is None else e.epochs_robust, e.source] for e in estimates]
    header = ["L_max", "model", "L_a", "pi_q", "gamma", "gamma_rob", "K^exp", "K^rob", "source"]
    if args.json:
        print(json.dumps({"estimates": [asdict(e) for e in estimates]}, indent=2))
    else:
        print(table(rows, header))
    if not any(e.epochs_expected is not None for e in estimates):
        raise JqodiError(f"no candidate can reach target loss {args.target_loss}: every K estimate is ∞ "
                         f"(nothing written to {args.out}); raise --target-loss")
    try:
        save_estimates(out, estimates)
    except OSError as e:
        raise JqodiError(f"--out: cannot write {out}: {e.strerror or e}") from e
    print(f"wrote {len(estimates)} estimates to {out} (use: jqodi instance SCENARIO --estimates {out})",
          file=sys.stderr if args.json else sys.stdout)
    return 0


def default_out(args) -> "Path":
    """The estimates file without ``--out``: under ``$JQODI_HOME/estimates``, named after what the
    estimates depend on (the cloud dataset, the SD's data, the models and the target loss)."""
    import re
    from pathlib import Path

    from jqodi.core.paths import estimates_dir

    def part(x: str) -> str:
        return re.sub(r"[^A-Za-z0-9.+-]+", "-", Path(str(x)).name or str(x)).strip("-") or "data"

    name = f"{part(args.dataset)}_{part(args.data)}_{'+'.join(map(part, args.models))}_L{args.target_loss:g}.json"
    return estimates_dir() / name


def _check(args) -> int:
    """``--check FILE``: does FILE describe the models these options name? (one line, exit 2 if not)"""
    from jqodi.core.data import end_device_data
    from jqodi.core.estimates import check_provenance, load_estimates
    from jqodi.core.pretrained import DEFAULT_PRETRAIN_EPOCHS, load_pretrained
    from jqodi.learning.estimate import provenance_of

    estimates = load_estimates(args.check)
    data = end_device_data(args.data, args.dataset, args.data_dir, args.train_size, args.val_size, args.data_seed)
    notes = []
    for m in sorted({e.model for e in estimates} & set(args.models)):
        pre = load_pretrained(m, data.dataset, args.width, data_dir=args.data_dir,
                              epochs=args.pretrain_epochs or DEFAULT_PRETRAIN_EPOCHS,
                              progress=False if args.quiet else None)
        expected = {**provenance_of(pre, data, m), "target_loss": args.target_loss}
        notes += check_provenance(estimates, expected, where=f"estimates file {args.check}",
                                  allow_mismatch=args.allow_estimate_mismatch)
    for n in dict.fromkeys(notes):
        print(f"note: {n}", file=sys.stderr)
    print(f"{args.check}: matches the pretrained model(s) and data of these options"
          if not notes else f"{args.check}: checked ({len(set(notes))} note(s))")
    return 0


class _DataKey:
    """Stands in for EndDeviceData when only the store is consulted (no images are loaded)."""

    def __init__(self, args):
        from jqodi.core.data import canonical_data_name, canonical_dataset

        self.dataset = canonical_dataset(args.dataset)
        self.name = canonical_data_name(args.data)   # your own data: as the probes record it
