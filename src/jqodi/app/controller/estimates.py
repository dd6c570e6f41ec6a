"""Online resource estimates of the closed loop: a robust, bounded time factor per device and link,
updated from the measured phases of each epoch (what rescales the phase table's terms)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np


@dataclass
class ResourceEstimates:
    """A time factor per device and link: measured / predicted (1 = as planned, 2 = twice as slow).

    After each epoch every resource the epoch used gets the ratio of its measured to its nominal
    time (its terms summed); terms shorter than ``min_share`` of the epoch are skipped (a 1 µs
    prediction against a 1 ms measurement says nothing about the device). The update is

    * **robust**: the target is the median of the resource's last ``window`` (3) ratios, the
      current factor standing in for ratios not yet seen, so one outlier epoch does not move it
      and a lasting change does from its second epoch on;
    * **bounded**: the factor moves toward the target by ``gain`` in log space (1 = all the way)
      and at most by ×``max_step`` (2) per epoch, and stays within [1/``limit``, ``limit``].

    After a resource event (:meth:`forget`) the history of that resource restarts.
    """

    factors: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)
    window: int = 3
    gain: float = 1.0
    max_step: float = 2.0
    limit: float = 20.0
    min_share: float = 0.02

    def get(self, resource: str) -> float:
        return self.factors.get(resource, 1.0)

    def observe(self, terms: Iterable[tuple[str, str, float, float]], measured_s: Mapping[str, float]) -> dict:
        """Update from one epoch: ``terms`` = (term, resource, nominal s, nominal J) of the epoch's
        option, ``measured_s`` = measured seconds per term. Returns the new factors of the resources seen."""
        terms = list(terms)
        total = sum(s for _, _, s, _ in terms)
        nominal: dict[str, float] = {}
        measured: dict[str, float] = {}
        for term, res, s, _ in terms:
            m = measured_s.get(term)
            if m is None or not math.isfinite(m) or m < 0 or s <= 0 or s < self.min_share * total:
                continue
            nominal[res] = nominal.get(res, 0.0) + s
            measured[res] = measured.get(res, 0.0) + m
        out = {}
        for res, s in nominal.items():
            ratio = max(measured[res], 1e-12) / s
            h = self.history.setdefault(res, [])
            h.append(ratio)
            del h[:-self.window]
            old = self.get(res)
            target = float(np.median([old] * (self.window - len(h)) + h))
            step = math.exp(min(max(self.gain * math.log(target / old), -math.log(self.max_step)),
                                math.log(self.max_step)))
            self.factors[res] = min(max(old * step, 1.0 / self.limit), self.limit)
            out[res] = self.factors[res]
        return out

    def forget(self, prefix: str) -> None:
        """Drop the history (not the factor) of every resource whose key contains ``prefix``."""
        for k in list(self.history):
            if prefix in k:
                del self.history[k]

    def to_dict(self) -> dict:
        return {"factors": dict(self.factors), "history": {k: list(v) for k, v in self.history.items()}}
