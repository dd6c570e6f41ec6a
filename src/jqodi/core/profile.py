"""Per-block profiles of a block model: forward FLOPs, parameters, bytes at q bits, cut sizes.

These are the paper's d^i_(a,q) and g^i_(a,q) inputs (Section III-B): ``d^i`` is built from the
forward FLOPs of block ``i`` (see :mod:`jqodi.core.costs`), ``g^i`` is :meth:`BlockProfile.bytes_at`.

What is counted (per sample, one forward pass, found by forward hooks on every leaf module
while the model runs on one zero input in eval mode):

* ``Conv2d``: ``2 · C_in/groups · k_h · k_w · C_out · H_out · W_out`` (a multiply and an add per
  weight per output position), ``+ C_out · H_out · W_out`` when it has a bias.
* ``Linear``: ``2 · in · out`` (+ ``out`` with a bias).
* ``BatchNorm1d/2d``: 4 per output element (subtract mean, divide by std, scale, shift).
* ``ReLU``/``ReLU6``/``LeakyReLU``/``Sigmoid``/``Tanh``/``GELU``/``SiLU``: 1 per output element.
* ``MaxPool2d``/``AvgPool2d``: ``k_h · k_w − 1`` per output element (comparisons or adds; the
  average's divide is not counted).
* ``AdaptiveAvgPool2d``: one add per input element plus one divide per output element.
* ``Flatten``, ``Identity``, ``Dropout``: 0.
* A non-leaf module may declare ``extra_forward_flops(output) -> int`` for arithmetic done in
  its own ``forward`` (the residual add of a ResNet block: 1 per output element).
* Any other leaf module is counted as 0 and named in ``ModelProfile.uncounted``.

Bytes at ``q`` bits (``g^i``): the weights of ``Conv2d``/``Linear`` at ``q`` bits each (packed,
rounded up to whole bytes per tensor) plus, stored as fp32 (4 bytes each): one scale per output
channel of each such weight, their biases, the BatchNorm affine parameters and running
statistics. At ``q = 32`` everything is fp32 and there are no scales.

Activations at cut ``j`` are the outputs of block ``j`` for one sample, given in elements and
in bytes at a given bit-width (fp32 = 32).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["BlockProfile", "ModelProfile", "check_cut", "profile_model", "profile_named_model"]


@dataclass(frozen=True)
class BlockProfile:
    """One block: forward FLOPs for one sample, parameters split by how they are stored."""

    index: int
    name: str
    flops: int
    params: int
    quantized_weights: tuple[int, ...]   # element counts of each conv/linear weight tensor
    fp32_elements: int                   # biases, BN affine params and running statistics
    scale_count: int                     # one fp32 scale per output channel of each weight
    out_shape: tuple[int, ...]           # output of this block for one sample (no batch dim)
    act_elements_internal: int           # sum of every leaf output in the block (memory)

    @property
    def out_elements(self) -> int:
        return int(math.prod(self.out_shape))

    def bytes_at(self, bits: int) -> int:
        """g^i at ``bits``: quantized weights + fp32 scales, biases and norm parameters."""
        if bits >= 32:
            return 4 * (sum(self.quantized_weights) + self.fp32_elements)
        packed = sum(math.ceil(n * bits / 8) for n in self.quantized_weights)
        return packed + 4 * (self.fp32_elements + self.scale_count)

    def to_dict(self, bits: list[int] | None = None) -> dict:
        d = asdict(self)
        d["quantized_weights"] = list(self.quantized_weights)
        d["out_shape"] = list(self.out_shape)
        d["out_elements"] = self.out_elements
        if bits:
            d["bytes"] = {str(b): self.bytes_at(b) for b in bits}
        return d


@dataclass(frozen=True)
class ModelProfile:
    """A model's per-block profile. Cut ``j`` (1..n-1) is after block ``j``."""

    model: str
    input_shape: tuple[int, int, int]
    num_classes: int
    width: float
    blocks: tuple[BlockProfile, ...]
    uncounted: tuple[str, ...] = field(default=())

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def cuts(self) -> list[int]:
        return list(range(1, self.num_blocks))

    @property
    def flops(self) -> int:
        """F_a: forward FLOPs of the whole model for one sample."""
        return sum(b.flops for b in self.blocks)

    @property
    def params(self) -> int:
        return sum(b.params for b in self.blocks)

    def bytes_at(self, bits: int) -> int:
        """Σ_i g^i at ``bits`` (Eq. (1)'s D^{c→e})."""
        return sum(b.bytes_at(bits) for b in self.blocks)

    def act_elements(self, cut: int) -> int:
        """Elements of the activation crossing cut ``cut`` for one sample."""
        self._check(cut)
        return self.blocks[cut - 1].out_elements

    def act_bytes(self, cut: int, bits: int = 32) -> float:
        """Bytes of that activation at ``bits`` per element (32 = fp32)."""
        return self.act_elements(cut) * bits / 8

    def _check(self, cut: int) -> None:
        check_cut(self.model, self.num_blocks, cut)

    def to_dict(self, bits: list[int] | None = None, act_bits: int = 8) -> dict:
        bits = bits or [1, 2, 4, 6, 8, 32]
        return {
            "model": self.model, "input_shape": list(self.input_shape), "num_classes": self.num_classes,
            "width": self.width, "flops": self.flops, "params": self.params,
            "bytes": {str(b): self.bytes_at(b) for b in bits},
            "blocks": [b.to_dict(bits) for b in self.blocks],
            "cuts": [{"cut": j, "act_elements": self.act_elements(j),
                      f"act_bytes_{act_bits}bit": self.act_bytes(j, act_bits),
                      "act_bytes_fp32": self.act_bytes(j, 32)} for j in self.cuts],
            "uncounted": list(self.uncounted),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelProfile":
        blocks = tuple(BlockProfile(index=b["index"], name=b["name"], flops=int(b["flops"]),
                                    params=int(b["params"]),
                                    quantized_weights=tuple(int(x) for x in b["quantized_weights"]),
                                    fp32_elements=int(b["fp32_elements"]), scale_count=int(b["scale_count"]),
                                    out_shape=tuple(int(x) for x in b["out_shape"]),
                                    act_elements_internal=int(b["act_elements_internal"]))
                       for b in d["blocks"])
        return cls(d["model"], tuple(d["input_shape"]), int(d["num_classes"]), float(d["width"]), blocks,
                   tuple(d.get("uncounted", ())))


def check_cut(model: str, num_blocks: int, cut: int) -> int:
    """``cut`` if it is a partition point of an ``num_blocks``-block model (1..n-1, the paper's
    SP), else :class:`~jqodi.errors.ModelError`."""
    if cut not in range(1, num_blocks):
        from jqodi.errors import ModelError

        raise ModelError(f"cut {cut} is out of range for model {model!r}: valid cuts are 1..{num_blocks - 1}")
    return cut


# --- counting -----------------------------------------------------------------------------------

def _leaf_flops(module, inputs, output) -> int | None:
    """FLOPs of one leaf module's forward for the given (batch-of-one) tensors; None = unknown."""
    from torch import nn

    out_el = int(output.numel()) if hasattr(output, "numel") else 0
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        hw = int(output.shape[-1] * output.shape[-2])
        macs = (module.in_channels // module.groups) * kh * kw * module.out_channels * hw
        return 2 * macs + (module.out_channels * hw if module.bias is not None else 0)
    if isinstance(module, nn.Linear):
        rows = out_el // module.out_features  # 1 for a batch of one flat sample
        return rows * (2 * module.in_features * module.out_features
                       + (module.out_features if module.bias is not None else 0))
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
        return 4 * out_el
    if isinstance(module, (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU)):
        return out_el
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k = module.kernel_size
        kh, kw = (k, k) if isinstance(k, int) else k
        return (kh * kw - 1) * out_el
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return int(inputs[0].numel()) + out_el
    if isinstance(module, (nn.Flatten, nn.Identity, nn.Dropout)):
        return 0
    return None


def _param_split(block) -> tuple[tuple[int, ...], int, int, int]:
    """(quantized weight sizes, fp32 elements, scale count, total params) of a block."""
    from torch import nn

    qw: list[int] = []
    fp32 = 0
    scales = 0
    for m in block.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            qw.append(int(m.weight.numel()))
            scales += int(m.weight.shape[0])
            if m.bias is not None:
                fp32 += int(m.bias.numel())
            continue
        for p in m.parameters(recurse=False):
            fp32 += int(p.numel())
        for name, b in m.named_buffers(recurse=False):
            if name != "num_batches_tracked" and b.is_floating_point():
                fp32 += int(b.numel())
    params = sum(int(p.numel()) for p in block.parameters())
    return tuple(qw), fp32, scales, params


def profile_model(model) -> ModelProfile:
    """Profile a :class:`jqodi.core.zoo.BlockModel` (one forward pass on one zero sample)."""
    import torch

    flops: list[int] = [0] * model.num_blocks
    internal: list[int] = [0] * model.num_blocks
    uncounted: list[str] = []
    handles = []
    for i, block in enumerate(model.blocks):
        for qname, m in block.named_modules():
            is_leaf = len(list(m.children())) == 0

            def hook(mod, inp, out, i=i, qname=qname, is_leaf=is_leaf):
                if is_leaf:
                    n = _leaf_flops(mod, inp, out)
                    if n is None:
                        uncounted.append(f"{model.block_names[i]}.{qname} ({type(mod).__name__})")
                        n = 0
                    flops[i] += n
                    if hasattr(out, "numel"):
                        internal[i] += int(out.numel())
                extra = getattr(mod, "extra_forward_flops", None)
                if callable(extra):
                    flops[i] += int(extra(out))
                    if not is_leaf and hasattr(out, "numel"):
                        internal[i] += int(out.numel())

            if is_leaf or callable(getattr(m, "extra_forward_flops", None)):
                handles.append(m.register_forward_hook(hook))
    outs: list[tuple[int, ...]] = []
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            x = torch.zeros(1, *model.input_shape)
            for block in model.blocks:
                x = block(x)
                outs.append(tuple(int(s) for s in x.shape[1:]))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    blocks = []
    for i, block in enumerate(model.blocks):
        qw, fp32, scales, params = _param_split(block)
        blocks.append(BlockProfile(i + 1, model.block_names[i], flops[i], params, qw, fp32, scales,
                                   outs[i], internal[i]))
    return ModelProfile(model.name, tuple(model.input_shape), model.num_classes, float(model.width),
                        tuple(blocks), tuple(dict.fromkeys(uncounted)))


_CACHE: dict[tuple, ModelProfile] = {}


def profile_named_model(name: str, input_shape=(3, 32, 32), num_classes: int = 10,
                        width: float = 1.0, *, refresh: bool = False) -> ModelProfile:
    """Profile a zoo model at this input shape, class count and width.

    Stored profiles are used when their model definition is current
    (:mod:`jqodi.core.profile_cache`: ``$JQODI_HOME/profiles``, then the profiles shipped for the
    packaged zoo) — then torch is not imported. Otherwise the model is built and profiled (torch)
    and the result stored. ``refresh`` always recomputes and overwrites the stored profile.
    """
    from jqodi.core import profile_cache

    shape, classes, width = tuple(int(s) for s in input_shape), int(num_classes), float(width)
    fingerprint = profile_cache.model_fingerprint(name)
    if fingerprint is None:  # not cacheable (or unknown): key the process cache on the builder itself
        from jqodi.core.zoo import get_spec

        key: tuple = (name, shape, classes, width, id(get_spec(name).builder))
    else:
        key = (name, shape, classes, width, fingerprint)
    if not refresh and key in _CACHE:
        return _CACHE[key]
    prof = None
    if fingerprint is not None and not refresh:
        prof = profile_cache.load_profile(name, shape, classes, width, fingerprint)
    if prof is None:
        from jqodi.core.zoo import build_model

        prof = profile_model(build_model(name, shape, classes, width, seed=0))
        if fingerprint is not None:
            profile_cache.store_profile(prof, fingerprint)
    _CACHE[key] = prof
    return prof
