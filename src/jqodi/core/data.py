"""Datasets: Fashion-MNIST (idx ``.gz``), CIFAR-10/100 (python pickles) and the end device's splits.

The paper's end device (SD) owns a small private dataset (Section V-A):

* **Data 1** (homogeneous): 2000 train + 500 validation images drawn from the *test* split of
  the cloud's dataset, so they come from the cloud's distribution but were never seen in
  pretraining.
* **Data 2** (heterogeneous): 5000 train + 1000 validation images whose classes and look differ
  from the cloud's data. With CIFAR this is ten CIFAR-100 classes (train images from CIFAR-100's
  train split, validation images from its test split; the paper does not name its ten classes, we
  take fine labels ``0..9`` = apple, aquarium_fish, baby, bear, beaver, bed, bee, beetle, bicycle,
  bottle, configurable with ``classes=``). With Fashion-MNIST there is no second dataset, so Data 2
  is built from the test split by a fixed recipe: **labels permuted by the derangement**
  ``y -> (3*y + 1) mod 10`` (every class gets a new meaning) **and images inverted**
  (``255 - x``: dark garments on a light background), so both "classes" and "look" differ.

``end_device_data`` returns an :class:`EndDeviceData` with ``train`` / ``val`` TensorDatasets of
normalised float images (N×C×H×W) and int64 labels; ``cloud`` is the cloud's pretraining set
(the full train split), loaded on first use. Everything is seeded and reproducible.

Your own data (:mod:`jqodi.core.userdata`): wherever a dataset is named, a path to an image
folder (one sub-folder per class) or a ``.npz`` file works too — as the cloud's ``dataset`` (its
train split pretrains the models) and as the end device's data in place of ``data1``/``data2``
(its train/val splits are the SD's; sizes default to all of them).

Missing or corrupt files raise :class:`jqodi.errors.DataError` naming the path and how to get
the data.
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import TensorDataset

from jqodi.errors import DataError

__all__ = [
    "DATASETS",
    "EndDeviceData",
    "FASHION_MNIST_DIR",
    "SD_SPLITS",
    "check_scenario_data",
    "cloud_dataset_name",
    "dataset_classes",
    "end_device_data",
    "load_cifar",
    "load_fashion_mnist",
    "load_raw",
    "read_idx",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_HINT = ("install it with 'sudo apt-get install dataset-fashion-mnist' "
                      "(Debian/Ubuntu) or pass --data-dir to a folder holding the four idx .gz files")
CIFAR_HINT = ("download the 'python version' from https://www.cs.toronto.edu/~kriz/cifar.html, "
              "unpack it and pass --data-dir (or set JQODI_DATA_DIR) to the folder holding it")

#: Per-channel mean/std of the cloud training sets (images in [0, 1]).
_NORM = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
DATASETS = ("fashion-mnist", "cifar10", "cifar100")
_ALIASES = {"fashion-mnist": "fashion-mnist", "fashion_mnist": "fashion-mnist", "fmnist": "fashion-mnist",
            "cifar10": "cifar10", "cifar-10": "cifar10", "cifar": "cifar10",
            "cifar100": "cifar100", "cifar-100": "cifar100"}
_CLASSES = {"fashion-mnist": 10, "cifar10": 10, "cifar100": 100}
_SHAPES = {"fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32)}

#: The paper's SD split sizes (train, val).
SD_SPLITS = {"data1": (2000, 500), "data2": (5000, 1000)}

#: Data 2 on Fashion-MNIST: the label derangement y -> (3y + 1) mod 10.
FMNIST_DATA2_LABELS = tuple((3 * y + 1) % 10 for y in range(10))
#: Data 2 on CIFAR: the CIFAR-100 fine classes used (remapped to 0..9 in this order).
CIFAR100_DATA2_CLASSES = tuple(range(10))


# --- raw loaders ----------------------------------------------------------------------------

def _open_maybe_gz(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path} is corrupt or unreadable ({e}); re-install or re-download it") from e


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (the MNIST format, optionally gzip-compressed) into a numpy array."""
    path = Path(path)
    raw = _open_maybe_gz(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an idx file (bad magic number); re-install or re-download it")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path} is corrupt: truncated idx header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path} is corrupt: header says {'x'.join(map(str, shape))} "
                        f"({expected} bytes of data) but the file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def load_fashion_mnist(data_dir: str | Path | None = None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST ``split`` ("train" 60000 or "test" 10000) as ``(uint8 N×1×28×28, int64 N)``."""
    directory = Path(data_dir) if data_dir is not None else FASHION_MNIST_DIR
    prefix = {"train": "train", "test": "t10k"}[split]
    img_path = _find(directory, f"{prefix}-images-idx3-ubyte")
    lbl_path = _find(directory, f"{prefix}-labels-idx1-ubyte")
    if img_path is None or lbl_path is None:
        missing = f"{prefix}-images-idx3-ubyte.gz" if img_path is None else f"{prefix}-labels-idx1-ubyte.gz"
        raise DataError(f"Fashion-MNIST not found: looked for {missing} in {directory}; {FASHION_MNIST_HINT}")
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or labels.ndim != 1 or images.dtype != np.uint8:
        raise DataError(f"{img_path} / {lbl_path}: expected N×H×W uint8 images and N labels, "
                        f"got shapes {images.shape} and {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{img_path} holds {len(images)} images but {lbl_path} holds {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{lbl_path} is corrupt: labels outside 0..9")
    return images[:, None, :, :].copy(), labels.astype(np.int64)


def _default_roots(data_dir: str | Path | None) -> list[Path]:
    if data_dir is not None:
        return [Path(data_dir)]
    roots = []
    if os.environ.get("JQODI_DATA_DIR"):
        roots.append(Path(os.environ["JQODI_DATA_DIR"]))
    roots.append(Path("/usr/share/datasets"))
    from jqodi.core.paths import jqodi_home

    roots.append(jqodi_home() / "datasets")
    return roots


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="bytes")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError) as e:
        raise DataError(f"{path} is corrupt or not a CIFAR pickle ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR batch (expected a dict, got {type(obj).__name__})")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _cifar_arrays(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    if "data" not in d or label_key not in d:
        raise DataError(f"{path} is not a CIFAR batch: keys 'data' and '{label_key}' expected, "
                        f"found {sorted(d)}")
    data = np.asarray(d["data"])
    labels = np.asarray(d[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DataError(f"{path} is corrupt: expected N×3072 uint8 data and N labels, "
                        f"got {data.dtype} {data.shape} and {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar(data_dir: str | Path | None = None, split: str = "train",
               which: str = "cifar10") -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 or CIFAR-100 (fine labels) ``split`` from the standard python-pickle batches.

    Looks in ``data_dir`` itself and in its ``cifar-10-batches-py`` / ``cifar-100-python``
    sub-folder; without ``data_dir``: ``$JQODI_DATA_DIR``, ``/usr/share/datasets`` and
    ``$JQODI_HOME/datasets``.
    """
    if which not in ("cifar10", "cifar100"):
        raise DataError(f"unknown CIFAR variant {which!r} (cifar10 or cifar100)")
    sub = "cifar-10-batches-py" if which == "cifar10" else "cifar-100-python"
    if which == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        key = "labels"
    else:
        files = ["train"] if split == "train" else ["test"]
        key = "fine_labels"
    looked = []
    for root in _default_roots(data_dir):
        for d in (root, root / sub):
            looked.append(str(d))
            if all((d / f).is_file() for f in files):
                parts = [_cifar_arrays(d / f, key) for f in files]
                x = np.concatenate([p[0] for p in parts])
                y = np.concatenate([p[1] for p in parts])
                n_cls = 10 if which == "cifar10" else 100
                if y.size and (y.min() < 0 or y.max() >= n_cls):
                    raise DataError(f"{d}: labels outside 0..{n_cls - 1}; the files are corrupt")
                return x, y
    raise DataError(f"{which.upper()} not found: looked for {', '.join(files)} in {', '.join(looked)}; "
                    f"{CIFAR_HINT}")


def load_raw(dataset: str, split: str, data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw uint8 images and int64 labels of ``dataset`` ("fashion-mnist", "cifar10", "cifar100", or the
    path of your own image folder / ``.npz``: ``split`` "train" is its train split, "test" its val split)."""
    from jqodi.core.userdata import is_user_dataset, load_user_dataset

    if is_user_dataset(dataset):
        ud = load_user_dataset(dataset)
        return (ud.x_train, ud.y_train) if split == "train" else (ud.x_val, ud.y_val)
    if dataset == "fashion-mnist":
        return load_fashion_mnist(data_dir, split)
    if dataset in ("cifar10", "cifar100"):
        return load_cifar(data_dir, split, dataset)
    raise DataError(f"unknown dataset {dataset!r}; known: fashion-mnist, cifar10, cifar100")


def canonical_dataset(name: str) -> str:
    """A known dataset's canonical name, or the absolute path of your own (image folder, ``.npz``)."""
    from jqodi.core.userdata import is_user_dataset

    if is_user_dataset(name):
        return str(Path(name).expanduser().resolve())
    try:
        return _ALIASES[name.lower()]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}, or the path of an image "
                        f"folder (one sub-folder per class) or a .npz file") from None


def cloud_dataset_name(dataset: str, split: str) -> str:
    """The cloud's dataset of a scenario's ``data``: CIFAR-10 for the paper's Data 2 on CIFAR, whose
    images come from CIFAR-100 (a scenario may name either); else ``dataset`` itself."""
    return "cifar10" if split == "data2" and dataset in ("cifar100", "cifar-100") else dataset


def check_scenario_data(data) -> None:
    """Load a scenario's ``data`` (a :class:`jqodi.core.scenario.DataSpec`) as a run would and check
    it against the scenario: raises :class:`DataError` (files missing or unreadable, another shape
    or class count) before anything is planned or started."""
    try:
        sd = end_device_data(data.split, cloud_dataset_name(data.dataset, data.split), data.data_dir,
                             data.train_size, data.val_size)
    except DataError as e:
        raise DataError(f"data: {e}") from e
    if tuple(sd.input_shape) != tuple(data.input_shape):
        raise DataError(f"data.input_shape: the scenario says {'x'.join(map(str, data.input_shape))} but "
                        f"{sd.description} are {'x'.join(map(str, sd.input_shape))}")
    if sd.num_classes != data.num_classes:
        raise DataError(f"data.num_classes: the scenario says {data.num_classes} but the model trained on "
                        f"{sd.dataset} has {sd.num_classes} outputs")


def dataset_classes(dataset: str) -> int:
    """How many classes ``dataset`` has (a model trained on it has this many outputs)."""
    dataset = canonical_dataset(dataset)
    if dataset in _CLASSES:
        return _CLASSES[dataset]
    from jqodi.core.userdata import load_user_dataset

    return load_user_dataset(dataset).num_classes


def _shape(dataset: str) -> tuple[int, int, int]:
    if dataset in _SHAPES:
        return _SHAPES[dataset]
    from jqodi.core.userdata import load_user_dataset

    return load_user_dataset(dataset).input_shape


def _to_tensor(images: np.ndarray, dataset: str) -> torch.Tensor:
    if dataset in _NORM:
        mean, std = _NORM[dataset]
    else:  # your own dataset: its train split's statistics
        from jqodi.core.userdata import load_user_dataset

        mean, std = load_user_dataset(dataset).norm()
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (x - m) / s


# --- the end device's data --------------------------------------------------------------------

@dataclass
class EndDeviceData:
    """The SD's private splits plus the cloud's pretraining set.

    ``train``/``val`` are TensorDatasets ``(float N×C×H×W normalised images, int64 labels)``;
    ``cloud`` (the cloud dataset's full train split, same normalisation) is loaded on first use.
    """

    name: str
    dataset: str
    train: TensorDataset
    val: TensorDataset
    input_shape: tuple[int, int, int]
    num_classes: int
    seed: int
    description: str = ""
    _cloud_loader: Callable[[], TensorDataset] | None = field(default=None, repr=False)
    _cloud: TensorDataset | None = field(default=None, repr=False)

    @property
    def cloud(self) -> TensorDataset:
        if self._cloud is None:
            if self._cloud_loader is None:
                raise DataError("this EndDeviceData has no cloud dataset attached")
            self._cloud = self._cloud_loader()
        return self._cloud

    @property
    def train_size(self) -> int:
        return len(self.train)

    @property
    def val_size(self) -> int:
        return len(self.val)


def cloud_dataset(dataset: str = "fashion-mnist", data_dir: str | Path | None = None,
                  size: int | None = None, seed: int = 0) -> TensorDataset:
    """The cloud's pretraining set: the train split of ``dataset`` (a seeded subset if ``size``)."""
    dataset = canonical_dataset(dataset)
    x, y = load_raw(dataset, "train", data_dir)
    if size is not None and size < len(y):
        idx = np.random.default_rng(seed).permutation(len(y))[:size]
        x, y = x[idx], y[idx]
    return TensorDataset(_to_tensor(x, dataset), torch.from_numpy(y))


def _check_sizes(name: str, n_train: int, n_val: int, available: int, where: str) -> None:
    if n_train < 1 or n_val < 1:
        raise DataError(f"{name}: train_size and val_size must be ≥ 1, got {n_train} and {n_val}")
    if n_train + n_val > available:
        raise DataError(f"{name}: {n_train} train + {n_val} val images requested but {where} "
                        f"holds only {available}")


def end_device_data(name: str = "data1", dataset: str = "fashion-mnist", data_dir: str | Path | None = None,
                    train_size: int | None = None, val_size: int | None = None, seed: int = 0,
                    classes: Sequence[int] | None = None) -> EndDeviceData:
    """The SD's dataset ``name`` ("data1" homogeneous, "data2" heterogeneous) on ``dataset``.

    Sizes default to the paper's (Data 1: 2000/500, Data 2: 5000/1000). ``seed`` picks which
    images (a seeded permutation); the same arguments always give the same tensors.
    ``classes`` (CIFAR Data 2 only) picks the ten CIFAR-100 fine classes.
    """
    from jqodi.core.userdata import is_user_dataset

    dataset = canonical_dataset(dataset)
    if is_user_dataset(name):
        return _own_end_device_data(name, dataset, train_size, val_size, seed)
    name = name.lower()
    if name not in SD_SPLITS:
        raise DataError(f"unknown end-device data {name!r}; known: {', '.join(SD_SPLITS)}, or the path of an "
                        f"image folder (one sub-folder per class) or a .npz file")
    n_train = SD_SPLITS[name][0] if train_size is None else int(train_size)
    n_val = SD_SPLITS[name][1] if val_size is None else int(val_size)
    rng = np.random.default_rng([seed, 0 if name == "data1" else 1])

    if name == "data1" or dataset == "fashion-mnist":
        x, y = load_raw(dataset, "test", data_dir)
        _check_sizes(name, n_train, n_val, len(y), f"the {dataset} test split")
        idx = rng.permutation(len(y))
        tr, va = idx[:n_train], idx[n_train:n_train + n_val]
        xtr, ytr, xva, yva = x[tr], y[tr], x[va], y[va]
        norm = dataset
        if name == "data1":
            desc = f"{n_train}+{n_val} images from the {dataset} test split (homogeneous)"
        else:
            perm = np.asarray(FMNIST_DATA2_LABELS, dtype=np.int64)
            ytr, yva = perm[ytr], perm[yva]
            xtr, xva = 255 - xtr, 255 - xva
            desc = (f"{n_train}+{n_val} images from the fashion-mnist test split, inverted, "
                    f"labels y->(3y+1) mod 10 (heterogeneous)")
    else:  # data2 on CIFAR: ten CIFAR-100 classes
        cls = list(CIFAR100_DATA2_CLASSES if classes is None else classes)
        if len(cls) != 10 or len(set(cls)) != 10 or min(cls) < 0 or max(cls) > 99:
            raise DataError(f"data2 needs ten distinct CIFAR-100 fine classes in 0..99, got {cls}")
        remap = np.full(100, -1, dtype=np.int64)
        remap[cls] = np.arange(10)
        xs, ys = [], []
        for split, n in (("train", n_train), ("test", n_val)):
            x, y = load_raw("cifar100", split, data_dir)
            keep = np.flatnonzero(remap[y] >= 0)
            if n < 1 or n > len(keep):
                raise DataError(f"data2: {n} {split} images requested but CIFAR-100's {split} split "
                                f"holds {len(keep)} of the chosen classes")
            pick = keep[rng.permutation(len(keep))[:n]]
            xs.append(x[pick])
            ys.append(remap[y[pick]])
        xtr, xva = xs
        ytr, yva = ys
        norm = "cifar10"  # the cloud's normalisation: the SD feeds the cloud's model
        desc = f"{n_train}+{n_val} images of CIFAR-100 fine classes {cls} (heterogeneous)"

    def cloud_loader() -> TensorDataset:
        return cloud_dataset(dataset, data_dir)

    return EndDeviceData(
        name=name, dataset=dataset,
        train=TensorDataset(_to_tensor(xtr, norm), torch.from_numpy(np.ascontiguousarray(ytr))),
        val=TensorDataset(_to_tensor(xva, norm), torch.from_numpy(np.ascontiguousarray(yva))),
        input_shape=tuple(int(s) for s in xtr.shape[1:]),  # type: ignore[arg-type]
        num_classes=dataset_classes(dataset) if name == "data1" else 10, seed=seed, description=desc,
        _cloud_loader=cloud_loader)


def _own_end_device_data(path: str, dataset: str, train_size: int | None, val_size: int | None,
                         seed: int) -> EndDeviceData:
    """The SD's data from your own image folder or ``.npz``, shaped and normalised as the cloud's
    ``dataset`` (the SD fine-tunes the cloud's model); ``None`` sizes take the whole splits."""
    from jqodi.core.userdata import load_user_dataset

    path = canonical_dataset(path)
    ud = load_user_dataset(path, shape=_shape(dataset), seed=seed)
    n_cls = dataset_classes(dataset)
    if int(max(ud.y_train.max(), ud.y_val.max())) >= n_cls:
        raise DataError(f"{path}: {ud.num_classes} classes, but the cloud's dataset {dataset} has {n_cls}: the "
                        f"model has {n_cls} outputs")
    rng = np.random.default_rng([seed, 2])
    picks = []
    for split, x, y, n in (("train", ud.x_train, ud.y_train, train_size), ("val", ud.x_val, ud.y_val, val_size)):
        n = len(y) if n is None else int(n)
        if n < 1 or n > len(y):
            raise DataError(f"{path}: {n} {split} images requested but its {split} split holds {len(y)}")
        idx = rng.permutation(len(y))[:n]
        picks.append((x[idx], y[idx]))
    (xtr, ytr), (xva, yva) = picks

    def cloud_loader() -> TensorDataset:
        return cloud_dataset(dataset)

    return EndDeviceData(
        name=path, dataset=dataset,
        train=TensorDataset(_to_tensor(xtr, dataset), torch.from_numpy(np.ascontiguousarray(ytr))),
        val=TensorDataset(_to_tensor(xva, dataset), torch.from_numpy(np.ascontiguousarray(yva))),
        input_shape=tuple(int(s) for s in xtr.shape[1:]),  # type: ignore[arg-type]
        num_classes=n_cls, seed=seed, description=f"{len(ytr)}+{len(yva)} images of your own data {path} "
                                                  f"({ud.num_classes} classes)",
        _cloud_loader=cloud_loader)
