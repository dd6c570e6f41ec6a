"""A jqodi plugin for the tests (and the shape docs/extending.md shows): one new model, one new
solver and one new energy meter, registered when the module is imported.

Used as ``jqodi --plugin jqodi_example_plugin ...`` with this folder importable; the launcher
passes it on to the cloud, edge and end processes.
"""
from __future__ import annotations

import time

from torch import nn

from jqodi.core.instance import Solution, ScheduleEntry
from jqodi.core.zoo import register_model
from jqodi.planner.registry import SOLVERS
from jqodi.runtime.energy import METERS, EnergyMeter

MODEL = "tiny-mlp"
SOLVER = "fastest-static"
METER = "wall-power"


def _tiny_mlp(input_shape, num_classes, width):
    """Three blocks (two cuts): flatten + FC(h) + ReLU | FC(h) + ReLU | FC(classes), h = 32·width."""
    c, h, w = input_shape
    hidden = max(1, round(32 * width))
    return [("fc1", nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU())),
            ("fc2", nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU())),
            ("head", nn.Linear(hidden, num_classes))]


register_model(MODEL, _tiny_mlp, "a 3-block MLP (test plugin)")


@SOLVERS.register(SOLVER, description="the single (model, bits, edge, cut) that finishes first (test plugin)")
def solve_fastest_static(instance, *, epochs: str = "robust") -> Solution:
    """Least total time instead of least energy: one option kept for every epoch."""
    best = None
    for cand in instance.candidates:
        k = cand.epochs.get(epochs)
        if k is None:
            continue
        for opt in cand.options:
            time_s = cand.quantize_time_s + k * opt.epoch_time_s
            energy_j = cand.quantize_energy_j + k * opt.epoch_energy_j
            if time_s <= instance.deadline_s and (best is None or time_s < best[0]):
                best = (time_s, energy_j, cand, opt, k)
    if best is None:
        return Solution("infeasible", SOLVER, extra={"epochs_estimate": epochs, "explanation": {
            "message": f"no single option finishes within {instance.deadline_s:g} s"}})
    time_s, energy_j, cand, opt, k = best
    return Solution("feasible", SOLVER, cand.model, cand.bits, (ScheduleEntry(opt.edge, opt.cut, k),),
                    energy_j, time_s, {"epochs_estimate": epochs})


class WallPowerMeter(EnergyMeter):
    """A constant power (W) times wall-clock time: every second of a window costs ``power_w`` J."""

    name = METER

    def __init__(self, power_w: float, **kw) -> None:
        super().__init__(**kw)
        self.power_w = float(power_w)
        self._t0 = time.monotonic()
        self.description = f"{METER} ({self.power_w:g} W × wall time)"

    def _energy_counter_j(self) -> float:
        return self.power_w * (time.monotonic() - self._t0)


@METERS.register(METER, description="constant power × wall-clock time (test plugin)")
def make_wall_power_meter(*, busy_power_w=None, **_) -> EnergyMeter:
    return WallPowerMeter(busy_power_w if busy_power_w is not None else 1.0)
