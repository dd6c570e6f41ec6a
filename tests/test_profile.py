"""Profiler counts equal counts derived by hand from the paper's layer shapes (footnotes 1-6)."""
import math

import pytest
import torch

from jqodi.core.profile import ModelProfile, profile_model, profile_named_model
from jqodi.core.zoo import build_model, register_model

# --- hand counting, written from the layer shapes (not from the code under test) ---------------
# Each helper returns (flops, params, quantized weight elements, fp32 elements, scales, out elems)


def conv(cin, cout, h_out, w_out, k=3):
    w = cin * k * k * cout
    return dict(flops=2 * w * h_out * w_out, params=w, qw=[w], fp32=0, scales=cout)


def bn(c, spatial=1):
    # affine weight + bias are parameters; running mean + var are fp32 buffers that travel too
    return dict(flops=4 * c * spatial, params=2 * c, qw=[], fp32=4 * c, scales=0)


def relu(n):
    return dict(flops=n, params=0, qw=[], fp32=0, scales=0)


def maxpool2(c, h_out, w_out):
    return dict(flops=3 * c * h_out * w_out, params=0, qw=[], fp32=0, scales=0)


def linear(i, o):
    return dict(flops=2 * i * o + o, params=i * o + o, qw=[i * o], fp32=o, scales=o)


def add(n):
    return dict(flops=n, params=0, qw=[], fp32=0, scales=0)


def avgpool(c, h_in, w_in):
    return dict(flops=c * h_in * w_in + c, params=0, qw=[], fp32=0, scales=0)


def block(*layers):
    out = dict(flops=0, params=0, qw=[], fp32=0, scales=0)
    for layer in layers:
        for k in ("flops", "params", "fp32", "scales"):
            out[k] += layer[k]
        out["qw"] += layer["qw"]
    return out


def cbr(cin, cout, h, w):
    return [conv(cin, cout, h, w), bn(cout, h * w), relu(cout * h * w)]


def lenet_blocks(c=3, h=32, w=32, k=10):
    # 64C3-MP2 | 128C3-MP2 | 128C3-MP2 | 1024FC | 10
    return [
        block(*cbr(c, 64, h, w), maxpool2(64, h // 2, w // 2)),
        block(*cbr(64, 128, h // 2, w // 2), maxpool2(128, h // 4, w // 4)),
        block(*cbr(128, 128, h // 4, w // 4), maxpool2(128, h // 8, w // 8)),
        block(linear(128 * (h // 8) * (w // 8), 1024), bn(1024), relu(1024)),
        block(linear(1024, k)),
    ]


def vgg_blocks(c=3, h=32, w=32, k=10):
    # 128C3 | 128C3-MP2 | 256C3 | 256C3 | MP2-1024FC | 10
    return [
        block(*cbr(c, 128, h, w)),
        block(*cbr(128, 128, h, w), maxpool2(128, h // 2, w // 2)),
        block(*cbr(128, 256, h // 2, w // 2)),
        block(*cbr(256, 256, h // 2, w // 2)),
        block(maxpool2(256, h // 4, w // 4), linear(256 * (h // 4) * (w // 4), 1024), bn(1024), relu(1024)),
        block(linear(1024, k)),
    ]


def basic(cin, cout, h_out, w_out):
    n = cout * h_out * w_out
    layers = [conv(cin, cout, h_out, w_out), bn(cout, h_out * w_out), relu(n),
              conv(cout, cout, h_out, w_out), bn(cout, h_out * w_out)]
    if cin != cout:  # 1x1 stride-2 projection shortcut
        layers += [conv(cin, cout, h_out, w_out, k=1), bn(cout, h_out * w_out)]
    return layers + [add(n), relu(n)]


def resnet20_blocks(c=3, h=32, w=32, k=10):
    # 16C3 | 3 x Block(16) | 3 x Block(32), stride 2 | 3 x Block(64), stride 2 | avgpool-FC
    return [
        block(*cbr(c, 16, h, w)),
        block(*basic(16, 16, h, w), *basic(16, 16, h, w), *basic(16, 16, h, w)),
        block(*basic(16, 32, h // 2, w // 2), *basic(32, 32, h // 2, w // 2), *basic(32, 32, h // 2, w // 2)),
        block(*basic(32, 64, h // 4, w // 4), *basic(64, 64, h // 4, w // 4), *basic(64, 64, h // 4, w // 4)),
        block(avgpool(64, h // 4, w // 4), linear(64, k)),
    ]


HAND = {"lenet": lenet_blocks, "vgg": vgg_blocks, "resnet20": resnet20_blocks}


@pytest.mark.parametrize("name", sorted(HAND))
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)])
def test_flops_and_params_match_hand_counts(name, shape):
    prof = profile_named_model(name, shape, 10, 1.0)
    hand = HAND[name](*shape)
    assert [b.flops for b in prof.blocks] == [b["flops"] for b in hand]
    assert [b.params for b in prof.blocks] == [b["params"] for b in hand]
    assert [list(b.quantized_weights) for b in prof.blocks] == [b["qw"] for b in hand]
    assert [b.fp32_elements for b in prof.blocks] == [b["fp32"] for b in hand]
    assert [b.scale_count for b in prof.blocks] == [b["scales"] for b in hand]
    model = build_model(name, shape, 10)
    assert prof.params == sum(p.numel() for p in model.parameters())


def test_paper_size_totals():
    # Headline totals for the paper's CIFAR models (3x32x32, 10 classes), from the hand counts.
    expected = {name: (sum(b["flops"] for b in f()), sum(b["params"] for b in f())) for name, f in HAND.items()}
    for name, (flops, params) in expected.items():
        prof = profile_named_model(name)
        assert (prof.flops, prof.params) == (flops, params)
    # ResNet20 has the well-known ~0.27 M parameters; LeNet-like ~2.3 M; VGG-like ~17.8 M
    assert expected["resnet20"][1] == 272474
    assert 2.3e6 < expected["lenet"][1] < 2.4e6 and 17.8e6 < expected["vgg"][1] < 17.9e6


@pytest.mark.parametrize("bits", [1, 2, 4, 6, 8, 32])
def test_bytes_at_q_bits(bits):
    prof = profile_named_model("lenet")
    for hb, b in zip(lenet_blocks(), prof.blocks):
        if bits == 32:
            want = 4 * (sum(hb["qw"]) + hb["fp32"])
        else:
            want = sum(math.ceil(n * bits / 8) for n in hb["qw"]) + 4 * (hb["fp32"] + hb["scales"])
        assert b.bytes_at(bits) == want
    assert prof.bytes_at(bits) == sum(b.bytes_at(bits) for b in prof.blocks)


def test_activations_at_each_cut():
    prof = profile_named_model("lenet")
    assert [prof.act_elements(j) for j in prof.cuts] == [64 * 16 * 16, 128 * 8 * 8, 128 * 4 * 4, 1024]
    assert prof.act_bytes(1, 8) == 64 * 16 * 16 and prof.act_bytes(1, 32) == 4 * 64 * 16 * 16
    vgg = profile_named_model("vgg")
    assert [vgg.act_elements(j) for j in vgg.cuts] == [128 * 32 * 32, 128 * 16 * 16, 256 * 16 * 16,
                                                       256 * 16 * 16, 1024]
    r = profile_named_model("resnet20")
    assert [r.act_elements(j) for j in r.cuts] == [16 * 32 * 32, 16 * 32 * 32, 32 * 16 * 16, 64 * 8 * 8]
    from jqodi.errors import ModelError
    with pytest.raises(ModelError, match="cut 5 is out of range"):
        prof.act_elements(5)


def test_width_multiplier_scales_channels():
    prof = profile_named_model("lenet", (1, 28, 28), 10, 0.25)
    hand = [
        block(*cbr(1, 16, 28, 28), maxpool2(16, 14, 14)),
        block(*cbr(16, 32, 14, 14), maxpool2(32, 7, 7)),
        block(*cbr(32, 32, 7, 7), maxpool2(32, 3, 3)),
        block(linear(32 * 3 * 3, 256), bn(256), relu(256)),
        block(linear(256, 10)),
    ]
    assert [b.flops for b in prof.blocks] == [b["flops"] for b in hand]
    assert prof.params == sum(b["params"] for b in hand)


def test_unknown_leaves_are_named_and_custom_flops_declared():
    class Weird(torch.nn.Module):
        def forward(self, x):
            return x * 2

    class Doubler(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = torch.nn.Identity()

        def extra_forward_flops(self, out):
            return 7 * out.numel()

        def forward(self, x):
            return self.inner(x) * 2

    register_model("prof-test", lambda s, n, w: [("weird", torch.nn.Sequential(torch.nn.Flatten(), Weird())),
                                                 ("dbl", Doubler()),
                                                 ("fc", torch.nn.Linear(s[0] * s[1] * s[2], n, bias=False))],
                   replace=True)
    prof = profile_model(build_model("prof-test", (1, 2, 2), 3))
    assert prof.uncounted == ("weird.1 (Weird)",)
    assert [b.flops for b in prof.blocks] == [0, 7 * 4, 2 * 4 * 3]
    assert prof.blocks[2].bytes_at(4) == math.ceil(12 * 4 / 8) + 4 * 3


def test_profile_round_trips_through_dict():
    prof = profile_named_model("resnet20")
    again = ModelProfile.from_dict(prof.to_dict())
    assert again == prof


def test_profile_and_model_reject_the_same_cuts_with_the_same_message():
    from jqodi.errors import ModelError

    model = build_model("lenet", (1, 28, 28), 10, 0.25)
    prof = profile_model(model)
    for cut in (0, 5, -1):
        with pytest.raises(ModelError) as a:
            prof.act_elements(cut)
        with pytest.raises(ModelError) as b:
            model.shallow(cut)
        assert str(a.value) == str(b.value) == f"cut {cut} is out of range for model 'lenet': valid cuts are 1..4"


def test_grouped_biased_conv_avgpool_and_silu_follow_the_docstring():
    # block 1: Conv2d(4->6, 3x3, groups 2, bias, pad 1) on 4x5x5 -> 6x5x5; AvgPool2d(3, stride 1) -> 6x3x3; SiLU
    #   conv: 2 * (4/2 * 3*3) * 6 * 25 = 5400 multiply-adds, + 6*25 = 150 bias adds
    #   avgpool: (3*3 - 1) * 54 = 432; SiLU: 54             -> 6036 FLOPs
    # block 2: Flatten + Linear(54 -> 3, no bias): 2*54*3 = 324 FLOPs
    register_model("prof-groups", lambda s, n, w: [
        ("conv", torch.nn.Sequential(torch.nn.Conv2d(4, 6, 3, padding=1, groups=2), torch.nn.AvgPool2d(3, stride=1),
                                     torch.nn.SiLU())),
        ("fc", torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(54, n, bias=False)))], replace=True)
    prof = profile_model(build_model("prof-groups", (4, 5, 5), 3))
    assert [b.flops for b in prof.blocks] == [6036, 324] and prof.uncounted == ()
    # conv weight 6 * (4/2) * 9 = 108 elements at 4 bits = 54 B, + fp32 bias (6) and scales (6) = 48 B
    assert [b.params for b in prof.blocks] == [114, 162] and prof.blocks[0].bytes_at(4) == 54 + 48
