"""Use cases shared by the CLI, benchmarks and tests: the main job, evaluation, runs."""
