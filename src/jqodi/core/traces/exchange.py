"""Trace stores that travel: read back what ``jqodi traces --format json`` writes and add its runs
to a store (``jqodi traces --import FILE``), so the traces of two machines can be merged and a
benchmark's library kept as a file (``benchmarks/results/loco_library_seed0-6.json.gz``).

A run's identity. The ``runs`` table has no natural key (``id`` is the store's own; ``job_id``
names only runtime runs; ``created_utc`` has one-second resolution), so a run is identified by
a **content digest** (:func:`run_digest`): SHA-256 of its stored fields and epochs, typed as the
store's columns type them, without the store-local ``id``. The digest is computed on the fly for
the runs already in the store, so the schema is unchanged and older jqodi still reads a store
that received an import. Importing the same file twice adds nothing.

Each run of the file is *added*, *already present* (same digest), or *skipped*: **foreign** (it
carries fields this jqodi does not know — written by a newer version; importing it would drop
them — or the export's ``schema_version`` is newer than this jqodi's) or **corrupt** (a field
missing or of the wrong type, epochs not a list of epochs with a numeric validation loss, an
epoch number repeated). Skips are counted, never fatal. A file that is not an export at all
(unreadable, not JSON, no ``runs`` list) raises :class:`jqodi.errors.TraceStoreError` (one line).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jqodi.core.traces.runs import EPOCH_COLUMNS, RUN_COLUMNS
from jqodi.core.traces.store import SCHEMA_VERSION, TraceStore
from jqodi.errors import TraceStoreError

__all__ = ["ImportCounts", "import_runs", "read_export", "run_digest"]

#: the columns' SQLite types, as :data:`jqodi.core.traces.store._SCHEMA` declares them
_RUN_TYPES = {"created_utc": str, "model": str, "bits": int, "dataset": str, "data_name": str,
              "train_size": int, "val_size": int, "seed": int, "width": float, "base_loss": float,
              "base_accuracy": float, "start_loss": float, "start_accuracy": float, "gamma": float,
              "gamma_robust": float, "epochs_run": int, "wall_s": float, "quantize_s": float, "config": dict,
              "source": str, "job_id": str}
_EPOCH_TYPES = {"epoch": int, "train_loss": float, "val_loss": float, "val_accuracy": float, "wall_s": float,
                "bytes_down": int, "bytes_up": int}
_REQUIRED_RUN = ("created_utc", "model", "bits", "dataset", "data_name", "train_size", "val_size", "seed", "width")
_REQUIRED_EPOCH = ("epoch", "val_loss")
assert set(_RUN_TYPES) == set(RUN_COLUMNS) and set(_EPOCH_TYPES) == set(EPOCH_COLUMNS)


class _Corrupt(ValueError):
    pass


def _typed(value: Any, kind: type, name: str) -> Any:
    if value is None:
        return None
    if kind is dict:
        if not isinstance(value, dict):
            raise _Corrupt(f"{name} is not an object")
        return json.loads(json.dumps(value, default=str, sort_keys=True))  # as the store keeps it
    if kind is str:
        if not isinstance(value, str):
            raise _Corrupt(f"{name} is not text")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Corrupt(f"{name} is not a number")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise _Corrupt(f"{name} is not an integer")
        return int(value)
    return float(value)


def _normalized(run: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run's columns and epochs typed as the store types them; :class:`_Corrupt` if it cannot be."""
    row = {k: _typed(run.get(k), _RUN_TYPES[k], k) for k in RUN_COLUMNS}
    missing = [k for k in _REQUIRED_RUN if row[k] is None]
    if missing:
        raise _Corrupt(f"missing {', '.join(missing)}")
    row["config"] = row["config"] or {}
    row["source"] = row["source"] or "finetune"
    epochs = run.get("epochs")
    if not isinstance(epochs, list) or not all(isinstance(e, dict) for e in epochs):
        raise _Corrupt("epochs is not a list of epochs")
    eps = []
    for e in epochs:
        unknown = set(e) - set(EPOCH_COLUMNS)
        if unknown:
            raise _Corrupt(f"epoch fields {', '.join(sorted(unknown))}")
        ep = {k: _typed(e.get(k), _EPOCH_TYPES[k], k) for k in EPOCH_COLUMNS}
        if any(ep[k] is None for k in _REQUIRED_EPOCH):
            raise _Corrupt("an epoch without its number or validation loss")
        eps.append(ep)
    if len({e["epoch"] for e in eps}) != len(eps):
        raise _Corrupt("an epoch number repeated")
    eps.sort(key=lambda e: e["epoch"])
    row["epochs_run"] = len(eps)  # the store keeps len(epochs) for a recorded run
    return row, eps


def _digest(row: dict[str, Any], epochs: list[dict[str, Any]]) -> str:
    def plain(x):  # NaN/inf are valid floats of a run; give them one spelling
        return repr(x) if isinstance(x, float) and not math.isfinite(x) else x

    body = {"run": {k: plain(v) for k, v in row.items()},
            "epochs": [{k: plain(v) for k, v in e.items()} for e in epochs]}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def run_digest(run: dict[str, Any]) -> str:
    """A run's identity across stores: SHA-256 of its fields and epochs (``RunTrace.to_dict()`` or
    one run of an export), typed as the store types them, without the store-local ``id``."""
    return _digest(*_normalized(run))


def read_export(path: str | Path) -> dict[str, Any]:
    """The object ``jqodi traces --format json`` wrote to ``path`` (plain or gzip'd); a one-line
    :class:`TraceStoreError` for a file that is not such an export."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        data = json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise TraceStoreError(f"no file {path} to import") from None
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as e:
        raise TraceStoreError(f"{path} is not a trace export of 'jqodi traces --format json' "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list) or "schema_version" not in data:
        raise TraceStoreError(f"{path} is not a trace export of 'jqodi traces --format json' "
                              f"(no schema_version and runs list)")
    return data


@dataclass
class ImportCounts:
    """What an import did: runs added, already present (same :func:`run_digest`), skipped by reason."""

    added: int = 0
    present: int = 0
    foreign: int = 0
    corrupt: int = 0

    def text(self) -> str:
        skipped = self.foreign + self.corrupt
        why = f" ({self.foreign} foreign, {self.corrupt} corrupt)" if skipped else ""
        return f"{self.added} run(s) added, {self.present} already present, {skipped} skipped{why}"


def import_runs(store: TraceStore, export: dict[str, Any]) -> ImportCounts:
    """Add the runs of ``export`` (:func:`read_export`) to ``store`` in the file's order, each run
    with its epochs in one transaction; a run the store already holds is not added again."""
    counts = ImportCounts()
    runs = export.get("runs") or []
    try:
        newer = int(export.get("schema_version")) > SCHEMA_VERSION
    except (TypeError, ValueError):
        newer = True  # a version this jqodi cannot read is a foreign one
    if newer:
        counts.foreign = len(runs)
        return counts
    have = set()
    for r in store.runs():
        try:
            have.add(run_digest(r.to_dict()))
        except _Corrupt:  # a row this check would refuse: nothing imported can equal it
            pass
    known = set(RUN_COLUMNS) | {"id", "epochs"}
    for run in runs:
        if not isinstance(run, dict):
            counts.corrupt += 1
            continue
        if set(run) - known:
            counts.foreign += 1
            continue
        try:
            row, epochs = _normalized(run)
        except _Corrupt:
            counts.corrupt += 1
            continue
        digest = _digest(row, epochs)
        if digest in have:
            counts.present += 1
            continue
        store.record(row, epochs)
        have.add(digest)
        counts.added += 1
    return counts
