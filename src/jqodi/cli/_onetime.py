"""Say when a one-time cost is under way: profiling a model that no stored profile covers yet."""
from __future__ import annotations

import sys
import threading
from contextlib import contextmanager

__all__ = ["announce_profiling"]

#: a line only if the work is still going after this long (an invalid model fails sooner, in one line)
ANNOUNCE_AFTER_S = 0.3


def _unprofiled(scenario) -> list[str]:
    """The scenario's models whose profile (at its input shape and width) is stored nowhere yet."""
    from jqodi.core import profile_cache

    shape, classes = scenario.data.input_shape, scenario.data.num_classes
    missing = []
    for m in scenario.models:
        fingerprint = profile_cache.model_fingerprint(m.name)
        if fingerprint is None:  # not storable: profiled on every run, so nothing one-time about it
            continue
        if profile_cache.load_profile(m.name, shape, classes, m.width, fingerprint) is None:
            missing.append(f"{m.name} ×{m.width:g}")
    return missing


@contextmanager
def announce_profiling(scenario, *, quiet: bool = False):
    """Around compiling ``scenario``: when some model must be profiled with torch (a one-time cost:
    the profile is stored under ``$JQODI_HOME/profiles``), say so on stderr as the work starts."""
    missing = [] if quiet else _unprofiled(scenario)
    timer = None
    if missing:
        line = (f"one-time: profiling {', '.join(missing)} with torch (a few seconds); stored under "
                f"$JQODI_HOME/profiles, so the next plan of these models starts at once")
        timer = threading.Timer(ANNOUNCE_AFTER_S, lambda: print(line, file=sys.stderr, flush=True))
        timer.daemon = True
        timer.start()
    try:
        yield missing
    finally:
        if timer is not None:
            timer.cancel()
