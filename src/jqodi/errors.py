"""The exception tree of jqodi, written down once.

    JqodiError                 root; every error a user can cause is one of these
    ├── ScenarioError          a scenario file is malformed or inconsistent (names the field path)
    ├── ModelError             unknown model, bad input shape, cut out of range
    ├── DataError              dataset files missing or corrupt
    ├── PlanningError          an instance is malformed, or a solver cannot run
    │   └── InfeasibleError    no plan meets the deadline and target loss (carries the explanation)
    ├── TraceStoreError        the learning-trace database is unreadable or from a newer schema
    ├── PluginError            a plugin module (--plugin, JQODI_PLUGINS, entry point) failed to import
    └── RuntimeFailure         a runtime peer crashed, hung or could not be reached (names the peer)

The CLI prints ``str(err)`` as one line and exits with code 2 for any ``JqodiError``.
Vendor errors (torch, NVML, yaml, pydantic) are translated where they enter the package,
with ``raise ... from e``.
"""
from __future__ import annotations


class JqodiError(Exception):
    """Root of every error a user can cause. ``exit_code`` is what the CLI returns."""

    exit_code = 2


class ScenarioError(JqodiError):
    """A scenario file is malformed or inconsistent."""


class ModelError(JqodiError):
    """Unknown model, bad input shape, or a cut out of range."""


class DataError(JqodiError):
    """Dataset files are missing or corrupt."""


class PlanningError(JqodiError):
    """A planning instance is malformed or a solver cannot run."""


class InfeasibleError(PlanningError):
    """No plan meets the deadline and the target loss; ``explanation`` says why."""

    def __init__(self, message: str, explanation: object | None = None):
        super().__init__(message)
        self.explanation = explanation


class TraceStoreError(JqodiError):
    """The trace store is unreadable, corrupt, or from a newer schema."""


class PluginError(JqodiError):
    """A plugin module failed to import (names the module and the first line of the reason)."""


class RuntimeFailure(JqodiError):
    """A runtime peer crashed, hung or was unreachable; ``peer`` names it."""

    def __init__(self, message: str, peer: str | None = None):
        super().__init__(message)
        self.peer = peer
