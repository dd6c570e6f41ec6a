"""The ``jqodi`` command: a thin layer over the public API.

Each verb lives in its own module of this package (``jqodi/cli/<verb>.py``) and defines
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. Verbs are found by
listing this package, so adding one touches no shared file. Heavy imports (torch) happen
inside ``run``, never at module import, so ``jqodi plan`` starts fast and needs no torch.

Any :class:`jqodi.errors.JqodiError` ends as one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence

from jqodi.errors import JqodiError

__all__ = ["main", "build_parser"]


def _verb_modules():
    pkg = sys.modules[__name__]
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        yield info.name.replace("_", "-"), importlib.import_module(f"{__name__}.{info.name}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's usage errors: one line, exit 2
        self.exit(2, f"jqodi: error: {message} (see 'jqodi --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from jqodi import __version__

    parser = _Parser(prog="jqodi", description="Energy-efficient collaborative fine-tuning "
                     "and inference across cloud, edge and end devices (JQODI).")
    parser.add_argument("--version", action="version", version=f"jqodi {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for verb, module in _verb_modules():
        p = sub.add_parser(verb, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "verb", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except JqodiError as err:
        print(f"jqodi {args.verb}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"jqodi {args.verb}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
