"""The learning-trace store (:class:`TraceStore`): every fine-tuning run and its epochs, in SQLite.

One database file (default ``$JQODI_HOME/traces.db``; ``--store`` chooses another) with four
tables: ``meta`` (``schema_version``), ``runs`` (one row per run: model, bits, dataset, SD split
and sizes, seed, width, L_a, start loss, γ expected/robust, wall time, config JSON, source and,
for a run of the runtime, its ``job_id``), ``epochs`` (per-epoch train loss, validation loss and
accuracy, wall time, bytes) and ``inference`` (a runtime run's collaborative-inference summary,
one row per device combination).

Sources: ``finetune`` / ``probe`` (the reference loop, :mod:`jqodi.learning.reference`) write a
run and all its epochs at once (:meth:`TraceStore.record`); ``runtime`` (the cloud role of
:mod:`jqodi.runtime`) opens its run when it starts (:meth:`TraceStore.begin_run`) and adds each
epoch as it completes (:meth:`TraceStore.record_epoch`), so a crashed run keeps the epochs it
finished and a resumed one (same job id) continues the same run. Both give the same curves:
``epochs`` numbered from 1, ``val_loss`` after each epoch.

* **WAL** journal and a 30 s busy timeout: many processes may read and write at once.
* **Atomic per write**: a run and all its epochs (or one runtime epoch) are written in one
  ``BEGIN IMMEDIATE`` transaction, so a crash leaves either the whole write or nothing.
* **Versioned**: a store written by a newer schema is refused with a clear
  :class:`jqodi.errors.TraceStoreError` (never modified); a file that is not a jqodi store too.
  A version-1 store (no ``job_id``, no ``inference``) is upgraded in place when opened.
"""
from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Sequence

from jqodi.core.traces.runs import EPOCH_COLUMNS, RUN_COLUMNS, EpochTrace, RunTrace
from jqodi.errors import TraceStoreError

__all__ = ["SCHEMA_VERSION", "TraceStore"]

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_utc TEXT NOT NULL,
    model TEXT NOT NULL, bits INTEGER NOT NULL, dataset TEXT NOT NULL, data_name TEXT NOT NULL,
    train_size INTEGER NOT NULL, val_size INTEGER NOT NULL, seed INTEGER NOT NULL, width REAL NOT NULL,
    base_loss REAL, base_accuracy REAL, start_loss REAL, start_accuracy REAL,
    gamma REAL, gamma_robust REAL, epochs_run INTEGER NOT NULL, wall_s REAL, quantize_s REAL,
    config TEXT NOT NULL DEFAULT '{}', source TEXT NOT NULL DEFAULT 'finetune', job_id TEXT);
CREATE TABLE IF NOT EXISTS epochs (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL, train_loss REAL, val_loss REAL NOT NULL, val_accuracy REAL,
    wall_s REAL, bytes_down INTEGER, bytes_up INTEGER,
    PRIMARY KEY (run_id, epoch));
CREATE INDEX IF NOT EXISTS runs_by_candidate ON runs (model, bits, dataset, data_name);
"""

#: a fleet run's per-device results (jqodi.app.fleet_run); created on first use, see record_fleet
FLEET_COLUMNS = ("status", "error", "epochs", "time_s", "energy_j", "deadline_s", "deadline_met")
_FLEET_SCHEMA = """
CREATE TABLE IF NOT EXISTS fleet_devices (
    fleet_id TEXT NOT NULL, device TEXT NOT NULL, job_id TEXT, created_utc TEXT NOT NULL,
    status TEXT NOT NULL, error TEXT, epochs INTEGER, time_s REAL, energy_j REAL, deadline_s REAL,
    deadline_met INTEGER,
    PRIMARY KEY (fleet_id, device))
"""

#: what version 2 added to version 1 (a version-1 store gains it when opened)
_SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS inference (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL, combo TEXT NOT NULL, edge TEXT, cut INTEGER, requests INTEGER NOT NULL,
    accuracy REAL, latency_mean_s REAL, latency_p95_s REAL, energy_per_request_j REAL,
    result TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, seq));
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job_id);
"""


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class TraceStore:
    """SQLite store of fine-tuning traces. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path | None = None, *, timeout_s: float = 30.0):
        from jqodi.core.paths import default_store_path

        self.path = Path(path) if path is not None else default_store_path()
        self.timeout_s = timeout_s
        self._conn: sqlite3.Connection | None = None
        self._open()

    # -- connection and schema --------------------------------------------------------------
    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TraceStoreError(f"cannot create the folder of trace store {self.path}: {e}") from e
        # Switching a new store to WAL needs a moment alone with the file, and SQLite reports a
        # concurrent opener as "locked" at once instead of waiting: retry within timeout_s.
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                return self._open_once()
            except TraceStoreError as e:
                locked = isinstance(e.__cause__, sqlite3.OperationalError) and "locked" in str(e.__cause__)
                if not locked or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _open_once(self) -> None:
        conn = None
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
            version = self._read_version(conn)
            if version is not None and version > SCHEMA_VERSION:
                conn.close()
                raise TraceStoreError(
                    f"trace store {self.path} has schema version {version}, newer than this jqodi "
                    f"reads ({SCHEMA_VERSION}); upgrade jqodi or choose another --store")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA foreign_keys = ON")
            if version is None:
                conn.execute("BEGIN IMMEDIATE")
                for stmt in filter(str.strip, (_SCHEMA + _SCHEMA_V2).split(";")):
                    conn.execute(stmt)
                conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                             (str(SCHEMA_VERSION),))
                conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('created_utc', ?)", (_utc_now(),))
                conn.execute("COMMIT")
            elif version < SCHEMA_VERSION:
                self._upgrade(conn)
        except sqlite3.DatabaseError as e:
            if conn is not None:
                conn.close()
            raise TraceStoreError(f"{self.path} is not a readable jqodi trace store ({e})") from e
        self._conn = conn

    def _read_version(self, conn: sqlite3.Connection) -> int | None:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            return None
        if "meta" not in tables:
            raise TraceStoreError(f"{self.path} is an SQLite database but not a jqodi trace store "
                                  f"(tables: {', '.join(sorted(tables))})")
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            return None
        try:
            return int(row[0])
        except ValueError:
            raise TraceStoreError(f"trace store {self.path} has a corrupt schema_version {row[0]!r}") from None

    def _upgrade(self, conn: sqlite3.Connection) -> None:
        """Version 1 → 2: ``runs.job_id`` and the ``inference`` table (one transaction; a
        concurrent opener that upgraded first is noticed inside it)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            if self._read_version(conn) == 1:
                cols = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
                if "job_id" not in cols:
                    conn.execute("ALTER TABLE runs ADD COLUMN job_id TEXT")
                for stmt in filter(str.strip, _SCHEMA_V2.split(";")):
                    conn.execute(stmt)
                conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise TraceStoreError(f"trace store {self.path} is closed")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "TraceStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])

    # -- writing ------------------------------------------------------------------------------
    @staticmethod
    def _run_row(run: dict[str, Any], source: str, epochs_run: int) -> dict[str, Any]:
        row = {k: run.get(k) for k in RUN_COLUMNS}
        row["created_utc"] = row["created_utc"] or _utc_now()
        row["config"] = json.dumps(row["config"] or {}, default=str, sort_keys=True)
        row["source"] = row["source"] or source
        row["epochs_run"] = epochs_run
        missing = [k for k in ("model", "bits", "dataset", "data_name", "train_size", "val_size", "seed", "width")
                   if row[k] is None]
        if missing:
            raise TraceStoreError(f"run record is missing {', '.join(missing)}")
        return row

    def record(self, run: dict[str, Any], epochs: Sequence[dict[str, Any]]) -> int:
        """Insert one run and its epochs atomically; returns the run id.

        ``run`` holds the ``runs`` columns (``config`` may be a dict); ``epochs`` dicts hold
        ``epoch``, ``val_loss`` and optionally the other epoch columns.
        """
        row = self._run_row(run, "finetune", len(epochs))

        def write(conn):
            cur = conn.execute(f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES "
                               f"({', '.join('?' * len(RUN_COLUMNS))})", [row[k] for k in RUN_COLUMNS])
            run_id = int(cur.lastrowid)
            conn.executemany(
                f"INSERT INTO epochs (run_id, {', '.join(EPOCH_COLUMNS)}) VALUES "
                f"(?, {', '.join('?' * len(EPOCH_COLUMNS))})",
                [[run_id] + [e.get(k) for k in EPOCH_COLUMNS] for e in epochs])
            return run_id

        return self._write("a run", write)

    def _write(self, what: str, statements) -> Any:
        """Run ``statements(conn)`` in one ``BEGIN IMMEDIATE`` transaction; one-line error naming ``what``."""
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            out = statements(conn)
            conn.execute("COMMIT")
            return out
        except BaseException as e:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if isinstance(e, sqlite3.Error):
                raise TraceStoreError(f"could not write {what} to trace store {self.path}: {e}") from e
            raise

    def begin_run(self, run: dict[str, Any], job_id: str) -> int:
        """The run of the runtime job ``job_id``: the one already stored (a resumed job), else a
        new run with no epochs yet (``run`` holds its ``runs`` columns). Returns its run id."""
        def write(conn):
            found = conn.execute("SELECT id FROM runs WHERE job_id = ? ORDER BY id LIMIT 1", (str(job_id),)).fetchone()
            if found is not None:
                return int(found[0])
            row = self._run_row({**run, "job_id": str(job_id)}, "runtime", 0)
            cur = conn.execute(f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES "
                               f"({', '.join('?' * len(RUN_COLUMNS))})", [row[k] for k in RUN_COLUMNS])
            return int(cur.lastrowid)

        return self._write(f"job {job_id}", write)

    def record_epoch(self, run_id: int, epoch: dict[str, Any]) -> None:
        """Add (or, when resumed, replace) one epoch of run ``run_id``; ``epochs_run`` and the run's
        ``wall_s`` follow its epochs."""
        def write(conn):
            conn.execute(f"INSERT OR REPLACE INTO epochs (run_id, {', '.join(EPOCH_COLUMNS)}) VALUES "
                         f"(?, {', '.join('?' * len(EPOCH_COLUMNS))})",
                         [run_id] + [epoch.get(k) for k in EPOCH_COLUMNS])
            conn.execute("UPDATE runs SET epochs_run = (SELECT COUNT(*) FROM epochs WHERE run_id = ?), "
                         "wall_s = (SELECT SUM(wall_s) FROM epochs WHERE run_id = ?) WHERE id = ?",
                         (run_id, run_id, run_id))

        self._write(f"epoch {epoch.get('epoch')} of run {run_id}", write)

    def record_inference(self, run_id: int, results: Sequence[dict[str, Any]]) -> None:
        """Store run ``run_id``'s collaborative-inference summary: one row per device combination
        (a :class:`jqodi.runtime.inference.InferenceResult` as a dict), replacing any earlier one."""
        def write(conn):
            conn.execute("DELETE FROM inference WHERE run_id = ?", (run_id,))
            conn.executemany(
                "INSERT INTO inference (run_id, seq, combo, edge, cut, requests, accuracy, latency_mean_s, "
                "latency_p95_s, energy_per_request_j, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, i, r["combo"], r.get("edge"), r.get("cut"), int(r["requests"]), r.get("accuracy"),
                  r.get("latency_mean_s"), r.get("latency_p95_s"),
                  sum((r.get("energy_per_request_j") or {}).values()),
                  json.dumps(r, default=str, sort_keys=True)) for i, r in enumerate(results)])

        self._write(f"the inference summary of run {run_id}", write)

    def record_fleet(self, fleet_id: str, devices: dict[str, dict[str, Any]],
                     job_ids: dict[str, str] | None = None) -> None:
        """Store a fleet run's result per device (``status``, ``error``, ``epochs``, ``time_s``,
        ``energy_j``, ``deadline_s``, ``deadline_met``), replacing any earlier one of ``fleet_id``.
        Each device's epochs are the ``runs`` row of its ``job_id``. The ``fleet_devices`` table is
        created on first use (stores of this schema version without it stay readable by older jqodi)."""
        def write(conn):
            conn.execute(_FLEET_SCHEMA)
            conn.execute("DELETE FROM fleet_devices WHERE fleet_id = ?", (str(fleet_id),))
            conn.executemany(
                f"INSERT INTO fleet_devices (fleet_id, device, job_id, created_utc, {', '.join(FLEET_COLUMNS)}) "
                f"VALUES (?, ?, ?, ?, {', '.join('?' * len(FLEET_COLUMNS))})",
                [(str(fleet_id), name, (job_ids or {}).get(name), _utc_now(),
                  *[int(d[k]) if k == "deadline_met" and d.get(k) is not None else d.get(k) for k in FLEET_COLUMNS])
                 for name, d in devices.items()])

        self._write(f"fleet run {fleet_id}", write)

    def fleet(self, fleet_id: str) -> dict[str, dict[str, Any]]:
        """A fleet run's per-device results (:meth:`record_fleet`), by device; empty if unknown."""
        if not self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'fleet_devices'").fetchone():
            return {}
        rows = self.conn.execute(f"SELECT device, job_id, {', '.join(FLEET_COLUMNS)} FROM fleet_devices "
                                 f"WHERE fleet_id = ? ORDER BY rowid", (str(fleet_id),)).fetchall()
        return {r[0]: {"job_id": r[1], **{k: (bool(v) if k == "deadline_met" and v is not None else v)
                                          for k, v in zip(FLEET_COLUMNS, r[2:])}} for r in rows}

    def inference(self, run_id: int) -> list[dict[str, Any]]:
        """Run ``run_id``'s stored inference summary (the dicts given to :meth:`record_inference`)."""
        rows = self.conn.execute("SELECT result FROM inference WHERE run_id = ? ORDER BY seq", (run_id,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def record_run(self, result) -> int:
        """Record a :class:`RunTrace` (e.g. fresh from ``finetune``); sets and returns its ``id``."""
        run = {k: getattr(result, k) for k in RUN_COLUMNS}
        result.id = self.record(run, [asdict(e) for e in result.epochs])
        return result.id

    def delete_run(self, run_id: int) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM epochs WHERE run_id = ?", (run_id,))
        conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        conn.execute("COMMIT")

    # -- reading ------------------------------------------------------------------------------
    def runs(self, *, model: str | None = None, bits: int | None = None, dataset: str | None = None,
             data_name: str | None = None, seed: int | None = None, ids: Iterable[int] | None = None,
             width: float | None = None, source: str | None = None, job_id: str | None = None) -> list[RunTrace]:
        """Stored runs matching the filters, oldest first, each with its epochs."""
        where, params = [], []
        for col, val in (("model", model), ("bits", bits), ("dataset", dataset), ("data_name", data_name),
                         ("seed", seed), ("width", width), ("source", source), ("job_id", job_id)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        if ids is not None:
            ids = list(ids)
            where.append(f"id IN ({', '.join('?' * len(ids))})" if ids else "0")
            params.extend(ids)
        sql = "SELECT id, " + ", ".join(RUN_COLUMNS) + " FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id"
        try:
            rows = self.conn.execute(sql, params).fetchall()
            out = []
            for r in rows:
                d = dict(zip(("id",) + RUN_COLUMNS, r))
                d["config"] = json.loads(d["config"] or "{}")
                del d["epochs_run"]  # len(epochs)
                eps = self.conn.execute(
                    f"SELECT {', '.join(EPOCH_COLUMNS)} FROM epochs WHERE run_id = ? ORDER BY epoch",
                    (d["id"],)).fetchall()
                out.append(RunTrace(**d, epochs=[EpochTrace(*e) for e in eps]))
            return out
        except sqlite3.DatabaseError as e:
            raise TraceStoreError(f"could not read trace store {self.path}: {e}") from e

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])

    # -- export --------------------------------------------------------------------------------
    @staticmethod
    def to_csv(runs: Sequence[RunTrace]) -> str:
        """One CSV row per epoch, with the run's columns repeated."""
        buf = io.StringIO()
        cols = (["run_id"] + [("run_" + c if c == "wall_s" else c) for c in RUN_COLUMNS if c != "config"]
                + [("epoch_" + c if c == "wall_s" else c) for c in EPOCH_COLUMNS])
        w = csv.writer(buf)
        w.writerow(cols)
        for r in runs:
            base = [r.id] + [getattr(r, c) for c in RUN_COLUMNS if c != "config"]
            for e in r.epochs:
                w.writerow(base + [getattr(e, c) for c in EPOCH_COLUMNS])
        return buf.getvalue()

    @staticmethod
    def to_json(runs: Sequence[RunTrace]) -> str:
        return json.dumps({"schema_version": SCHEMA_VERSION, "runs": [r.to_dict() for r in runs]}, indent=1)


#: The reason the learned prior gives a stored run with no epoch (``jqodi.learning.prior``'s skip counts).
NO_EPOCH_REASON = "no epochs"


def skipped_text(skipped: dict[str, int]) -> str:
    """Skip counts by reason (e.g. :attr:`jqodi.learning.prior.CurvePrior.skipped`) in words, with the
    runs that recorded no epoch — a run stopped before its first epoch, which older versions stored
    — apart from the unusable ones (a foreign model, a corrupt row): ``"1 run that recorded no epoch
    and 2 unusable runs (1 unknown model 'alexnet', 1 unreadable row (JSONDecodeError))"``."""
    no_epoch = int(skipped.get(NO_EPOCH_REASON, 0))
    bad = {k: int(n) for k, n in skipped.items() if k != NO_EPOCH_REASON and n}
    parts = []
    if no_epoch:
        parts.append(f"{no_epoch} run{'s' if no_epoch != 1 else ''} that recorded no epoch")
    if bad:
        n = sum(bad.values())
        why = ", ".join(f"{c} {k}" for k, c in sorted(bad.items()))
        parts.append(f"{n} unusable run{'s' if n != 1 else ''} ({why})")
    return " and ".join(parts)
