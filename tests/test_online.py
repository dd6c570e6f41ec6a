"""Online K refits: seeded by the prior, converging to the observed curve, uncertainty shrinking."""
import numpy as np

from jqodi.learning.online import refit_remaining, target_reached

# a power-law curve that reaches 1.0 at epoch 12 (L(k) = 0.6 + 4.4·k^-0.95)
CURVE = [0.6 + 4.4 * k ** -0.95 for k in range(1, 30)]
K_TRUE = next(i + 1 for i, v in enumerate(CURVE) if v <= 1.0)


def test_target_reached_with_confirmation():
    assert target_reached([3, 2, 0.9, 1.1, 0.8, 0.7], 1.0) == 3
    assert target_reached([3, 2, 0.9, 1.1, 0.8, 0.7], 1.0, confirm=1) == 5
    assert target_reached([3, 2, 1.5], 1.0) is None


def test_before_three_epochs_the_prior_stands():
    est = refit_remaining(CURVE[:2], 1.0, 8, 12)
    assert (est.remaining_expected, est.remaining_robust, est.source) == (6, 10, "prior")
    assert est.total_expected == 8 and est.weight_observed == 0.0


def test_reached_and_confirming():
    assert refit_remaining([2.0, 0.9], 1.0, 8, 12).remaining_robust == 0
    est = refit_remaining([2.0, 1.5, 0.9], 1.0, 8, 12, confirm=1)
    assert not est.reached and est.remaining_expected == 1 == est.remaining_robust


def test_a_wrong_prior_is_corrected_as_epochs_accumulate():
    K_TRUE == 12  # noqa: B015 - the curve of this test
    for prior in ((5, 7), (25, 35)):  # far too optimistic, far too pessimistic
        errors, spread = [], []
        for n in (3, 6, 9):
            est = refit_remaining(CURVE[:n], 1.0, *prior)
            assert est.remaining_robust >= est.remaining_expected >= 1
            errors.append(abs(est.total_expected - K_TRUE))
            spread.append(est.remaining_robust - est.remaining_expected)
        assert errors[-1] < errors[0] and errors[-1] <= 2, (prior, errors)
        assert spread[-1] <= spread[0], (prior, spread)  # less left to predict, less margin


def test_noisy_real_shaped_curve_converges():
    rng = np.random.default_rng(1)
    noisy = [v * float(np.exp(rng.normal(0, 0.03))) for v in CURVE]
    est = refit_remaining(noisy[:9], 1.0, 6, 9)
    assert abs(est.total_expected - K_TRUE) <= 3
    assert est.total_robust >= K_TRUE - 1


def test_prior_out_of_reach_but_curve_says_otherwise():
    est = refit_remaining(CURVE[:6], 1.0, None, None)
    assert est.source == "refit" and est.remaining_expected is not None


def test_flat_curve_is_out_of_reach_once_it_outweighs_the_prior():
    flat = [2.0, 1.9, 1.85, 1.84, 1.84, 1.84, 1.84]
    assert refit_remaining(flat[:4], 1.0, 8, 12).remaining_expected is not None  # the prior still stands
    assert refit_remaining(flat, 1.0, 8, 12).remaining_expected is None
