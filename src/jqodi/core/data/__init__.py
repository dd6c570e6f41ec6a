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

Three modules, one concept each:

* :mod:`jqodi.core.data.readers` — the raw files: idx (:func:`read_idx`, :func:`load_fashion_mnist`),
  CIFAR pickles (:func:`load_cifar`), :func:`load_raw` for any named dataset;
* :mod:`jqodi.core.data.catalog` — the known datasets by name: aliases, classes, shapes,
  normalisation (:func:`canonical_dataset`, :func:`dataset_classes`, :func:`cloud_dataset_name`);
* :mod:`jqodi.core.data.end_device` — :class:`EndDeviceData`, :func:`end_device_data` (Data 1,
  Data 2, your own data), :func:`cloud_dataset`, :func:`check_scenario_data`.

Everything public is importable from here (``from jqodi.core.data import end_device_data``).
"""
from __future__ import annotations

from jqodi.core.data.catalog import (DATASETS, canonical_data_name, canonical_dataset, cloud_dataset_name,
                                     dataset_classes)
from jqodi.core.data.readers import FASHION_MNIST_DIR, load_cifar, load_fashion_mnist, load_raw, read_idx

#: what :mod:`jqodi.core.data.end_device` (torch) gives, imported on first use (PEP 562): naming and
#: checking datasets — e.g. ``jqodi plan --estimates`` — imports no torch
_END_DEVICE = ("SD_SPLITS", "EndDeviceData", "check_scenario_data", "cloud_dataset", "end_device_data")


def __getattr__(name: str):
    if name in _END_DEVICE:
        from jqodi.core.data import end_device

        return getattr(end_device, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DATASETS",
    "EndDeviceData",
    "FASHION_MNIST_DIR",
    "SD_SPLITS",
    "canonical_data_name",
    "canonical_dataset",
    "check_scenario_data",
    "cloud_dataset",
    "cloud_dataset_name",
    "dataset_classes",
    "end_device_data",
    "load_cifar",
    "load_fashion_mnist",
    "load_raw",
    "read_idx",
]
