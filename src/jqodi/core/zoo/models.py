"""Block models, the model registry and the paper's three architectures."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from jqodi.errors import ModelError
from jqodi.core.profile import check_cut
from jqodi.core.registry import Registry

BlockList = list[tuple[str, nn.Module]]
Builder = Callable[[tuple[int, int, int], int, float], BlockList]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: ``builder(input_shape, num_classes, width)`` returns its blocks."""

    name: str
    builder: Builder
    description: str = ""


class BlockModel(nn.Module):
    """An ordered list of blocks; ``forward`` runs them in order.

    ``cuts`` are the valid partition points: cut ``j`` keeps blocks ``[0, j)`` on the end
    device and ``[j, n)`` on the edge server.
    """

    def __init__(self, name: str, blocks: BlockList, input_shape: tuple[int, int, int],
                 num_classes: int, width: float):
        super().__init__()
        if len(blocks) < 2:
            raise ModelError(f"model {name!r} needs at least 2 blocks to be partitioned, got {len(blocks)}")
        self.name = name
        self.block_names = [b[0] for b in blocks]
        self.blocks = nn.ModuleList([b[1] for b in blocks])
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.width = width

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def cuts(self) -> list[int]:
        """Valid partition points (the paper's SP = {p_1, ..., p_{n-1}})."""
        return list(range(1, self.num_blocks))

    def check_cut(self, cut: int) -> int:
        return check_cut(self.name, self.num_blocks, cut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def shallow(self, cut: int) -> nn.Sequential:
        """Blocks 1..cut (the end device's part). Shares parameters with this model."""
        return nn.Sequential(*self.blocks[: self.check_cut(cut)])

    def deep(self, cut: int) -> nn.Sequential:
        """Blocks cut+1..n (the edge server's part). Shares parameters with this model."""
        return nn.Sequential(*self.blocks[self.check_cut(cut):])

    def split(self, cut: int) -> tuple[nn.Sequential, nn.Sequential]:
        return self.shallow(cut), self.deep(cut)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_shape={self.input_shape}, width={self.width}"


MODELS: Registry[ModelSpec] = Registry("model", ModelError)
"""Every model by name (the paper's three first); :func:`register_model` adds one."""


def register_model(name: str, builder: Builder, description: str = "", *, replace: bool = False) -> ModelSpec:
    """Register a model so scenarios, the profiler and the runtime can use it by name.

    ``builder(input_shape, num_classes, width)`` must return a list of ``(name, nn.Module)``
    blocks in execution order. A model registered by a plugin module (``jqodi --plugin MODULE``,
    ``JQODI_PLUGINS``) exists in the cloud, edge and end processes too (docs/extending.md).
    """
    spec = ModelSpec(name, builder, description)
    MODELS.register(name, spec, description, replace=replace)
    return spec


def available_models() -> list[str]:
    return sorted(MODELS.names())


def get_spec(name: str) -> ModelSpec:
    return MODELS.get(name)


#: The largest model :func:`build_model` agrees to allocate: parameters and
#: activation elements of one sample summed over the block outputs (1 GiB each in fp32). Anything
#: larger is a typo (``--input 3x4000x4000``, ``--width 1e6``) on the machines this runs on.
MAX_PARAMS = 2**28
MAX_SAMPLE_ACTIVATIONS = 2**28


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _check_size(name: str, spec: ModelSpec, shape: tuple[int, int, int], num_classes: int,
                width: float) -> None:
    """Build the model on the ``meta`` device (no memory, no RNG) to check that it accepts the
    input shape and is not absurdly large, before any real allocation."""
    acts = math.prod(shape)
    if acts > MAX_SAMPLE_ACTIVATIONS:
        raise ModelError(f"input shape {'x'.join(map(str, shape))} has {acts:,} elements per "
                         f"sample; at most {MAX_SAMPLE_ACTIVATIONS:,} are supported")
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            blocks = spec.builder(shape, num_classes, width)
            x = torch.zeros(1, *shape)
            params = sum(p.numel() for _, b in blocks for p in b.parameters())
            if params > MAX_PARAMS:
                raise ModelError(f"model {name!r} at width {width:g} and input {'x'.join(map(str, shape))} "
                                 f"would have {params:,} parameters; at most {MAX_PARAMS:,} are supported")
            for _, b in blocks:
                x = b.eval()(x)
                acts += x.numel()
            if acts > MAX_SAMPLE_ACTIVATIONS:
                raise ModelError(f"model {name!r} at input {'x'.join(map(str, shape))} produces {acts:,} "
                                 f"activation elements per sample; at most {MAX_SAMPLE_ACTIVATIONS:,} "
                                 f"are supported")
    except (ModelError, NotImplementedError):
        # NotImplementedError: an op of a user's model has no meta kernel; the real build checks it
        raise
    except (RuntimeError, ValueError, TypeError, OverflowError, MemoryError) as e:
        raise ModelError(f"model {name!r} cannot be built for input {'x'.join(map(str, shape))}, "
                         f"{num_classes} classes, width {width:g}: {_first_line(e)}") from e


def check_model(name: str, input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10,
                width: float = 1.0) -> tuple[ModelSpec, tuple[int, int, int]]:
    """The checks :func:`build_model` makes before allocating anything (name, shape, classes, width,
    size, on the ``meta`` device): raise :class:`~jqodi.errors.ModelError` or return the model's spec
    and the input shape as a tuple."""
    spec = get_spec(name)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ModelError(f"input shape must be C×H×W with positive sizes, got {input_shape}")
    if num_classes < 2:
        raise ModelError(f"num_classes must be ≥ 2, got {num_classes}")
    if not (width > 0 and math.isfinite(width)):
        raise ModelError(f"width multiplier must be a finite number > 0, got {width}")
    try:
        _check_size(name, spec, shape, num_classes, width)  # type: ignore[arg-type]
    except NotImplementedError:
        pass
    return spec, shape  # type: ignore[return-value]


def build_model(name: str, input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10,
                width: float = 1.0, seed: int | None = None) -> BlockModel:
    """Build a registered model. ``seed`` makes the initial weights reproducible.

    Bad requests (unknown name, a shape the model does not accept, a model larger than
    :data:`MAX_PARAMS` parameters or :data:`MAX_SAMPLE_ACTIVATIONS` activations per sample)
    raise :class:`~jqodi.errors.ModelError` before anything large is allocated.
    """
    spec, shape = check_model(name, input_shape, num_classes, width)
    try:
        if seed is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                blocks = spec.builder(shape, num_classes, width)
        else:
            blocks = spec.builder(shape, num_classes, width)
        model = BlockModel(name, blocks, shape, num_classes, width)
        with torch.no_grad():
            model.eval()(torch.zeros(1, *shape))
    except (RuntimeError, MemoryError) as e:
        raise ModelError(f"model {name!r} does not accept input shape {'x'.join(map(str, shape))}: "
                         f"{_first_line(e)}") from e
    return model.train()


# --- the paper's architectures ---------------------------------------------------------------

def scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def _spatial_after(shape: tuple[int, int, int], pools: int) -> int:
    h, w = shape[1], shape[2]
    for _ in range(pools):
        h, w = h // 2, w // 2
    if h < 1 or w < 1:
        raise ModelError(f"input {shape[1]}x{shape[2]} is too small for {pools} 2×2 max-pools")
    return h * w


def _lenet(shape, num_classes, width) -> BlockList:
    c1, c2, c3, fc = (scaled(c, width) for c in (64, 128, 128, 1024))
    flat = c3 * _spatial_after(shape, 3)
    return [
        ("conv64-mp", nn.Sequential(*conv_bn_relu(shape[0], c1), nn.MaxPool2d(2))),
        ("conv128-mp", nn.Sequential(*conv_bn_relu(c1, c2), nn.MaxPool2d(2))),
        ("conv128-mp", nn.Sequential(*conv_bn_relu(c2, c3), nn.MaxPool2d(2))),
        ("fc1024", nn.Sequential(nn.Flatten(), nn.Linear(flat, fc), nn.BatchNorm1d(fc), nn.ReLU(inplace=True))),
        ("classifier", nn.Linear(fc, num_classes)),
    ]


def _vgg(shape, num_classes, width) -> BlockList:
    c1, c2, fc = (scaled(c, width) for c in (128, 256, 1024))
    flat = c2 * _spatial_after(shape, 2)
    return [
        ("conv128", nn.Sequential(*conv_bn_relu(shape[0], c1))),
        ("conv128-mp", nn.Sequential(*conv_bn_relu(c1, c1), nn.MaxPool2d(2))),
        ("conv256", nn.Sequential(*conv_bn_relu(c1, c2))),
        ("conv256", nn.Sequential(*conv_bn_relu(c2, c2))),
        ("mp-fc1024", nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(flat, fc),
                                    nn.BatchNorm1d(fc), nn.ReLU(inplace=True))),
        ("classifier", nn.Linear(fc, num_classes)),
    ]


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 conv-BN, identity or 1×1 conv-BN shortcut, ReLU after the sum."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def extra_forward_flops(self, output) -> int:
        """The residual add (one per output element), which no leaf module performs."""
        return int(output.numel())

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def _stage(c_in: int, c_out: int, n: int, stride: int) -> nn.Sequential:
    return nn.Sequential(*[BasicBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1)
                           for i in range(n)])


def _resnet20(shape, num_classes, width) -> BlockList:
    # He et al. (2016) CIFAR ResNet-20: stages of 3 basic blocks at 16/32/64 channels with
    # strides 1/2/2. The paper writes Block(c, 3, 1); we keep the standard down-sampling
    # (a stride-1 ResNet20 would not be "ResNet20") and note it in docs/decisions.md.
    c1, c2, c3 = (scaled(c, width) for c in (16, 32, 64))
    return [
        ("conv16", nn.Sequential(*conv_bn_relu(shape[0], c1))),
        ("stage16", _stage(c1, c1, 3, 1)),
        ("stage32", _stage(c1, c2, 3, 2)),
        ("stage64", _stage(c2, c3, 3, 2)),
        ("pool-fc", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c3, num_classes))),
    ]


register_model("lenet", _lenet, "LeNet-like: 64C3-MP2-128C3-MP2-128C3-MP2-1024FC-10 (paper fn. 4)")
register_model("vgg", _vgg, "VGG-like: 2×128C3-MP2-2×256C3-MP2-1024FC-10 (paper fn. 3, 6)")
register_model("resnet20", _resnet20, "ResNet20: 16C3-3×Block16-3×Block32-3×Block64-FC (paper fn. 5)")
