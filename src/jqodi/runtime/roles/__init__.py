"""The three roles of the paper's Section III-B: cloud (CS), edge (ES) and end device (SD).

A role only decides what to compute and what to send; a :class:`~jqodi.runtime.transport.Transport`
moves the tensors, so the same code runs as separate processes over gloo or as threads of one
process. One epoch (docs/interfaces.md, "Runtime protocol"), for the epoch's (edge, cut) of the schedule:

    CS → ES   ``model``        the master packed at q bits, as shallow + deep payloads (Eq. (1))
    ES → SD   ``shallow``      the shallow payload, forwarded as received (Eq. (2))
    SD → ES   ``act``          per batch: cut-layer activations (codes + scale) and labels
    ES → SD   ``grad``         per batch: the gradient at the cut
    SD → ES   ``val_act``      validation activations and labels, in order
    SD → ES   ``shallow_back`` the SD's update of its part (and its measurements)
    ES → CS   ``progress``     now and then: batch, running loss (also a sign of life)
    ES → CS   ``model_back``   both parts' updates, the losses, every node's measurements

The CS folds the update into its full-precision master (:func:`jqodi.core.codec.apply_update`),
checkpoints, and records the epoch in the job's trace store (:mod:`jqodi.runtime.tracing`). Raw
images never leave the SD: it sends only activations, labels and its part. After the last epoch
the same roles serve collaborative inference (:mod:`jqodi.runtime.serving`).

The primitives are the reference's (:mod:`jqodi.core.training`): the same seeded batch order, a fresh
per-role optimizer over the role's part (per-parameter, so SD + ES = one optimizer over the
model), the same pack/unpack round trip. Hence split training equals
:func:`jqodi.learning.reference.protocol_epoch` within float tolerance when the cut-layer traffic is fp32.

The package holds one concept per module:

* :mod:`~jqodi.runtime.roles.base` — :class:`RoleContext` (what reaches a role), the worker model
  the edge and end roles build, and the per-epoch bookkeeping all roles share (phase times,
  cut traffic, energy windows);
* :mod:`~jqodi.runtime.roles.end` — :class:`EndRole`, the SD;
* :mod:`~jqodi.runtime.roles.edge` — :class:`EdgeRole`, an ES;
* :mod:`~jqodi.runtime.roles.cloud` — :class:`CloudState` and :class:`CloudRole`, the CS.
"""
from jqodi.runtime.roles.base import RoleContext, block_flops, build_worker
from jqodi.runtime.roles.cloud import CloudRole, CloudState
from jqodi.runtime.roles.edge import EdgeRole
from jqodi.runtime.roles.end import EndRole

__all__ = ["RoleContext", "CloudRole", "CloudState", "EdgeRole", "EndRole", "build_worker", "block_flops"]
