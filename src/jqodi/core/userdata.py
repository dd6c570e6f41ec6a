"""Your own data: an image folder or ``.npz`` arrays, for the end device's data or the cloud's.

Two layouts are read:

* **An image folder**: one sub-folder per class holding its JPEG/PNG images
  (``ROOT/<class>/*.png``); the classes are the sub-folder names in sorted order. With
  ``ROOT/train/<class>/…`` and ``ROOT/val/<class>/…`` (or ``test``) the splits are yours;
  without, a seeded 80/20 split of all images is used. Images are converted to grayscale when
  every one is (mode ``L``/``1``/``LA``/``I``), else to RGB, and resized to the first image's size
  (or to the shape asked for).
* **A ``.npz`` file** with ``x_train``, ``y_train``, ``x_val`` (or ``x_test``), ``y_val``
  (or ``y_test``); or just ``x`` and ``y`` (split 80/20, seeded). Images are uint8 (0..255) or
  floats in [0, 1], shaped N×H×W, N×H×W×C (C ≤ 4) or N×C×H×W; labels are integers 0..K-1.

:func:`load_user_dataset` returns :class:`UserDataset` (uint8 N×C×H×W images, int64 labels,
class names). Every problem is a :class:`jqodi.errors.DataError` naming the file or folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from jqodi.errors import DataError

__all__ = ["UserDataset", "is_user_dataset", "load_user_dataset", "names_a_path", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_VAL_NAMES = ("val", "validation", "test")
_GRAY_MODES = {"L", "1", "LA", "I", "I;16", "F"}


@dataclass(frozen=True)
class UserDataset:
    """A user dataset's two splits (uint8 N×C×H×W images, int64 labels) and its class names."""

    path: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    classes: tuple[str, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def norm(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of the train images in [0, 1]."""
        x = self.x_train.astype(np.float64) / 255.0
        mean = x.mean(axis=(0, 2, 3))
        std = np.maximum(x.std(axis=(0, 2, 3)), 1e-3)
        return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def names_a_path(name: str) -> bool:
    """Is ``name`` written as a path (a ``/``, a leading ``.`` or a ``.npz`` ending), whatever exists there?"""
    s = str(name)
    return s.endswith(".npz") or "/" in s or s.startswith(".")


def is_user_dataset(name: str) -> bool:
    """Does ``name`` name a dataset by path (a folder, or a ``.npz`` file) rather than by name?
    A path has a ``/``, starts with ``.`` or ends with ``.npz``; a bare word names a folder of the
    current directory only when it is not a known dataset or split name (``data1``, ``cifar10``: a
    folder called so is ``./data1``), so a name never changes meaning with the directory."""
    from jqodi.core.data.catalog import is_known_name

    if names_a_path(name):
        return True
    return not is_known_name(str(name)) and Path(str(name)).is_dir()


def load_user_dataset(path: str | Path, *, shape: tuple[int, int, int] | None = None,
                      seed: int = 0) -> UserDataset:
    """Read the image folder or ``.npz`` file at ``path`` (see the module docstring)."""
    return _load(str(Path(path).expanduser().resolve()), tuple(shape) if shape else None, int(seed))


@lru_cache(maxsize=8)
def _load(path: str, shape, seed: int) -> UserDataset:
    p = Path(path)
    if p.suffix == ".npz":
        if not p.is_file():
            raise DataError(f"dataset {p}: no such .npz file")
        return _load_npz(p, shape, seed)
    if not p.is_dir():
        raise DataError(f"dataset {p}: no such folder (an image folder has one sub-folder per class; "
                        f"or give a .npz file)")
    return _load_folder(p, shape, seed)


def _split(x: np.ndarray, y: np.ndarray, seed: int):
    idx = np.random.default_rng([seed, 7]).permutation(len(y))
    n_val = max(1, len(y) // 5)
    return x[idx[n_val:]], y[idx[n_val:]], x[idx[:n_val]], y[idx[:n_val]]


def _as_nchw(x: np.ndarray, where: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] <= 4 and x.shape[1] > 4:  # N×H×W×C
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4:
        raise DataError(f"{where}: images must be N×H×W, N×H×W×C or N×C×H×W, got shape {x.shape}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise DataError(f"{where}: float images must be within [0, 1]")
        return np.ascontiguousarray(np.round(x * 255).astype(np.uint8))
    raise DataError(f"{where}: images must be uint8 or floats in [0, 1], got {x.dtype}")


def _labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: labels must be {n} integers, got {y.dtype} {y.shape}")
    if n and y.min() < 0:
        raise DataError(f"{where}: labels must be ≥ 0")
    return y.astype(np.int64)


def _load_npz(p: Path, shape, seed: int) -> UserDataset:
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"dataset {p}: not a readable .npz file ({e})") from e
    val_key = next((k for k in ("val", "validation", "test") if f"x_{k}" in arrays and f"y_{k}" in arrays), None)
    if "x_train" in arrays and "y_train" in arrays and val_key:
        xtr, xva = arrays["x_train"], arrays[f"x_{val_key}"]
        xtr, xva = _as_nchw(xtr, f"{p}: x_train"), _as_nchw(xva, f"{p}: x_{val_key}")
        ytr = _labels(arrays["y_train"], len(xtr), f"{p}: y_train")
        yva = _labels(arrays[f"y_{val_key}"], len(xva), f"{p}: y_{val_key}")
    elif "x" in arrays and "y" in arrays:
        x = _as_nchw(arrays["x"], f"{p}: x")
        xtr, ytr, xva, yva = _split(x, _labels(arrays["y"], len(x), f"{p}: y"), seed)
    else:
        raise DataError(f"dataset {p}: expected arrays x_train, y_train, x_val, y_val (or x, y); "
                        f"found {', '.join(sorted(arrays)) or 'none'}")
    if xtr.shape[1:] != xva.shape[1:]:
        raise DataError(f"dataset {p}: train images are {xtr.shape[1:]} but validation images {xva.shape[1:]}")
    if shape is not None and tuple(xtr.shape[1:]) != tuple(shape):
        raise DataError(f"dataset {p}: images are {'x'.join(map(str, xtr.shape[1:]))}, the model expects "
                        f"{'x'.join(map(str, shape))}")
    k = int(max(ytr.max(initial=0), yva.max(initial=0))) + 1
    return _checked(UserDataset(str(p), xtr, ytr, xva, yva, tuple(str(i) for i in range(k))))


def _class_dirs(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def _images(d: Path) -> list[Path]:
    return sorted(f for f in d.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())


def _load_folder(root: Path, shape, seed: int) -> UserDataset:
    subs = {d.name.lower(): d for d in _class_dirs(root)}
    val_dir = next((subs[n] for n in _VAL_NAMES if n in subs), None)
    if "train" in subs and val_dir is not None:
        tr_classes, va_classes = _class_dirs(subs["train"]), _class_dirs(val_dir)
        classes = tuple(d.name for d in tr_classes)
        unknown = sorted({d.name for d in va_classes} - set(classes))
        if unknown:
            raise DataError(f"dataset {root}: {val_dir.name}/ has classes that train/ lacks: {', '.join(unknown)}")
        tr_files = [(f, i) for i, d in enumerate(tr_classes) for f in _images(d)]
        va_files = [(f, classes.index(d.name)) for d in va_classes for f in _images(d)]
    else:
        tr_classes = _class_dirs(root)
        classes = tuple(d.name for d in tr_classes)
        tr_files = [(f, i) for i, d in enumerate(tr_classes) for f in _images(d)]
        va_files = []
    if len(classes) < 2:
        raise DataError(f"dataset {root}: an image folder needs one sub-folder per class (≥ 2), "
                        f"found {len(classes)}")
    if not tr_files:
        raise DataError(f"dataset {root}: no {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} images in its class folders")
    xtr, ytr, shape = _read_images(tr_files, shape)
    if va_files:
        xva, yva, _ = _read_images(va_files, shape)
    else:
        xtr, ytr, xva, yva = _split(xtr, ytr, seed)
    return _checked(UserDataset(str(root), xtr, ytr, xva, yva, classes))


def _read_images(files, shape):
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as e:  # pragma: no cover - Pillow comes with matplotlib
        raise DataError("reading image folders needs Pillow (pip install pillow)") from e
    imgs = []
    for f, _ in files:
        try:
            with Image.open(f) as im:
                im.load()
                imgs.append(im.copy())
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise DataError(f"{f}: not a readable image ({e})") from e
    if shape is None:
        gray = all(im.mode in _GRAY_MODES for im in imgs)
        w, h = imgs[0].size
        shape = (1 if gray else 3, h, w)
    c, h, w = shape
    mode = "L" if c == 1 else "RGB"
    if c not in (1, 3):
        raise DataError(f"image folders give 1 (grayscale) or 3 (RGB) channels, the model expects {c}")
    x = np.stack([np.asarray(im.convert(mode).resize((w, h)) if im.size != (w, h) or im.mode != mode
                             else im, dtype=np.uint8).reshape(h, w, c) for im in imgs]).transpose(0, 3, 1, 2)
    y = np.asarray([i for _, i in files], dtype=np.int64)
    return np.ascontiguousarray(x), y, tuple(shape)


def _checked(d: UserDataset) -> UserDataset:
    if len(d.y_train) < 1 or len(d.y_val) < 1:
        raise DataError(f"dataset {d.path}: needs ≥ 1 train and ≥ 1 validation image, got "
                        f"{len(d.y_train)} and {len(d.y_val)}")
    return d
