"""Say when a one-time cost is under way: profiling a model that no stored profile covers yet."""
from __future__ import annotations

import sys
from contextlib import contextmanager

__all__ = ["announce_profiling"]


def _unprofiled(scenario) -> list[str]:
    """The scenario's valid models whose profile (at its input shape and width) is stored nowhere yet.

    A model that cannot be built is left out: compiling the scenario then fails on it in one line,
    with no announcement before it (the check runs on the ``meta`` device, before any profiling)."""
    from jqodi.core import profile_cache
    from jqodi.errors import ModelError

    shape, classes = scenario.data.input_shape, scenario.data.num_classes
    missing = []
    for m in scenario.models:
        fingerprint = profile_cache.model_fingerprint(m.name)
        if fingerprint is None:  # not storable: profiled on every run, so nothing one-time about it
            continue
        if profile_cache.load_profile(m.name, shape, classes, m.width, fingerprint) is None:
            from jqodi.core.zoo import check_model  # torch: only once something must be profiled

            try:
                check_model(m.name, shape, classes, m.width)
            except ModelError:
                return []  # the compile fails on it, in one line
            missing.append(f"{m.name} ×{m.width:g}")
    return missing


@contextmanager
def announce_profiling(scenario, *, quiet: bool = False):
    """Around compiling ``scenario``: when some model must be profiled with torch (a one-time cost:
    the profile is stored under ``$JQODI_HOME/profiles``), say so on stderr as the work starts."""
    missing = [] if quiet else _unprofiled(scenario)
    if missing:
        print(f"one-time: profiling {', '.join(missing)} with torch (a few seconds); stored under "
              f"$JQODI_HOME/profiles, so the next plan of these models starts at once", file=sys.stderr, flush=True)
    yield missing
