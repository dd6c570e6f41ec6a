"""The suite never writes into the user's own jqodi home (tests/conftest.py)."""
import os
from pathlib import Path

from jqodi.core.paths import jqodi_home


def test_the_suite_runs_in_a_home_of_its_own():
    home = Path(os.environ["JQODI_HOME"])
    assert home.name.startswith("jqodi-test-home-")
    assert jqodi_home() == home
    assert home != Path.home() / ".jqodi"
