"""Fine-tuning, single process: the reference the distributed runtime must reproduce.

One epoch follows the protocol of docs/interfaces.md (the paper's Section III-B) inside one process:

1. the cloud (CS) keeps a *master*: the QAT-prepared model with full-precision latent weights;
2. it packs the master at q bits (:func:`jqodi.core.quant.pack_model`, what Eq. (1) sends CS→ES);
3. the worker (ES + SD together) unpacks it, so it starts exactly from the q-bit model, builds a
   *fresh* optimizer (:func:`make_optimizer`) and trains one pass over the SD's train split in the
   seeded order of :func:`epoch_batch_order`, one :func:`train_step` per batch;
4. the worker validates (:func:`evaluate`, the epoch's L(k));
5. the worker's result goes back (:func:`pack_update`) and the cloud folds it into the master
   (:func:`apply_update`): ``master += returned − sent`` for the quantized weights, and copies
   every other entry (steps, biases, BatchNorm parameters and statistics).

What travels back and how the master keeps sub-step updates: :mod:`jqodi.core.codec`.

**Optimizer state across epochs**: the runtime re-creates the roles (and their optimizers) every
epoch, and so does this reference: SGD momentum starts at zero each epoch (nothing but the model
travels). :func:`make_optimizer` is per-parameter (no global-norm clipping), so the SD's optimizer
over the shallow part plus the ES's over the deep part equal one optimizer over the whole model.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn
from torch.utils.data import TensorDataset

from jqodi.core.codec import apply_update, pack_update
from jqodi.core.data.catalog import data_label
from jqodi.core.pretrained import DEFAULT_PRETRAIN_EPOCHS, Pretrained, load_pretrained
from jqodi.core.progress import Progress
from jqodi.core.quant import check_bits, pack_model, prepare_qat, unpack_model
from jqodi.core.training import TrainConfig, epoch_batch_order, evaluate, make_optimizer, per_sample_losses, train_step
from jqodi.core.traces import EpochTrace, RunTrace
from jqodi.errors import JqodiError

__all__ = ["FinetuneResult", "finetune", "losses_array", "protocol_epoch"]


def protocol_epoch(master: nn.Module, worker: nn.Module, train: TensorDataset, val: TensorDataset,
                   bits: int, cfg: TrainConfig, seed: int, epoch: int,
                   on_batch: Callable[[int, int, float], None] | None = None) -> EpochTrace:
    """Run epoch ``epoch`` (1-based) of the protocol in one process; updates ``master`` in place."""
    t0 = time.perf_counter()
    sent = pack_model(master, bits)                     # CS → ES (→ SD): Eq. (1)-(2)
    unpack_model(worker, sent)
    opt = make_optimizer(worker, cfg)                   # fresh per epoch, like the runtime's roles
    x_all, y_all = train.tensors[0], train.tensors[1]
    batches = epoch_batch_order(len(y_all), cfg.batch_size, seed, epoch)
    total, count = 0.0, 0
    for i, idx in enumerate(batches):
        loss = train_step(worker, opt, x_all[idx], y_all[idx])
        total += loss * len(idx)
        count += len(idx)
        if on_batch:
            on_batch(i + 1, len(batches), total / count)
    val_loss, val_acc = evaluate(worker, val, cfg.eval_batch_size)
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch) + 99)
    update = pack_update(worker, sent, cfg.return_mode, generator=g)   # ES → CS
    apply_update(master, update, sent)
    return EpochTrace(epoch, total / max(1, count), val_loss, val_acc, time.perf_counter() - t0,
                       bytes_down=sent.nbytes, bytes_up=update.nbytes)


@dataclass
class FinetuneResult(RunTrace):
    """A fresh fine-tuning run: a :class:`~jqodi.core.traces.RunTrace` that also holds the
    fine-tuned fp32 master (never stored or serialised)."""

    master: nn.Module | None = field(default=None, repr=False, compare=False)


def finetune(model_name: str, bits: int, data, epochs: int, seed: int = 0, *,
             width: float | None = None, cfg: TrainConfig | None = None,
             pretrained: Pretrained | None = None, store=None, progress: bool | None = None,
             stop_at_loss: float | None = None, data_dir=None,
             pretrain_epochs: int = DEFAULT_PRETRAIN_EPOCHS, min_epochs: int = 0,
             extra_epochs: int = 0) -> FinetuneResult:
    """Fine-tune the cloud-pretrained ``model_name`` at ``bits`` on the SD's ``data``.

    ``data`` is an :class:`jqodi.core.data.EndDeviceData`. Evaluates the fp32 model (L_a) and the
    quantized one (L_a + γ), then runs ``epochs`` protocol epochs (stopping early if
    ``stop_at_loss`` is given: ``extra_epochs`` after the first epoch whose validation loss is
    ≤ it, but not before ``min_epochs``). Records the run in ``store`` (a
    :class:`jqodi.core.traces.TraceStore`) if given.
    """
    from jqodi.learning.gamma import gamma_estimate

    bits = check_bits(bits)
    cfg = cfg or TrainConfig()
    if epochs < 0:
        raise JqodiError(f"epochs must be ≥ 0, got {epochs}")
    t_start = time.perf_counter()
    pre = pretrained or load_pretrained(model_name, data.dataset, width, seed=0, data_dir=data_dir,
                                        progress=progress, epochs=pretrain_epochs)
    width = float(pre.meta["width"])
    fp = copy.deepcopy(pre.model).eval()
    fp_losses, fp_correct = per_sample_losses(fp, data.val, cfg.eval_batch_size)
    base_loss, base_acc = float(fp_losses.mean()), float(fp_correct.float().mean())

    tq = time.perf_counter()
    master = prepare_qat(copy.deepcopy(pre.model), bits, cfg.act_bits, calibration=pre.calibration)
    quantize_s = time.perf_counter() - tq
    worker = copy.deepcopy(master)
    unpack_model(worker, pack_model(master, bits))
    q_losses, q_correct = per_sample_losses(worker, data.val, cfg.eval_batch_size)
    start_loss, start_acc = float(q_losses.mean()), float(q_correct.float().mean())
    gam = gamma_estimate(q_losses - fp_losses, seed=seed)

    steps_per_epoch = len(epoch_batch_order(len(data.train), cfg.batch_size, seed, 1)) if epochs > 0 else 0
    bar = Progress(progress, f"{model_name} {bits}-bit", total_steps=epochs * steps_per_epoch)
    bar.line(f"{model_name} {bits}-bit on {data_label(data.name, data.dataset)}: L_a {base_loss:.4f} "
             f"(acc {base_acc:.1%}), quantized {start_loss:.4f} (acc {start_acc:.1%}), γ {gam.expected:+.4f}")
    records: list[EpochTrace] = []
    reached_at: int | None = None
    for ep in range(1, epochs + 1):
        bar.label = f"epoch {ep}/{epochs}"
        rec = protocol_epoch(master, worker, data.train, data.val, bits, cfg, seed, ep, on_batch=bar.batch)
        records.append(rec)
        bar.line(f"epoch {ep:3d}/{epochs}: train {rec.train_loss:.4f}  val {rec.val_loss:.4f}  "
                 f"acc {rec.val_accuracy:.1%}  {rec.wall_s:.1f}s")
        if stop_at_loss is not None and reached_at is None and rec.val_loss <= stop_at_loss:
            reached_at = ep
        if reached_at is not None and ep >= max(min_epochs, reached_at + extra_epochs):
            break
    result = FinetuneResult(
        model=model_name, bits=bits, dataset=data.dataset, data_name=data.name,
        train_size=len(data.train), val_size=len(data.val), seed=seed, width=width,
        base_loss=base_loss, base_accuracy=base_acc, start_loss=start_loss, start_accuracy=start_acc,
        gamma=gam.expected, gamma_robust=gam.robust, epochs=records,
        wall_s=time.perf_counter() - t_start, quantize_s=quantize_s,
        config={**asdict(cfg), "pretrain_epochs": int(pre.meta["epochs"]), "data_seed": data.seed,
                "stop_at_loss": stop_at_loss, "epochs_requested": epochs},
        master=master)
    if store is not None:
        store.record_run(result)
    return result


def losses_array(results: Sequence[FinetuneResult]) -> list[list[float]]:
    return [r.val_losses for r in results]
