"""The runtime records every epoch (and the inference summary) in the trace store, under the job id,
in the shape the epoch estimators read (issue 8, item 6). In one process, tiny model, random data."""
from __future__ import annotations

import json
import sqlite3

import pytest
from test_runtime import _Data, _one_thread  # noqa: F401 - random SD data; one torch thread (autouse)

from jqodi.core.traces import SCHEMA_VERSION, TraceStore
from jqodi.runtime.job import Job


def _job(db, **kw) -> Job:
    d = {"model": "lenet", "bits": 4, "width": 0.125, "schedule": [{"edge": "a", "cut": 2, "epochs": 3}],
         "training": {"batch_size": 32, "eval_batch_size": 20}, "timeout_s": 10, "meter": "null",
         "pretrained": {"source": "random", "seed": 3}, "run_id": "job-42", "trace_store": None if db is None else str(db)}
    d.update(kw)
    return Job.from_dict(d)


def test_a_run_records_each_epoch_with_its_job_id_and_resume_continues_it(tmp_path):
    from jqodi.runtime.launch import run_job

    db, data = tmp_path / "traces.db", _Data(96, 30)
    job = _job(db, inference_requests=4)
    first = run_job(job.replace(max_epochs=2, inference_requests=0), transport="inprocess", workdir=tmp_path / "wd",
                    data=data, say=lambda s: None)
    with TraceStore(db) as store:
        (run,) = store.runs(job_id="job-42")
        assert run.source == "runtime" and run.epochs_run == 2
        assert (run.model, run.bits, run.width, run.train_size, run.val_size) == ("lenet", 4, 0.125, 96, 30)
        assert (run.dataset, run.data_name, run.seed) == ("fashion-mnist", "data1", 0)
        assert run.config["job_id"] == "job-42" and run.config["schedule"] == [["a", 2, 3]]
    # resumed: the same run goes on (no second run for the job), then the inference summary
    rec = run_job(job, transport="inprocess", workdir=tmp_path / "wd", data=data, resume=True, say=lambda s: None)
    with TraceStore(db) as store:
        (run,) = store.runs(job_id="job-42")
        assert [e.epoch for e in run.epochs] == [1, 2, 3] and run.epochs_run == 3
        assert run.val_losses == pytest.approx([e["val_loss"] for e in rec.epochs])
        assert run.val_losses[:2] == pytest.approx([e["val_loss"] for e in first.epochs])
        assert [e.train_loss for e in run.epochs] == pytest.approx([e["train_loss"] for e in rec.epochs])
        assert all(e.bytes_down > 0 and e.bytes_up > 0 and e.wall_s > 0 for e in run.epochs)
        assert run.wall_s == pytest.approx(sum(e.wall_s for e in run.epochs))
        inf = store.inference(run.id)
        assert [r["combo"] for r in inf] == [r["combo"] for r in rec.inference] and inf[0]["requests"] == 4


def test_a_run_stopped_before_its_first_epoch_leaves_no_row(tmp_path):
    """Stopped before any epoch (as by Ctrl-C while the roles start), a run leaves no row that every
    later 'jqodi estimate' would count as unusable; its first epoch writes the row."""
    from jqodi.runtime.launch import run_job

    db, data = tmp_path / "traces.db", _Data(64, 20)
    job = _job(db, inference_requests=0)
    run_job(job.replace(max_epochs=0), transport="inprocess", workdir=tmp_path / "wd0", data=data, say=lambda s: None)
    with TraceStore(db) as store:
        assert store.runs() == []
    run_job(job.replace(max_epochs=1), transport="inprocess", workdir=tmp_path / "wd1", data=data, say=lambda s: None)
    with TraceStore(db) as store:
        (run,) = store.runs(job_id="job-42")
        assert run.epochs_run == 1


def test_no_store_named_no_record(tmp_path, monkeypatch):
    from jqodi.runtime.local import run_inprocess
    from jqodi.runtime.process import initial_master

    monkeypatch.setenv("JQODI_HOME", str(tmp_path / "home"))
    job = _job(None, schedule=[{"edge": "a", "cut": 2, "epochs": 1}])
    assert job.trace_store is None
    run_inprocess(job, initial_master(job), _Data(64, 20))
    assert not (tmp_path / "home").exists()


def test_estimators_and_jqodi_traces_read_runtime_runs(tmp_path, capsys):
    from jqodi.cli import main
    from jqodi.learning.estimate import estimate_candidate
    from jqodi.runtime.local import run_inprocess
    from jqodi.runtime.process import initial_master

    db, data = tmp_path / "traces.db", _Data(96, 30)
    random_init = _job(db, run_id="random")
    run_inprocess(random_init, initial_master(random_init), data)
    # as if from the pretrained model (the estimators leave runs from random weights out)
    job = _job(db, pretrained={"source": "pretrained", "cloud_size": 600, "epochs": 1})
    run_inprocess(job, initial_master(random_init), data)

    class Key:  # the SD data as the store sees it: dataset, split name and sizes
        dataset, name, train, val = "fashion-mnist", "data1", range(96), range(30)

    with TraceStore(db) as store:
        assert len(store.runs(source="runtime")) == 2
        (runtime_run,) = store.runs(job_id="job-42")
        target = max(runtime_run.val_losses) + 1.0  # reached at epoch 1
        # runtime runs alone measure no L_a/γ: 'store' says so in one line
        with pytest.raises(Exception, match="runtime runs only"):
            estimate_candidate("lenet", 4, target, Key, store=store, method="store", width=0.125)
        store.record({**{k: getattr(runtime_run, k) for k in ("model", "bits", "dataset", "data_name", "train_size",
                                                            "val_size", "seed", "width")},
                      "base_loss": 2.0, "gamma": 0.1, "source": "finetune"},
                     [{"epoch": 1, "val_loss": target - 0.5}, {"epoch": 2, "val_loss": target - 0.6}])
        est = estimate_candidate("lenet", 4, target, Key, store=store, method="store", width=0.125)
    assert est.source == "measured:store(2 runs)" and est.epochs_expected == 1 and est.base_loss == 2.0
    assert main(["traces", "--store", str(db), "--source", "runtime"]) == 0
    out = capsys.readouterr().out
    assert "runtime" in out and "job-42" in out and "random" in out and "2 run(s)" in out
    assert main(["traces", "--store", str(db), "--job", "job-42", "--format", "json"]) == 0
    (shown,) = json.loads(capsys.readouterr().out)["runs"]
    assert shown["job_id"] == "job-42" and [e["epoch"] for e in shown["epochs"]] == [1, 2, 3]


def test_a_version_1_store_is_upgraded_in_place(tmp_path):
    path = tmp_path / "v1.db"
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, created_utc TEXT NOT NULL,
            model TEXT NOT NULL, bits INTEGER NOT NULL, dataset TEXT NOT NULL, data_name TEXT NOT NULL,
            train_size INTEGER NOT NULL, val_size INTEGER NOT NULL, seed INTEGER NOT NULL, width REAL NOT NULL,
            base_loss REAL, base_accuracy REAL, start_loss REAL, start_accuracy REAL, gamma REAL,
            gamma_robust REAL, epochs_run INTEGER NOT NULL, wall_s REAL, quantize_s REAL,
            config TEXT NOT NULL DEFAULT '{}', source TEXT NOT NULL DEFAULT 'finetune');
        CREATE TABLE epochs (run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            epoch INTEGER NOT NULL, train_loss REAL, val_loss REAL NOT NULL, val_accuracy REAL,
            wall_s REAL, bytes_down INTEGER, bytes_up INTEGER, PRIMARY KEY (run_id, epoch));
        INSERT INTO meta VALUES ('schema_version', '1');
        INSERT INTO runs (created_utc, model, bits, dataset, data_name, train_size, val_size, seed, width,
                          epochs_run) VALUES ('2026-01-01T00:00:00Z', 'lenet', 4, 'fashion-mnist', 'data1', 8, 4, 0, 0.125, 1);
        INSERT INTO epochs (run_id, epoch, val_loss) VALUES (1, 1, 0.5);
    """)
    con.close()
    with TraceStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 2
        (old,) = store.runs()
        assert old.job_id is None and old.val_losses == [0.5]
        rid = store.begin_run({"model": "lenet", "bits": 4, "dataset": "fashion-mnist", "data_name": "data1",
                               "train_size": 8, "val_size": 4, "seed": 0, "width": 0.125}, "j")
        store.record_epoch(rid, {"epoch": 1, "val_loss": 0.4})
        assert store.begin_run({}, "j") == rid  # the job's run is found again (no columns needed)
        assert store.runs(job_id="j")[0].val_losses == [0.4]


def test_a_run_on_your_own_data_is_recorded_under_the_name_probes_use(tmp_path, monkeypatch):
    """A scenario names its image folder relatively (``./my-images``); probes and ``jqodi finetune``
    record the absolute path. The runtime's run must too, or the estimators never see it."""
    from jqodi.core.data import canonical_dataset
    from jqodi.runtime.tracing import run_row

    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-images").mkdir()
    job = _job(None, data={"name": "./my-images", "dataset": "./my-images"})
    row = run_row(job, 30, 6)
    assert row["data_name"] == canonical_dataset("./my-images") == str(tmp_path / "my-images")
    assert row["dataset"] == str(tmp_path / "my-images")
    assert run_row(_job(None), 30, 6)["data_name"] == "data1"   # the paper's splits keep their names


def test_jqodi_traces_finds_your_own_data_however_its_path_is_written(tmp_path, monkeypatch, capsys):
    from jqodi.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-images").mkdir()
    mine = str(tmp_path / "my-images")
    with TraceStore(tmp_path / "t.db") as store:
        store.record({"model": "lenet", "bits": 4, "dataset": mine, "data_name": mine, "train_size": 30,
                      "val_size": 6, "seed": 0, "width": 0.25, "base_loss": 1.0, "gamma": 0.0, "source": "probe"},
                     [{"epoch": 1, "val_loss": 0.9}])
    for flag in ("--data", "--dataset"):
        for written in ("./my-images", "my-images/", mine):
            assert main(["traces", "--store", str(tmp_path / "t.db"), flag, written, "--format", "json"]) == 0
            assert len(json.loads(capsys.readouterr().out)["runs"]) == 1, (flag, written)


def test_jqodi_traces_finds_a_dataset_by_any_of_its_names(tmp_path, capsys):
    """The store names the cloud's dataset canonically (``cifar10``); ``--dataset cifar-10`` finds it,
    and a name that is no dataset is one line, exit 2, not an empty list."""
    from jqodi.cli import main

    with TraceStore(tmp_path / "t.db") as store:
        store.record({"model": "lenet", "bits": 4, "dataset": "cifar10", "data_name": "data1", "train_size": 30,
                      "val_size": 6, "seed": 0, "width": 0.25, "base_loss": 1.0, "gamma": 0.0, "source": "probe"},
                     [{"epoch": 1, "val_loss": 0.9}])
    for written in ("cifar-10", "CIFAR10", "cifar10"):
        assert main(["traces", "--store", str(tmp_path / "t.db"), "--dataset", written, "--format", "json"]) == 0
        assert len(json.loads(capsys.readouterr().out)["runs"]) == 1, written
    assert main(["traces", "--store", str(tmp_path / "t.db"), "--dataset", "cifar-11"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown dataset 'cifar-11'" in err, err
