"""Generate ``src/jqodi/core/zoo/profiles.json``: the profiles shipped with the package.

One entry per packaged zoo model at the input shape, class count and width of every packaged
scenario (``src/jqodi/scenarios/*.yaml``) and of its CPU-scale variant (``jqodi run
--cpu-scale``: the models' CPU widths on Fashion-MNIST), each profiled with torch exactly as
``jqodi profile`` does, with the fingerprint of the code that produced it
(:mod:`jqodi.core.profile_cache`). Run it after changing a model of the zoo or the counting
rules (``tests/test_profile_cache.py`` fails until you do)::

    python scripts/build_zoo_profiles.py          # rewrite the file
    python scripts/build_zoo_profiles.py --check  # exit 1 if the file is not what it would write
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def packaged_params() -> list[tuple[str, tuple[int, int, int], int, float]]:
    """(model, input_shape, num_classes, width) of every packaged scenario and its CPU-scale variant."""
    from jqodi.core.scenario import load_scenario
    from jqodi.runtime.plan import cpu_scale

    scenarios = Path(__file__).resolve().parents[1] / "src" / "jqodi" / "scenarios"
    out = set()
    for path in sorted(scenarios.glob("*.yaml")):
        base = load_scenario(path)
        for sc in (base, cpu_scale(base)):
            for m in sc.models:
                out.add((m.name, tuple(int(s) for s in sc.data.input_shape), int(sc.data.num_classes),
                         float(m.width)))
    return sorted(out)


def build() -> dict:
    from jqodi.core import profile_cache
    from jqodi.core.profile import profile_model
    from jqodi.core.zoo import build_model

    entries = []
    for name, shape, classes, width in packaged_params():
        prof = profile_model(build_model(name, shape, classes, width, seed=0))
        entries.append(profile_cache.profile_entry(prof, profile_cache.model_fingerprint(name)))
    return {"format": profile_cache.FORMAT,
            "generated_by": "scripts/build_zoo_profiles.py (do not edit by hand)",
            "fingerprints": {"sources": profile_cache.sources_digest(),
                             "models": profile_cache.packaged_fingerprints()},
            "entries": entries}


def main(argv: list[str] | None = None) -> int:
    from jqodi.core.profile_cache import SHIPPED_PATH

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the shipped file instead of writing it")
    args = ap.parse_args(argv)
    text = json.dumps(build(), indent=1, sort_keys=True) + "\n"
    if args.check:
        current = SHIPPED_PATH.read_text() if SHIPPED_PATH.is_file() else ""
        if current != text:
            print(f"{SHIPPED_PATH} is out of date: run python scripts/build_zoo_profiles.py", file=sys.stderr)
            return 1
        print(f"{SHIPPED_PATH} is up to date")
        return 0
    SHIPPED_PATH.write_text(text)
    print(f"wrote {SHIPPED_PATH} ({len(json.loads(text)['entries'])} profiles)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
