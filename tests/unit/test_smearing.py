"""Smearing losses and the channel averaging a budget allows."""

from __future__ import annotations

import math

import pytest

from reconciler.smearing import (
    bandwidth_smearing_loss,
    channel_averaging_factor,
    time_smearing_loss,
)

#: Full DSA-110 shape: 48 channels of 244 kHz per subband, 2.5 km longest baseline.
CHANNEL_HZ = 11.71875e6 / 48
BASELINE_M = 2500.0
HALF_POWER_RAD = math.radians(1.35)


def test_no_width_or_on_axis_loses_nothing():
    assert bandwidth_smearing_loss(0.0, HALF_POWER_RAD, BASELINE_M) == 0.0
    assert bandwidth_smearing_loss(CHANNEL_HZ, 0.0, BASELINE_M) == 0.0
    assert time_smearing_loss(0.0, HALF_POWER_RAD, BASELINE_M, 1.5e9) == 0.0


def test_bandwidth_loss_follows_the_small_argument_expansion():
    x = 4 * CHANNEL_HZ * HALF_POWER_RAD * BASELINE_M / 299_792_458.0
    loss = bandwidth_smearing_loss(4 * CHANNEL_HZ, HALF_POWER_RAD, BASELINE_M)
    assert loss == pytest.approx(math.log(2) * x**2 / 3, rel=0.01)
    assert loss == pytest.approx(0.0085, abs=0.0002)


def test_losses_grow_with_width_radius_and_integration():
    widths = [
        bandwidth_smearing_loss(n * CHANNEL_HZ, HALF_POWER_RAD, BASELINE_M) for n in (1, 2, 4)
    ]
    assert widths == sorted(widths)
    assert bandwidth_smearing_loss(CHANNEL_HZ, 2 * HALF_POWER_RAD, BASELINE_M) > widths[0]
    native = time_smearing_loss(12.885, HALF_POWER_RAD, BASELINE_M, 1.4989e9)
    assert native == pytest.approx(0.016, abs=0.001)
    assert time_smearing_loss(2 * 12.885, HALF_POWER_RAD, BASELINE_M, 1.4989e9) == pytest.approx(
        4 * native
    )


@pytest.mark.parametrize(
    ("max_loss", "expected"), [(0.0, 1), (0.001, 1), (0.003, 2), (0.01, 4), (0.05, 8)]
)
def test_full_shape_factor_is_the_largest_divisor_within_the_budget(max_loss, expected):
    factor = channel_averaging_factor(CHANNEL_HZ, 768, HALF_POWER_RAD, BASELINE_M, max_loss)
    assert factor == expected
    assert bandwidth_smearing_loss(factor * CHANNEL_HZ, HALF_POWER_RAD, BASELINE_M) <= max(
        max_loss, bandwidth_smearing_loss(CHANNEL_HZ, HALF_POWER_RAD, BASELINE_M)
    )


def test_factor_divides_the_channels():
    # 6 channels would fit the budget, but 6 does not divide 20: 5 does.
    assert channel_averaging_factor(CHANNEL_HZ, 20, HALF_POWER_RAD, BASELINE_M, 0.02) == 5


@pytest.mark.parametrize("max_loss", [-0.1, 1.0])
def test_budget_outside_zero_to_one_is_refused(max_loss):
    with pytest.raises(ValueError, match="max_loss"):
        channel_averaging_factor(CHANNEL_HZ, 48, HALF_POWER_RAD, BASELINE_M, max_loss)
