"""The served model is frozen once at load: QAT's weight fake quantizers run once, not on every
request; the activation quantizers stay; the answers are the same, bit for bit."""
import copy

import pytest
import torch

from jqodi.core.quant import QConv2d, QLinear, prepare_qat, quant_layers
from jqodi.core.zoo import build_model
from jqodi.runtime.inference import freeze_for_serving
from test_runtime import _one_thread  # noqa: F401 - one torch thread (autouse), as the roles serve

SHAPE = (1, 28, 28)


def _served(model_name: str, bits: int, width: float, act_bits=None):
    g = torch.Generator().manual_seed(3)
    calib = torch.randn(16, *SHAPE, generator=g)
    m = prepare_qat(build_model(model_name, SHAPE, 10, width, seed=1), bits, act_bits, calibration=calib)
    with torch.no_grad():  # fine-tuned weights: not the steps' initial values
        for p in m.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    return m.eval(), torch.randn(5, *SHAPE, generator=g)


@pytest.mark.parametrize("model_name, bits, width, act_bits",
                         [("lenet", 4, 0.25, None), ("lenet", 1, 0.25, None), ("resnet20", 6, 0.125, None),
                          ("vgg", 8, 0.125, None), ("lenet", 2, 0.25, 32)])
def test_frozen_model_answers_exactly_as_the_qat_model(model_name, bits, width, act_bits, monkeypatch):
    model, xs = _served(model_name, bits, width, act_bits)
    frozen = freeze_for_serving(copy.deepcopy(model))
    calls = {"weight": 0, "input": 0}
    for cls in (QConv2d, QLinear):
        for name, key in (("quantized_weight", "weight"), ("quantized_input", "input")):
            orig = getattr(cls, name)
            monkeypatch.setattr(cls, name, lambda self, *a, _o=orig, _k=key: (calls.__setitem__(_k, calls[_k] + 1),
                                                                               _o(self, *a))[1])
    with torch.no_grad():
        for i in range(len(xs)):  # single-sample requests, as served
            want = model(xs[i:i + 1])
            before = dict(calls)
            got = frozen(xs[i:i + 1])
            assert torch.equal(got, want), (model_name, bits, i)
            n_layers = len(list(quant_layers(frozen)))
            assert calls["weight"] == before["weight"]            # no weight quantizer per request
            assert calls["input"] - before["input"] == n_layers   # every input quantizer still runs
        assert torch.equal(frozen(xs), model(xs))                 # and a batch
    assert frozen.state_dict().keys() == model.state_dict().keys()  # checkpoints are unchanged


def test_freezing_again_follows_new_weights_and_32_bits_is_left_alone():
    model, xs = _served("lenet", 4, 0.25)
    frozen = freeze_for_serving(copy.deepcopy(model))
    with torch.no_grad():
        for m in (model, frozen):
            next(m.parameters()).mul_(1.5)  # new weights loaded after freezing
        assert not torch.equal(frozen(xs), model(xs))  # the frozen copy is stale until frozen again
        freeze_for_serving(frozen)
        assert torch.equal(frozen(xs), model(xs))
    plain = build_model("lenet", SHAPE, 10, 0.25, seed=1).eval()
    assert freeze_for_serving(plain) is plain and not list(quant_layers(plain))
