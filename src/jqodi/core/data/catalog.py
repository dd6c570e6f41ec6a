"""The known datasets by name: aliases, class counts, image shapes and per-channel normalisation,
and the same questions answered for your own data (:mod:`jqodi.core.userdata`: an image folder or
a ``.npz`` file named by its path).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jqodi.errors import DataError

if TYPE_CHECKING:
    import torch

__all__ = ["DATASETS", "SD_SPLIT_NAMES", "canonical_data_name", "canonical_dataset", "cloud_dataset_name",
           "data_label", "dataset_classes", "dataset_shape", "is_known_name", "to_tensor"]

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
#: The paper's end-device splits by name (``jqodi.core.data.end_device.SD_SPLITS`` holds their sizes).
SD_SPLIT_NAMES = ("data1", "data2", "data2-shifted")
_CLASSES = {"fashion-mnist": 10, "cifar10": 10, "cifar100": 100}
_SHAPES = {"fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32)}


def is_known_name(name: str) -> bool:
    """Does ``name`` (any case) name a known dataset or one of the paper's splits? Such a name is never
    read as a folder, even where one of that name exists (write ``./data1`` for a folder)."""
    n = str(name).lower()
    return n in _ALIASES or n in SD_SPLIT_NAMES


def canonical_dataset(name: str) -> str:
    """A known dataset's canonical name, or the absolute path of your own (image folder, ``.npz``)."""
    from jqodi.core.userdata import is_user_dataset

    if is_user_dataset(name):
        try:
            return str(Path(name).expanduser().resolve())
        except RuntimeError:  # ~user of no such user
            raise DataError(f"dataset {name!r}: no home folder for {str(name).split('/')[0]!r}") from None
    try:
        return _ALIASES[name.lower()]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}, or the path of an image "
                        f"folder (one sub-folder per class) or a .npz file") from None


def canonical_data_name(name: str) -> str:
    """The end device's data as the trace store and estimates name it: the paper's splits
    (``data1``, ``data2``, …) in lower case (``Data1`` is ``data1``, as :func:`end_device_data` reads it),
    your own data by its absolute path with symbolic links resolved, however it is written
    (``./my-images``, ``my-images/``, a link to it): one name per folder, one folder per name."""
    from jqodi.core.userdata import is_user_dataset

    if is_user_dataset(name):
        return canonical_dataset(name)
    return name.lower() if name.lower() in SD_SPLIT_NAMES else name


def data_label(data_name: str, dataset: str) -> str:
    """The end device's data as printed: ``data1/cifar10`` for a paper split, your own data's path once
    (its name and dataset are the same path)."""
    return data_name if data_name == dataset else f"{data_name}/{dataset}"


def cloud_dataset_name(dataset: str, split: str) -> str:
    """The cloud's dataset of a scenario's ``data``: CIFAR-10 for the paper's Data 2 on CIFAR, whose
    images come from CIFAR-100 (a scenario may name either); else ``dataset`` itself."""
    return "cifar10" if split == "data2" and dataset in ("cifar100", "cifar-100") else dataset


def dataset_classes(dataset: str) -> int:
    """How many classes ``dataset`` has (a model trained on it has this many outputs)."""
    dataset = canonical_dataset(dataset)
    if dataset in _CLASSES:
        return _CLASSES[dataset]
    from jqodi.core.userdata import load_user_dataset

    return load_user_dataset(dataset).num_classes


def dataset_shape(dataset: str) -> tuple[int, int, int]:
    """C×H×W of one image of ``dataset`` (a canonical name or your own data's path)."""
    if dataset in _SHAPES:
        return _SHAPES[dataset]
    from jqodi.core.userdata import load_user_dataset

    return load_user_dataset(dataset).input_shape


def to_tensor(images: np.ndarray, dataset: str) -> torch.Tensor:
    """uint8 images as float tensors normalised with ``dataset``'s per-channel mean/std."""
    import torch   # here, not above: naming and checking datasets (planning) imports no torch

    if dataset in _NORM:
        mean, std = _NORM[dataset]
    else:  # your own dataset: its train split's statistics
        from jqodi.core.userdata import load_user_dataset

        mean, std = load_user_dataset(dataset).norm()
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return (x - m) / s
