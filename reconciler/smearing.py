"""Peak flux lost to bandwidth and time smearing, and the channel averaging a budget allows.

A point source at angle ``theta`` from the phase centre, imaged from channels of width
``dnu`` with a synthesised beam of FWHM ``theta_b = c / (nu B_max)``, has its peak reduced
to (Bridle & Schwab 1999, *Synthesis Imaging in Radio Astronomy II*, eq. 18-24: square
bandpass, Gaussian-tapered uv coverage)::

    R = sqrt(pi) / (2 sqrt(ln 2) x) * erf(sqrt(ln 2) x),   x = dnu theta B_max / c,

so the loss ``1 - R`` is about ``ln(2) x**2 / 3``. ``x`` does not depend on the frequency:
wider channels and longer baselines smear alike across the band. Averaging over ``tau``
seconds loses about ``1.08e-9 (theta / theta_b)**2 tau**2`` (their eq. 18-43, for a source
near the pole; less elsewhere), with ``theta_b`` at the top of the band.

The budget the pipeline works to is a peak loss at the primary beam's half-power radius
at the mean frequency (see :func:`reconciler.sky.primary_beam_fwhm_deg`); at the full
DSA-110 shape (244 kHz channels, 2.5 km baselines, 1.40 GHz: half-power radius 1.35 deg),
native channels lose 0.05 %, four averaged together 0.85 % (1.9 % at the 2.06 deg edge of
a 4.12 deg tile), and the correlator's 12.885 s integrations already lose about 1.6 %
(3.6 % at the edge), which is why nothing is averaged in time.
"""

from __future__ import annotations

import math

SPEED_OF_LIGHT_M_S = 299_792_458.0
#: Bridle & Schwab's time-smearing coefficient, per (beam widths x seconds) squared.
_TIME_SMEARING_COEFFICIENT = 1.08e-9


def bandwidth_smearing_loss(
    channel_width_hz: float, radius_rad: float, max_baseline_m: float
) -> float:
    """Return the fraction of a point source's peak lost to channel width at ``radius_rad``.

    Parameters
    ----------
    channel_width_hz
        Width of the (averaged) channels, Hz.
    radius_rad
        Distance of the source from the phase centre, radians.
    max_baseline_m
        Longest baseline, metres: it sets the synthesised beam.

    Returns
    -------
    float
        ``1 - R`` of the module docstring, in [0, 1).
    """
    if channel_width_hz < 0 or radius_rad < 0 or max_baseline_m <= 0:
        raise ValueError("channel width and radius must be >= 0, the baseline positive")
    x = channel_width_hz * radius_rad * max_baseline_m / SPEED_OF_LIGHT_M_S
    if x == 0:
        return 0.0
    root = math.sqrt(math.log(2.0))
    return 1.0 - math.sqrt(math.pi) / (2.0 * root * x) * math.erf(root * x)


def time_smearing_loss(
    integration_s: float, radius_rad: float, max_baseline_m: float, max_frequency_hz: float
) -> float:
    """Return the fraction of a point source's peak lost to averaging in time.

    Parameters
    ----------
    integration_s
        Length of the averaged integrations, seconds.
    radius_rad
        Distance of the source from the phase centre, radians.
    max_baseline_m, max_frequency_hz
        Longest baseline and highest frequency: together they set the finest beam.
    """
    if integration_s < 0 or radius_rad < 0 or max_baseline_m <= 0 or max_frequency_hz <= 0:
        raise ValueError("integration and radius must be >= 0, baseline and frequency positive")
    beam_rad = SPEED_OF_LIGHT_M_S / max_frequency_hz / max_baseline_m
    return _TIME_SMEARING_COEFFICIENT * (radius_rad / beam_rad) ** 2 * integration_s**2


def channel_averaging_factor(
    channel_width_hz: float,
    n_channels: int,
    radius_rad: float,
    max_baseline_m: float,
    max_loss: float,
) -> int:
    """Return how many adjacent channels may be averaged within a smearing budget.

    Parameters
    ----------
    channel_width_hz
        Width of one channel as recorded, Hz.
    n_channels
        Channels in the window: the factor divides it, so every averaged channel is whole.
    radius_rad
        Where the budget applies, radians from the phase centre.
    max_baseline_m
        Longest baseline, metres.
    max_loss
        Largest fraction of a point source's peak that averaging may lose at
        ``radius_rad`` (0: no averaging).

    Returns
    -------
    int
        The largest divisor of ``n_channels`` whose averaged channels lose at most
        ``max_loss``; 1 if even two channels would lose more.
    """
    if n_channels < 1:
        raise ValueError(f"need at least one channel, got {n_channels}")
    if not 0.0 <= max_loss < 1.0:
        raise ValueError(f"max_loss must be in [0, 1), got {max_loss}")
    return max(
        factor
        for factor in range(1, n_channels + 1)
        if n_channels % factor == 0
        and (
            factor == 1
            or bandwidth_smearing_loss(factor * channel_width_hz, radius_rad, max_baseline_m)
            <= max_loss
        )
    )
