import copy

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from jqodi.errors import ModelError
from jqodi.core.quant import (
    PackedModel,
    QConv2d,
    QLinear,
    calibrate_activations,
    dequantize_activations,
    model_size_bytes,
    pack_bits,
    pack_model,
    prepare_qat,
    quant_layers,
    quantize_activations,
    unpack_bits,
    unpack_model,
)
from jqodi.core.zoo import build_model

BITS = [1, 2, 3, 4, 6, 8]


def tiny(name="lenet", seed=0):
    return build_model(name, (1, 16, 16), 10, 0.125, seed=seed)


@pytest.mark.parametrize("bits", BITS)
def test_distinct_weight_levels_per_channel_at_most_2_to_the_q(bits):
    m = prepare_qat(tiny(), bits)
    for _, layer in quant_layers(m):
        wq = layer.quantized_weight().detach()
        for ch in wq.reshape(wq.shape[0], -1):
            assert len(torch.unique(ch)) <= 2 ** bits
    if bits == 1:  # sign x scale: exactly the two values ±s per channel
        w = next(iter(quant_layers(m)))[1].quantized_weight().detach()
        assert torch.allclose(w.abs().reshape(w.shape[0], -1).amax(1), w.abs().reshape(w.shape[0], -1).amin(1))


@pytest.mark.parametrize("name", ["lenet", "vgg", "resnet20"])
@pytest.mark.parametrize("bits", BITS)
def test_gradients_are_finite_at_every_bit_width(name, bits):
    torch.manual_seed(0)
    m = prepare_qat(tiny(name), bits, calibration=torch.randn(8, 1, 16, 16))
    x, y = torch.randn(6, 1, 16, 16), torch.randint(0, 10, (6,))
    loss = torch.nn.functional.cross_entropy(m(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in m.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # weights, weight steps and activation steps all receive gradient
    layers = [l for _, l in quant_layers(m)]
    assert sum(float(l.weight.grad.abs().sum()) for l in layers) > 0
    assert sum(float(l.weight_step.grad.abs().sum()) for l in layers) > 0
    assert sum(float(l.act_step.grad.abs().sum()) for l in layers) > 0


def test_prepare_swaps_layers_in_place_and_32_is_identity():
    m = tiny()
    params_before = {id(p) for p in m.parameters()}
    prepare_qat(m, 4)
    assert all(isinstance(l, (QConv2d, QLinear)) for _, l in quant_layers(m))
    assert params_before <= {id(p) for p in m.parameters()}  # same weights, plus steps
    assert len(list(quant_layers(m))) == 5
    m32 = tiny()
    assert prepare_qat(m32, 32) is m32 and not list(quant_layers(m32))
    for bad in (0, 9, 16, 2.5, "4"):
        with pytest.raises(ModelError, match="bits"):
            prepare_qat(tiny(), bad)


def test_8_bit_model_is_close_to_full_precision():
    torch.manual_seed(1)
    x = torch.randn(16, 1, 16, 16)
    fp = tiny().eval()
    q = prepare_qat(copy.deepcopy(fp), 8, calibration=x).eval()
    ref = fp(x)
    assert (q(x) - ref).abs().max() < 0.05 * ref.abs().max()


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8])
def test_bit_packing_roundtrip(bits):
    codes = np.random.default_rng(bits).integers(0, 2 ** bits, 1001).astype(np.uint8)
    data = pack_bits(codes, bits)
    assert len(data) == (1001 * bits + 7) // 8
    assert np.array_equal(unpack_bits(data, bits, 1001), codes)


@pytest.mark.parametrize("name", ["lenet", "resnet20"])
@pytest.mark.parametrize("bits", [1, 2, 4, 8, 32])
def test_pack_unpack_reproduces_the_quantized_model(name, bits):
    torch.manual_seed(2)
    x = torch.randn(4, 1, 16, 16)
    a = prepare_qat(tiny(name, 0), bits, calibration=x)
    b = prepare_qat(tiny(name, 5), bits)
    packed = pack_model(a, bits)
    wire = packed.to_bytes()
    assert len(wire) == packed.nbytes == model_size_bytes(a, bits)
    unpack_model(b, PackedModel.from_bytes(wire, b, bits))
    a.eval(), b.eval()
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("bits", [1, 2, 4, 6, 8])
def test_reported_size_is_params_times_bits_plus_documented_fp32_extras(bits):
    m = tiny("vgg")
    names = [n for n, mod in m.named_modules() if type(mod) in (torch.nn.Conv2d, torch.nn.Linear)]
    layers = [m.get_submodule(n) for n in names]
    n_weights = sum(l.weight.numel() for l in layers)
    other = sum(t.numel() * t.element_size() for k, t in m.state_dict().items()
                if k not in {f"{n}.weight" for n in names})
    # per-channel steps + activation step + act_calibrated flag (1 B, model format version 2)
    extras = sum(4 * l.weight.shape[0] + 4 + 1 for l in layers)
    code_bytes = sum((l.weight.numel() * bits + 7) // 8 for l in layers)
    assert code_bytes - len(layers) < n_weights * bits / 8 <= code_bytes
    assert model_size_bytes(m, bits) == code_bytes + extras + other
    prepare_qat(m, bits)
    p = pack_model(m, bits)
    assert p.nbytes == code_bytes + extras + other and p.code_bytes == code_bytes
    assert model_size_bytes(m, 32) == 4 * n_weights + other


def test_unpack_rejects_other_architectures():
    a = prepare_qat(tiny("lenet"), 4)
    b = prepare_qat(tiny("vgg"), 4)
    with pytest.raises(ModelError, match="needs"):
        PackedModel.from_bytes(pack_model(a, 4).to_bytes(), b, 4)
    with pytest.raises(ModelError, match="prepared for 4 bits"):
        pack_model(a, 2)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_activation_quantization(bits):
    torch.manual_seed(3)
    x = torch.relu(torch.randn(2, 4, 5, 5))
    codes, scale = quantize_activations(x, bits)
    assert codes.dtype == torch.uint8 and int(codes.max()) <= 2 ** bits - 1
    err = (dequantize_activations(codes, scale) - x).abs().max()
    assert err <= scale / 2 + 1e-6
    g = torch.randn(3, 7)
    c, s = quantize_activations(g, bits)
    assert c.dtype == torch.int8
    if bits > 1:
        assert (dequantize_activations(c, s) - g).abs().max() <= s / 2 + 1e-6
    same, _ = quantize_activations(g, 32)
    assert torch.equal(dequantize_activations(same, 1.0), g)


def _fused_and_reference(x, s0, bits, signed):
    """(values, ∂x, ∂s) of the fused LSQ and of the detach-trick reference on the same input."""
    from jqodi.core.quant import fake_quant, fake_quant_reference

    outs = []
    for fn in (fake_quant, fake_quant_reference):
        xx, ss = x.clone().requires_grad_(), s0.clone().requires_grad_()
        out = fn(xx, ss, bits, signed, 0.37)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs.append((out.detach(), xx.grad, ss.grad))
    return outs


@pytest.mark.parametrize("bits,signed", [(1, True), (2, True), (4, True), (8, False), (3, False)])
def test_fused_lsq_matches_the_reference_formulation(bits, signed):
    torch.manual_seed(bits)
    x = torch.randn(4, 3, 5, 5) if signed else torch.relu(torch.randn(4, 3, 5, 5))
    per_channel = signed
    s0 = (torch.rand(4, 1, 1, 1) + 0.2) * 0.3 if per_channel else torch.tensor([0.2])
    outs = _fused_and_reference(x, s0, bits, signed)
    for a, b in zip(*outs):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("step_shape", [(), (1,), (1, 3, 1, 1), (3, 1, 1), (4, 1, 1, 1)])
@pytest.mark.parametrize("bits,signed", [(1, True), (4, True), (4, False)])
def test_fused_lsq_matches_the_reference_for_any_step_broadcast(step_shape, bits, signed):
    """The fast per-tensor (dot) and per-channel (bmm) step gradients and the generic fallback
    all agree with the detach-trick reference, including values exactly on the clamp bounds."""
    from jqodi.core.quant import fake_quant

    torch.manual_seed(7)
    x = torch.randn(4, 3, 5, 5)
    s0 = (torch.rand(step_shape) + 0.2) * 0.3
    x[0, 0, 0, :] = torch.tensor([-8.0, 7.0, -1.0, 1.0, 0.0]) * s0.reshape(-1)[0]  # on the bounds
    outs = _fused_and_reference(x, s0, bits, signed)
    for a, b in zip(*outs):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-5)
    with torch.no_grad():  # the inference path (no autograd Function) gives the same values
        assert torch.allclose(fake_quant(x, s0, bits, signed, 0.37), outs[1][0], atol=1e-6)


def test_fused_lsq_step_along_the_last_dimension_is_not_taken_for_per_channel():
    """A (C,) step broadcast along the last dim of a (C, C) input sums over rows, not columns."""
    from jqodi.core.quant import fake_quant, fake_quant_reference

    torch.manual_seed(3)
    x, s0 = torch.randn(5, 5), torch.rand(5) * 0.3 + 0.1
    grads = []
    for fn in (fake_quant, fake_quant_reference):
        ss = s0.clone().requires_grad_()
        (fn(x, ss, 3, True, 0.5) * torch.linspace(-1, 1, 25).view(5, 5)).sum().backward()
        grads.append(ss.grad)
    assert torch.allclose(*grads, atol=1e-5)


def _two_layer(out_features=1):
    return torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(8, 4, bias=False), torch.nn.ReLU(),
                               torch.nn.Linear(4, out_features, bias=False))


def _two_layer_qat():
    """A 2-bit model whose last layer's activation step SGD drives through 0: loss = mean(out),
    positive last-layer weights and non-negative inputs, so a smaller step means a smaller loss
    (∂L/∂s > 0; at the calibrated step and below, where every input clamps to Qp·s)."""
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    m = _two_layer()
    m[3].weight.data.abs_()
    prepare_qat(m, 2, act_bits=2, calibration=x)
    return m, x


def test_an_activation_step_driven_negative_stays_learned_and_is_never_recalibrated():
    m, x = _two_layer_qat()
    layer = m[3]
    calibrated = float(layer.act_step.detach())
    assert bool(layer.act_calibrated) and calibrated > 0
    opt = torch.optim.SGD([layer.act_step], lr=0.5)
    steps = []
    for _ in range(20):
        before = layer.act_step.detach().clone()
        loss = m(x).mean()
        assert torch.equal(layer.act_step.detach(), before), "the forward changed the step (re-calibration)"
        opt.zero_grad()
        loss.backward()
        grad = layer.act_step.grad.detach().clone()
        assert torch.isfinite(loss) and torch.isfinite(grad).all() and float(grad) != 0
        opt.step()
        torch.testing.assert_close(layer.act_step.detach(), before - 0.5 * grad)  # exactly SGD's update
        steps.append(float(layer.act_step.detach()))
    # it crosses 0 and, mirrored, is pushed back: it oscillates around 0, never back to calibrated
    assert min(steps) < -0.01 and max(steps[5:]) < calibrated / 2, steps
    assert bool(layer.act_calibrated)
    # the learned (negative) step travels in the state dict: a fresh, uncalibrated copy loads it and
    # computes the same outputs without re-calibrating
    layer.act_step.data.fill_(-0.05)
    fresh = prepare_qat(_two_layer(), 2, act_bits=2)
    assert not bool(fresh[3].act_calibrated)
    fresh.load_state_dict(m.state_dict())
    assert torch.equal(fresh(x), m(x)) and float(fresh[3].act_step.detach()) == pytest.approx(-0.05)
    assert fresh(x).abs().sum() > 0 and bool(fresh[3].act_calibrated)


def test_a_step_at_or_below_zero_quantizes_with_its_magnitude_and_never_divides_by_zero():
    from jqodi.core.quant import MIN_STEP, effective_step, fake_quant

    s = torch.tensor([0.25, -0.25, 0.0, 1e-12], requires_grad=True)
    e = effective_step(s)
    assert e.tolist() == pytest.approx([0.25, 0.25, MIN_STEP, MIN_STEP])
    e.sum().backward()
    assert s.grad.tolist() == [1.0, -1.0, 1.0, 1.0]  # sign(s), +1 at 0: the step keeps learning
    x = torch.linspace(-1, 1, 11)
    for step in (0.0, -0.2):
        out = fake_quant(x, effective_step(torch.tensor(step)), 4, True, 1.0)
        assert torch.isfinite(out).all()
    assert torch.equal(fake_quant(x, effective_step(torch.tensor(-0.2)), 4, True, 1.0),
                       fake_quant(x, torch.tensor(0.2), 4, True, 1.0))
    m = prepare_qat(tiny(), 4, calibration=torch.randn(4, 1, 16, 16))
    layer = next(iter(quant_layers(m)))[1]
    w_pos = layer.quantized_weight().detach()
    layer.weight_step.data.neg_()
    assert torch.equal(layer.quantized_weight().detach(), w_pos)


@pytest.mark.parametrize("step_shape", [(), (1,), (4, 1, 1, 1), (1, 3, 1, 1)])
@pytest.mark.parametrize("bits,signed", [(1, True), (4, True), (8, False)])
def test_learned_step_fused_matches_effective_step_then_fake_quant(step_shape, bits, signed):
    """``fake_quant(..., learned_step=True)`` (what the QAT layers call) gives the values and the
    gradients of ``fake_quant(x, effective_step(s), ...)``, for steps > 0, < 0, = 0 and below ε."""
    from jqodi.core.quant import effective_step, fake_quant

    torch.manual_seed(11)
    x = torch.randn(4, 3, 5, 5) if signed else torch.relu(torch.randn(4, 3, 5, 5))
    s0 = (torch.rand(step_shape) + 0.2) * 0.3
    flat = s0.view(-1)
    if flat.numel() >= 4:
        flat[1], flat[2], flat[3] = -flat[1], 0.0, 1e-12
    elif flat.numel():
        s0 = -s0
    res = []
    for fused in (True, False):
        xx, ss = x.clone().requires_grad_(), s0.clone().requires_grad_()
        out = fake_quant(xx, ss, bits, signed, 0.37, learned_step=True) if fused else \
            fake_quant(xx, effective_step(ss), bits, signed, 0.37)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        res.append((out.detach(), xx.grad, ss.grad))
    for a, b in zip(*res):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-5)
    with torch.no_grad():
        assert torch.equal(fake_quant(x, s0, bits, signed, 0.37, learned_step=True),
                           fake_quant(x, effective_step(s0), bits, signed, 0.37))


def test_keep_freed_memory_stops_the_page_faults_of_a_qat_step():
    """The heap keeps what a step frees (glibc thresholds), so QAT steps stop re-faulting their
    temporaries; ``prepare_qat`` does not change them (entry points call it): run in a fresh
    process (the thresholds are process-wide)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import resource, sys, torch, torch.nn.functional as F
        from jqodi.core.quant import heap, prepare_qat
        from jqodi.core.zoo import build_model
        torch.set_num_threads(1); torch.manual_seed(0)
        x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
        m = build_model("lenet", (3, 32, 32), 10, 0.25, seed=0)
        m = prepare_qat(m, 4, calibration=x)                # the library leaves glibc's defaults alone
        assert heap._applied is None
        # glibc's default thresholds (128 KiB) pinned: its dynamic mmap threshold otherwise rises by itself
        # after the first frees, so "before" would depend on the allocation history (2,100-4,500 faults a
        # step, once 342 under load); mallopt fixes them where a process that never called it starts
        assert heap._set_thresholds(128 * 1024, 128 * 1024)
        opt = torch.optim.Adam(m.parameters(), 1e-3)
        def faults(n):
            for _ in range(4):
                opt.zero_grad(); F.cross_entropy(m(x), y).backward(); opt.step()
            r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(n):
                opt.zero_grad(); F.cross_entropy(m(x), y).backward(); opt.step()
            return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / n
        before = faults(6)
        ok = heap.keep_freed_memory()                       # what a training entry point calls
        after = faults(6)
        print(ok, before, after)
    """)
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    ok, before, after = out.stdout.split()
    if ok != "True":
        pytest.skip("no glibc mallopt here")
    assert float(after) < 0.3 * float(before), out.stdout   # measured: 2,100–4,500 before, 0–260 after


def test_a_learning_verb_keeps_freed_memory_for_its_process():
    """The entry points that own a training process set the heap thresholds (here the learning
    verbs' set-up, in a fresh process); the MALLOC_* environment opts out."""
    import os
    import subprocess
    import sys

    code = ("import argparse; from jqodi.cli._learning_common import set_verb_threads; "
            "set_verb_threads(argparse.Namespace(threads=1)); from jqodi.core.quant import heap; print(heap._applied)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=e)
            for e in (env, dict(env, MALLOC_TRIM_THRESHOLD_="131072"))]
    assert all(o.returncode == 0 for o in outs), [o.stderr for o in outs]
    if outs[0].stdout.strip() == "False":
        pytest.skip("no glibc mallopt here")
    assert outs[0].stdout.strip() == "True" and outs[1].stdout.strip() == "False"   # None: never called


@pytest.mark.parametrize("name,bits", [("lenet", 4), ("resnet20", 1), ("vgg", 8)])
def test_first_layer_step_gradient_without_the_image_gradient_matches_the_general_path(name, bits):
    """The first conv (input needs no gradient) takes the activation step's LSQ gradient through
    the adjoint convolution; values and every gradient equal the general path's (where the image
    requires grad, so ∂L/∂x_q is computed as before)."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    m = prepare_qat(build_model(name, (3, 16, 16), 10, 0.25, seed=0), bits, calibration=x)
    m.train()
    ref = copy.deepcopy(m)
    out = m(x)
    torch.nn.functional.cross_entropy(out, y).backward()
    out_ref = ref(x.clone().requires_grad_(True))
    torch.nn.functional.cross_entropy(out_ref, y).backward()
    assert torch.equal(out, out_ref)
    first = next(layer for _, layer in quant_layers(m))
    if name != "resnet20":  # (ResNet20's steps get exactly 0 on both paths here: BN follows every conv)
        assert first.act_step.grad.abs().item() > 0
    for (n, p), (_, q) in zip(m.named_parameters(), ref.named_parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-7), n


def _three_node_layer_forward(layer, x):
    """The layer as three autograd nodes: input quantizer, weight quantizer (``fake_quant``, each
    checked against ``fake_quant_reference`` above) and the convolution/linear's own node."""
    if isinstance(layer, torch.nn.Conv2d):
        return layer._conv_forward(layer.quantized_input(x), layer.quantized_weight(), layer.bias)
    return torch.nn.functional.linear(layer.quantized_input(x), layer.quantized_weight(), layer.bias)


@pytest.mark.parametrize("kind", ["conv", "conv_s2_groups_nobias", "linear", "linear_nobias"])
@pytest.mark.parametrize("bits,act_bits,signed", [(1, 8, False), (2, 1, True), (4, 4, True), (8, 32, False)])
@pytest.mark.parametrize("input_grad", [True, False])
@pytest.mark.parametrize("compiled", [True, False])
def test_fused_layer_matches_the_reference_layer(kind, bits, act_bits, signed, input_grad, compiled, monkeypatch):
    """One autograd node per QAT layer (weight quantizer + conv/linear + input quantizer, hand-written
    backward) gives the values and every gradient of the same layer as three autograd nodes, also with negative
    steps, at 1 bit, without activation quantization and on an input that needs no gradient; with
    the compiled quantizer (where a C compiler is) and with the PyTorch one."""
    from jqodi.core.quant import kernel

    if compiled and not kernel.available():
        pytest.skip(f"no compiled quantizer here: {kernel.status()}")
    if not compiled:
        monkeypatch.setattr(kernel, "usable", lambda *a: False)
    torch.manual_seed(bits * 10 + act_bits)
    if kind.startswith("conv"):
        s2 = kind != "conv"
        plain = torch.nn.Conv2d(4, 6, 3, stride=2 if s2 else 1, padding=1, groups=2 if s2 else 1, bias=not s2)
        x = torch.randn(5, 4, 9, 9)
    else:
        plain = torch.nn.Linear(12, 7, bias=kind == "linear")
        x = torch.randn(5, 12)
    x = x if signed else torch.relu(x)
    layer = QConv2d if kind.startswith("conv") else QLinear
    m = prepare_qat(torch.nn.Sequential(plain), bits, act_bits)[0]
    m.act_signed = signed
    calibrate_activations(torch.nn.Sequential(m), x)
    with torch.no_grad():
        m.weight_step[0] = -m.weight_step[0]          # a step driven negative keeps quantizing by |s|
    ref = copy.deepcopy(m)
    assert isinstance(m, layer)
    outs = []
    for lay in (m, ref):
        xx = x.clone().requires_grad_(input_grad)
        y = lay(xx) if lay is m else _three_node_layer_forward(lay, xx)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        outs.append((y.detach(), xx.grad, lay.weight.grad, lay.bias.grad if lay.bias is not None else None,
                     lay.weight_step.grad, lay.act_step.grad))
    for a, b in zip(*outs):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    assert outs[0][4].abs().sum() > 0 and (act_bits == 32 or outs[0][5].abs().sum() > 0)


def _fresh_kernel(monkeypatch, tmp_path, **env):
    from jqodi.core.quant import kernel

    monkeypatch.setenv("JQODI_KERNEL_DIR", str(tmp_path))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(kernel, "_lib", None)
    monkeypatch.setattr(kernel, "_status", "not loaded yet")
    return kernel


def test_the_compiled_quantizer_builds_where_a_c_compiler_is_and_the_model_step_is_unchanged(monkeypatch, tmp_path):
    """Built into $JQODI_KERNEL_DIR on first use; a QAT training step with it gives the PyTorch
    path's outputs bit for bit and its gradients to float rounding (the step gradients' sums);
    so does evaluation (no autograd)."""
    _compiler_or_skip()
    kernel = _fresh_kernel(monkeypatch, tmp_path)
    assert kernel.available(), kernel.status()
    assert kernel.status().startswith("compiled") and list(tmp_path.glob("jqodi_lsq_*.so"))
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))
    base = prepare_qat(build_model("resnet20", (3, 16, 16), 10, 0.25, seed=0), 4, calibration=x)
    res = []
    for compiled in (True, False):
        m = copy.deepcopy(base)
        if not compiled:
            monkeypatch.setattr(kernel, "usable", lambda *a: False)
        out = m(x)
        torch.nn.functional.cross_entropy(out, y).backward()
        with torch.no_grad():   # evaluation: the inputs quantized without autograd
            evaluated = m.eval()(x)
        res.append((out.detach(), {n: p.grad for n, p in m.named_parameters()}, evaluated))
    assert torch.equal(res[0][0], res[1][0]) and torch.equal(res[0][2], res[1][2])
    for n, g in res[0][1].items():
        assert torch.allclose(g, res[1][1][n], rtol=1e-4, atol=1e-6), n


def test_the_compiled_quantizer_can_be_turned_off_and_a_failed_build_falls_back(monkeypatch, tmp_path):
    kernel = _fresh_kernel(monkeypatch, tmp_path, JQODI_QUANT_KERNEL="0")
    assert not kernel.available() and "JQODI_QUANT_KERNEL=0" in kernel.status()
    kernel = _fresh_kernel(monkeypatch, tmp_path / "k2", JQODI_QUANT_KERNEL="1", CC="false")
    assert not kernel.available() and kernel.status().startswith("PyTorch fallback: the C compiler failed")
    m = prepare_qat(tiny(), 4, calibration=torch.randn(4, 1, 16, 16))   # QAT still trains, on the PyTorch path
    torch.nn.functional.cross_entropy(m(torch.randn(4, 1, 16, 16)), torch.tensor([0, 1, 2, 3])).backward()
    assert all(p.grad is not None for p in m.parameters())


def test_a_compiled_quantizer_others_may_write_is_not_loaded(monkeypatch, tmp_path):
    kernel = _fresh_kernel(monkeypatch, tmp_path)
    if not kernel.available():
        pytest.skip(f"no compiled quantizer here: {kernel.status()}")
    for lib in tmp_path.glob("jqodi_lsq_*.so"):
        lib.chmod(0o777)
    kernel = _fresh_kernel(monkeypatch, tmp_path)
    assert not kernel.available() and "writable by others: not loaded" in kernel.status()


def _compiler_or_skip():
    import shutil

    if not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")):
        pytest.skip("no C compiler on PATH: the PyTorch quantizer is used")


def test_a_kernel_directory_others_may_write_is_neither_built_into_nor_loaded_from(monkeypatch, tmp_path):
    """The directory must be this user's and writable by nobody else, the ones above it this user's
    or root's and not writable by others unless sticky: else one line names it and the PyTorch path runs."""
    import os
    import stat

    _compiler_or_skip()
    for mode in (0o777, 0o770, 0o707):          # group- or other-writable: refused, nothing compiled into it
        d = tmp_path / f"open{mode:o}"
        d.mkdir()
        d.chmod(mode)
        kernel = _fresh_kernel(monkeypatch, d)
        assert not kernel.available()
        assert f"kernel directory {d} is writable by others (mode {mode:o})" in kernel.status()
        assert "\n" not in kernel.status() and not list(d.iterdir())
    # a parent others may write (not sticky) could swap the directory: refused, nothing created under it
    parent = tmp_path / "parent"
    parent.mkdir()
    parent.chmod(0o777)
    kernel = _fresh_kernel(monkeypatch, parent / "a" / "k")
    assert not kernel.available() and f"kernel directory {parent} is writable by others" in kernel.status()
    assert not (parent / "a").exists()
    # a sticky parent (like /tmp) is fine: the missing levels are created 0700 and the kernel built there
    parent.chmod(0o1777)
    kernel = _fresh_kernel(monkeypatch, parent / "a" / "k")
    assert kernel.available(), kernel.status()
    for level in (parent / "a", parent / "a" / "k"):
        assert stat.S_IMODE(level.stat().st_mode) & 0o077 == 0
    assert list((parent / "a" / "k").glob("jqodi_lsq_*.so"))
    if os.path.isdir("/proc/self/fd"):        # loaded from the fd it was checked on
        assert kernel._lib._name.startswith("/proc/self/fd/")
    # a directory owned by someone else (seen as another uid): refused
    kernel = _fresh_kernel(monkeypatch, parent / "a" / "k")
    monkeypatch.setattr(os, "getuid", lambda: 4242)
    assert not kernel.available()
    assert f"kernel directory {parent / 'a' / 'k'} is owned by uid " in kernel.status() and "(4242)" in kernel.status()


def test_a_link_in_place_of_the_compiled_quantizer_is_not_followed(monkeypatch, tmp_path):
    _compiler_or_skip()
    kernel = _fresh_kernel(monkeypatch, tmp_path)
    assert kernel.available(), kernel.status()
    (lib,) = tmp_path.glob("jqodi_lsq_*.so")
    lib.rename(tmp_path / "elsewhere.so")
    lib.symlink_to(tmp_path / "elsewhere.so")
    kernel = _fresh_kernel(monkeypatch, tmp_path)
    assert not kernel.available() and "a link is not followed" in kernel.status()


def test_the_compiled_quantizers_file_is_keyed_by_its_source(monkeypatch, tmp_path):
    """The library's name hashes the C source (and flags, compiler, CPU): a library built from an
    older source is never loaded for a newer one. Its quantizer body is written once (one inline
    function for the forward and the backward's main and tail loops), which the checks against
    the PyTorch path above hold bit for bit."""
    from jqodi.core.quant import kernel

    assert kernel.SOURCE.count("nearbyintf(") == 1 and kernel.SOURCE.count("v < qn ? qn") == 1
    name = kernel._library_name(kernel.FLAGS, "cc")
    assert name.startswith("jqodi_lsq_") and kernel._library_name(kernel.FALLBACK_FLAGS, "cc") != name
    assert "#define BLOCK 1024" in kernel.SOURCE
    edited = kernel.SOURCE.replace("#define BLOCK 1024", "#define BLOCK 512")
    monkeypatch.setattr(kernel, "SOURCE", edited)
    assert kernel._library_name(kernel.FLAGS, "cc") != name
    _compiler_or_skip()
    monkeypatch.undo()
    kernel = _fresh_kernel(monkeypatch, tmp_path)
    assert kernel.available(), kernel.status()
    (old,) = tmp_path.glob("jqodi_lsq_*.so")
    monkeypatch.setattr(kernel, "SOURCE", edited)   # the next version's source: built anew, the old file not loaded
    kernel = _fresh_kernel(monkeypatch, tmp_path)
    assert kernel.available(), kernel.status()
    assert len(list(tmp_path.glob("jqodi_lsq_*.so"))) == 2 and old.name not in kernel.status()
