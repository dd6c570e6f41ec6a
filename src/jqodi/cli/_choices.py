"""``choices=`` read from a registry when argparse needs them (checking a value, printing help),
not when the parser is built: ``jqodi plan`` does not import the runtime, ``jqodi --help`` no numpy."""
from __future__ import annotations

import importlib
from typing import Iterator

__all__ = ["RegistryChoices"]


class RegistryChoices:
    """The names of the registry at ``module:attribute``, with ``before`` and ``after`` names around
    them (``auto`` for meters, ``all`` for ``jqodi plan``)."""

    def __init__(self, registry: str, *, before: tuple[str, ...] = (), after: tuple[str, ...] = ()) -> None:
        self.registry, self.before, self.after = registry, before, after

    def names(self) -> list[str]:
        module, _, attr = self.registry.partition(":")
        return [*self.before, *getattr(importlib.import_module(module), attr).names(), *self.after]

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
