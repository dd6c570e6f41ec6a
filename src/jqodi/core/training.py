"""Training primitives shared by the single-process reference and the distributed runtime.

One set of fine-tuning hyper-parameters (:class:`TrainConfig`, defined torch-free in
:mod:`jqodi.core.train_config`), the seeded batch order of an
epoch, a fresh per-epoch optimizer, one step, and the validation loss L(k). The protocol itself
(cloud → edge → end and back) is :func:`jqodi.learning.reference.protocol_epoch` in one process
and :mod:`jqodi.runtime.roles` across processes.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from jqodi.core.train_config import TrainConfig
from jqodi.errors import JqodiError

__all__ = ["DEFAULT_WIDTH", "TrainConfig", "default_width", "epoch_batch_order", "evaluate",
           "make_optimizer", "per_sample_losses", "train_step"]

#: CPU-scale width multipliers: all three models pretrain in well under 15 min on 2 cores.
DEFAULT_WIDTH = {"lenet": 0.25, "vgg": 0.125, "resnet20": 0.5}


def default_width(model_name: str) -> float:
    return DEFAULT_WIDTH.get(model_name, 1.0)


def epoch_batch_order(n: int, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """Index batches of one epoch: a permutation of ``range(n)`` seeded by ``(seed, epoch)``.

    A final batch of one sample is merged into the previous one (BatchNorm needs ≥ 2).
    """
    if n < 1 or batch_size < 1:
        raise JqodiError(f"need n ≥ 1 and batch_size ≥ 1, got n={n}, batch_size={batch_size}")
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch) * 7919 + 17) % (2 ** 63))
    perm = torch.randperm(n, generator=g)
    batches = list(perm.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < 2:
        last = batches.pop()
        batches[-1] = torch.cat([batches[-1], last])
    return batches


def make_optimizer(params: nn.Module | Iterable[nn.Parameter], cfg: TrainConfig | None = None) -> torch.optim.Optimizer:
    """The per-parameter optimizer of one role for one epoch (fresh state).

    Given a module, quantizer steps (``*_step``) and biases/norm parameters get no weight decay.
    """
    cfg = cfg or TrainConfig()
    if isinstance(params, nn.Module):
        decay, no_decay = [], []
        for name, p in params.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if name.endswith("_step") or p.dim() <= 1 else decay).append(p)
        groups = [{"params": decay, "weight_decay": cfg.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
    else:
        groups = [{"params": [p for p in params if p.requires_grad], "weight_decay": cfg.weight_decay}]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    """One SGD step on a batch (cross-entropy); returns the batch loss."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def per_sample_losses(model: nn.Module, dataset: TensorDataset, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample cross-entropy and correctness over ``dataset`` (eval mode, in order)."""
    was = model.training
    model.eval()
    x_all, y_all = dataset.tensors[0], dataset.tensors[1]
    losses, correct = [], []
    try:
        for i in range(0, len(y_all), batch_size):
            out = model(x_all[i:i + batch_size])
            y = y_all[i:i + batch_size]
            losses.append(F.cross_entropy(out, y, reduction="none"))
            correct.append(out.argmax(1) == y)
    finally:
        model.train(was)
    return torch.cat(losses), torch.cat(correct)


def evaluate(model: nn.Module, dataset: TensorDataset, batch_size: int = 500) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``dataset`` (the paper's L(k))."""
    losses, correct = per_sample_losses(model, dataset, batch_size)
    return float(losses.mean()), float(correct.float().mean())
