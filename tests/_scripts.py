"""Load one of the repository's scripts (``benchmarks/*.py``, ``scripts/*.py``) as a module, for
tests of what they compute."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script(relpath: str, name: str | None = None):
    """The module at ``ROOT / relpath`` (executed once per call)."""
    path = ROOT / relpath
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
