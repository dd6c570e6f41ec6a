"""``jqodi traces --import``: an export read back into a store (jqodi.core.traces.exchange), and the
held-out benchmark's library kept as data (benchmarks/results/loco_library_seed0-6.json.gz)."""
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from jqodi.cli import main
from jqodi.core.traces import RunTrace, EpochTrace, TraceStore, import_runs, read_export, run_digest
from jqodi.errors import TraceStoreError
from jqodi.learning.prior import library_from_runs, library_from_store

LIBRARY = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "loco_library_seed0-6.json.gz"


def _run(seed, **kw):
    d = {"model": "lenet", "bits": 4, "dataset": "fashion-mnist", "data_name": "data1", "train_size": 500,
         "val_size": 300, "seed": seed, "width": 0.25, "base_loss": 0.31, "start_loss": 0.52, "gamma": 0.2,
         "gamma_robust": 0.25, "wall_s": 3.5, "config": {"lr": 1e-4, "pretrain_epochs": 2}, "source": "finetune",
         "created_utc": f"2026-12-01T00:00:0{seed}Z"}
    d.update(kw)
    return d


def _epochs(n, start=1.0):
    return [{"epoch": k, "train_loss": start / k, "val_loss": start / k + 0.01 * k, "val_accuracy": 0.5 + k / 100,
             "wall_s": 0.5, "bytes_down": None, "bytes_up": None} for k in range(1, n + 1)]


def _fill(path):
    """A store of every kind of run (fine-tune, probe, runtime with its job id), with a gap in its ids."""
    with TraceStore(path) as s:
        s.record(_run(1), _epochs(6))
        gone = s.record(_run(2), _epochs(3))
        s.record(_run(0, source="probe", bits=2), _epochs(5, 1.4))
        rid = s.begin_run(_run(3, start_loss=None, gamma=None, config={"pretrained": {"epochs": 2}}), "job-7")
        for e in _epochs(4, 1.2):
            s.record_epoch(rid, e)
        s.record(_run(4, model="vgg", width=0.125, base_loss=float("nan")), _epochs(2))
        s.delete_run(gone)
        return json.loads(TraceStore.to_json(s.runs()))


def _without_ids(export):
    return [{k: v for k, v in r.items() if k != "id"} for r in export["runs"]]


def _same_curve_runs(a, b, *, ids=True):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        fx = {k: v for k, v in vars(x).items() if k != "losses" and (ids or k != "id")}
        fy = {k: v for k, v in vars(y).items() if k != "losses" and (ids or k != "id")}
        assert fx == fy
        assert np.array_equal(x.losses, y.losses)


def test_round_trip_into_an_empty_store_gives_the_same_export_and_curve_runs(tmp_path):
    first = _fill(tmp_path / "a.db")
    path = tmp_path / "export.json"
    path.write_text(json.dumps(first))
    with TraceStore(tmp_path / "b.db") as b:
        counts = import_runs(b, read_export(path))
        assert (counts.added, counts.present, counts.foreign, counts.corrupt) == (4, 0, 0, 0)
        again = json.loads(TraceStore.to_json(b.runs()))
        lib_b, skipped_b = library_from_store(b)
    assert _without_ids(again) == _without_ids(first)  # modulo the store-local ids (a had a gap: 1, 3, 4, 5)
    assert [r["id"] for r in first["runs"]] == [1, 3, 4, 5] and [r["id"] for r in again["runs"]] == [1, 2, 3, 4]
    with TraceStore(tmp_path / "a.db") as a:
        lib_a, skipped_a = library_from_store(a)
    assert skipped_a == skipped_b and len(lib_a) == 4  # vgg's NaN L_a is a run like any (base None)
    _same_curve_runs(lib_a, lib_b, ids=False)


def test_importing_twice_adds_nothing_and_two_stores_merge(tmp_path):
    export = _fill(tmp_path / "a.db")
    with TraceStore(tmp_path / "b.db") as b:  # another machine: one run in common, one of its own
        b.record(_run(1), _epochs(6))  # the same run as a's first
        b.record(_run(9, bits=8), _epochs(2))
        b.record(_run(1, created_utc="2026-12-02T00:00:00Z"), _epochs(6))  # the same values, run again later
        first = import_runs(b, export)
        second = import_runs(b, export)
        assert b.count() == 6
    assert (first.added, first.present) == (3, 1)
    assert (second.added, second.present) == (0, 4)
    assert second.text() == "0 run(s) added, 4 already present, 0 skipped"


def test_a_run_differing_in_one_value_is_another_run():
    r = _run(1, created_utc="2026-12-01T00:00:00Z", epochs=_epochs(3))
    assert run_digest(r) == run_digest(json.loads(json.dumps(r)))
    assert run_digest(r) == run_digest({**r, "id": 99, "width": 0.25, "bits": 4.0})  # typed as the store types them
    other = json.loads(json.dumps(r))
    other["epochs"][2]["val_loss"] += 1e-12
    assert run_digest(other) != run_digest(r)


def test_foreign_and_corrupt_runs_are_counted_not_fatal(tmp_path):
    good = _run(1, created_utc="2026-12-01T00:00:00Z", epochs=_epochs(3))
    export = {"schema_version": 2, "runs": [
        good,
        {**good, "seed": 2, "energy_j": 4.0},                       # a field of a newer jqodi: foreign
        {**good, "seed": 3, "bits": "four"},                         # corrupt: a number as text
        {k: v for k, v in good.items() if k != "model"},             # corrupt: no model
        {**good, "seed": 5, "epochs": [{"epoch": 1}]},               # corrupt: an epoch without val_loss
        {**good, "seed": 6, "epochs": _epochs(2) + _epochs(1)},      # corrupt: epoch 1 twice
        "not a run",                                                  # corrupt
    ]}
    with TraceStore(tmp_path / "s.db") as s:
        c = import_runs(s, export)
        assert (c.added, c.present, c.foreign, c.corrupt) == (1, 0, 1, 5)
        assert c.text() == "1 run(s) added, 0 already present, 6 skipped (1 foreign, 5 corrupt)"
        newer = import_runs(s, {"schema_version": 99, "runs": [good]})
        assert (newer.added, newer.foreign) == (0, 1) and s.count() == 1


def test_cli_import_gzip_and_files_that_are_not_exports(tmp_path, capsys):
    export = _fill(tmp_path / "a.db")
    gz = tmp_path / "lib.json.gz"
    assert main(["traces", "--store", str(tmp_path / "a.db"), "--format", "json", "-o", str(gz)]) == 0
    assert json.loads(gzip.decompress(gz.read_bytes())) == export
    out = tmp_path / "b.db"
    assert main(["traces", "--import", str(gz), "--store", str(out)]) == 0
    assert capsys.readouterr().out.strip() == (f"imported {gz}: 4 run(s) added, 0 already present, 0 skipped; "
                                               f"4 run(s) in {out}")
    for bad, why in ((b"not json", "not a trace export"), (b'{"runs": []}', "no schema_version"),
                     (gzip.compress(b"[1, 2]"), "not a trace export"), (b"\x1f\x8bbroken", "not a trace export")):
        f = tmp_path / "bad.json"
        f.write_bytes(bad)
        assert main(["traces", "--import", str(f), "--store", str(tmp_path / "c.db")]) == 2
        err = capsys.readouterr().err
        assert why in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "c.db").exists()  # the store is not even created
    assert main(["traces", "--import", str(tmp_path / "none.json"), "--store", str(out)]) == 2
    assert "no file" in capsys.readouterr().err
    assert main(["traces", "--import", str(gz), "--store", str(out), "--bits", "4", "--json"]) == 2
    assert capsys.readouterr().err.strip() == ("jqodi traces: error: --import adds every run of the file; "
                                               "--bits, --format only apply to listing")


def test_the_committed_library_rebuilds_the_same_curve_runs(tmp_path):
    """The held-out benchmark's library (docs/learning.md): a store rebuilt from the file gives the
    CurveRuns of the file's runs read directly (same ids: the original store's were 1..175), and
    exports back to the same JSON."""
    export = read_export(LIBRARY)
    runs = export["runs"]
    assert len(runs) == 175 and sorted({r["seed"] for r in runs}) == list(range(7))
    assert sum(r["source"] == "probe" for r in runs) == 25
    direct = [RunTrace(**{k: v for k, v in r.items() if k not in ("epochs", "epochs_run")},
                       epochs=[EpochTrace(**e) for e in r["epochs"]]) for r in runs]
    lib_direct, skipped_direct = library_from_runs(direct)
    with TraceStore(tmp_path / "loco.db") as s:
        c = import_runs(s, export)
        assert (c.added, c.foreign, c.corrupt) == (175, 0, 0)
        lib_store, skipped_store = library_from_store(s)
        assert json.loads(TraceStore.to_json(s.runs())) == json.loads(gzip.decompress(LIBRARY.read_bytes()))
    assert len(lib_store) == 175 and skipped_store == skipped_direct == {}
    _same_curve_runs(lib_direct, lib_store)


def test_read_export_refuses_what_is_not_one(tmp_path):
    f = tmp_path / "x.json"
    f.write_text(json.dumps({"schema_version": 2, "runs": {}}))
    with pytest.raises(TraceStoreError, match="no schema_version and runs list"):
        read_export(f)
