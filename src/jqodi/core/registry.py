"""One small registry type: name → factory (with a one-line description) for every extension point.

Models (:data:`jqodi.core.zoo.MODELS`), solvers (:data:`jqodi.planner.registry.SOLVERS`), energy
meters (:data:`jqodi.runtime.energy.METERS`) and transports (:data:`jqodi.runtime.launch.TRANSPORTS`)
are each one :class:`Registry`. The CLI's ``choices=`` lists read them, so a name registered by a
plugin (:mod:`jqodi.core.plugins`) is accepted everywhere at once.

An entry's factory is either the object itself or a ``"module:attribute"`` string, imported on
first :meth:`Registry.get`: built-ins that need torch or numpy register that way, so listing the
names (``jqodi --help``) imports neither.

    SOLVERS.register("greedy", solve_greedy, "cheapest option every epoch")
    @SOLVERS.register("greedy", description="cheapest option every epoch")   # or as a decorator
    def solve_greedy(instance, *, epochs="robust"): ...
    SOLVERS.get("greedy")          # the function; unknown names raise one line listing the known
"""
from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import Generic, Iterator, TypeVar

from jqodi.errors import JqodiError

__all__ = ["Registry", "Entry"]

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name: ``target`` is the factory, or ``"module:attribute"`` to import lazily."""

    name: str
    target: T | str
    description: str = ""

    @property
    def lazy(self) -> bool:
        return isinstance(self.target, str)


class Registry(Generic[T]):
    """Names → factories of one kind (``kind`` names it in errors: "unknown solver 'x'; known: …").

    ``error`` is the :class:`~jqodi.errors.JqodiError` subclass raised for unknown or duplicate
    names (the CLI turns it into one line and exit code 2). Thread-safe; names keep their
    registration order (built-ins first).
    """

    def __init__(self, kind: str, error: type[JqodiError] = JqodiError) -> None:
        self.kind = kind
        self.error = error
        self._entries: dict[str, Entry[T]] = {}
        self._loaded: dict[str, T] = {}
        self._lock = threading.RLock()

    def register(self, name: str, target: T | str | None = None, description: str = "", *,
                 replace: bool = False):
        """Register ``target`` (an object, or ``"module:attribute"`` imported on first use) as
        ``name``. Without ``target`` it returns a decorator. A name already taken raises unless
        ``replace``."""
        if target is None:
            def decorator(obj: T) -> T:
                self.register(name, obj, description, replace=replace)
                return obj
            return decorator
        if not isinstance(name, str) or not name.strip() or name != name.strip() or "," in name:
            raise self.error(f"{self.kind} name must be a non-empty string without spaces at its ends "
                             f"or commas, got {name!r}")
        if isinstance(target, str) and ":" not in target:
            raise self.error(f"{self.kind} {name!r}: a lazy target is 'module:attribute', got {target!r}")
        with self._lock:
            if name in self._entries and not replace:
                raise self.error(f"{self.kind} {name!r} is already registered")
            self._entries[name] = Entry(name, target, description)
            self._loaded.pop(name, None)
        return target

    def unregister(self, name: str) -> None:
        """Forget ``name`` (tests, or a plugin replacing a built-in by another name)."""
        with self._lock:
            self._entries.pop(name, None)
            self._loaded.pop(name, None)

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        with self._lock:
            return list(self._entries)

    def entries(self) -> list[Entry[T]]:
        with self._lock:
            return list(self._entries.values())

    def describe(self) -> list[tuple[str, str]]:
        """``(name, description)`` of every entry, for help texts and listings."""
        return [(e.name, e.description) for e in self.entries()]

    def unknown(self, name: object) -> JqodiError:
        """The one-line error for a name that is not registered (lists the known ones)."""
        return self.error(f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or '(none)'}")

    def entry(self, name: str) -> Entry[T]:
        with self._lock:
            try:
                return self._entries[name]
            except (KeyError, TypeError):
                raise self.unknown(name) from None

    def get(self, name: str) -> T:
        """The factory registered as ``name`` (a lazy one is imported now, once)."""
        entry = self.entry(name)
        if not entry.lazy:
            return entry.target  # type: ignore[return-value]
        with self._lock:
            if name not in self._loaded:
                module, _, attr = entry.target.partition(":")  # type: ignore[union-attr]
                try:
                    obj = importlib.import_module(module)
                    for part in attr.split("."):
                        obj = getattr(obj, part)
                except (ImportError, AttributeError) as e:
                    raise self.error(f"{self.kind} {name!r}: cannot import {entry.target}: "
                                     f"{type(e).__name__}: {e}") from e
                self._loaded[name] = obj
            return self._loaded[name]

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __repr__(self) -> str:
        return f"<Registry of {self.kind}s: {', '.join(self.names())}>"

