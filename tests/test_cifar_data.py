"""CIFAR-10 folders: the shared layout (test batch + some training batches), bad folders (missing or
truncated batch files, wrong shapes, labels out of range: one line naming the file, exit 2), and the
real ``../shared`` data when present (skipped when absent: a fresh machine has no ``../shared``)."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from jqodi.core.data import load_cifar
from jqodi.errors import DataError

REPO = Path(__file__).resolve().parents[1]
SHARED_CIFAR = Path(os.environ.get("JQODI_CIFAR_DIR") or REPO.parent / "shared" / "datasets" / "cifar-10-batches-py")
HAVE_SHARED = (SHARED_CIFAR / "test_batch").is_file()


def _batch(path: Path, n: int = 6, seed: int = 0, *, labels=None, data=None) -> Path:
    rng = np.random.default_rng(seed)
    d = {b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8) if data is None else data,
         b"labels": [int(v) for v in rng.integers(0, 10, n)] if labels is None else labels,
         b"filenames": [b"x.png"] * n}
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)
    return path


def _folder(tmp_path: Path, train=(1, 2)) -> Path:
    """The shared layout: test_batch, batches.meta and the training batches ``train``."""
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    _batch(d / "test_batch", n=8, seed=9)
    for i in train:
        _batch(d / f"data_batch_{i}", seed=i)
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"c%d" % i for i in range(10)]}))
    return d


def test_the_shared_layout_loads_the_training_batches_present(tmp_path):
    d = _folder(tmp_path, train=(1, 2))
    x, y = load_cifar(d, "train")
    assert x.shape == (12, 3, 32, 32) and y.shape == (12,)
    x1, _ = load_cifar(tmp_path, "train")      # the parent folder works too
    assert np.array_equal(x, x1)
    xt, yt = load_cifar(d, "test")
    assert xt.shape == (8, 3, 32, 32)


def test_a_gap_in_the_training_batches_names_the_missing_file(tmp_path):
    d = _folder(tmp_path, train=(1, 3))
    with pytest.raises(DataError, match=r"data_batch_2 is missing") as e:
        load_cifar(d, "train")
    assert str(d / "data_batch_2") in str(e.value)


def test_a_cifar_folder_without_the_split_names_the_missing_file(tmp_path):
    d = _folder(tmp_path, train=())
    with pytest.raises(DataError, match=r"data_batch_1 is missing"):
        load_cifar(d, "train")
    (d / "test_batch").unlink()
    _batch(d / "data_batch_1")
    with pytest.raises(DataError, match=r"test_batch is missing"):
        load_cifar(d, "test")


@pytest.mark.parametrize("damage,needle", [
    ("truncated", "corrupt or not a CIFAR pickle"),
    ("shape", "expected N×3072 uint8"),
    ("labels-high", "labels outside 0..9"),
    ("labels-negative", "labels outside 0..9"),
    ("count", "expected N×3072 uint8 data and N labels"),
    ("not-a-dict", "not a CIFAR batch"),
])
def test_a_bad_batch_file_is_named(tmp_path, damage, needle):
    d = _folder(tmp_path)
    bad = d / "data_batch_2"
    if damage == "truncated":
        raw = bad.read_bytes()
        bad.write_bytes(raw[: len(raw) // 2])
    elif damage == "shape":
        _batch(bad, data=np.zeros((6, 1024), np.uint8))
    elif damage == "labels-high":
        _batch(bad, labels=[0, 1, 2, 3, 4, 10])
    elif damage == "labels-negative":
        _batch(bad, labels=[0, 1, 2, 3, 4, -1])
    elif damage == "count":
        _batch(bad, labels=[0, 1, 2])
    else:
        bad.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match=needle) as e:
        load_cifar(d, "train")
    assert str(bad) in str(e.value)
    assert "\n" not in str(e.value)


def _run(argv, tmp_path, timeout=120):
    env = dict(os.environ, JQODI_HOME=str(tmp_path / "home"),
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def test_the_cli_and_the_benchmark_say_which_file_is_bad_in_one_line(tmp_path):
    d = _folder(tmp_path)
    raw = (d / "data_batch_1").read_bytes()
    (d / "data_batch_1").write_bytes(raw[:100])
    p = _run(["-m", "jqodi", "pretrain", "--models", "lenet", "--dataset", "cifar10", "--data-dir", str(d)], tmp_path)
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1 and "data_batch_1" in err, err
    p = _run([str(REPO / "benchmarks" / "paper_cifar.py"), "--quick", "--data-dir", str(d), "--out", str(tmp_path / "o")],
             tmp_path)
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1 and "data_batch_1" in err and "Traceback" not in err, err


@pytest.mark.skipif(not HAVE_SHARED, reason=f"no shared CIFAR-10 at {SHARED_CIFAR} (set JQODI_CIFAR_DIR)")
def test_the_shared_cifar10_is_the_papers_data1_source():
    from jqodi.core.data import end_device_data

    x, y = load_cifar(SHARED_CIFAR, "test")
    assert x.shape == (10000, 3, 32, 32) and np.bincount(y).tolist() == [1000] * 10
    xt, yt = load_cifar(SHARED_CIFAR, "train")
    assert len(yt) % 10000 == 0 and len(yt) >= 10000 and yt.min() == 0 and yt.max() == 9
    d1 = end_device_data("data1", "cifar10", SHARED_CIFAR)
    assert (len(d1.train), len(d1.val)) == (2000, 500) and d1.input_shape == (3, 32, 32)


def test_data2_shifted_is_the_test_split_with_labels_deranged_and_images_inverted(tmp_path):
    from jqodi.core.data import end_device_data

    d = _folder(tmp_path)
    _batch(d / "test_batch", n=40, seed=5)
    d1 = end_device_data("data1", "cifar10", d, train_size=30, val_size=10, seed=3)
    d2 = end_device_data("data2-shifted", "cifar10", d, train_size=30, val_size=10, seed=3)
    assert (len(d2.train), len(d2.val), d2.num_classes) == (30, 10, 10)
    x, y = load_cifar(d, "test")
    # the same recipe as Fashion-MNIST's Data 2, on images of the test split
    assert "inverted" in d2.description and "(3y+1) mod 10" in d2.description
    idx = np.random.default_rng([3, 1]).permutation(len(y))[:30]      # the seeded pick of end_device_data
    assert d2.train.tensors[1].tolist() == ((3 * y[idx] + 1) % 10).tolist()
    from jqodi.core.data.catalog import to_tensor

    assert torch.allclose(d2.train.tensors[0], to_tensor(255 - x[idx], "cifar10"))
    assert not torch.equal(d1.train.tensors[0], d2.train.tensors[0])
    with pytest.raises(DataError, match="test split holds only 40"):
        end_device_data("data2-shifted", "cifar10", d)   # the paper's 5000 + 1000 do not fit in 40
