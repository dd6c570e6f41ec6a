"""The end device's (SD's) private data and the cloud's pretraining set (Section V-A).

* **Data 1** (homogeneous): 2000 train + 500 validation images drawn from the *test* split of
  the cloud's dataset, so they come from the cloud's distribution but were never seen in
  pretraining.
* **Data 2** (heterogeneous): 5000 train + 1000 validation images whose classes and look differ
  from the cloud's data (CIFAR: ten CIFAR-100 classes; Fashion-MNIST: labels permuted by
  ``y -> (3*y + 1) mod 10`` and images inverted; see :mod:`jqodi.core.data`).
* **Your own data** (an image folder or ``.npz``) in place of ``data1``/``data2``, shaped and
  normalised as the cloud's dataset.

:func:`end_device_data` returns an :class:`EndDeviceData`; :func:`cloud_dataset` is the cloud's
pretraining set; :func:`check_scenario_data` loads a scenario's ``data`` as a run would.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import TensorDataset

from jqodi.errors import DataError
from jqodi.core.data.catalog import canonical_dataset, cloud_dataset_name, dataset_classes, dataset_shape, to_tensor
from jqodi.core.data.readers import load_raw

__all__ = ["CIFAR100_DATA2_CLASSES", "EndDeviceData", "FMNIST_DATA2_LABELS", "SD_SPLITS", "check_scenario_data",
           "cloud_dataset", "end_device_data"]

#: The paper's SD split sizes (train, val).
SD_SPLITS = {"data1": (2000, 500), "data2": (5000, 1000)}

#: Data 2 on Fashion-MNIST: the label derangement y -> (3y + 1) mod 10.
FMNIST_DATA2_LABELS = tuple((3 * y + 1) % 10 for y in range(10))
#: Data 2 on CIFAR: the CIFAR-100 fine classes used (remapped to 0..9 in this order).
CIFAR100_DATA2_CLASSES = tuple(range(10))


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
    return TensorDataset(to_tensor(x, dataset), torch.from_numpy(y))


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
        train=TensorDataset(to_tensor(xtr, norm), torch.from_numpy(np.ascontiguousarray(ytr))),
        val=TensorDataset(to_tensor(xva, norm), torch.from_numpy(np.ascontiguousarray(yva))),
        input_shape=tuple(int(s) for s in xtr.shape[1:]),  # type: ignore[arg-type]
        num_classes=dataset_classes(dataset) if name == "data1" else 10, seed=seed, description=desc,
        _cloud_loader=cloud_loader)


def _own_end_device_data(path: str, dataset: str, train_size: int | None, val_size: int | None,
                         seed: int) -> EndDeviceData:
    """The SD's data from your own image folder or ``.npz``, shaped and normalised as the cloud's
    ``dataset`` (the SD fine-tunes the cloud's model); ``None`` sizes take the whole splits."""
    from jqodi.core.userdata import load_user_dataset

    path = canonical_dataset(path)
    ud = load_user_dataset(path, shape=dataset_shape(dataset), seed=seed)
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
        train=TensorDataset(to_tensor(xtr, dataset), torch.from_numpy(np.ascontiguousarray(ytr))),
        val=TensorDataset(to_tensor(xva, dataset), torch.from_numpy(np.ascontiguousarray(yva))),
        input_shape=tuple(int(s) for s in xtr.shape[1:]),  # type: ignore[arg-type]
        num_classes=n_cls, seed=seed, description=f"{len(ytr)}+{len(yva)} images of your own data {path} "
                                                  f"({ud.num_classes} classes)",
        _cloud_loader=cloud_loader)


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
