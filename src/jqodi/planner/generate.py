"""Random planning instances with the paper's structure, for tests and benchmarks.

An instance has ``models × bits`` candidates, each with ``edges × cuts`` options. Costs follow
the shape of Eq. (5)–(10) with made-up but plausible magnitudes:

* model m has a per-epoch work ``W_m`` (log-uniform over ``work_range``) and a size ``S_m``;
* cut j (1..cuts) puts the share ``j/(cuts+1)`` of the work on the end device, the rest on the edge;
* edge x has a speed (log-uniform, 3–30× the end device), an energy per unit of work (log-uniform:
  fast edges are not always frugal) and a link rate to the end device;
* an epoch moves the model twice at q/32 of its full size plus cut-layer traffic that shrinks with
  deeper cuts; time = compute on both sides + transfer; energy likewise with per-device rates;
* lower bit-widths need more epochs (K^rob ≥ K^exp); with probability ``p_unreachable`` a low-bit
  candidate never reaches the target (epochs ``null``); each option is infeasible (left out) with
  probability ``p_infeasible``;
* the deadline is set between the fastest and the cheapest single-option plan of one reachable
  candidate, the *anchor*: ``tightness`` = 0 → only its fastest plan fits, 1 → its cheapest fits.
  ``tightness=None`` draws it uniformly from [0.05, 1.1] per instance. ``anchor="random"`` picks
  the anchor at random; ``anchor="cheapest"`` picks the candidate whose cheapest single-option
  plan uses the least energy, so that the deadline binds on the candidate that would win without
  it (harder instances: the default for the benchmarks).

Everything is seeded: the same arguments give the same instance.
"""
from __future__ import annotations

import math
import random

from jqodi.core.instance import (
    Candidate, EpochEstimates, LossEstimates, Option, PlanningInstance,
)

DEFAULT_BITS = (1, 2, 4, 6, 8, 32)


def random_instance(seed: int = 0, *, models: int = 3, bits: tuple[int, ...] = DEFAULT_BITS,
                    edges: int = 2, cuts: int = 4, epochs: tuple[int, int] = (20, 200),
                    tightness: float | None = None, p_infeasible: float = 0.05,
                    p_unreachable: float = 0.3, with_loss: bool = True,
                    work_range: tuple[float, float] = (1.0, 20.0),
                    anchor: str = "random") -> PlanningInstance:
    """A seeded random instance; see the module docstring for what each parameter means."""
    rng = random.Random(seed)
    edge_names = [f"es{x}" for x in range(edges)]
    speed = [rng.uniform(math.log(3), math.log(30)) for _ in range(edges)]
    speed = [math.exp(s) for s in speed]
    e_rate = [math.exp(rng.uniform(math.log(0.3), math.log(3))) for _ in range(edges)]
    link = [math.exp(rng.uniform(math.log(5), math.log(50))) for _ in range(edges)]
    link_e = [math.exp(rng.uniform(math.log(0.2), math.log(2))) for _ in range(edges)]
    end_speed, end_e = 1.0, 1.0
    target = 0.5
    cands = []
    lo_k, hi_k = epochs
    for m in range(models):
        W = math.exp(rng.uniform(math.log(work_range[0]), math.log(work_range[1])))
        S = W * rng.uniform(0.2, 1.0)
        base_k = rng.randint(lo_k, max(lo_k, int(hi_k * 0.6)))
        L_a = rng.uniform(0.1, 0.4)
        for q in bits:
            k_exp = max(1, int(round(base_k * (1 + 2.0 / q) * rng.uniform(0.9, 1.1) / 1.6)))
            k_rob = min(hi_k, max(k_exp, int(math.ceil(k_exp * rng.uniform(1.05, 1.35)))))
            k_exp = min(k_exp, k_rob)
            unreachable = q <= 2 and rng.random() < p_unreachable
            size = S * min(q, 32) / 32
            opts = []
            for x in range(edges):
                for j in range(1, cuts + 1):
                    if rng.random() < p_infeasible:
                        continue
                    share = j / (cuts + 1)
                    act = W * 0.3 * (1 - share) * rng.uniform(0.7, 1.3)
                    comp_t = share * W / end_speed + (1 - share) * W / speed[x]
                    comp_e = share * W * end_e + (1 - share) * W * e_rate[x] * speed[x] / 10
                    data = 2 * size + act
                    t = comp_t + data / link[x]
                    e = comp_e + data * link_e[x]
                    opts.append(Option(edge_names[x], j, round(t, 6), round(e * 10, 6)))
            gamma = 0.02 * 32 / q
            loss = None
            if with_loss:
                start = L_a + gamma + target
                loss = LossEstimates(round(start, 6), round(target * rng.uniform(0.9, 0.99), 6),
                                     round(target * rng.uniform(0.99, 1.0), 6))
            cands.append(Candidate(
                f"m{m}", q, round(rng.uniform(0.0, 0.02) * W * 10, 6),
                round(rng.uniform(0.0, 0.05) * W * 100, 6),
                EpochEstimates(None, None) if unreachable else EpochEstimates(k_exp, k_rob),
                tuple(opts), loss))
    # deadline between the fastest and the cheapest single-option plan of one reachable candidate
    reach = [c for c in cands if c.epochs.robust is not None and c.options]
    if tightness is None:
        tightness = rng.uniform(0.05, 1.1)
    if reach:
        c = rng.choice(reach)
        if anchor == "cheapest":
            c = min(reach, key=lambda c: c.quantize_energy_j + c.epochs.robust
                    * min(o.epoch_energy_j for o in c.options))
        elif anchor != "random":
            raise ValueError(f"anchor must be 'random' or 'cheapest', got {anchor!r}")
        K = c.epochs.robust
        fast = min(o.epoch_time_s for o in c.options)
        cheap = min(c.options, key=lambda o: o.epoch_energy_j).epoch_time_s
        deadline = c.quantize_time_s + K * (fast + tightness * (cheap - fast))
        deadline = max(deadline, c.quantize_time_s + K * fast) * 1.000001
    else:
        deadline = 100.0
    return PlanningInstance(round(deadline, 6), target, tuple(cands),
                            {"generator": "jqodi.planner.generate.random_instance", "seed": seed,
                             "models": models, "bits": list(bits), "edges": edges, "cuts": cuts,
                             "epochs": list(epochs), "tightness": tightness, "anchor": anchor})
