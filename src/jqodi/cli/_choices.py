"""``choices=`` read from a registry when argparse needs them (checking a value, printing help),
not when the parser is built: ``jqodi plan`` does not import the runtime, ``jqodi --help`` no numpy.
Also the options several verbs share (:func:`add_choice_argument`)."""
from __future__ import annotations

import importlib
from typing import Iterator

__all__ = ["RegistryChoices", "add_choice_argument"]


class RegistryChoices:
    """The names of the registry at ``module:attribute`` (or of the tuple of names there), with
    ``before`` and ``after`` names around them (``auto`` for meters, ``all`` for ``jqodi plan``)."""

    def __init__(self, registry: str, *, before: tuple[str, ...] = (), after: tuple[str, ...] = ()) -> None:
        self.registry, self.before, self.after = registry, before, after

    def names(self) -> list[str]:
        module, _, attr = self.registry.partition(":")
        found = getattr(importlib.import_module(module), attr)
        return [*self.before, *(found.names() if hasattr(found, "names") else found), *self.after]

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


def add_choice_argument(p, *, prefix: str = "", suffix: str = "") -> None:
    """``--choice``, which candidate a run trains (``jqodi run``, ``jqodi demo``'s main job): one of
    :data:`jqodi.app.pre_run.CHOICES`, read when argparse needs them (a metavar, so that building
    the parser does not list them: that imports the app, and numpy); ``prefix``/``suffix`` frame the help."""
    p.add_argument("--choice", choices=RegistryChoices("jqodi.app.pre_run:CHOICES"), default="expected",
                   metavar="RULE",
                   help=prefix + "which candidate to train: expected (default: the least expected energy under "
                        "the K estimates' spread, as a run that stops at the target spends it) or planner (the "
                        "least energy of a K^rob-epoch plan)" + suffix)
