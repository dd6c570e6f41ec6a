"""The ``jqodi`` command: a thin layer over the public API.

Each verb lives in its own module of this package (``jqodi/cli/<verb>.py``) and defines
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. Verbs are found by
listing this package, so adding one touches no shared file. Heavy imports (torch) happen
inside ``run``, never at module import, so ``jqodi plan`` starts fast and needs no torch; and
:func:`main` builds the arguments of the chosen verb only (another verb's flags may import what
they describe, e.g. the runtime's defaults).

Any :class:`jqodi.errors.JqodiError` ends as one line on stderr and exit code 2.

Plugins (``--plugin MODULE`` before the verb, ``JQODI_PLUGINS``, the ``jqodi.plugins`` entry
points) are imported before the arguments are parsed, so the names they register are valid
choices (``--solver``, ``--meter``, ``--transport``); see :mod:`jqodi.core.plugins`.
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


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The parser of every verb; with ``verb``, only that verb's arguments are built (the others
    are listed with their one-line help): what :func:`main` uses, to import no more than needed."""
    from jqodi import __version__

    parser = _Parser(prog="jqodi", description="Energy-efficient collaborative fine-tuning "
                     "and inference across cloud, edge and end devices (JQODI).")
    parser.add_argument("--version", action="version", version=f"jqodi {__version__}")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (repeatable): the models, solvers, meters and transports it "
                             "registers exist here and in every role process (also: JQODI_PLUGINS=m1,m2, "
                             "entry-point group jqodi.plugins; docs/extending.md)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for name, module in _verb_modules():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        if verb is None or name == verb:
            module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _split_argv(argv: Sequence[str]) -> tuple[list[str], str]:
    """The ``--plugin MODULE`` / ``--plugin=MODULE`` options given before the verb, and the verb
    ("" when there is none: ``jqodi --help``)."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--plugin" and i + 1 < len(argv):
            out.append(argv[i + 1])
            i += 2
            continue
        if arg.startswith("--plugin="):
            out.append(arg.split("=", 1)[1])
        elif not arg.startswith("-"):
            return out, arg  # the verb: what follows is its own
        i += 1
    return out, ""


def _load_plugins(argv: Sequence[str]) -> None:
    """Import the plugins of the environment, the installed entry points and ``--plugin``."""
    from jqodi.core.plugins import load_entry_points, load_plugins as load, plugins_from_env

    load(plugins_from_env())
    load_entry_points()
    load(_split_argv(argv)[0])


def os_error_text(err: OSError) -> str:
    """An OSError as the reason and the file it concerns (a rename names its target second)."""
    name = err.filename2 or err.filename
    return f"{err.strerror or err}: {name}" if name else str(err.strerror or err)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        _load_plugins(argv)
    except JqodiError as err:
        print(f"jqodi: error: {err}", file=sys.stderr)
        return err.exit_code
    parser = build_parser(_split_argv(argv)[1])
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a usage error (an unknown --solver, …: one line, exit 2), --help, --version
        return e.code if isinstance(e.code, int) else 2
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
    except OSError as err:  # a file the user named cannot be read or written: name it, one line
        print(f"jqodi {args.verb}: error: {os_error_text(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
