"""Where jqodi keeps its files: ``$JQODI_HOME`` or the platform's user data dir."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["jqodi_home", "default_store_path", "pretrained_dir", "estimates_dir"]


def jqodi_home() -> Path:
    """``$JQODI_HOME`` if set, else platformdirs' user data dir for "jqodi" (not created here)."""
    env = os.environ.get("JQODI_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("jqodi", appauthor=False))


def default_store_path() -> Path:
    """The default trace store: ``<home>/traces.db``."""
    return jqodi_home() / "traces.db"


def pretrained_dir() -> Path:
    """Cached cloud-pretrained checkpoints: ``<home>/pretrained``."""
    return jqodi_home() / "pretrained"


def estimates_dir() -> Path:
    """Where ``jqodi estimate`` writes its estimates files without ``--out``: ``<home>/estimates``."""
    return jqodi_home() / "estimates"
