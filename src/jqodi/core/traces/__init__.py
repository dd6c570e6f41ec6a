"""Learning traces: runs as data (:mod:`~jqodi.core.traces.runs`) and the SQLite store that keeps
them (:mod:`~jqodi.core.traces.store`; its docstring says what is stored and how), and exports read
back into a store (:mod:`~jqodi.core.traces.exchange`, ``jqodi traces --import``)."""
from jqodi.core.traces.exchange import ImportCounts, import_runs, read_export, run_digest
from jqodi.core.traces.runs import EpochTrace, RunTrace
from jqodi.core.traces.store import NO_EPOCH_REASON, SCHEMA_VERSION, TraceStore, skipped_text

__all__ = ["NO_EPOCH_REASON", "SCHEMA_VERSION", "EpochTrace", "ImportCounts", "RunTrace", "TraceStore", "import_runs",
           "read_export", "run_digest", "skipped_text"]
