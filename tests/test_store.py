import json
import multiprocessing as mp
import sqlite3

import pytest

from jqodi.errors import TraceStoreError
from jqodi.core.traces import SCHEMA_VERSION, TraceStore


def run_row(seed=0, **kw):
    d = {"model": "lenet", "bits": 4, "dataset": "fashion-mnist", "data_name": "data1", "train_size": 100,
         "val_size": 50, "seed": seed, "width": 0.25, "base_loss": 0.3, "start_loss": 0.5, "gamma": 0.2,
         "gamma_robust": 0.25, "config": {"lr": 1e-4}}
    d.update(kw)
    return d


def epochs(n, start=1.0):
    return [{"epoch": k, "train_loss": start / k, "val_loss": start / k + 0.01, "val_accuracy": 0.5 + k / 100}
            for k in range(1, n + 1)]


def test_record_and_query(tmp_path):
    with TraceStore(tmp_path / "t.db") as s:
        assert s.schema_version == SCHEMA_VERSION
        a = s.record(run_row(0), epochs(5))
        s.record(run_row(1, bits=2), epochs(3))
        runs = s.runs(model="lenet", bits=4)
        assert [r.id for r in runs] == [a]
        r = runs[0]
        assert r.epochs_run == 5 and len(r.epochs) == 5 and r.config == {"lr": 1e-4}
        assert r.epochs_to(0.35) == 3 and r.epochs_to(0.01) is None
        assert s.count() == 2
        csv_text = s.to_csv(s.runs())
        assert csv_text.splitlines()[0].startswith("run_id,created_utc,model,bits")
        assert len(csv_text.splitlines()) == 1 + 5 + 3
        assert len(json.loads(s.to_json(s.runs()))["runs"]) == 2
    con = sqlite3.connect(tmp_path / "t.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_incomplete_run_is_rejected_and_nothing_is_half_written(tmp_path):
    with TraceStore(tmp_path / "t.db") as s:
        with pytest.raises(TraceStoreError, match="missing model"):
            s.record(run_row(model=None), epochs(2))
        bad = epochs(3) + [{"epoch": 3, "val_loss": 1.0}]  # duplicate epoch: the insert fails
        with pytest.raises(TraceStoreError, match="could not write"):
            s.record(run_row(), bad)
        assert s.count() == 0
        assert s.conn.execute("SELECT COUNT(*) FROM epochs").fetchone()[0] == 0


def test_newer_schema_is_refused_untouched(tmp_path):
    path = tmp_path / "t.db"
    TraceStore(path).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    before = path.read_bytes()
    with pytest.raises(TraceStoreError, match=rf"schema version {SCHEMA_VERSION + 1}, newer than this jqodi reads \({SCHEMA_VERSION}\)"):
        TraceStore(path)
    assert path.read_bytes() == before


def test_foreign_and_corrupt_files_are_refused(tmp_path):
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE x (a)")
    con.commit()
    con.close()
    with pytest.raises(TraceStoreError, match="not a jqodi trace store"):
        TraceStore(other)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(TraceStoreError, match="not a readable jqodi trace store"):
        TraceStore(junk)


def _writer(path, seed, n):
    with TraceStore(path) as s:
        for i in range(n):
            s.record(run_row(seed * 100 + i), epochs(4))


def test_concurrent_writers(tmp_path):
    path = tmp_path / "t.db"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, k, 10)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        if p.is_alive():
            p.kill()
    assert all(p.exitcode == 0 for p in procs)
    with TraceStore(path) as s:
        runs = s.runs()
        assert len(runs) == 30 and all(len(r.epochs) == 4 for r in runs)
