"""What an estimate describes: the pretrained model's identity and the SD's data."""
from __future__ import annotations

import hashlib

__all__ = ["pretrained_sha256"]


def pretrained_sha256(pre) -> str:
    """SHA-256 (hex, first 16) of a pretrained model's weights: parameter names, shapes and bytes."""
    h = hashlib.sha256()
    for name, t in sorted(pre.model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
