"""The paper's models as ordered blocks with partition points, and a registry for your own.

A model is an ordered list of named blocks; cut ``j`` (1 ≤ j ≤ n-1) puts blocks ``1..j`` on the
end device (shallow part) and ``j+1..n`` on the edge server (deep part), as in Section III-B.
The paper's partition points (footnotes 4–6) are exactly the block boundaries here:

* ``lenet``    64C3-MP2 | 128C3-MP2 | 128C3-MP2 | 1024FC | 10      (5 blocks, 4 cuts)
* ``vgg``      128C3 | 128C3-MP2 | 256C3 | 256C3 | MP2-1024FC | 10  (6 blocks, 5 cuts)
* ``resnet20`` 16C3 | Stage(16,3) | Stage(32,3) | Stage(64,3) | FC  (5 blocks, 4 cuts)

Convolutions are 3×3, padding 1, followed by BatchNorm and ReLU. The paper's "10SVM" head is a
linear layer trained with cross-entropy (docs/interfaces.md). ``width`` multiplies every channel count
and the hidden FC width (rounded, at least 1) for CPU-scale runs; ``width=1`` is the paper's size.

Example::

    from jqodi.core.zoo import build_model
    m = build_model("lenet", input_shape=(1, 28, 28), num_classes=10, width=0.25)
    shallow, deep = m.split(2)
"""
from jqodi.core.zoo.models import (
    MODELS,
    BlockModel,
    ModelSpec,
    available_models,
    build_model,
    check_model,
    get_spec,
    register_model,
)

__all__ = ["MODELS", "BlockModel", "ModelSpec", "available_models", "build_model", "check_model", "get_spec", "register_model"]
