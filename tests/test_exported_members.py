"""The public surface of ``import jqodi``: pinned, and light to import."""
import subprocess
import sys

import jqodi

EXPORTED = ["__version__", "JqodiError", "ScenarioError", "ModelError", "DataError", "PlanningError",
            "InfeasibleError", "TraceStoreError", "RuntimeFailure",
            "load_scenario", "compile_instance", "epoch_costs", "build_model", "register_model"]


def test_all_is_pinned_and_every_name_resolves():
    assert sorted(jqodi.__all__) == sorted(EXPORTED)
    for name in jqodi.__all__:
        assert getattr(jqodi, name) is not None, name
    from jqodi.core.costs import compile_instance
    from jqodi.core.scenario import load_scenario

    assert jqodi.load_scenario is load_scenario and jqodi.compile_instance is compile_instance
    assert set(jqodi.__all__) <= set(dir(jqodi))


def test_import_jqodi_loads_no_heavy_dependency():
    code = ("import sys, jqodi; heavy = [m for m in ('torch', 'numpy', 'pydantic', 'yaml') if m in sys.modules];"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr


def test_unknown_attributes_still_raise():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        jqodi.nope  # noqa: B018
