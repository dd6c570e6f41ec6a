import math

import pytest

from jqodi.learning.value import ideal_loss, state_value


def test_ideal_curve_passes_through_both_ends_and_is_a_decreasing_power_law():
    kw = dict(start_loss=2.0, target_loss=0.5, deadline_s=100.0)
    assert ideal_loss(0, **kw) == pytest.approx(2.0)
    assert ideal_loss(100, **kw) == pytest.approx(0.5)
    ts = [0, 1, 5, 20, 50, 99]
    vals = [ideal_loss(t, **kw) for t in ts]
    assert all(a > b for a, b in zip(vals, vals[1:]))
    # power law: log L is linear in log(T + t0) with slope -alpha
    t0 = 100.0 / ((2.0 / 0.5) ** 2 - 1)
    slope = (math.log(vals[4]) - math.log(vals[2])) / (math.log(50 + t0) - math.log(5 + t0))
    assert slope == pytest.approx(-0.5)
    assert ideal_loss(30, start_loss=0.4, target_loss=0.5, deadline_s=100) == 0.5


def test_value_function_cases_of_eq_14():
    kw = dict(start_loss=2.0, target_loss=0.5, deadline_s=100.0)
    assert state_value(120, 0.8, **kw) == 0.0          # late and above the target
    assert state_value(80, 0.4, **kw) == 1.0           # on time and below the target
    on_curve = state_value(30, ideal_loss(30, **kw), **kw)
    assert on_curve == pytest.approx(0.5)              # exactly on the ideal curve
    ahead, behind = state_value(30, 0.6, **kw), state_value(30, 1.5, **kw)
    assert 0.5 < ahead < 1.0 and 0.0 < behind < 0.5
    assert state_value(150, 0.3, **kw) > 0.5           # late but good: judged against the curve
    assert state_value(150, 0.5, **kw) < 0.5
    with pytest.raises(ValueError):
        ideal_loss(1, 2, 1, deadline_s=0)
