import gzip
import pickle
import struct

import numpy as np
import torch

torch.set_num_threads(1)
import pytest
import torch

from jqodi.core.data import (
    FASHION_MNIST_DIR,
    end_device_data,
    load_cifar,
    load_fashion_mnist,
    read_idx,
)
from jqodi.errors import DataError

HAVE_FMNIST = (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file()


def write_idx(path, arr, gz=True):
    arr = np.asarray(arr, dtype=np.uint8)
    head = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = head + arr.tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def fake_fmnist(tmp_path, n_train=50, n_test=40):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    return tmp_path


def write_cifar(folder, which="cifar10", n=20, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    if which == "cifar10":
        names, key, ncls = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels", 10
    else:
        names, key, ncls = ["train", "test"], b"fine_labels", 100
    for name in names:
        d = {b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8),
             key: [int(v) for v in rng.integers(0, ncls, n)], b"batch_label": b"x"}
        with open(folder / name, "wb") as f:
            pickle.dump(d, f, protocol=2)
    return folder


def test_idx_roundtrip_and_fashion_mnist_layout(tmp_path):
    fake_fmnist(tmp_path)
    x, y = load_fashion_mnist(tmp_path, "test")
    assert x.shape == (40, 1, 28, 28) and x.dtype == np.uint8 and y.shape == (40,)
    write_idx(tmp_path / "plain", np.arange(12).reshape(3, 4), gz=False)
    assert read_idx(tmp_path / "plain").tolist() == np.arange(12).reshape(3, 4).tolist()


def test_missing_fashion_mnist_names_the_folder_and_the_package(tmp_path):
    with pytest.raises(DataError, match=r"looked for t10k-images.*apt-get install dataset-fashion-mnist") as e:
        load_fashion_mnist(tmp_path / "nowhere", "test")
    assert str(tmp_path / "nowhere") in str(e.value)


@pytest.mark.parametrize("damage", ["truncate", "magic", "notgzip", "count"])
def test_corrupt_idx_files_raise_data_errors(tmp_path, damage):
    fake_fmnist(tmp_path)
    p = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = gzip.open(p).read()
    if damage == "truncate":
        gzip.open(p, "wb").write(raw[:-100])
    elif damage == "magic":
        gzip.open(p, "wb").write(b"\x01\x02" + raw[2:])
    elif damage == "notgzip":
        p.write_bytes(b"this is not gzip data at all")
    else:
        write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(39))
    with pytest.raises(DataError, match="t10k"):
        load_fashion_mnist(tmp_path, "test")


def test_cifar_pickles_and_splits(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py", "cifar10", n=30)
    write_cifar(tmp_path / "cifar-100-python", "cifar100", n=400)
    x, y = load_cifar(tmp_path, "train", "cifar10")
    assert x.shape == (150, 3, 32, 32) and y.max() < 10
    d1 = end_device_data("data1", "cifar10", tmp_path, train_size=20, val_size=5, seed=1)
    assert d1.train.tensors[0].shape == (20, 3, 32, 32) and len(d1.val) == 5
    assert d1.input_shape == (3, 32, 32)
    d2 = end_device_data("data2", "cifar10", tmp_path, train_size=12, val_size=6, seed=1)
    assert set(d2.train.tensors[1].tolist()) <= set(range(10))
    assert len(d2.cloud) == 150  # the cloud's CIFAR-10 train split


def test_corrupt_cifar_pickle(tmp_path):
    folder = write_cifar(tmp_path, "cifar10", n=5)
    (folder / "test_batch").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match="test_batch.*corrupt"):
        load_cifar(tmp_path, "test", "cifar10")
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}, f)
    with pytest.raises(DataError, match="N×3072"):
        load_cifar(tmp_path, "test", "cifar10")


def test_missing_cifar_says_where_it_looked(tmp_path):
    with pytest.raises(DataError, match="CIFAR10 not found: looked for .*test_batch"):
        load_cifar(tmp_path, "test", "cifar10")


def test_sizes_and_names_are_checked(tmp_path):
    fake_fmnist(tmp_path)
    with pytest.raises(DataError, match="holds only 40"):
        end_device_data("data1", data_dir=tmp_path, train_size=30, val_size=20)
    with pytest.raises(DataError, match="unknown end-device data"):
        end_device_data("data3", data_dir=tmp_path)
    with pytest.raises(DataError, match="unknown dataset"):
        end_device_data("data1", "mnist-ish", data_dir=tmp_path)


def test_splits_are_seeded_and_disjoint(tmp_path):
    fake_fmnist(tmp_path)
    a = end_device_data("data1", data_dir=tmp_path, train_size=20, val_size=10, seed=3)
    b = end_device_data("data1", data_dir=tmp_path, train_size=20, val_size=10, seed=3)
    c = end_device_data("data1", data_dir=tmp_path, train_size=20, val_size=10, seed=4)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert not torch.equal(a.train.tensors[0], c.train.tensors[0])
    rows = {tuple(r.flatten()[:50].tolist()) for r in a.train.tensors[0]}
    assert not rows & {tuple(r.flatten()[:50].tolist()) for r in a.val.tensors[0]}


def test_fashion_mnist_data2_recipe(tmp_path):
    fake_fmnist(tmp_path)
    d1 = end_device_data("data1", data_dir=tmp_path, train_size=20, val_size=10, seed=0)
    d2 = end_device_data("data2", data_dir=tmp_path, train_size=20, val_size=10, seed=0)
    x, y = load_fashion_mnist(tmp_path, "test")
    assert len(d2.train) == 20
    # inverted images: normalised(255 - x) mirrors normalised(x) about the mean
    assert not torch.allclose(d1.train.tensors[0].mean(), d2.train.tensors[0].mean())


@pytest.mark.skipif(not HAVE_FMNIST, reason="Fashion-MNIST not installed")
def test_real_fashion_mnist_data1_sizes():
    d = end_device_data("data1", train_size=100, val_size=50)
    assert d.train.tensors[0].shape == (100, 1, 28, 28) and len(d.val) == 50
    assert 0 <= int(d.train.tensors[1].min()) and int(d.train.tensors[1].max()) <= 9
