import json

import numpy as np

from jqodi.cli import main
from jqodi.core.traces import TraceStore
from jqodi.core.estimates import load_estimates


def fill(store_path, bits, floor, seeds=(0, 1, 2)):
    with TraceStore(store_path) as s:
        for seed in seeds:
            k = np.arange(1, 21)
            curve = floor + 1.0 * k ** -0.8 + 0.002 * np.random.default_rng(seed).standard_normal(20)
            s.record({"model": "lenet", "bits": bits, "dataset": "fashion-mnist", "data_name": "data1",
                      "train_size": 2000, "val_size": 500, "seed": seed, "width": 0.25, "base_loss": 0.22,
                      "start_loss": 1.5, "gamma": 1.28, "gamma_robust": 1.4},
                     [{"epoch": int(e), "val_loss": float(v)} for e, v in zip(k, curve)])


def test_estimate_from_the_store_writes_learning_estimates(tmp_path, capsys):
    db = tmp_path / "t.db"
    fill(db, 4, 0.2)
    fill(db, 2, 0.5)
    out = tmp_path / "est.json"
    rc = main(["estimate", "--target-loss", "0.35", "--models", "lenet", "--bits", "2", "4", "--method", "store",
               "--store", str(db), "--out", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "K^exp" in text and "measured:store(3 runs)" in text
    est = {e.bits: e for e in load_estimates(out)}
    assert est[2].epochs_expected is None and est[2].epochs_robust is None  # floor 0.5 > target
    k_true = int(np.ceil((1.0 / 0.15) ** (1 / 0.8)))
    assert abs(est[4].epochs_expected - k_true) <= 1 and est[4].epochs_robust >= est[4].epochs_expected
    assert est[4].gamma == 1.28 and est[4].target_loss == 0.35


def test_unreachable_target_is_a_one_line_error_and_writes_nothing(tmp_path, capsys):
    db = tmp_path / "t.db"
    fill(db, 4, 0.2)
    out = tmp_path / "est.json"
    rc = main(["estimate", "--target-loss", "0.1", "--models", "lenet", "--bits", "4", "--method", "store",
               "--store", str(db), "--out", str(out), "--quiet"])
    assert rc == 2 and not out.exists()
    assert "no candidate can reach target loss 0.1" in capsys.readouterr().err
    rc = main(["estimate", "--target-loss", "0.3", "--models", "lenet", "--bits", "6", "--method", "store",
               "--store", str(db), "--out", str(out), "--quiet"])
    assert rc == 2


def test_traces_lists_and_exports(tmp_path, capsys):
    db = tmp_path / "t.db"
    fill(db, 4, 0.2, seeds=(0, 1))
    assert main(["traces", "--store", str(db)]) == 0
    assert "2 run(s)" in capsys.readouterr().out
    assert main(["traces", "--store", str(db), "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["runs"]) == 2
    csv_file = tmp_path / "t.csv"
    assert main(["traces", "--store", str(db), "--format", "csv", "-o", str(csv_file)]) == 0
    assert len(csv_file.read_text().splitlines()) == 1 + 2 * 20
    assert main(["traces", "--store", str(tmp_path / "missing.db")]) == 2


def test_estimate_without_out_writes_under_jqodi_home_and_says_where(tmp_path, capsys, monkeypatch):
    db = tmp_path / "t.db"
    fill(db, 4, 0.2)
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.setenv("JQODI_HOME", str(home))
    monkeypatch.chdir(cwd)
    args = ["estimate", "--target-loss", "0.35", "--models", "lenet", "--bits", "4", "--method", "store",
            "--store", str(db), "--quiet"]
    assert main(args) == 0
    want = home / "estimates" / "fashion-mnist_data1_lenet_L0.35.json"
    assert f"wrote 1 estimates to {want}" in capsys.readouterr().out
    assert load_estimates(want)[0].bits == 4 and list(cwd.iterdir()) == []
    assert main(args + ["--json"]) == 0   # the JSON on stdout stays JSON; where it went goes to stderr
    cap = capsys.readouterr()
    assert json.loads(cap.out)["estimates"] and str(want) in cap.err


def test_estimate_from_the_store_finds_runs_on_your_own_data_by_a_relative_path(tmp_path, capsys, monkeypatch):
    """Probes record your own data under its absolute path; ``--method store --data ./my-images`` finds them."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-images").mkdir()
    mine = str(tmp_path / "my-images")
    with TraceStore(tmp_path / "t.db") as s:
        for seed in (0, 1):
            s.record({"model": "lenet", "bits": 4, "dataset": "fashion-mnist", "data_name": mine,
                      "train_size": 2000, "val_size": 500, "seed": seed, "width": 0.25, "base_loss": 0.9,
                      "start_loss": 1.0, "gamma": 0.1}, [{"epoch": k, "val_loss": 1.0 / k} for k in range(1, 9)])
    rc = main(["estimate", "--target-loss", "0.3", "--models", "lenet", "--bits", "4", "--method", "store",
               "--data", "./my-images", "--store", str(tmp_path / "t.db"), "--out", "est.json", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert "measured:store(2 runs)" in capsys.readouterr().out


def test_your_own_data_is_named_once_in_the_traces_table_and_estimate_errors(tmp_path, capsys, monkeypatch):
    """Your own data's name and dataset are the same path: printed once, not ``/x/my-images//x/my-images``."""
    from jqodi.core.data.catalog import data_label

    assert data_label("data1", "cifar10") == "data1/cifar10" and data_label("/x/imgs", "/x/imgs") == "/x/imgs"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-images").mkdir()
    mine = str(tmp_path / "my-images")
    with TraceStore(tmp_path / "t.db") as s:
        s.record({"model": "lenet", "bits": 4, "dataset": mine, "data_name": mine, "train_size": 30,
                  "val_size": 6, "seed": 0, "width": 0.25, "base_loss": 1.0, "gamma": 0.0},
                 [{"epoch": 1, "val_loss": 0.9}])
    assert main(["traces", "--store", str(tmp_path / "t.db")]) == 0
    out = capsys.readouterr().out
    assert mine in out and f"{mine}/{mine}" not in out
    rc = main(["estimate", "--target-loss", "0.3", "--models", "lenet", "--bits", "8", "--method", "store",
               "--dataset", "./my-images", "--data", "./my-images", "--store", str(tmp_path / "t.db"),
               "--out", "est.json", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and f"on {mine} from this pretrained model" in err and f"{mine}/{mine}" not in err


def test_old_runs_with_no_epoch_are_counted_as_such_not_as_unusable(tmp_path, capsys):
    """A runtime run stopped before its first epoch (older versions stored its row) is reported as a run
    that recorded no epoch, apart from corrupt or foreign rows, by 'jqodi traces' and the estimators."""
    from jqodi.core.traces import NO_EPOCH_REASON, skipped_text
    from jqodi.learning.prior.library import library_from_store

    db = tmp_path / "t.db"
    fill(db, 4, 0.2, seeds=(0,))
    row = {"model": "lenet", "bits": 4, "dataset": "fashion-mnist", "data_name": "data1", "train_size": 2000,
           "val_size": 500, "seed": 1, "width": 0.25}
    with TraceStore(db) as s:
        s.begin_run(row, "job-stopped")                                    # the old row: no epoch
        s.record({**row, "model": "alexnet", "seed": 2}, [{"epoch": 1, "val_loss": 0.5}])   # foreign model
        _, skipped = library_from_store(s)
    assert skipped == {NO_EPOCH_REASON: 1, "unknown model 'alexnet'": 1}   # the key skipped_text reads
    assert skipped_text(skipped) == "1 run that recorded no epoch and 1 unusable run (1 unknown model 'alexnet')"
    assert skipped_text({NO_EPOCH_REASON: 2}) == "2 runs that recorded no epoch"
    assert main(["traces", "--store", str(db)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"3 run(s) in {db} (1 recorded no epoch: stopped before its first; the estimators leave them out)")
    assert main(["traces", "--store", str(db), "--model", "alexnet"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"1 run(s) in {db}"
