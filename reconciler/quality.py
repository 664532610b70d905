"""Quality assessment of a mosaic: from measured figures to a verdict, with every reason.

The figures (:class:`QualityFigures`) are measured on the files by
:mod:`reconciler.io.quality`; here they are judged against the limits of the ``[qa]``
settings. Every limit crossed is one reason; the verdict is the worst of them: ``failed``
holds the mosaic back, ``warning`` publishes it with the reasons recorded.

The expected noise is the radiometer equation for a naturally weighted Stokes I image,

    σ = SEFD / (η · sqrt(n_pol · N_ant (N_ant − 1) · Δν · t · (1 − f)))

with ``n_pol`` parallel-hand polarisations, ``Δν`` the bandwidth, ``t`` the time on sky and
``f`` the flagged fraction; a primary-beam-weighted mosaic divides it by the square root of
its weight (the sum of the tiles' beams squared) at each pixel.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from reconciler.model import Quality


class Limits(Protocol):
    """What :func:`assess` reads of the ``[qa]`` settings (:class:`reconciler.config.
    QualitySettings`, which the pure core does not import)."""

    @property
    def noise_ratio_warn(self) -> float: ...
    @property
    def noise_ratio_fail(self) -> float: ...
    @property
    def astrometry_warn_beams(self) -> float: ...
    @property
    def astrometry_fail_beams(self) -> float: ...
    @property
    def flux_scale_warn(self) -> float: ...
    @property
    def flux_scale_fail(self) -> float: ...
    @property
    def flux_scatter_warn(self) -> float: ...
    @property
    def flux_scatter_fail(self) -> float: ...
    @property
    def completeness_snr(self) -> float: ...
    @property
    def dynamic_range_warn(self) -> float: ...
    @property
    def blank_fraction_warn(self) -> float: ...
    @property
    def blank_fraction_fail(self) -> float: ...
    @property
    def beam_ratio_min(self) -> float: ...
    @property
    def beam_ratio_max(self) -> float: ...


@dataclass(frozen=True)
class TileData:
    """What the radiometer equation needs of one observation's calibrated data."""

    n_antennas: int
    n_polarisations: int
    bandwidth_hz: float
    time_on_sky_s: float
    flagged_fraction: float
    #: Longest baseline in wavelengths at the highest frequency: the diffraction limit.
    longest_baseline_wavelengths: float


def radiometer_rms_jy(tile: TileData, sefd_jy: float, efficiency: float) -> float:
    """The thermal noise of a naturally weighted Stokes I image of ``tile``, Jy/beam; inf
    when every sample is flagged."""
    n = tile.n_antennas
    samples = (
        tile.n_polarisations
        * n
        * (n - 1)
        * tile.bandwidth_hz
        * tile.time_on_sky_s
        * (1.0 - tile.flagged_fraction)
    )
    if samples <= 0:
        return math.inf
    return sefd_jy / (efficiency * math.sqrt(samples))


@dataclass(frozen=True)
class ReferenceMatch:
    """A reference source inside the footprint and the component matched to it: offsets
    (measured − reference) in arcseconds, RA offsets on the sky (times cos Dec)."""

    name: str
    ra_deg: float
    dec_deg: float
    reference_jy: float
    measured_jy: float
    d_ra_arcsec: float
    d_dec_arcsec: float

    @property
    def flux_ratio(self) -> float:
        """Measured over reference flux density."""
        return self.measured_jy / self.reference_jy


@dataclass(frozen=True)
class MissedReference:
    """A reference source inside the footprint that no component matches, and the
    signal-to-noise it would have had."""

    name: str
    ra_deg: float
    dec_deg: float
    reference_jy: float
    expected_snr: float


@dataclass(frozen=True)
class QualityFigures:
    """Everything measured on one mosaic."""

    rms_jy: float
    peak_jy: float
    blank_fraction: float
    expected_rms_jy: float | None = None
    #: Why the expected noise is unknown, when it is.
    expected_problem: str | None = None
    beam_major_arcsec: float | None = None
    beam_minor_arcsec: float | None = None
    beam_pa_deg: float | None = None
    diffraction_arcsec: float | None = None
    matches: tuple[ReferenceMatch, ...] = ()
    missed: tuple[MissedReference, ...] = ()
    #: Pixel histogram of the mosaic: bin edges and counts, Jy/beam.
    histogram_edges: tuple[float, ...] = field(default=(), repr=False)
    histogram_counts: tuple[int, ...] = field(default=(), repr=False)

    @property
    def noise_ratio(self) -> float | None:
        """Measured over expected rms."""
        if self.expected_rms_jy is None or not self.expected_rms_jy > 0:
            return None
        return self.rms_jy / self.expected_rms_jy

    @property
    def dynamic_range(self) -> float | None:
        """Peak over rms."""
        return self.peak_jy / self.rms_jy if self.rms_jy > 0 else None

    @property
    def beam_ratio(self) -> float | None:
        """The restoring beam's major axis over the diffraction limit."""
        if self.beam_major_arcsec is None or not self.diffraction_arcsec:
            return None
        return self.beam_major_arcsec / self.diffraction_arcsec

    @property
    def astrometry_arcsec(self) -> tuple[float, float, float] | None:
        """Median RA and Dec offsets and the rms scatter of the offsets about them."""
        if not self.matches:
            return None
        d_ra = np.array([m.d_ra_arcsec for m in self.matches])
        d_dec = np.array([m.d_dec_arcsec for m in self.matches])
        ra0, dec0 = float(np.median(d_ra)), float(np.median(d_dec))
        scatter = float(np.sqrt(np.mean((d_ra - ra0) ** 2 + (d_dec - dec0) ** 2)))
        return ra0, dec0, scatter

    @property
    def flux_scale(self) -> tuple[float, float] | None:
        """Median of measured/reference flux and its scatter (sample standard deviation;
        0 with a single source)."""
        if not self.matches:
            return None
        ratios = np.array([m.flux_ratio for m in self.matches])
        scatter = float(np.std(ratios, ddof=1)) if ratios.size > 1 else 0.0
        return float(np.median(ratios)), scatter

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON: the measured figures and the ones derived from them."""
        data = asdict(self)
        astrometry = self.astrometry_arcsec
        flux = self.flux_scale
        data.update(
            noise_ratio=self.noise_ratio,
            dynamic_range=self.dynamic_range,
            beam_ratio=self.beam_ratio,
            median_d_ra_arcsec=astrometry[0] if astrometry else None,
            median_d_dec_arcsec=astrometry[1] if astrometry else None,
            astrometry_scatter_arcsec=astrometry[2] if astrometry else None,
            flux_scale=flux[0] if flux else None,
            flux_scatter=flux[1] if flux else None,
        )
        return data


@dataclass(frozen=True)
class Assessment:
    """The verdict and its reasons, worst first."""

    quality: Quality
    reasons: tuple[str, ...]

    @property
    def summary(self) -> str:
        """The reasons on one line ("all checks passed" when there are none)."""
        return "; ".join(self.reasons) if self.reasons else "all checks passed"


def assess(figures: QualityFigures, limits: Limits) -> Assessment:
    """Judge ``figures`` against ``limits``: every limit crossed is a reason."""
    failed: list[str] = []
    warned: list[str] = []

    def judge(value: float, warn: float, fail: float, text: str) -> None:
        if value > fail:
            failed.append(f"{text} (limit {fail:g})")
        elif value > warn:
            warned.append(f"{text} (warning above {warn:g})")

    ratio = figures.noise_ratio
    if ratio is None:
        warned.append(f"expected noise unknown: {figures.expected_problem or 'no data'}")
    else:
        judge(
            ratio,
            limits.noise_ratio_warn,
            limits.noise_ratio_fail,
            f"rms {figures.rms_jy * 1e3:.3g} mJy/beam is {ratio:.2f} times the expected "
            f"{(figures.expected_rms_jy or 0) * 1e3:.3g}",
        )
    judge(
        figures.blank_fraction,
        limits.blank_fraction_warn,
        limits.blank_fraction_fail,
        f"{figures.blank_fraction:.0%} of the pixels are blank",
    )
    dynamic_range = figures.dynamic_range
    if dynamic_range is None or dynamic_range < limits.dynamic_range_warn:
        shown = "unknown" if dynamic_range is None else f"{dynamic_range:.3g}"
        warned.append(f"dynamic range {shown} (warning below {limits.dynamic_range_warn:g})")
    beam_failed, beam_warned = _beam_problems(figures, limits)
    failed.extend(beam_failed)
    warned.extend(beam_warned)
    if not figures.matches and not figures.missed:
        warned.append("no reference source inside the footprint: astrometry and flux unchecked")
    beam = figures.beam_major_arcsec
    astrometry = figures.astrometry_arcsec
    if astrometry is not None and beam:
        offset = math.hypot(astrometry[0], astrometry[1])
        judge(
            offset / beam,
            limits.astrometry_warn_beams,
            limits.astrometry_fail_beams,
            f"median position offset {offset:.3g} arcsec is {offset / beam:.2f} beams",
        )
    flux = figures.flux_scale
    if flux is not None:
        judge(
            abs(flux[0] - 1.0),
            limits.flux_scale_warn,
            limits.flux_scale_fail,
            f"flux scale {flux[0]:.3f} (measured/reference, {len(figures.matches)} sources) "
            f"is off by {abs(flux[0] - 1.0):.0%}",
        )
        judge(
            flux[1],
            limits.flux_scatter_warn,
            limits.flux_scatter_fail,
            f"flux ratios scatter by {flux[1]:.3f}",
        )
    for missed in figures.missed:
        text = (
            f"reference source {missed.name} ({missed.reference_jy:.3g} Jy, expected "
            f"{missed.expected_snr:.0f} sigma) not found"
        )
        if missed.expected_snr > limits.completeness_snr:
            failed.append(text)
    if failed:
        return Assessment(Quality.FAILED, tuple(failed + warned))
    if warned:
        return Assessment(Quality.WARNING, tuple(warned))
    return Assessment(Quality.PASSED, ())


def _beam_problems(figures: QualityFigures, limits: Limits) -> tuple[list[str], list[str]]:
    """(failures, warnings) of the restoring beam: a missing or degenerate one fails; one
    far from the diffraction limit is a warning."""
    major, minor = figures.beam_major_arcsec, figures.beam_minor_arcsec
    if major is None or minor is None or not (major > 0 and minor > 0):
        return ["the mosaic has no valid restoring beam (BMAJ/BMIN)"], []
    ratio = figures.beam_ratio
    if ratio is not None and not limits.beam_ratio_min <= ratio <= limits.beam_ratio_max:
        return [], [
            f"restoring beam {major:.3g} arcsec is {ratio:.2f} times the diffraction limit "
            f"{figures.diffraction_arcsec:.3g} (expected {limits.beam_ratio_min:g} to "
            f"{limits.beam_ratio_max:g})"
        ]
    return [], []
