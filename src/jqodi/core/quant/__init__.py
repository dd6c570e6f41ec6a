"""Quantization-aware training (QAT) and bit-packed models: the paper's M_(a,q).

Fake quantization, hand-written (no Brevitas; see docs/learning.md for the measured overhead and
for why LSQ + STE rather than the paper's BQAT [31]). One module per concept:

* :mod:`jqodi.core.quant.lsq` — the LSQ fake quantizer with a straight-through estimator
  (fused autograd Function and its readable reference), the effective step ``max(|s|, ε)``, the
  initial steps;
* :mod:`jqodi.core.quant.layers` — the fake-quantized ``QConv2d``/``QLinear`` (learnable weight
  and activation steps, an explicit ``act_calibrated`` buffer), :func:`prepare_qat`,
  :func:`calibrate_activations`;
* :mod:`jqodi.core.quant.kernel` — the quantizer as compiled one-pass loops (built with the
  system's C compiler on first use; the layers fall back to PyTorch without one);
* :mod:`jqodi.core.quant.heap` — :func:`keep_freed_memory`: freed tensor memory stays in the
  heap (glibc thresholds), so a training step does not page-fault its temporaries back in
  (called by the entry points that own a training process, not by the library);
* :mod:`jqodi.core.quant.packing` — bit packing: :class:`PackedModel` (the model on the wire,
  ``nbytes == model_size_bytes``), cut-layer activation codes, :data:`MODEL_FORMAT_VERSION`.

Everything is importable from here (``from jqodi.core.quant import prepare_qat``).
"""
from __future__ import annotations

from jqodi.core.quant.heap import keep_freed_memory
from jqodi.core.quant.layers import QConv2d, QLinear, calibrate_activations, model_bits, prepare_qat, quant_layers
from jqodi.core.quant.lsq import (FULL_PRECISION, MIN_STEP, _levels, check_bits, effective_step, fake_quant,
                                  fake_quant_reference)
from jqodi.core.quant.packing import (MODEL_FORMAT_VERSION, PackedModel, _Entry, activation_bytes,
                                      dequantize_activations, model_size_bytes, pack_bits, pack_model,
                                      quantize_activations, unpack_bits, unpack_model)

__all__ = [
    "FULL_PRECISION",
    "MIN_STEP",
    "MODEL_FORMAT_VERSION",
    "PackedModel",
    "QConv2d",
    "QLinear",
    "activation_bytes",
    "calibrate_activations",
    "check_bits",
    "dequantize_activations",
    "effective_step",
    "fake_quant",
    "fake_quant_reference",
    "keep_freed_memory",
    "model_bits",
    "model_size_bytes",
    "pack_bits",
    "pack_model",
    "prepare_qat",
    "quant_layers",
    "quantize_activations",
    "unpack_bits",
    "unpack_model",
]
