"""Test-suite settings.

* hypothesis runs derandomized (the same examples every run, no example database), so `make test` is
  deterministic; a failure it finds is pinned as a plain test.
* Every test runs with ``JQODI_HOME`` set to a fresh folder for the session (removed at its end): a test
  that runs a command in-process or starts one (pretrained models, trace stores, calibrations) never
  writes into the user's own ``~/.jqodi`` or a ``JQODI_HOME`` they set. Tests that need a home of their
  own still set one (``monkeypatch.setenv``); child processes inherit the session's.
"""
import os
import shutil
import tempfile

from hypothesis import settings

settings.register_profile("jqodi", derandomize=True, database=None, print_blob=True)
settings.load_profile("jqodi")

_SESSION_HOME: dict[str, str | None] = {}


def pytest_configure(config):
    _SESSION_HOME["before"] = os.environ.get("JQODI_HOME")
    _SESSION_HOME["home"] = tempfile.mkdtemp(prefix="jqodi-test-home-")
    os.environ["JQODI_HOME"] = _SESSION_HOME["home"]


def pytest_unconfigure(config):
    home = _SESSION_HOME.pop("home", None)
    before = _SESSION_HOME.pop("before", None)
    if before is None:
        os.environ.pop("JQODI_HOME", None)
    else:
        os.environ["JQODI_HOME"] = before
    if home:
        shutil.rmtree(home, ignore_errors=True)
