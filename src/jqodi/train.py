"""Fine-tuning, single process: the reference the distributed runtime must reproduce.

One epoch follows the protocol of DESIGN.md (the paper's Section III-B) inside one process:

1. the cloud (CS) keeps a *master*: the QAT-prepared model with full-precision latent weights;
2. it packs the master at q bits (:func:`jqodi.quant.pack_model`, what Eq. (1) sends CS→ES);
3. the worker (ES + SD together) unpacks it, so it starts exactly from the q-bit model, builds a
   *fresh* optimizer (:func:`make_optimizer`) and trains one pass over the SD's train split in the
   seeded order of :func:`epoch_batch_order`, one :func:`train_step` per batch;
4. the worker validates (:func:`evaluate`, the epoch's L(k));
5. the worker's result goes back (:func:`pack_update`) and the cloud folds it into the master
   (:func:`apply_update`): ``master += returned − sent`` for the quantized weights, and copies
   every other entry (steps, biases, BatchNorm parameters and statistics).

**How the master keeps sub-step updates** (``TrainConfig.return_mode``). One epoch of fine-tuning
moves most weights by less than one quantization step, so what the return trip carries decides
whether learning survives:

* ``"codes"`` — q-bit codes, round-to-nearest (the paper's Eq. (1): q-bit weights both ways).
  A change smaller than half a step rounds back to the sent value and is lost.
* ``"stochastic"`` — q-bit codes with stochastic rounding: unbiased (the master receives the
  update in expectation), noisy; same bytes as ``"codes"``.
* ``"delta-fp16"`` — the change ``latent − sent`` in fp16: 16 bits per weight up.
* ``"latent"`` — the worker's fp32 latent weights: 32 bits per weight up.

Measured (docs/learning.md) — the default is the one that learns for the fewest bytes.
Byte counts come from :func:`update_size_bytes`.

**Optimizer state across epochs**: the runtime re-creates the roles (and their optimizers) every
epoch, and so does this reference: SGD momentum starts at zero each epoch (nothing but the model
travels). :func:`make_optimizer` is per-parameter (no global-norm clipping), so the SD's optimizer
over the shallow part plus the ES's over the deep part equal one optimizer over the whole model.
"""
from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from jqodi.errors import JqodiError, ModelError
from jqodi.learning.store import ValidationCurve
from jqodi.quant import (
    FULL_PRECISION,
    PackedModel,
    _Entry,
    _levels,
    check_bits,
    pack_bits,
    pack_model,
    prepare_qat,
    quant_layers,
    unpack_bits,
    unpack_model,
)

__all__ = [
    "DEFAULT_PRETRAIN_EPOCHS",
    "DEFAULT_WIDTH",
    "EpochRecord",
    "FinetuneResult",
    "PackedUpdate",
    "Pretrained",
    "RETURN_MODES",
    "TrainConfig",
    "apply_update",
    "epoch_batch_order",
    "evaluate",
    "finetune",
    "load_pretrained",
    "make_optimizer",
    "pack_update",
    "per_sample_losses",
    "pretrain",
    "protocol_epoch",
    "train_step",
    "update_size_bytes",
]

#: CPU-scale width multipliers: all three models pretrain in well under 15 min on 2 cores.
DEFAULT_WIDTH = {"lenet": 0.25, "vgg": 0.125, "resnet20": 0.5}
DEFAULT_PRETRAIN_EPOCHS = 4
RETURN_MODES = ("codes", "stochastic", "delta-fp16", "latent")


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning hyper-parameters. ``lr`` etc. apply to weights; steps get no weight decay."""

    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    optimizer: str = "adam"
    act_bits: int | None = None
    return_mode: str = "stochastic"
    eval_batch_size: int = 500

    def __post_init__(self):
        if self.optimizer not in ("sgd", "adam"):
            raise JqodiError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.return_mode not in RETURN_MODES:
            raise JqodiError(f"return_mode must be one of {', '.join(RETURN_MODES)}, got {self.return_mode!r}")
        if self.batch_size < 2:
            raise JqodiError(f"batch_size must be ≥ 2 (BatchNorm), got {self.batch_size}")
        if not self.lr > 0:
            raise JqodiError(f"lr must be > 0, got {self.lr}")


def default_width(model_name: str) -> float:
    return DEFAULT_WIDTH.get(model_name, 1.0)


# --- primitives the runtime reuses ---------------------------------------------------------------

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


# --- the return trip -------------------------------------------------------------------------------

@dataclass
class PackedUpdate:
    """What the worker sends back to the cloud at the end of an epoch (``nbytes`` on the wire)."""

    mode: str
    bits: int
    entries: list[_Entry] = field(repr=False)

    @property
    def nbytes(self) -> int:
        return sum(len(e.payload) for e in self.entries)

    def to_bytes(self) -> bytes:
        return b"".join(e.payload for e in self.entries)


def _quant_keys(model: nn.Module) -> list[str]:
    return [f"{n}.weight" if n else "weight" for n, _ in quant_layers(model)]


def _dequant(entry: _Entry, step: torch.Tensor, bits: int) -> torch.Tensor:
    n = int(np.prod(entry.shape))
    u = torch.from_numpy(unpack_bits(entry.payload, bits, n).astype(np.int64))
    lv = (2 * u - 1) if bits == 1 else (u + _levels(bits, True)[0])
    return lv.view(entry.shape).float() * step.view(-1, *([1] * (len(entry.shape) - 1)))


def _raw_tensor(entry: _Entry) -> torch.Tensor:
    dt = torch.empty(0, dtype=entry.dtype).numpy().dtype
    return torch.from_numpy(np.frombuffer(entry.payload, dtype=dt).reshape(entry.shape).copy())


def pack_update(worker: nn.Module, sent: PackedModel, mode: str, *, generator: torch.Generator | None = None) -> PackedUpdate:
    """Encode the worker's end-of-epoch state for the cloud (see the module docstring)."""
    bits = sent.bits
    if mode not in RETURN_MODES:
        raise JqodiError(f"unknown return mode {mode!r}")
    if bits == FULL_PRECISION or mode in ("codes", "stochastic"):
        p = pack_model(worker, bits, stochastic=(mode == "stochastic"), generator=generator)
        return PackedUpdate(mode, bits, p.entries)
    state = worker.state_dict()
    sent_raw = {e.key: e for e in sent.entries}
    qkeys = set(_quant_keys(worker))
    entries = []
    for key, t in state.items():
        if key in qkeys:
            if mode == "latent":
                payload = t.detach().float().cpu().numpy().tobytes()
            else:
                step = _raw_tensor(sent_raw[key[: -len("weight")] + "weight_step"])
                delta = t.detach().float().cpu() - _dequant(sent_raw[key], step, bits)
                payload = delta.half().numpy().tobytes()
            entries.append(_Entry(key, mode, tuple(t.shape), t.dtype, payload))
        else:
            entries.append(_Entry(key, "raw", tuple(t.shape), t.dtype, t.detach().cpu().contiguous().numpy().tobytes()))
    return PackedUpdate(mode, bits, entries)


@torch.no_grad()
def apply_update(master: nn.Module, update: PackedUpdate, sent: PackedModel) -> nn.Module:
    """Fold a worker's update into the cloud's master, in place.

    Quantized weights: ``master += returned_value − sent_value`` (keeps the master's sub-step
    residual); everything else (steps, biases, norms, buffers) is replaced by the worker's.
    At 32 bits the master becomes the worker's state.
    """
    state = master.state_dict()
    if update.bits == FULL_PRECISION:
        for e in update.entries:
            state[e.key].copy_(_raw_tensor(e))
        return master
    upd = {e.key: e for e in update.entries}
    snt = {e.key: e for e in sent.entries}
    for key in _quant_keys(master):
        skey = key[: -len("weight")] + "weight_step"
        sent_value = _dequant(snt[key], _raw_tensor(snt[skey]), update.bits)
        e = upd[key]
        if e.kind == "codes":
            new_value = _dequant(e, _raw_tensor(upd[skey]), update.bits)
            delta = new_value - sent_value
        elif e.kind == "latent":
            delta = _raw_tensor(_Entry(key, "raw", e.shape, torch.float32, e.payload)) - sent_value
        elif e.kind == "delta-fp16":
            delta = _raw_tensor(_Entry(key, "raw", e.shape, torch.float16, e.payload)).float()
        else:  # pragma: no cover - construction guarantees the kinds
            raise ModelError(f"unknown update entry kind {e.kind!r}")
        state[key].add_(delta.to(state[key].device))
    qkeys = set(_quant_keys(master))
    for e in update.entries:
        if e.key not in qkeys:
            state[e.key].copy_(_raw_tensor(e))
    return master


def update_size_bytes(model: nn.Module, bits: int, mode: str) -> int:
    """Bytes of the return trip for ``model`` at ``bits`` in ``mode`` (without packing)."""
    from jqodi.quant import model_size_bytes

    if bits == FULL_PRECISION or mode in ("codes", "stochastic"):
        return model_size_bytes(model, bits)
    per_weight = 2 if mode == "delta-fp16" else 4
    codes = sum((m.weight.numel() * bits + 7) // 8 for _, m in quant_layers(model))
    weights = sum(m.weight.numel() for _, m in quant_layers(model))
    return model_size_bytes(model, bits) - codes + per_weight * weights


# --- one epoch of the protocol -------------------------------------------------------------------

@dataclass
class EpochRecord:
    """One epoch: mean train loss, validation loss/accuracy (L(k)), wall time and bytes moved."""

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    wall_s: float
    bytes_down: int = 0
    bytes_up: int = 0


class _Progress:
    """A one-line progress bar on stderr (redrawn on a TTY, one line per epoch otherwise)."""

    def __init__(self, enabled: bool | None, label: str):
        self.enabled = True if enabled is None else enabled
        self.tty = sys.stderr.isatty()
        self.label = label

    def batch(self, done: int, total: int, loss: float) -> None:
        if self.enabled and self.tty:
            w = 24
            fill = int(w * done / max(1, total))
            sys.stderr.write(f"\r{self.label} [{'#' * fill}{'.' * (w - fill)}] {done}/{total} loss {loss:.4f}")
            sys.stderr.flush()

    def line(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write(("\r\x1b[K" if self.tty else "") + text + "\n")
            sys.stderr.flush()


def protocol_epoch(master: nn.Module, worker: nn.Module, train: TensorDataset, val: TensorDataset,
                   bits: int, cfg: TrainConfig, seed: int, epoch: int,
                   on_batch: Callable[[int, int, float], None] | None = None) -> EpochRecord:
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
    return EpochRecord(epoch, total / max(1, count), val_loss, val_acc, time.perf_counter() - t0,
                       bytes_down=sent.nbytes, bytes_up=update.nbytes)


# --- cloud pretraining ---------------------------------------------------------------------------

@dataclass
class Pretrained:
    """A cloud-pretrained model (fp32) plus a calibration batch of cloud images and metadata."""

    model: nn.Module
    calibration: torch.Tensor
    meta: dict
    path: Path | None = None


def _cache_path(model_name: str, dataset: str, width: float, epochs: int, seed: int, cache_dir: Path | None) -> Path:
    from jqodi.learning.paths import pretrained_dir

    d = Path(cache_dir) if cache_dir is not None else pretrained_dir()
    return d / f"{dataset}_{model_name}_w{width:g}_e{epochs}_s{seed}.pt"


def pretrain(model_name: str, dataset: str = "fashion-mnist", width: float | None = None,
             epochs: int = DEFAULT_PRETRAIN_EPOCHS, seed: int = 0, *, data_dir=None,
             cloud_size: int | None = None, batch_size: int = 128, lr: float = 1e-3,
             progress: bool | None = None) -> Pretrained:
    """Train ``model_name`` on the cloud dataset's train split (5000 held out for cloud validation)."""
    from jqodi.data import canonical_dataset, cloud_dataset
    from jqodi.zoo import build_model

    dataset = canonical_dataset(dataset)
    width = default_width(model_name) if width is None else width
    full = cloud_dataset(dataset, data_dir, size=cloud_size, seed=seed)
    x, y = full.tensors
    n_val = min(5000, len(y) // 10)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    val = TensorDataset(x[perm[:n_val]], y[perm[:n_val]])
    tr_x, tr_y = x[perm[n_val:]], y[perm[n_val:]]
    model = build_model(model_name, tuple(x.shape[1:]), 10, width, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * math.ceil(len(tr_y) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr * 3, total_steps=max(1, steps))
    bar = _Progress(progress, f"pretrain {model_name}")
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
            "input_shape": list(x.shape[1:]), "num_classes": 10, "cloud_train_size": len(tr_y),
            "cloud_val_loss": history[-1]["val_loss"] if history else None,
            "cloud_val_accuracy": history[-1]["val_accuracy"] if history else None,
            "wall_s": time.perf_counter() - t0, "history": history}
    return Pretrained(model, calib, meta)


def load_pretrained(model_name: str, dataset: str = "fashion-mnist", width: float | None = None, *,
                    epochs: int = DEFAULT_PRETRAIN_EPOCHS, seed: int = 0, data_dir=None,
                    cache_dir: str | Path | None = None, progress: bool | None = None,
                    cloud_size: int | None = None, force: bool = False) -> Pretrained:
    """The cached cloud-pretrained checkpoint, pretraining (with progress) if it is missing.

    Cache: ``$JQODI_HOME/pretrained`` (platformdirs' user data dir by default). Writes are atomic,
    so concurrent callers at worst both pretrain.
    """
    from jqodi.data import canonical_dataset
    from jqodi.zoo import build_model

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
                   cloud_size=cloud_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{__import__('os').getpid()}")
    torch.save({"state_dict": pre.model.state_dict(), "calibration": pre.calibration, "meta": pre.meta}, tmp)
    tmp.replace(path)
    pre.path = path
    return pre


# --- fine-tuning ----------------------------------------------------------------------------------

@dataclass
class FinetuneResult(ValidationCurve):
    """A fine-tuning run: L_a, the quantized start loss, γ and one record per epoch."""

    model: str
    bits: int
    dataset: str
    data_name: str
    train_size: int
    val_size: int
    seed: int
    width: float
    base_loss: float
    base_accuracy: float
    start_loss: float
    start_accuracy: float
    gamma: float
    gamma_robust: float
    epochs: list[EpochRecord]
    wall_s: float
    config: dict
    quantize_s: float = 0.0
    run_id: int | None = None
    master: nn.Module | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "master"}
        return d


def finetune(model_name: str, bits: int, data, epochs: int, seed: int = 0, *,
             width: float | None = None, cfg: TrainConfig | None = None,
             pretrained: Pretrained | None = None, store=None, progress: bool | None = None,
             stop_at_loss: float | None = None, data_dir=None,
             pretrain_epochs: int = DEFAULT_PRETRAIN_EPOCHS, min_epochs: int = 0,
             extra_epochs: int = 0) -> FinetuneResult:
    """Fine-tune the cloud-pretrained ``model_name`` at ``bits`` on the SD's ``data``.

    ``data`` is an :class:`jqodi.data.EndDeviceData`. Evaluates the fp32 model (L_a) and the
    quantized one (L_a + γ), then runs ``epochs`` protocol epochs (stopping early if
    ``stop_at_loss`` is given: ``extra_epochs`` after the first epoch whose validation loss is
    ≤ it, but not before ``min_epochs``). Records the run in ``store`` (a
    :class:`jqodi.learning.store.TraceStore`) if given.
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

    bar = _Progress(progress, f"{model_name} {bits}-bit")
    bar.line(f"{model_name} {bits}-bit on {data.name}/{data.dataset}: L_a {base_loss:.4f} "
             f"(acc {base_acc:.1%}), quantized {start_loss:.4f} (acc {start_acc:.1%}), γ {gam.expected:+.4f}")
    records: list[EpochRecord] = []
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
        result.run_id = store.record_run(result)
    return result


def losses_array(results: Sequence[FinetuneResult]) -> list[list[float]]:
    return [r.val_losses for r in results]
