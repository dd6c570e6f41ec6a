"""The physical system of a scenario as numbers: nodes (v, ε, memory) and links (v, ε).

Table I of the paper names them: CS (v_c, ε_c), ES_x (v_x, ε_x), SD_y (v_y, ε_y); the wired
CS–ES link (v_(c,x), ε_(c,x)) and the wireless ES–SD link whose rate follows Shannon,
v_(x,y) = b_(x,y) · log2(1 + σ) (Section III-A), with energy per bit = transmit power / rate.
:class:`System` holds them as numpy arrays over the edge servers so :mod:`jqodi.core.costs` can
vectorise Eq. (1)–(10) over (bits, cut, edge).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from jqodi.core.devices import Device
from jqodi.core.scenario import Scenario

__all__ = ["System", "shannon_rate_bps", "db_to_linear"]


def db_to_linear(db: float) -> float:
    """σ from decibels: 10^(dB/10)."""
    return 10 ** (db / 10)


def shannon_rate_bps(bandwidth_hz: float, snr_linear: float) -> float:
    """v_(x,y) = b · log2(1 + σ) in bit/s (Section III-A)."""
    return bandwidth_hz * math.log2(1 + snr_linear)


@dataclass(frozen=True)
class System:
    """Cloud, end device and the edge servers with their links, as arrays over edges."""

    cloud: Device
    end: Device
    edges: tuple[Device, ...]
    cloud_edge_rate_bps: np.ndarray       # v_(c,x), shape (X,)
    cloud_edge_j_per_bit: np.ndarray      # ε_(c,x)
    edge_end_rate_bps: np.ndarray         # v_(x,y) (Shannon)
    edge_end_j_per_bit: np.ndarray        # ε_(x,y)
    edge_down_reason: tuple[str | None, ...]  # why an edge cannot be used at all, or None

    @property
    def edge_names(self) -> list[str]:
        return [e.name for e in self.edges]

    @classmethod
    def from_scenario(cls, sc: Scenario) -> "System":
        reasons: list[str | None] = []
        for e in sc.edges:
            if not e.available:
                reasons.append(f"edge server {e.name} is unavailable")
            elif not e.cloud_link.up:
                reasons.append(f"cloud link to {e.name} is down")
            elif not e.end_link.up:
                reasons.append(f"wireless link {e.name}↔{sc.end_device.name} is down")
            else:
                reasons.append(None)
        return cls(
            cloud=sc.cloud.device(), end=sc.end_device.device(),
            edges=tuple(e.device() for e in sc.edges),
            cloud_edge_rate_bps=np.array([e.cloud_link.rate_bps for e in sc.edges], dtype=float),
            cloud_edge_j_per_bit=np.array([e.cloud_link.joules_per_bit for e in sc.edges], dtype=float),
            edge_end_rate_bps=np.array([e.end_link.rate_bps for e in sc.edges], dtype=float),
            edge_end_j_per_bit=np.array([e.end_link.joules_per_bit for e in sc.edges], dtype=float),
            edge_down_reason=tuple(reasons),
        )
