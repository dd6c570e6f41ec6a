"""Plugins: modules a user names so that their models, solvers, meters and transports exist in
every jqodi process — this one and the cloud, edge and end processes it starts.

A plugin is any importable module that registers things when imported (docs/extending.md).
Three ways to name one, all loaded by the ``jqodi`` command before it reads its arguments:

* ``jqodi --plugin my_models --plugin my_solvers plan ...`` (repeatable);
* ``JQODI_PLUGINS=my_models,my_solvers`` in the environment;
* an entry point of an installed package, group ``jqodi.plugins``
  (``[project.entry-points."jqodi.plugins"] mine = "my_models"``).

The launcher passes every plugin loaded in its process to the role processes it starts
(:func:`child_env`: ``JQODI_PLUGINS``, and ``PYTHONPATH`` extended by the folder each plugin was
imported from), so a model registered by a plugin exists in the cloud, edge and end processes too.
A library user calls :func:`load_plugins` before :func:`jqodi.runtime.run_plan` for the same effect.

A plugin that fails to import raises :class:`~jqodi.errors.PluginError` naming the module
(the CLI: one line, exit code 2).
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Iterable, Mapping

from jqodi.errors import PluginError

__all__ = ["ENV_VAR", "ENTRY_POINT_GROUP", "load_plugins", "load_entry_points", "plugins_from_env",
           "loaded_plugins", "child_env"]

ENV_VAR = "JQODI_PLUGINS"
"""Comma-separated plugin modules every jqodi process imports at start."""

ENTRY_POINT_GROUP = "jqodi.plugins"
"""Entry-point group of installed plugins (each entry point names a module, or a callable to call)."""

_loaded: list[str] = []


def _reason(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def plugins_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The modules named by ``JQODI_PLUGINS`` (comma-separated; blanks ignored)."""
    value = (os.environ if environ is None else environ).get(ENV_VAR, "")
    return [m.strip() for m in value.split(",") if m.strip()]


def load_plugins(modules: Iterable[str]) -> list[str]:
    """Import each plugin module once (in order); returns the modules imported by this call.

    Raises:
        PluginError: a module cannot be imported, or raised while registering (names it).
    """
    new = []
    for name in modules:
        name = name.strip()
        if not name or name in _loaded:
            continue
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - any failure of a user's module: one line naming it
            raise PluginError(f"plugin {name!r} failed to import: {_reason(e)}") from e
        _loaded.append(name)
        new.append(name)
    return new


def _group_declared() -> bool:
    """Whether any installed distribution on ``sys.path`` declares a ``jqodi.plugins`` entry point.

    A plain scan of the ``*.dist-info/entry_points.txt`` files: importing :mod:`importlib.metadata`
    and parsing every distribution costs 0.1-0.3 s, paid by every jqodi process (the role
    processes too) only when some package really declares a plugin."""
    header = f"[{ENTRY_POINT_GROUP}]"
    for root in sys.path:
        try:
            entries = list(os.scandir(root or "."))
        except OSError:
            continue
        for entry in entries:
            if not entry.name.endswith((".dist-info", ".egg-info")):
                continue
            try:
                with open(os.path.join(entry.path, "entry_points.txt"), encoding="utf-8") as f:
                    if header in f.read():
                        return True
            except OSError:
                continue
    return False


def load_entry_points() -> list[str]:
    """Load the installed plugins of the ``jqodi.plugins`` entry-point group; returns their values."""
    if not _group_declared():
        return []
    from importlib.metadata import entry_points

    done = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if callable(obj):
                obj()
        except Exception as e:  # noqa: BLE001
            raise PluginError(f"plugin {ep.value!r} (entry point {ep.name!r} of group "
                              f"{ENTRY_POINT_GROUP}) failed to load: {_reason(e)}") from e
        done.append(ep.value)
    return done


def loaded_plugins() -> list[str]:
    """Modules loaded by :func:`load_plugins` in this process, in load order."""
    return list(_loaded)


def child_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a jqodi process started from this one: ``JQODI_PLUGINS`` names every
    plugin loaded here (and those already named), and ``PYTHONPATH`` leads to each of them."""
    env = dict(os.environ if environ is None else environ)
    names = plugins_from_env(env)
    names += [m for m in _loaded if m not in names]
    if not names:
        return env
    env[ENV_VAR] = ",".join(names)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    installed = {str(Path(p).resolve()) for p in (sys.prefix, sys.base_prefix)}
    for name in _loaded:
        root = _import_root(name)
        if root is not None and root not in paths and not any(root.startswith(p + os.sep) for p in installed):
            paths.append(root)
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _import_root(name: str) -> str | None:
    """The sys.path folder ``name`` was imported from (its top-level package's parent)."""
    top = sys.modules.get(name.split(".")[0])
    file = getattr(top, "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    return str(path.parent.parent if path.name == "__init__.py" else path.parent)
