"""Test-suite settings: hypothesis runs derandomized (the same examples every run, no example
database), so `make test` is deterministic; a failure it finds is pinned as a plain test."""
from hypothesis import settings

settings.register_profile("jqodi", derandomize=True, database=None, print_blob=True)
settings.load_profile("jqodi")
