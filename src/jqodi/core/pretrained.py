"""The cloud's pretrained models: pretraining on the cloud dataset and the checkpoint cache.

Cache: ``$JQODI_HOME/pretrained`` (:func:`jqodi.core.paths.pretrained_dir`).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from jqodi.core.progress import Progress, one_time
from jqodi.core.train_config import DEFAULT_PRETRAIN_EPOCHS
from jqodi.errors import JqodiError
from jqodi.core.training import default_width, epoch_batch_order, evaluate, train_step

__all__ = ["DEFAULT_PRETRAIN_EPOCHS", "Pretrained", "load_pretrained", "pretrain"]


@dataclass
class Pretrained:
    """A cloud-pretrained model (fp32) plus a calibration batch of cloud images and metadata."""

    model: nn.Module
    calibration: torch.Tensor
    meta: dict
    path: Path | None = None


def _cache_path(model_name: str, dataset: str, width: float, epochs: int, seed: int, cache_dir: Path | None) -> Path:
    from jqodi.core.paths import pretrained_dir

    d = Path(cache_dir) if cache_dir is not None else pretrained_dir()
    if "/" in dataset:  # your own dataset, by path: its name and a digest of the path
        import hashlib

        dataset = f"{Path(dataset).stem}-{hashlib.sha256(dataset.encode()).hexdigest()[:10]}"
    return d / f"{dataset}_{model_name}_w{width:g}_e{epochs}_s{seed}.pt"


def pretrain(model_name: str, dataset: str = "fashion-mnist", width: float | None = None,
             epochs: int = DEFAULT_PRETRAIN_EPOCHS, seed: int = 0, *, data_dir=None,
             cloud_size: int | None = None, batch_size: int = 128, lr: float = 1e-3,
             progress: bool | None = None, note: str = "") -> Pretrained:
    """Train ``model_name`` on the cloud dataset's train split (5000 held out for cloud validation).

    Says up front what it is about to do and how long that is expected to take (three training
    steps on a copy of the model, timed, × the steps to do; ``note`` is added to that line), then
    shows progress with rate and ETA over all epochs.
    """
    from jqodi.core.data import canonical_dataset, cloud_dataset, dataset_classes
    from jqodi.core.zoo import build_model

    if epochs < 1:
        raise JqodiError(f"pretraining needs ≥ 1 epoch, got {epochs}")

    dataset = canonical_dataset(dataset)
    width = default_width(model_name) if width is None else width
    full = cloud_dataset(dataset, data_dir, size=cloud_size, seed=seed)
    x, y = full.tensors
    n_val = max(1, min(5000, len(y) // 10))
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    val = TensorDataset(x[perm[:n_val]], y[perm[:n_val]])
    tr_x, tr_y = x[perm[n_val:]], y[perm[n_val:]]
    n_classes = dataset_classes(dataset)
    model = build_model(model_name, tuple(x.shape[1:]), n_classes, width, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * math.ceil(len(tr_y) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr * 3, total_steps=max(1, steps))
    n_batches = len(epoch_batch_order(len(tr_y), batch_size, seed, 1))
    one_time(progress, f"pretraining the cloud model {model_name} (width {width:g}) on {dataset}: "
             f"{epochs} epoch{'s' if epochs != 1 else ''} × {n_batches} batches of {len(tr_y)} images",
             _expected_pretrain_s(model, tr_x, tr_y, batch_size, epochs * n_batches, n_val * epochs), note)
    bar = Progress(progress, f"pretrain {model_name}", total_steps=epochs * n_batches)
    t0 = time.perf_counter()
    history = []
    for ep in range(1, epochs + 1):
        batches = epoch_batch_order(len(tr_y), batch_size, seed, ep)
        tot = 0.0
        for i, idx in enumerate(batches):
            tot += train_step(model, opt, tr_x[idx], tr_y[idx])
            sched.step()
            bar.label = f"pretrain {model_name} epoch {ep}/{epochs}"
            bar.batch(i + 1, len(batches), tot / (i + 1))
        vl, va = evaluate(model, val)
        history.append({"epoch": ep, "train_loss": tot / len(batches), "val_loss": vl, "val_accuracy": va})
        bar.line(f"pretrain {model_name} epoch {ep}/{epochs}: train {tot / len(batches):.4f} "
                 f"cloud-val {vl:.4f} acc {va:.1%} ({time.perf_counter() - t0:.0f}s)")
    model.eval()
    g = torch.Generator().manual_seed(seed + 1)
    calib = tr_x[torch.randperm(len(tr_y), generator=g)[:256]].clone()
    meta = {"model": model_name, "dataset": dataset, "width": width, "epochs": epochs, "seed": seed,
            "input_shape": list(x.shape[1:]), "num_classes": n_classes, "cloud_train_size": len(tr_y),
            "cloud_val_loss": history[-1]["val_loss"] if history else None,
            "cloud_val_accuracy": history[-1]["val_accuracy"] if history else None,
            "wall_s": time.perf_counter() - t0, "history": history}
    return Pretrained(model, calib, meta)


def _expected_pretrain_s(model, x, y, batch_size: int, steps: int, eval_samples: int) -> float | None:
    """Seconds ``steps`` training steps (+ evaluating ``eval_samples``) should take on this machine:
    the median of three timed steps on a copy of ``model`` (the model and the RNG are untouched)."""
    import copy
    import statistics

    if steps < 1 or len(y) < 2:
        return None
    probe = copy.deepcopy(model)
    opt = torch.optim.Adam(probe.parameters(), lr=1e-3)
    n = min(batch_size, len(y))
    times = []
    with torch.random.fork_rng(devices=[]):
        for _ in range(3):
            t = time.perf_counter()
            train_step(probe, opt, x[:n], y[:n])
            times.append(time.perf_counter() - t)
    per_sample = statistics.median(times) / n
    return per_sample * (steps * n + eval_samples / 3)  # a forward pass is about a third of a step


def load_pretrained(model_name: str, dataset: str = "fashion-mnist", width: float | None = None, *,
                    epochs: int = DEFAULT_PRETRAIN_EPOCHS, seed: int = 0, data_dir=None,
                    cache_dir: str | Path | None = None, progress: bool | None = None,
                    cloud_size: int | None = None, force: bool = False) -> Pretrained:
    """The cached cloud-pretrained checkpoint, pretraining (with progress) if it is missing.

    Cache: ``$JQODI_HOME/pretrained`` (platformdirs' user data dir by default). Writes are atomic,
    so concurrent callers at worst both pretrain.
    """
    from jqodi.core.data import canonical_dataset
    from jqodi.core.zoo import build_model

    dataset = canonical_dataset(dataset)
    width = default_width(model_name) if width is None else float(width)
    tag_epochs = epochs if cloud_size is None else f"{epochs}n{cloud_size}"
    path = _cache_path(model_name, dataset, width, tag_epochs, seed, cache_dir)  # type: ignore[arg-type]
    if path.is_file() and not force:
        try:
            ck = torch.load(path, map_location="cpu", weights_only=True)
            meta = ck["meta"]
            model = build_model(model_name, tuple(meta["input_shape"]), meta["num_classes"], width)
            model.load_state_dict(ck["state_dict"])
            return Pretrained(model.eval(), ck["calibration"], meta, path)
        except Exception as e:  # a corrupt cache file: say so, re-create it
            print(f"warning: pretrained checkpoint {path} is unreadable ({e}); pretraining again",
                  file=sys.stderr)
    pre = pretrain(model_name, dataset, width, epochs, seed, data_dir=data_dir, progress=progress,
                   cloud_size=cloud_size, note=f"once: later runs load {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{__import__('os').getpid()}")
    torch.save({"state_dict": pre.model.state_dict(), "calibration": pre.calibration, "meta": pre.meta}, tmp)
    tmp.replace(path)
    pre.path = path
    return pre
