"""fleet-lagrange's per-device subproblems at priced energies (issue: `jqodi plan
examples/fleet-small.yaml` took 5.4 s of CPU for 6 devices).

At the master LP's edge prices an option on the priced edge and its twin on the other edge cost
almost the same, so the LP gap holds tens of thousands of (time, energy) pairs per epoch count and
the exact layered DP of :mod:`jqodi.planner.optimal` spent 0.15–0.3 s on each such subproblem. Its
grid bound (integer epochs, times rounded down to a grid) prunes them exactly: the same plan."""
from __future__ import annotations

import math

import numpy as np
import pytest

import jqodi.planner.optimal as optimal
from jqodi.planner.common import lp_bound, pareto_front

# one of fleet-small's priced subproblems (cam-d, LeNet 8-bit, K = 29 epochs, 500 s): options in
# pairs, the same cut on the RTX 3090 (priced) and the RTX 4090
T = np.array([4.535, 4.345, 22.901, 22.829, 31.927, 31.914, 34.004, 34.004])
E = np.array([557.090, 558.177, 463.565, 463.977, 416.785, 416.860, 406.473, 406.473])
K, BUDGET_S = 29, 500.0


def _dp(t, e, K, budget_s, ub=None):
    front = pareto_front(t, e)
    lp = lp_bound(t, e, front, K, budget_s)
    rounding = optimal._round_lp(t, lp, K, budget_s)
    ub = optimal._plan_cost(t, e, rounding)[0] if ub is None else ub
    tol = optimal.ENERGY_RTOL * max(abs(lp.value_j), 1.0)
    return optimal._layered_dp(t, e, front, front, K, budget_s, ub, tol, max_states=10**6)


def _brute(t, e, K, budget_s):
    """The least energy over every multiset of K options (a DP over (epochs, options) with the exact
    set of reachable times is too large; small instances enumerate compositions instead)."""
    best = math.inf
    n = len(t)

    def rec(o, left, time_s, energy):
        nonlocal best
        if o == n - 1:
            tt, ee = time_s + left * t[o], energy + left * e[o]
            if tt <= budget_s:
                best = min(best, ee)
            return
        for c in range(left + 1):
            rec(o + 1, left - c, time_s + c * t[o], energy + c * e[o])

    rec(0, K, 0.0, 0.0)
    return best


def test_grid_bound_prunes_the_priced_twin_options_to_the_same_plan(monkeypatch):
    built = []
    real = optimal._grid_bound
    monkeypatch.setattr(optimal, "_grid_bound", lambda *a: built.append(a[2:]) or real(*a))
    with_grid = _dp(T, E, K, BUDGET_S)
    assert built, "the layer sizes of this subproblem should make the DP build its grid bound"
    monkeypatch.setattr(optimal, "GRID_AFTER_STATES", 10**9)
    without = _dp(T, E, K, BUDGET_S)
    assert with_grid == without
    status, counts = with_grid
    assert status == "optimal" and counts is not None
    assert sum(n for _, n in counts) == K and sum(T[o] * n for o, n in counts) <= BUDGET_S


@pytest.mark.parametrize("seed", range(6))
def test_grid_bound_keeps_the_layered_dp_exact(seed, monkeypatch):
    """Random near-twin options (as priced fleet options are), small enough to enumerate: the DP
    with its grid bound built from the first layer finds the least energy and nothing beats it."""
    monkeypatch.setattr(optimal, "GRID_AFTER_STATES", 0)
    monkeypatch.setattr(optimal, "GRID_MIN_PRUNED", 0.0)  # keep pruning with it in every layer
    rng = np.random.default_rng(seed)
    base_t = rng.uniform(1, 10, 3)
    t = np.r_[base_t, base_t + rng.uniform(-0.02, 0.02, 3)]
    e = 100 - 5 * t + rng.uniform(0, 0.1, 6)
    K = int(rng.integers(8, 14))
    budget_s = K * float(rng.uniform(t.min() + 0.5, t.max() - 0.5))
    best = _brute(t, e, K, budget_s)
    for ub in (math.inf, best * (1 + 1e-6)):  # nothing pruned by energy; an incumbent just above it
        status, counts = _dp(t, e, K, budget_s, ub=ub)
        assert status == "optimal" and counts is not None
        got = sum(e[o] * n for o, n in counts)
        assert sum(n for _, n in counts) == K and sum(t[o] * n for o, n in counts) <= budget_s + 1e-9
        assert got == pytest.approx(best, rel=1e-12)
