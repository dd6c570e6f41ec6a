"""Readers of the raw dataset files: Fashion-MNIST idx files (``.gz`` or plain) and the CIFAR-10/100
python-pickle batches, as uint8 images (N×C×H×W) and int64 labels.

Missing or corrupt files raise :class:`jqodi.errors.DataError` naming the path and how to get
the data.
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np

from jqodi.errors import DataError

__all__ = ["FASHION_MNIST_DIR", "load_cifar", "load_fashion_mnist", "load_raw", "read_idx"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_HINT = ("install it with 'sudo apt-get install dataset-fashion-mnist' "
                      "(Debian/Ubuntu) or pass --data-dir to a folder holding the four idx .gz files")
CIFAR_HINT = ("download the 'python version' from https://www.cs.toronto.edu/~kriz/cifar.html, "
              "unpack it and pass --data-dir (or set JQODI_DATA_DIR) to the folder holding it")


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
